"""`soft-targets`: run the teachers over every (task, split) and write a signal store, shard by shard.

With ``hidden_layers`` the store also holds the teachers' hidden states at those layers, per real token
(`multidistill.teachers.feature_store`), from the same forward that gives the logits.

The shard loop (`generate_shards`) takes ``(rank, world)`` and labels only shards ``i % world == rank``, so several
processes can share one plan; the main process prepares the work folder (`multidistill.teachers.shards`) before
and merges the shards into the store (`multidistill.teachers.store`) after.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch

from multidistill.config import DataConfig
from multidistill.data.collate import pad_id
from multidistill.data.prepare import check_min_length, open_example_store, resolve_tasks
from multidistill.data.store import ExampleStore
from multidistill.errors import ConfigError, DataError, ModelError
from multidistill.evaluation.evaluate import predict
from multidistill.models import MultiTaskModel
from multidistill.models.backbone import load_tokenizer
from multidistill.models.features import ModelDims
from multidistill.teachers.coverage import heads_of, task_teachers
from multidistill.teachers.feature_store import (
    FEATURE_DTYPE,
    FeatureSpec,
    check_hidden_layers,
    label_hidden,
)
from multidistill.teachers.fingerprint import store_fingerprint, weights_fingerprint
from multidistill.teachers.shards import (
    DEFAULT_SHARD_SIZE,
    Shard,
    drop_finished_partial,
    merge_shards,
    partial_dir,
    plan_shards,
    prepare_partial,
    shard_rows,
    write_shard,
)
from multidistill.teachers.store import MANIFEST, STORE_VERSION, SignalStore, open_signal_store
from multidistill.teachers.store_inputs import (
    DEFAULT_CACHE_DIR,
    TaskNames,
    layer_numbers,
    split_names,
    store_data,
    teacher_folders,
)
from multidistill.training.device import bf16_accelerator, process_state
from multidistill.utils.entry import api_call
from multidistill.utils.hashing import hash_tokenizer
from multidistill.utils.interrupt import raise_if_interrupted
from multidistill.utils.lock import hold_lock
from multidistill.utils.progress import progress_bar
from multidistill.utils.quiet import bars_disabled


def build_signal_store(teacher_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
                       data: DataConfig | TaskNames | None, out_dir: str | os.PathLike, *,
                       splits: Sequence[str] | str = ("train",), max_seq_length: int | None = None,
                       max_length: int | None = None, max_examples_per_task: int | None = None, seed: int = 42,
                       batch_size: int = 64, bf16: bool = False, device: torch.device | None = None,
                       autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                       data_root: str | None = None, cache_dir: str = DEFAULT_CACHE_DIR,
                       shard_size: int = DEFAULT_SHARD_SIZE, hidden_layers: Sequence[int] | str | None = None,
                       progress: bool = True) -> SignalStore:
    """Run the teachers over every (task, split) and store the signals, as `multidistill soft-targets` does;
    reuse a valid existing store. Each task is labelled by the teachers with a head for it: every teacher of an
    ensemble, or each task's own teachers when they were fine-tuned one task each (the manifest's
    ``task_teachers``; `multidistill.teachers.coverage`); a task no teacher has a head for, a teacher with a head
    for none of the tasks, and a head whose type or labels are not the task's are refused.

    ``teacher_dirs``: the teacher model folders (one path is one teacher; a folder given twice is refused).
    ``data``: the tasks to label, as a `DataConfig`, or as task names (a list, or one comma-separated str;
    `TaskRef`s to select domains; None: every task with a head in a teacher), which are read with the task specs
    of the first teacher that has each, under ``data_root`` or, by default, the data root the teachers were trained
    with (while it exists; teachers trained under different roots need ``data_root``), and cache tokenised views in
    ``cache_dir``, as the CLI reads them. ``splits`` and ``hidden_layers`` also take comma-separated strs.

    ``hidden_layers`` (0 = the embedding output, 1..L the layers' outputs, each once) also stores the teachers'
    hidden states at those layers, per real token, in float16, for feature losses
    (`multidistill.teachers.feature_store`); the teachers must then share one tokenizer and one max length, since
    the states are per token.

    Work is saved shard by shard in ``<out_dir>.partial/``: an interrupted run resumes from its last
    completed shard when called again with the same inputs. The store is written by one process at a time (a
    lock beside it, `multidistill.utils.lock`), and a non-empty ``out_dir`` that is not a store is refused.

    ``seed`` draws the rows kept by ``max_examples_per_task`` (42, as `soft-targets --seed` and `train.seed`: a
    student's run finds its rows in the store only with the same seed). Each teacher reads the rows truncated at
    the length it was trained with (128 for a model that records none), so its signals are what it says itself
    and do not depend on the teachers' order; ``max_seq_length`` (``max_length``, its older name) truncates every
    teacher's rows at that one length instead. ``bf16`` runs the teachers under bf16 autocast
    (as ``--bf16``; or give ``autocast`` yourself: a callable that returns the context each batch runs in, as
    accelerate's ``Accelerator.autocast``); ``device`` defaults to this process's accelerator device (a
    GPU when there is one). ``progress`` False: no bars or library notes. ``bf16`` sets accelerate's process-wide
    precision, so a call from another thread while a run goes is refused (`RunInProgress`); an output that
    cannot be written raises `OutputError`.
    """
    with api_call("build_signal_store", progress=progress, exclusive=True):
        teachers = teacher_folders(teacher_dirs)
        if not teachers:
            raise ModelError("at least one teacher model folder is needed")
        if max_length is not None and max_seq_length is not None:
            raise ConfigError("give max_seq_length or its older name max_length, not both")
        if bf16 and autocast is not None:
            raise ConfigError("bf16 runs the teachers under bf16 autocast; give it or autocast, not both")
        splits, layers = split_names(splits), layer_numbers(hidden_layers)
        data = store_data(teachers, data, data_root, cache_dir)
        if bf16:
            accelerator = bf16_accelerator(True, "--bf16", "leaving it out")
            device, autocast = device or accelerator.device, accelerator.autocast
        out_dir = Path(out_dir)
        if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                           and not (out_dir / MANIFEST).is_file())):
            raise DataError(f"--out {out_dir} is not empty and is not a signal store (no {MANIFEST}); it is never "
                            "overwritten: choose an empty or new folder")
        lock = hold_lock(out_dir, "signal store --out") if process_state().is_main_process \
            else contextlib.nullcontext()
        with lock:
            return _build_store(teachers, data, out_dir, splits=splits,
                                max_length=max_seq_length if max_seq_length is not None else max_length,
                                max_examples_per_task=max_examples_per_task, seed=seed, batch_size=batch_size,
                                device=device, autocast=autocast, shard_size=shard_size, hidden_layers=layers,
                                progress=progress)


def _feature_spec(teacher_dirs: list[str | Path], teachers: list[MultiTaskModel], tokenizers: list,
                  hidden_layers: Sequence[int], lengths: list[int]) -> FeatureSpec:
    """What the store's feature column will hold; teachers of one tokenizer, one max length and one size only."""
    hashes = [hash_tokenizer(t) for t in tokenizers]
    if len(set(hashes)) != 1:
        raise ConfigError("key 'hidden_layers': hidden states are stored per token, so the teachers must share one "
                          f"tokenizer; {teacher_dirs} use {len(set(hashes))} different ones")
    if len(set(lengths)) != 1:
        shown = ", ".join(f"{d} {n}" for d, n in zip(teacher_dirs, lengths, strict=True))
        raise ConfigError("key 'hidden_layers': hidden states are stored per token, so the teachers must read the "
                          f"rows truncated at one length, and they were trained with other max lengths ({shown}); "
                          "give max_seq_length (--max-seq-length) to truncate every teacher's rows at one length "
                          "(the student's model.max_seq_length)")
    # What the store records of the teachers' sizes (`FeatureSpec.record`): hidden states need no Q/K/V widths.
    sizes = {(d.hidden_size, d.num_layers, d.num_attention_heads) for d in (t.model_dims() for t in teachers)}
    if len(sizes) != 1:
        shown = ", ".join(f"hidden_size {h}, {n} layers, {a} heads" for h, n, a in sorted(sizes))
        raise ConfigError(f"key 'hidden_layers': feature losses need teachers of one size, got {shown}")
    dim = ModelDims(*sizes.pop())
    layers = check_hidden_layers(list(hidden_layers), dim, teacher_dirs[0])
    return FeatureSpec(layers, dim, len(teachers), hashes[0], str(Path(teacher_dirs[0]).resolve()), lengths[0])


def _recorded_length(lengths: list[int]) -> int | list[int]:
    """The max length the fingerprint and manifest record: the one length when every teacher reads rows truncated
    at it (so stores made before per-teacher lengths keep their fingerprint), else each teacher's, in order."""
    return lengths[0] if len(set(lengths)) == 1 else list(lengths)


def _build_store(teacher_dirs: list[str | Path], data: DataConfig, out_dir: Path, *, splits: tuple[str, ...],
                 max_length: int | None, max_examples_per_task: int | None, seed: int, batch_size: int,
                 device: torch.device | None, autocast, shard_size: int,
                 hidden_layers: Sequence[int] | None, progress: bool) -> SignalStore:
    """`build_signal_store` under the store's lock."""
    if shard_size < 1:
        raise DataError(f"shard size must be at least 1 row, got {shard_size}")
    if batch_size < 1:
        raise ConfigError(f"teacher batch size must be at least 1 row, got {batch_size}")
    out_dir = Path(out_dir)
    device = device or process_state().device
    teachers = [MultiTaskModel.from_pretrained(d) for d in teacher_dirs]
    tokenizers = [load_tokenizer(str(d)) for d in teacher_dirs]
    covering = task_teachers([str(d) for d in teacher_dirs], [t.tasks for t in teachers],
                             {task.name: task for task in resolve_tasks(data)})
    # Each teacher reads rows truncated at its own training length, unless one length is given for all.
    lengths = [(t.max_length or t.DEFAULT_INFERENCE_LENGTH) if max_length is None  # 0 is refused, not "unset"
               else max_length for t in teachers]
    for which, (teacher, tokenizer, teacher_length) in enumerate(zip(teachers, tokenizers, lengths, strict=True)):
        check_min_length(tokenizer, teacher_length, [teacher.tasks[name] for name in data.task_names
                                                     if which in covering[name]])
    length = _recorded_length(lengths)  # what the fingerprint and manifest record
    partial_cover = any(len(covering[name]) != len(teachers) for name in data.task_names)
    if hidden_layers is not None and partial_cover:
        raise ModelError("--hidden-layers (hidden_layers): hidden states are stored for every teacher on every task, "
                         "and these teachers have heads for different tasks "
                         f"({heads_of([str(d) for d in teacher_dirs], [t.tasks for t in teachers])}): store the logits "
                         "here and give the feature losses an online teacher")
    spec = None if hidden_layers is None else _feature_spec(teacher_dirs, teachers, tokenizers, hidden_layers,
                                                            lengths)
    store = open_example_store(data, max_examples_per_task=max_examples_per_task, seed=seed)
    store.validate(splits)  # bad data stops us before any teacher runs
    data_fingerprints = {f"{t}/{s}": store.data_fingerprint(t, s) for t in data.task_names for s in splits}
    fingerprint = store_fingerprint(STORE_VERSION, teacher_dirs, tokenizers, data_fingerprints, length,
                                    None if spec is None else {"hidden_states": list(spec.layers),
                                                               "dtype": FEATURE_DTYPE})
    partial = partial_dir(out_dir)
    if (out_dir / MANIFEST).is_file():
        existing = open_signal_store(out_dir)
        if existing.fingerprint == fingerprint:
            drop_finished_partial(partial, fingerprint)  # left by a run killed between its merge and clean-up
            return existing
        raise DataError(f"signal store {out_dir} was built for other teachers, data, tokenizer, max length or "
                        "hidden layers "
                        f"(fingerprint {existing.fingerprint[:12]} != {fingerprint[:12]}); choose another --out "
                        f"or delete it to rebuild")
    tasks = store.tasks
    sizes = {(t, s): len(store.examples(t, s)) for t in data.task_names for s in splits}
    plan = plan_shards(sizes, shard_rows(shard_size, batch_size))
    manifest = {"format_version": STORE_VERSION, "fingerprint": fingerprint,
                "teachers": [str(Path(d).resolve()) for d in teacher_dirs], "splits": list(splits),
                # the weights the signals come from, so a student's card can tell a teacher retrained in place
                "teacher_weights": [weights_fingerprint(str(d)) for d in teacher_dirs],
                "tasks": {t: {"type": tasks[t].type, "num_labels": tasks[t].num_labels} for t in data.task_names},
                "max_length": length, "data": data_fingerprints,
                # each fingerprint's parts, so a run refusing the store can say which differs (`data_parts`)
                "data_parts": {f"{t}/{s}": store.data_parts(t, s) for t in data.task_names for s in splits}}
    if partial_cover:  # teachers of different tasks: which of them labelled each task (indices into "teachers")
        manifest["task_teachers"] = {name: covering[name] for name in data.task_names}
    if spec is not None:
        manifest["features"] = spec.record()
    # Under torchrun / accelerate launch every process labels its share of the shards (index % world);
    # the main process prepares the work folder first and merges the shards into one store at the end.
    state = process_state()
    if state.is_main_process:
        prepare_partial(partial, fingerprint, plan)
    with state.main_process_first():  # one process writes each tokenised cache; the others then read it
        for task_name, split in sizes:
            for which in covering[task_name]:  # only the teachers that label the task read its rows
                store.tokenized(task_name, split, tokenizers[which], lengths[which])
    labeler = ShardLabeler(teachers, tokenizers, store, lengths, batch_size, device, autocast,
                           spec.layers if spec is not None else (), covering=covering)
    generate_shards(labeler, partial, plan, rank=state.process_index, world=state.num_processes,
                    progress=progress)
    state.wait_for_everyone()
    if state.is_main_process:
        merge_shards(partial, out_dir, plan, manifest)
    state.wait_for_everyone()
    return open_signal_store(out_dir)


@dataclass
class ShardLabeler:
    """What labelling a shard needs: the teachers, their tokenizers, the example store and the max length each
    teacher's rows are truncated at (``length``: one for all, or one per teacher)."""

    teachers: list[MultiTaskModel]
    tokenizers: list
    store: ExampleStore
    length: int | Sequence[int]
    batch_size: int
    device: torch.device
    autocast: Callable | None = None
    hidden_layers: tuple[int, ...] = ()  # also store the hidden states at these layers (none: logits only)
    covering: Mapping[str, Sequence[int]] | None = None  # task -> the teachers with its head (None: every teacher)
    _views: dict = field(default_factory=dict, repr=False)

    def _view(self, task: str, split: str, which: int) -> datasets.Dataset:
        key = (task, split, which)  # teacher `which`: its tokenizer and its max length
        if key not in self._views:
            length = self.length if isinstance(self.length, int) else self.length[which]
            self._views[key] = self.store.tokenized(task, split, self.tokenizers[which], length)
        return self._views[key]

    def label(self, shard: Shard) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """(ids, logits (K, n, C) float32, features) of the shard's rows; features are None, or with
        ``hidden_layers`` (lengths (n,), hidden (sum T, K, S, H) float16). NaN/inf teacher outputs are refused."""
        task = self.store.tasks[shard.task]
        rows = range(shard.start, shard.stop)
        logits, hidden, lengths = [], [], None
        for which, (teacher, tokenizer) in enumerate(zip(self.teachers, self.tokenizers, strict=True)):
            if self.covering is not None and which not in self.covering[shard.task]:
                continue  # no head for this task: the teachers that have one label it
            # Each teacher reads its own view of the same rows: its tokenizer, truncated at its max length.
            view = self._view(shard.task, shard.split, which).select(rows)
            settings = {"batch_size": self.batch_size, "pad_token_id": pad_id(tokenizer),
                        "device": self.device, "autocast": self.autocast}
            if self.hidden_layers:  # one forward gives both
                outputs, lengths, states = label_hidden(teacher.to(self.device), task, view, self.hidden_layers,
                                                        where=f"task '{shard.task}' split '{shard.split}'", **settings)
                hidden.append(states)
            else:
                outputs = predict(teacher.to(self.device), task, view, **settings)
            logits.append(outputs.reshape(len(view), task.num_labels))
        stacked = np.stack(logits).astype(np.float32)
        if not np.isfinite(stacked).all():
            raise DataError(f"teacher outputs for task '{shard.task}' split '{shard.split}' contain NaN/inf; "
                            "check the teacher (a diverged run?) before distilling from it")
        ids = self.store.examples(shard.task, shard.split).select(rows)["id"]
        # (sum T, K, S, H) float16: every teacher's layers side by side for each token
        features = (lengths, np.stack(hidden, axis=1)) if self.hidden_layers else None
        return np.asarray([str(i) for i in ids], dtype=np.str_), stacked, features


def generate_shards(labeler: ShardLabeler, partial: Path, plan: list[Shard], rank: int = 0,
                    world: int = 1, progress: bool = True) -> list[int]:
    """Label this process's missing shards (``index % world == rank``); returns the indices it labelled (a bar
    when there are several, unless ``progress`` is off).

    Each shard file is written atomically, so it exists only once complete; shards on disk are skipped.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    todo = [s for s in plan if s.index % world == rank and not (partial / s.file_name).is_file()]
    done = []
    for shard in progress_bar(todo, desc="soft-target shards", disable=len(todo) < 2 or bars_disabled(progress),
                      dynamic_ncols=True):
        ids, logits, features = labeler.label(shard)
        raise_if_interrupted()  # a Ctrl-C that torch swallowed while this shard was labelled: never keep the shard
        write_shard(partial, shard, ids, logits, features)
        done.append(shard.index)
    return done

