"""Cross-fitted stage-B targets (`student.cross_fit_folds`): soft targets of the target's training rows from
meta-teachers that did not train on them.

The authors' stage B distils the meta-teacher's probabilities on the target's training rows, rows it trained on.
With few of them (10% of a domain) it has fit them: its targets are close to the gold labels and teach little
beyond them (docs/benchmarks.md, "The teachers' targets on the 160 transfer rows" and the crossed experiment after
it). Here the target's rows are split into K seeded folds (`data.domains.fold_assignment`); meta-teacher k trains
on everything but fold k (its own prototype scores, the meta-teacher's settings), labels the target's rows, and
each row keeps the targets of the teacher that did not see it: one signal store, read by stage B as any other.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from multidistill.data.augment import variant_source
from multidistill.data.prepare import open_example_store
from multidistill.errors import DataError
from multidistill.recipes.common import signals_stage
from multidistill.recipes.metakd.config import MetaKDRecipe
from multidistill.recipes.metakd.plan import Plan, target_data, union_data
from multidistill.recipes.metakd.stages import Model, meta_teacher_stage, prototypes_stage
from multidistill.recipes.metakd.transfer import Transfer
from multidistill.recipes.stages import StageRunner, settings_payload, stage_fingerprint
from multidistill.teachers.store import MANIFEST, STORE_VERSION, open_signal_store, split_dataset
from multidistill.utils.atomic import atomic_dir
from multidistill.utils.paths import inside


def held_out_fold(ids: list[str], seen_by_fold: list[set[str]]) -> np.ndarray:
    """Each row's fold: the one teacher (index into ``seen_by_fold``, the ids each trained on) that did not see
    it. A row every teacher saw, or more than one did not, means the folds do not partition the rows:
    `DataError`."""
    fold = np.empty(len(ids), dtype=np.int64)
    for i, example in enumerate(ids):
        unseen = [k for k, seen in enumerate(seen_by_fold) if example not in seen]
        if len(unseen) != 1:
            raise DataError(f"cross-fitting: row '{example}' is held out from {len(unseen)} of the "
                            f"{len(seen_by_fold)} fold teachers' training rows, not exactly one; remake the fold "
                            "stages for this data")
        fold[i] = unseen[0]
    return fold


def pick_rows(fold: np.ndarray, logits: list[np.ndarray], means: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Row i's logits (K_i, C) and mean (C,) from store ``fold[i]``: ``logits[k]`` is (N, K_i, C) and
    ``means[k]`` (N, C) of every row from fold store k. Returns logits (K_i, N, C) and mean (N, C)."""
    rows = np.arange(len(fold))
    stacked_logits, stacked_means = np.stack(logits), np.stack(means)  # (K, N, K_i, C), (K, N, C)
    return stacked_logits[fold, rows].transpose(1, 0, 2), stacked_means[fold, rows]


def cross_fitted_signals(runner: StageRunner, recipe: MetaKDRecipe, plan: Plan, target: str,
                         transfer: Transfer | None = None) -> Path:
    """Fold teachers (prototypes, meta-teacher, signals on the target's rows; one set per fold), then the store
    of held-out targets `signals-crossfit-<target>`. With an augmented ``transfer`` set the fold teachers label
    it (`signals-augmented-<fold>`), each variant from the teacher that did not see its source row
    (`signals-crossfit-augmented-<target>`)."""
    folds = recipe.student.cross_fit_folds
    data = target_data(recipe, target)
    labelled = transfer.data if transfer else data
    augmented = "-augmented" if transfer else ""
    fold_views, fold_signals = [], []
    for k in range(folds):
        tag = f"{target}-fold-{k + 1}-of-{folds}"
        view = union_data(recipe, target, fold=k)
        prototypes = prototypes_stage(runner, recipe, f"prototypes-{tag}", view)
        teacher = Model.of_stage(meta_teacher_stage(runner, recipe, plan, f"meta-teacher-{tag}", view, prototypes))
        inputs = {"teacher": teacher.fingerprint, **({"transfer": transfer.fingerprint} if transfer else {})}
        fold_signals.append(signals_stage(runner, recipe, [teacher.folder], inputs, labelled, max_examples=None,
                                          name=f"signals{augmented}-{tag}", with_eval_split=False))
        fold_views.append(view)

    def work(folder: Path, resume: bool) -> dict:
        task = data.task_names[0]

        def train_ids(view) -> list[str]:
            rows = open_example_store(view, max_examples_per_task=None, seed=recipe.subset_seed)
            return [str(i) for i in rows.examples(task, "train")["id"]]

        ids, originals = train_ids(labelled), set(train_ids(data))
        try:
            sources = [variant_source(example, originals) for example in ids]
        except ValueError as e:
            raise DataError(f"cross-fitting: the transfer set of '{target}' {e}; remake it") from e
        fold = held_out_fold(sources, [set(train_ids(view)) for view in fold_views])
        stores = [open_signal_store(path) for path in fold_signals]
        logits, means = [], []
        for store in stores:
            rows = store.signals(task, "train")
            if [str(i) for i in rows["id"]] != ids:
                raise DataError(f"signal store {store.root} does not line up with the target's training rows; "
                                "remake it")
            logits.append(np.asarray(rows["teacher_logits"], dtype=np.float32))
            means.append(np.asarray(rows["teacher_mean"], dtype=np.float32))
        picked_logits, picked_mean = pick_rows(fold, logits, means)
        first = stores[0].manifest
        fingerprint = hashlib.sha256(json.dumps({"cross_fit": [s.fingerprint for s in stores],
                                                 "fold": fold.tolist()}).encode()).hexdigest()
        manifest = {"format_version": STORE_VERSION, "fingerprint": fingerprint,
                    "teachers": [t for s in stores for t in s.manifest["teachers"]], "splits": ["train"],
                    "tasks": first["tasks"], "max_length": first["max_length"], "data": first["data"],
                    # The fold teachers' weights, as a store of their own records them: a student's card shows
                    # their scores only while their folders still hold those weights.
                    **_teacher_weights(stores),
                    # The fold stores by stage name (siblings in the run folder), so the record survives a moved
                    # or renamed run folder.
                    "cross_fit": {"folds": folds, "stores": [Path(s.root).name for s in stores],
                                  "rows_per_fold": np.bincount(fold, minlength=folds).tolist()}}
        with atomic_dir(folder) as tmp:
            split_dataset(ids, picked_logits, picked_mean).save_to_disk(str(inside(tmp, task, "train")))
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return {"store_fingerprint": fingerprint, "rows_per_fold": manifest["cross_fit"]["rows_per_fold"]}

    # derived: it only reads the fold stores, so one made for other folds is made again rather than refused.
    return runner.run(f"signals-crossfit{augmented}-{target}", {"data": settings_payload(labelled), "folds": folds},
                      {f"fold-{k + 1}": stage_fingerprint(path) for k, path in enumerate(fold_signals)}, work,
                      derived=True)


def _teacher_weights(stores: list) -> dict:
    """{"teacher_weights": [...]} aligned with the merged "teachers", when every fold store records its teachers'
    weights (stores made before that record have none: then nothing)."""
    weights = [s.manifest.get("teacher_weights") for s in stores]
    if any(not isinstance(w, list) or len(w) != len(s.manifest["teachers"]) for w, s in zip(weights, stores,
                                                                                          strict=True)):
        return {}
    return {"teacher_weights": [w for ws in weights for w in ws]}
