"""`train_model`: one run of the training loop from a config: data, model, objective, optional signals.

A teacher run (MT-DNN) trains on gold labels; a distillation run adds a teacher-signal store and an
objective with soft terms. Both validate every input before the output folder is touched.

Feature terms read the teacher's features from online teachers (`online_teachers`) when the run has any, else from
a store that holds them (`signals`, built with `soft-targets --hidden-layers`); either way the batch carries the
same ``teacher_features``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from multidistill.config import TeacherRunConfig, TrainConfig, load_config, revalidated
from multidistill.data.collate import pad_id
from multidistill.data.prepare import prepare_data, resolve_tasks
from multidistill.data.roots import recorded_data_root
from multidistill.errors import ConfigError
from multidistill.evaluation.baseline import store_baselines
from multidistill.evaluation.evaluate import evaluate
from multidistill.evaluation.thresholds import KEY as THRESHOLDS_KEY
from multidistill.evaluation.thresholds import by_label, choose_for, describe, save_thresholds, saved_form
from multidistill.export.card import card_text
from multidistill.export.card_record import card_or_warning, model_card_record, write_model_card
from multidistill.models.backbone import load_tokenizer
from multidistill.models.build import build_model
from multidistill.models.general import ENCODER_DIR, export_general_encoder, is_general_run
from multidistill.models.multitask import read_model_config
from multidistill.teachers.columns import example_weights_enrich
from multidistill.teachers.feature_store import check_tokenization
from multidistill.teachers.fingerprint import weights_fingerprint
from multidistill.teachers.online import OnlineSignals
from multidistill.teachers.store import open_signal_store
from multidistill.teachers.stored import StoredSignals
from multidistill.training.device import make_accelerator, process_state, refuse_sharded_launch
from multidistill.training.loop import BEST_MODEL, CHECKPOINTS, LoopState, TrainResult, check_one_step, train
from multidistill.training.objective import (
    TEACHER_LOGIT_INPUTS,
    WeightedObjective,
    check_domain_branch,
    reads_inputs,
    tasks_reading_labels,
    unused_type_lists,
)
from multidistill.training.run_dir import claim_output_dir, save_config
from multidistill.training.run_settings import check_resume, run_settings
from multidistill.utils.atomic import atomic_dir, write_json
from multidistill.utils.command import record_command
from multidistill.utils.entry import api_call
from multidistill.utils.hashing import hash_tokenizer


def subset_seed(config: TeacherRunConfig) -> int:
    """The seed that picks a capped training subset (shared by ensemble members and their students)."""
    return config.data.subset_seed if config.data.subset_seed is not None else config.train.seed


def make_evaluator(eval_sets: dict, tasks: dict, batch_size: int, pad_token_id: int):
    def evaluate_fn(model: torch.nn.Module, accelerator: Accelerator):
        return evaluate(model, tasks, eval_sets, batch_size=batch_size, pad_token_id=pad_token_id,
                        device=accelerator.device, autocast=accelerator.autocast)

    return evaluate_fn


def open_online_teachers(config: TeacherRunConfig, data, tokenizer) -> OnlineSignals | None:
    """The run's online teachers, loaded (frozen) before the objective, whose feature terms need their sizes.

    They give logits only when the objective reads teacher logits and no store does.
    """
    if not config.online_teachers:
        return None
    logits = config.signals is None and reads_inputs(config.objective, data.tasks, TEACHER_LOGIT_INPUTS)
    # Loading draws random numbers (a model's heads are initialised before its weights are read); outside the run's
    # stream, so that the objective's projections start the same whether the teacher is online or stored.
    with torch.random.fork_rng(devices=[]):
        return OnlineSignals(config.online_teachers, tokenizer, data.tasks, logits=logits)


def objective_dims(config: TeacherRunConfig, data, model, online: OnlineSignals | None) -> dict | None:
    """{"student": ModelDims, "teacher": ModelDims} from the models' configs, when a feature term needs them."""
    if not reads_inputs(config.objective, data.tasks, frozenset({"teacher_features"})):
        return None
    stored = open_signal_store(config.signals).features if online is None and config.signals else None
    if online is None and stored is None:
        raise ConfigError("key 'online_teachers': the objective has feature losses, which compare the student with "
                          "a teacher's features; list the teacher there (run on each batch), or give key 'signals' "
                          "a store that holds its hidden states (`multidistill soft-targets --hidden-layers ...`)")
    if not hasattr(model, "model_dims"):
        raise ConfigError(f"feature losses need a student that exposes its features; {type(model).__name__} does not")
    return {"student": model.model_dims(), "teacher": online.dims() if online is not None else stored.dims}


def attach_signals(config: TeacherRunConfig, data, objective: WeightedObjective, tokenizer=None,
                   online: OnlineSignals | None = None) -> StoredSignals | OnlineSignals | Callable | None:
    """Open and check the run's signal store and/or online teachers; None when the objective needs no teacher.

    With both, the store gives the logits and the online teachers the features, in one ``enrich``; without
    online teachers a store that holds hidden states gives the features too, checked against the student's
    tokenisation (``tokenizer``).
    """
    if config.online_teachers and online is None:
        online = open_online_teachers(config, data, tokenizer)
    if online is not None:
        online.request(objective.teacher_want).check_domain_branches(data.tasks)
    stored = open_stored_signals(config, data) if config.signals is not None else None
    if stored is not None and online is None and any(objective.teacher_want.values()):
        stored.request(objective.teacher_want)  # refuses features or layers it does not hold
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(student_tokenizer_name(config))
        check_tokenization(stored.features, stored.store.root, hash_tokenizer(tokenizer),
                           student_tokenizer_name(config), config.model.max_seq_length)
    # Never silently: teachers given that no loss term reads (the run is the same without them).
    features_from_store = online is None and objective.needs_teacher_features
    reports = process_state().is_main_process  # under torchrun, one process prints the notes
    if reports and stored is not None and not objective.needs_teacher_logits and not features_from_store:
        print(f"note: key 'signals': no loss term reads teacher signals, so the store {config.signals} is not used "
              "(add e.g. soft_ce, or drop it)")
    if reports and online is not None and not objective.needs_teacher_features and (
            stored is not None or not objective.needs_teacher_logits):
        print("note: key 'online_teachers': no loss term reads their outputs (features"
              f"{'; the store gives the logits' if stored is not None else ' or logits'}), so they are not used")
    if stored is None and online is None:
        if objective.needs_teacher:
            raise ConfigError("key 'signals': the objective uses teacher signals; point it at a store "
                              "made by `multidistill soft-targets`")
        return None
    if stored is not None and online is not None:
        return lambda batch: online(stored(batch))
    return stored if stored is not None else online


def has_accelerator() -> bool:
    """A device fp16 autocast runs on (CUDA, XPU or Apple's MPS); on the CPU accelerate ignores fp16."""
    xpu = getattr(torch, "xpu", None)
    return (torch.cuda.is_available() or bool(xpu and xpu.is_available())
            or torch.backends.mps.is_available())


def refuse_fp16_without_gpu(train: TrainConfig, key: str) -> None:
    """fp16 where no GPU is here is refused by ``key``: accelerate would train in fp32 without a word."""
    if train.fp16 and not has_accelerator():
        raise ConfigError(f"key '{key}.fp16': fp16 autocast needs a GPU, and there is none here, so it would train "
                          "in fp32; drop it, or use bf16")


def student_tokenizer_name(config: TeacherRunConfig) -> str:
    """Where the student's tokenizer comes from (model.tokenizer, else model.name_or_path)."""
    return config.model.tokenizer or config.model.name_or_path


def open_stored_signals(config: TeacherRunConfig, data) -> StoredSignals:
    """The signal store named by ``config.signals``, checked against this run's tasks and training rows."""
    store = open_signal_store(config.signals)
    for name, task in data.tasks.items():
        spec = store.manifest["tasks"].get(name)
        if spec is None:
            raise ConfigError(f"key 'signals': store {config.signals} has no signals for task '{name}' "
                              f"(it has {sorted(store.manifest['tasks'])})")
        if spec["num_labels"] != task.num_labels:
            raise ConfigError(f"task '{name}': the student has {task.num_labels} outputs but the teacher signals "
                              f"have {spec['num_labels']}")
    signals = StoredSignals(store, list(data.tasks))
    made_from = store.manifest.get("data", {})  # each split's data fingerprint (stores made since this check)
    for name, rows in signals.datasets.items():
        if len(rows) != len(data.train_sets[name]):
            raise ConfigError(f"task '{name}': the store holds {len(rows)} training rows "
                              f"but the run has {len(data.train_sets[name])}; use the same max_examples and seed")
        recorded = made_from.get(f"{name}/train")
        if recorded is not None and recorded != data.store.data_fingerprint(name, "train"):
            stored, now = (store.manifest.get("data_parts") or {}).get(f"{name}/train"), \
                data.store.data_parts(name, "train")
            said = _differing_parts(stored, now) if isinstance(stored, dict) else ""
            raise ConfigError(f"task '{name}': store {config.signals} was made from other training data ("
                              + (said or "file contents, task spec, or subset size and seed differ from this run's")
                              + "); rebuild it with `multidistill soft-targets` on this data" + _subset_flags(now))
    return signals


def _differing_parts(stored: dict, now: dict) -> str:
    """What differs between a store's recorded data parts (`ExampleStore.data_parts`) and this run's, in words."""
    def rows(limit) -> str:
        return f"up to {limit} rows" if limit is not None else "every row"

    said = []
    if stored.get("limit") != now["limit"]:
        said.append(f"the store kept {rows(stored.get('limit'))} of the training split, this run keeps "
                    f"{rows(now['limit'])} (max_examples_per_task, or the task's own max_examples)")
    elif stored.get("seed") != now["seed"]:
        said.append(f"the store's rows were drawn with seed {stored.get('seed')}, this run's with {now['seed']}")
    if stored.get("content") != now["content"]:
        said.append("the data files' contents differ")
    if stored.get("spec") != now["spec"]:
        said.append("the task spec differs (labels, columns, files or type)")
    if stored.get("rest") != now["rest"]:
        said.append("the domain selection or the carved split differs")
    return "; ".join(said)


def _subset_flags(parts: dict) -> str:
    """The soft-targets options that draw this run's training rows, when a cap draws them."""
    if parts["limit"] is None:
        return ""
    return f" (for this task: --max-examples-per-task {parts['limit']} --seed {parts['seed']})"


RunConfigSource = TeacherRunConfig | Mapping[str, Any] | str | os.PathLike


def run_config(config: RunConfigSource, overrides: list[str] | str | None = None) -> TeacherRunConfig:
    """``config`` as a checked `TeacherRunConfig` with ``--set``-style ``overrides`` applied: one given is checked
    again (one edited by ``model_copy(update=...)`` never was), a mapping or a YAML file's path is loaded as
    `load_config` does."""
    if isinstance(config, TeacherRunConfig) and overrides is None:
        return revalidated(config)
    return load_config(config, overrides)


def train_model(config: RunConfigSource, overrides: list[str] | str | None = None, *, resume: bool = False,
                overwrite: bool = False, on_step: Callable[[LoopState], None] | None = None,
                progress: bool = True) -> TrainResult:
    """Validate data, model and signals, then train; the best model lands in ``output_dir/model``.

    ``config`` is a `TeacherRunConfig`, a mapping of its keys or a YAML file's path, of either kind (teacher or
    distill; `train_teacher` and `distill` are the same run that first check the kind, as the CLI commands do),
    with ``--set``-style ``overrides`` (a list, or one str for one override) applied as `load_config` does.
    ``on_step`` is called after every optimizer step (and its eval/checkpoint) with the loop state.
    ``progress`` False: no bars, tables or notes.

    The run seeds the process-wide random generators (Python, numpy, torch) with ``train.seed``, so a run
    started from another thread of this process while this one goes is refused (`RunInProgress`); an output
    folder that cannot be written raises `OutputError`.
    """
    with api_call("train_model", progress=progress, exclusive=True):
        return _train_model(run_config(config, overrides), resume=resume, overwrite=overwrite, on_step=on_step)


def _train_model(config: TeacherRunConfig, *, resume: bool, overwrite: bool,
                 on_step: Callable[[LoopState], None] | None) -> TrainResult:
    """`train_model` for a checked config, in its API block."""
    from multidistill.recipes.preflight import check_model_paths  # the recipes import this module

    if resume and overwrite:  # one keeps the run in output_dir, the other replaces it
        raise ConfigError(f"{config.output_dir}: --resume continues the run there and --overwrite replaces it; "
                          "give one of them")
    output_dir = Path(config.output_dir)
    refuse_fp16_without_gpu(config.train, "train")
    set_seed(config.train.seed)
    # Under torchrun / accelerate launch: one per process. Joined first, so a process that then fails on bad input
    # ends the run at once (its peers see the group close) instead of leaving them waiting in the rendezvous.
    refuse_sharded_launch()
    state = process_state()
    check_model_paths(config, references=False)  # a missing model folder said by its key, as a recipe's checks say it
    tasks = resolve_tasks(config.data)
    carved = [task.name for task in tasks if task.test_from_dev is not None]
    if carved and config.data.eval_split == "test":
        raise ConfigError(f"key 'data.eval_split': the test split of {', '.join(carved)} is carved out of dev "
                          "(test_from_dev) so that rows nothing selected on score the models; selecting on it would "
                          "undo that; use eval_split: dev, and score the test rows afterwards (evaluate --split test)")
    tokenizer = load_tokenizer(student_tokenizer_name(config), trust_remote_code=config.model.trust_remote_code)
    with state.main_process_first():  # the first process writes the tokenised caches, the others read them
        data = prepare_data(config.data, tokenizer, config.model.max_seq_length,
                            max_examples_per_task=config.train.max_examples_per_task, seed=subset_seed(config),
                            labelled_train=tasks_reading_labels(config.objective, tasks))
    if is_general_run(data.tasks) and config.train.select == "best_metric":
        raise ConfigError("key 'train.select': every task of this run is unlabelled text, so there are no dev "
                          "metrics for best_metric to compare; use lowest_loss (the loss on a held-out slice of "
                          "the corpus) or last")
    check_one_step(config.train, {name: len(rows) for name, rows in data.train_sets.items()}, state.num_processes)
    model = build_model(config.model, list(data.tasks.values()), tokenizer)
    model.check_max_length(config.model.max_seq_length, "key 'model.max_seq_length'")
    branch = getattr(model, "domain_branch", None)  # model.domain_branch, or the branch model.init_from kept
    check_domain_branch(config.objective, data.tasks.values(), branch.spec.domains if branch else None,
                        "model.domain_branch.domains" if config.model.domain_branch else "model.init_from",
                        architecture=config.model.architecture)
    model.data_root = recorded_data_root(config.data.data_root)  # so evaluate etc. need no --data-root
    online = open_online_teachers(config, data, tokenizer)
    objective = WeightedObjective(data.tasks, config.objective, dims=objective_dims(config, data, model, online))
    enrich = example_weights_enrich(config, data, attach_signals(config, data, objective, tokenizer, online))
    settings = run_settings(config, {name: data.store.data_fingerprint(name, "train") for name in data.tasks},
                            signals=open_signal_store(config.signals).fingerprint if config.signals else None,
                            online_teachers=[weights_fingerprint(name) for name in config.online_teachers],
                            unused=tuple(f"objective.{name}" for name in unused_type_lists(data.tasks.values())))
    if resume:  # the checkpoint must come from a run with these settings (else refused, naming what changed)
        for change in check_resume(output_dir / CHECKPOINTS, settings):
            if state.is_main_process:
                print(f"resume: {change} (safe to change)")
    # Everything above can fail on bad input; only now is the output folder touched. The main process holds
    # the folder (lock, marker, an --overwrite's old run aside) until the run is over.
    claim = claim_output_dir(output_dir, resume=resume, overwrite=overwrite) if state.is_main_process \
        else contextlib.nullcontext()
    with claim:
        if state.is_main_process:
            save_config(config, output_dir / "config.yaml")
            if not resume:  # a resume adds itself once it has trained: a refused --resume changes no file
                record_command(output_dir, resume=False)
        state.wait_for_everyone()
        result = _train_claimed(config, output_dir, data, model, objective, enrich, online, tokenizer,
                                resume=resume, on_step=on_step, settings=settings)
    return result


def _train_claimed(config: TeacherRunConfig, output_dir: Path, data, model, objective: WeightedObjective, enrich,
                   online, tokenizer, *, resume: bool, on_step: Callable[[LoopState], None] | None,
                   settings: dict) -> TrainResult:
    """The training itself, in a claimed output folder; writes metrics.json beside the model."""
    accelerator = make_accelerator(config.train)
    if online is not None:  # on the training device, under the loop's autocast; outside DDP and checkpoints
        online.to(accelerator.device)
        online.autocast = accelerator.autocast
    pad = pad_id(tokenizer)
    result = train(
        model, objective, data.tasks, data.train_sets,
        make_evaluator(data.eval_sets, data.tasks, config.train.eval_batch_size, pad), config.train,
        output_dir, pad_token_id=pad, resume=resume, accelerator=accelerator,
        save_model_fn=lambda m, path: save_kept_model(m, path, tokenizer), enrich=enrich, on_step=on_step,
        run_settings=settings,
    )
    if accelerator.is_main_process:
        kept = output_dir / BEST_MODEL
        if kept.is_dir():  # first: metrics.json marks a run that ended, so nothing that can fail comes after it
            set_thresholds(config.train, kept, data, pad, accelerator)
        if resume:
            record_command(output_dir, resume=True)
        write_json(output_dir / "metrics.json", {
            **result.best_metrics, "best_step": result.best_step, "train_seconds": result.train_seconds,
            "examples_per_second": result.examples_per_second,
            "train_examples": {t: len(d) for t, d in data.train_sets.items()},
            "trivial_baselines": trivial_baselines(data, config.data.eval_split),
            "teacher_weights": teacher_weights(config, settings),
        })
        if kept.is_dir():  # its card quotes metrics.json and the thresholds, so it is written after them
            card_or_warning(kept, write_model_card, kept, kept, "multidistill")
        if is_general_run(data.tasks):
            export_general_student(config, output_dir, tokenizer)
    return result


def set_thresholds(train: TrainConfig, kept: Path, data, pad: int, accelerator: Accelerator) -> None:
    """``train.thresholds`` for the kept model: per_label chooses each multilabel label's threshold on the eval rows
    and saves them in the folder (`evaluation.thresholds`); fixed leaves none (and removes any a resumed run with
    per_label saved)."""
    chosen: dict[str, tuple[float, ...]] = {}
    if train.thresholds == "per_label" and any(task.is_multilabel and name in data.eval_sets
                                               for name, task in data.tasks.items()):
        from multidistill.models.loading import load_model

        chosen = choose_for(load_model(kept).to(accelerator.device), data.tasks, data.eval_sets,
                            batch_size=train.eval_batch_size, pad_token_id=pad, device=accelerator.device,
                            autocast=accelerator.autocast)
        for name, values in chosen.items():
            accelerator.print(f"{name}: decision thresholds chosen on the eval rows, saved with the model: "
                              f"{describe(by_label(data.tasks[name], values))}")
    elif train.thresholds == "per_label":
        from multidistill.recipes.stages import print_note  # the recipes import this module

        print_note("key 'train.thresholds': per_label chooses multilabel tasks' thresholds, and this run scores "
                   "none; every label stays at 0.5")
    # compared with what the file holds as it is (not parsed: fixed must be able to clear a value it cannot read)
    if read_model_config(kept).get(THRESHOLDS_KEY) != saved_form(data.tasks, chosen):
        save_thresholds(kept, data.tasks, chosen)


def save_kept_model(model: torch.nn.Module, folder: Path, tokenizer) -> None:
    """The loop's best-model save, with a card that says the run has not ended, in one atomic write: a run killed
    at any point leaves a described folder (the card written at the end, with the final scores, replaces it)."""
    with atomic_dir(folder) as tmp:
        model.write_to(tmp, tokenizer)
        card_or_warning(folder, write_model_card, tmp, tmp, "multidistill", in_progress=True, saved_as=folder)


def trivial_baselines(data, eval_split: str) -> dict[str, dict]:
    """Each scored task's constant predictor (`store_baselines`: on the training rows this run saw, scored on its
    eval rows), for metrics.json; a text task is never scored."""
    return {name: {"predictor": baseline.predictor, "main": baseline.main, "metrics": baseline.metrics}
            for name, baseline in store_baselines(data.store, data.eval_sets, eval_split).items()}


def teacher_weights(config: TeacherRunConfig, settings: dict) -> dict[str, str]:
    """The weights this run was distilled from, per teacher folder (as the store's manifest or the config names
    it): a card shows a teacher's scores only while its folder still holds them. Hub teachers have none."""
    recorded: dict[str, str | None] = {}
    if config.signals is not None:
        manifest = open_signal_store(config.signals).manifest
        weights = manifest.get("teacher_weights") or []
        if len(weights) == len(manifest["teachers"]):  # stores made before the record (or merged ones) have none
            recorded.update(zip(manifest["teachers"], weights, strict=True))
    recorded.update(zip(config.online_teachers, settings.get("online_teachers") or [], strict=False))
    return {path: fingerprint for path, fingerprint in recorded.items() if fingerprint is not None}


def export_general_student(config: TeacherRunConfig, output_dir: Path, tokenizer) -> Path:
    """The kept model of a general-distillation run (text tasks only) as a plain HF encoder folder
    (``output_dir/encoder``), with what made it; later runs fine-tune it through model.name_or_path."""
    from multidistill.models.loading import load_model

    model = load_model(output_dir / BEST_MODEL)
    metadata = {"teachers": list(config.online_teachers), "corpus": config.data.task_names,
                "student": config.model.model_dump(mode="json", exclude_defaults=True),
                "objective": config.objective.model_dump(mode="json", exclude_defaults=True),
                "source_run": str(output_dir.resolve())}
    record = card_or_warning(output_dir / ENCODER_DIR, model_card_record, output_dir / BEST_MODEL, "encoder")
    card = card_or_warning(output_dir / ENCODER_DIR, card_text, record) if record is not None else None
    return export_general_encoder(model, output_dir / ENCODER_DIR, tokenizer, metadata, card=card)
