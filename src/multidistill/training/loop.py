"""The one training loop. Every recipe (teacher training, distillation, fine-tuning) runs through it.

What varies between methods comes in as plain objects: the batches (a `MultiTaskBatchPlanner`
over tokenised datasets, plus an optional `enrich` that adds teacher signals to a batch) and
the `objective` (an `nn.Module` that turns a model and a batch into a loss). The loop itself
reads top to bottom: set-up, resume, step (forward, backward, clip, optimizer, schedule), log,
evaluate, keep the best model, checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from multidistill.config import TrainConfig
from multidistill.data.batches import row_lengths
from multidistill.data.collate import collate, to_device
from multidistill.data.sampler import MultiTaskBatchPlanner
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, TrainingDiverged
from multidistill.evaluation.evaluate import EvalResult
from multidistill.training.checkpoint import PREFIX as CHECKPOINT_PREFIX
from multidistill.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from multidistill.training.device import make_accelerator
from multidistill.training.schedule import epoch_steps, make_scheduler, planned_steps
from multidistill.training.selection import holdout_loss, holdout_split
from multidistill.utils.atomic import json_safe, write_json
from multidistill.utils.interrupt import add_note, deferred_interrupts, raise_if_interrupted
from multidistill.utils.progress import in_terminal, progress_bar
from multidistill.utils.quiet import bars_disabled

CHECKPOINTS = "checkpoints"
BEST_MODEL = "model"


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint so a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of this process's share of the epoch plan already consumed
    examples: int = 0
    train_seconds: float = 0.0
    best_score: float = -math.inf
    best_step: int = -1
    best_metrics: dict = field(default_factory=dict)
    best_loss: float = math.inf  # select: lowest_loss, the held-out loss of the kept model
    history: list[dict] = field(default_factory=list)
    skipped_steps: int = 0  # train.on_nonfinite: skip, steps whose update was dropped (NaN/inf loss or gradient)
    processes: int | None = None  # the run's process count; position counts one process's share (None: older)


def _state_from_json(saved: dict) -> LoopState:
    """A LoopState read back from a checkpoint, whose JSON holds null for the infinite "nothing yet" scores
    (checkpoints are written with `json_safe`: bare -Infinity is not JSON)."""
    state = LoopState(**saved)
    if state.best_score is None:
        state.best_score = -math.inf
    if state.best_loss is None:
        state.best_loss = math.inf
    return state


@dataclass
class TrainResult:
    """A finished training run (also written to ``output_dir/train_summary.json``): the kept model's dev average
    (``best_score``), step and per-task metrics (``best_metrics``: tasks, main, average), the steps trained, the
    training time without evaluation and its examples per second, where the kept model is, how many steps a
    non-finite loss skipped, and with ``select: lowest_loss`` the kept model's held-out loss."""

    best_score: float
    best_step: int
    best_metrics: dict
    steps: int
    train_seconds: float
    examples_per_second: float
    model_dir: Path
    skipped_steps: int = 0
    holdout_loss: float | None = None  # select: lowest_loss, the kept model's loss on the held-out slice


class _Trainables(nn.Module):
    """Model and objective under one root, so both are optimised and checkpointed together."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict):
        # The objective runs inside forward so DDP sees the whole computation.
        return self.objective(self.model, batch)


def _param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        # Biases and normalisation weights are not decayed (BERT practice).
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _stop_note(step: int, total_steps: int, checkpoint_root: Path, every: int) -> str:
    """Where a stopped run was, and where a resumed one will start (read from disk: the checkpoints there)."""
    found = list_checkpoints(checkpoint_root)
    where = f"training stopped at step {step} of {total_steps}; "
    if not found:
        return where + (f"no checkpoint yet (one is saved every {every} steps and at each epoch end): resuming "
                        "starts this training over from step 0")
    last = int(found[-1].name.removeprefix(CHECKPOINT_PREFIX))
    return where + f"last checkpoint: step {last} ({found[-1]}); resuming continues from there"


def check_position(state: LoopState, folder: Path, *, total_steps: int, epochs: float, batches: int,
                   accum: int, processes: int = 1) -> None:
    """Refuse a checkpoint whose position lies outside this run's plan (``batches`` per epoch and process):
    the loop would otherwise never reach its next step. One written by another number of processes is refused
    too: its position is one process's share of the epoch, so another count would repeat or skip batches."""
    if state.processes is not None and state.processes != processes:
        raise ConfigError(f"checkpoint {folder} was written by a run on {state.processes} process(es), this one has "
                          f"{processes}: its position counts one process's share of each epoch, so resuming here "
                          "would repeat or skip training batches and shift the learning-rate schedule; resume with "
                          f"{state.processes} process(es) in total (over all machines), or start the run again with "
                          "--overwrite")
    position_ok = state.position == 0 or (state.position > 0 and state.position + accum <= batches)
    if 0 <= state.step <= total_steps and 0 <= state.epoch <= math.ceil(epochs) and position_ok:
        return
    raise ConfigError(f"checkpoint {folder}: its position (step {state.step}, epoch {state.epoch}, batch "
                      f"{state.position}) lies outside this run's plan ({total_steps} steps, {batches} batches per "
                      f"epoch, {accum} per step): the run was made with other settings (train.batch_size, "
                      "train.epochs, train.min_steps, data); resume with those, or start the run again with "
                      "--overwrite")


def _diverged(what: str, step: int, task: str) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged: {what} at step {step} (task {task}); no update was applied. "
                            "Lower train.lr, check the data, or set train.on_nonfinite: skip to drop such steps")


def _too_little_data(config: TrainConfig, batches: int, world: int) -> ConfigError:
    return ConfigError(f"key 'train.grad_accum_steps': too little data for one optimizer step: {batches} batches "
                       f"of train.batch_size {config.batch_size} for {world} process(es) x {config.grad_accum_steps} "
                       "accumulation steps; lower grad_accum_steps or batch_size")


def check_one_step(config: TrainConfig, counts: dict[str, int], world: int) -> None:
    """Refuse, before a run folder is made, settings under which an epoch of ``counts`` training rows per task
    (before the lowest_loss hold-out) makes no optimizer step; `train` plans the same batches."""
    sizes = counts
    if config.select == "lowest_loss":
        sizes = {t: len(rows) for t, rows in holdout_split(counts, config.holdout_fraction, config.seed)[0].items()}
    planner = MultiTaskBatchPlanner(sizes, config.batch_size, config.sampling, config.temperature_tau, config.seed)
    if epoch_steps(config, len(planner) // world) == 0:
        raise _too_little_data(config, len(planner), world)


def train(
    model: nn.Module,
    objective: nn.Module,
    tasks: dict[str, Task],
    train_sets: dict,
    evaluate_fn: Callable[[nn.Module, Accelerator], EvalResult],
    config: TrainConfig,
    output_dir: str | Path,
    *,
    pad_token_id: int,
    save_model_fn: Callable[[nn.Module, Path], None],
    enrich: Callable[[dict], dict] | None = None,
    resume: bool = False,
    accelerator: Accelerator | None = None,
    on_step: Callable[[LoopState], None] | None = None,
    run_settings: dict | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_sets`` (task -> tokenised dataset) until ``config.epochs`` are done.

    The model chosen by ``config.select`` (default: the best by ``evaluate_fn``'s average score) is written
    with ``save_model_fn`` to ``output_dir/model``; resumable checkpoints go to ``output_dir/checkpoints``,
    each recording ``run_settings`` (`multidistill.training.run_settings`; `train_model` checks them on resume).
    """
    output_dir = Path(output_dir)
    accelerator = accelerator or make_accelerator(config)
    set_seed(config.seed)
    # select: lowest_loss holds out a slice of each task's training rows; the planner then plans over the rest
    # (train_rows maps its indices back to dataset rows). Otherwise every row trains, indexed as before.
    train_rows, held_rows = None, None
    if config.select == "lowest_loss":
        train_rows, held_rows = holdout_split({t: len(d) for t, d in train_sets.items()}, config.holdout_fraction,
                                              config.seed)
    sizes = {t: len(train_rows[t]) if train_rows else len(d) for t, d in train_sets.items()}
    lengths = None
    if config.group_by_length:
        lengths = {t: row_lengths(d) for t, d in train_sets.items()}
        if train_rows:
            lengths = {t: lengths[t][train_rows[t]] for t in lengths}
    planner = MultiTaskBatchPlanner(sizes, config.batch_size,
                                    config.sampling, config.temperature_tau, config.seed, lengths=lengths)
    world, rank = accelerator.num_processes, accelerator.process_index
    # Each process takes every world-th batch of the shared plan; all get the same count.
    local_batches = len(planner) // world
    steps_per_epoch = epoch_steps(config, local_batches)
    if steps_per_epoch == 0:
        raise _too_little_data(config, len(planner), world)
    total_steps = planned_steps(config, steps_per_epoch)  # train.min_steps may add passes over small data

    trainables = _Trainables(model, objective)
    # The fused kernel (CPU and GPU) updates each tensor in one pass: with short sentences the AdamW step over a
    # BERT vocabulary's embeddings is a third of a step (docs/benchmarks.md, issue 16 profile).
    optimizer = _adamw(_param_groups(trainables, config.weight_decay), config.lr)
    scheduler = make_scheduler(optimizer, config, total_steps)
    trainables, optimizer = accelerator.prepare(trainables, optimizer)
    raw = accelerator.unwrap_model(trainables)

    state = LoopState()
    saved_window = None
    checkpoint_root = output_dir / CHECKPOINTS
    if resume and (found := latest_checkpoint(checkpoint_root)) is not None:
        saved, saved_window = load_checkpoint(found, raw, optimizer, scheduler, process=rank)
        try:
            state = _state_from_json(saved)
        except TypeError as exc:
            raise ConfigError(f"checkpoint {found}: loop_state.json is not a loop state ({exc}); delete the "
                              "checkpoint to resume from an older one") from exc
        check_position(state, found, total_steps=total_steps, epochs=total_steps / steps_per_epoch,
                       batches=local_batches, accum=config.grad_accum_steps, processes=world)
        accelerator.print(f"resumed from {found} (step {state.step}/{total_steps})")
    elif resume:
        accelerator.print(f"no checkpoint in {checkpoint_root} (a new run, or one cut before its first checkpoint): "
                          f"training starts from step 0 of {total_steps}")
    state.processes = world

    # Every call into the writer defers Ctrl-C/SIGTERM to its end: an interrupt inside one can stall its thread.
    with deferred_interrupts():
        # A resumed run purges what the cut run logged after its checkpoint (those steps are trained again).
        # (A resume without a checkpoint starts at step 0: everything the cut run logged goes.)
        writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=state.step + 1 if resume else None) \
            if accelerator.is_main_process else None
    progress = progress_bar(total=total_steps, initial=state.step, desc="train", dynamic_ncols=True,
                    disable=not accelerator.is_main_process or bars_disabled(True))  # $TQDM_DISABLE too

    def run_eval() -> None:
        result = evaluate_fn(raw.model, accelerator)
        if result.main and not math.isfinite(result.average):  # weights gone to inf/NaN: never keep or log them
            raise _diverged(f"evaluation average {result.average}", state.step, ", ".join(map(repr, result.main)))
        record = {"step": state.step, "epoch": state.epoch, **result.to_dict()}
        state.history.append(record)
        if writer is not None:
            with deferred_interrupts():
                if result.main:  # nothing scored (general distillation): no average, not a NaN point
                    writer.add_scalar("eval/average", result.average, state.step)
                for task_name, score in result.main.items():
                    writer.add_scalar(f"eval/{task_name}", score, state.step)
        if config.select == "lowest_loss":
            loss = holdout_loss(raw, tasks, train_sets, held_rows, config.eval_batch_size, pad_token_id,
                                accelerator.device, accelerator.autocast, enrich)
            record["holdout_loss"] = loss
            if writer is not None:
                with deferred_interrupts():
                    writer.add_scalar("eval/holdout_loss", loss, state.step)
            better = loss < state.best_loss
        else:
            better = config.select == "last" or result.average > state.best_score
        if better:
            state.best_score, state.best_step, state.best_metrics = result.average, state.step, result.to_dict()
            state.best_loss = record.get("holdout_loss", state.best_loss)
            raise_if_interrupted()  # never keep a model scored while library code swallowed a Ctrl-C
            if accelerator.is_main_process:
                save_model_fn(raw.model, output_dir / BEST_MODEL)
        if accelerator.is_main_process:  # tqdm.write prints whatever `disable` says: one process reports
            # Nothing scored (general distillation: no labelled dev data): no average to print, only the loss.
            parts = [f"eval average {result.average:.4f}", *(f"{t}={s:.4f}" for t, s in result.main.items())] \
                if result.main else []
            if "holdout_loss" in record:
                parts.append(f"holdout loss {record['holdout_loss']:.4f}")
            if parts:
                progress.write(f"step {state.step}: " + " ".join(parts))

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        # Every process's random state (dropout masks differ per process) and open log window (what it summed since
        # the last logged step), so a resume continues exactly, its loss curve included.
        # Plain Python values: the checkpoint is read back with torch.load(weights_only=True), which refuses numpy's.
        window = {"loss": float(window_loss), "steps": int(window_steps), "examples": int(window_examples),
                  "terms": {str(name): [float(v) for v in values] for name, values in window_terms.items()},
                  "elapsed": float(time.perf_counter() - window_start)}
        mine = [{"rng": rng_state(), "window": window}]
        every = gather_object(mine) if world > 1 else mine
        if accelerator.is_main_process:
            save_checkpoint(checkpoint_root, state.step, raw, optimizer, scheduler, json_safe(asdict(state)),
                            keep=config.keep_checkpoints, run_settings=run_settings,
                            rng_states=[p["rng"] for p in every], windows=[p["window"] for p in every])

    last_eval_step = state.history[-1]["step"] if state.history else -1
    window_start, window_examples, window_loss, window_steps = time.perf_counter(), 0, 0.0, 0
    window_terms: dict[str, list[float]] = {}  # each loss term's values in the log window, by name
    if saved_window:  # the window the checkpoint was written in: logged when it closes, as in an uncut run
        window_loss, window_steps = float(saved_window["loss"]), int(saved_window["steps"])
        window_examples, window_terms = int(saved_window["examples"]), dict(saved_window["terms"])
        window_start -= float(saved_window["elapsed"])
    try:
        while state.step < total_steps:
            plan = planner.epoch(state.epoch)[rank::world][:local_batches]
            while state.position + config.grad_accum_steps <= len(plan) and state.step < total_steps:
                trainables.train()
                if hasattr(objective, "set_progress"):
                    objective.set_progress(state.step / total_steps)
                micro_batches = plan[state.position:state.position + config.grad_accum_steps]
                step_loss, step_terms, bad = 0.0, [], None  # bad: (what, task) of a non-finite loss
                for i, planned in enumerate(micro_batches):
                    task = tasks[planned.task]
                    indices = train_rows[planned.task][planned.indices].tolist() if train_rows else planned.indices
                    batch = collate(task, train_sets[planned.task][indices], pad_token_id)
                    batch["rows"] = indices  # row-aligned with the example store and teacher signals
                    if enrich is not None:
                        batch = enrich(batch)
                    batch = to_device(batch, accelerator.device)
                    # Only the last micro-batch synchronises gradients across processes.
                    sync = i == len(micro_batches) - 1
                    no_sync = contextlib.nullcontext() if sync else accelerator.no_sync(trainables)
                    with no_sync, accelerator.autocast():
                        out = trainables(batch)
                        accelerator.backward(out.loss / len(micro_batches))
                    loss_value = float(out.loss.detach())
                    if bad is None and not math.isfinite(loss_value):
                        bad = (f"loss {loss_value}", repr(planned.task))
                    step_loss += loss_value / len(micro_batches)
                    step_terms.extend(getattr(out, "terms", {}).items())
                    window_examples += len(batch["ids"])
                grad_norm = accelerator.clip_grad_norm_(trainables.parameters(), config.max_grad_norm)
                # The gradient norm is the same on every process (gradients are all-reduced), so all agree on
                # a skip; a loss is seen by its own process only, so it decides alone only in a 1-process run.
                # fp16's loss scaler handles inf gradients itself (it skips and rescales).
                if bad is not None and world > 1:
                    bad = None
                if bad is None and not config.fp16 and grad_norm is not None and not math.isfinite(float(grad_norm)):
                    bad = (f"gradient norm {float(grad_norm)}",
                           ", ".join(sorted({repr(mb.task) for mb in micro_batches})))
                if bad is not None and config.on_nonfinite == "stop":
                    optimizer.zero_grad(set_to_none=True)
                    raise _diverged(bad[0], state.step + 1, bad[1])
                if bad is None:
                    optimizer.step()
                    window_loss += step_loss
                    window_steps += 1
                    for name, value in step_terms:
                        window_terms.setdefault(name, []).append(value)
                else:  # on_nonfinite: skip: drop this step's update, keep the schedule and the batch plan going
                    state.skipped_steps += 1
                    if accelerator.is_main_process:
                        progress.write(f"step {state.step + 1}: {bad[0]} (task {bad[1]}); update skipped "
                                       f"({state.skipped_steps} so far)")
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.position += len(micro_batches)
                progress.update(1)
                raise_if_interrupted()  # a Ctrl-C that library code swallowed in this step stops the run here

                epoch_done = state.position + config.grad_accum_steps > len(plan)
                if state.step % config.log_every_steps == 0 or state.step == total_steps:
                    elapsed = time.perf_counter() - window_start
                    loss = None  # the mean over the steps the window holds (skipped steps add nothing)
                    rate = window_examples * world / max(elapsed, 1e-9)
                    state.train_seconds += elapsed
                    state.examples += window_examples * world
                    # A term's value is its mean over the micro-batches (of the tasks that have it) in the window.
                    term_means = {name: sum(values) / len(values) for name, values in window_terms.items()}
                    if world > 1:  # each process saw its own batches: log the loss of all of them (terms: this one's)
                        window_loss = float(accelerator.reduce(torch.tensor(window_loss, device=accelerator.device),
                                                               "mean"))
                    if window_steps:  # a window of skipped steps only has no loss to show
                        loss = window_loss / window_steps
                    progress.set_postfix(**({"loss": f"{loss:.4f}"} if loss is not None else {}),
                                         **{name: f"{value:.4f}" for name, value in term_means.items()},
                                         ex_s=f"{rate:.1f}", refresh=in_terminal())  # a log: lines by time
                    if writer is not None:
                        with deferred_interrupts():
                            if loss is not None:
                                writer.add_scalar("train/loss", loss, state.step)
                            writer.add_scalar("train/lr", scheduler.get_last_lr()[0], state.step)
                            writer.add_scalar("train/grad_norm", float(grad_norm), state.step)
                            writer.add_scalar("train/examples_per_second", rate, state.step)
                            for name, value in term_means.items():
                                writer.add_scalar(f"train/loss/{name}", value, state.step)
                    window_start, window_examples, window_loss, window_steps = time.perf_counter(), 0, 0.0, 0
                    window_terms = {}

                if epoch_done:
                    state.epoch, state.position = state.epoch + 1, 0
                due_eval = config.eval_every_steps and state.step % config.eval_every_steps == 0
                if (epoch_done and config.eval_each_epoch) or due_eval or state.step == total_steps:
                    # Time spent evaluating is not training time.
                    eval_start = time.perf_counter()
                    run_eval()
                    last_eval_step = state.step
                    window_start += time.perf_counter() - eval_start
                if epoch_done or state.step % config.checkpoint_every_steps == 0 or state.step == total_steps:
                    raise_if_interrupted()  # nor checkpoint what ran after one (e.g. an evaluation)
                    checkpoint()
                if on_step is not None:
                    on_step(state)
                if epoch_done:
                    break

    except BaseException as exc:  # Ctrl-C, SIGTERM or an error: say where training stopped
        progress.close()  # ends the bar's line, so the error the CLI prints starts a line of its own
        if writer is not None:  # flush what was logged and stop its thread before the caller cleans the folder up
            with deferred_interrupts():
                writer.close()
        add_note(exc, _stop_note(state.step, total_steps, checkpoint_root, config.checkpoint_every_steps))
        raise
    if last_eval_step != state.step:
        run_eval()
    progress.close()
    if writer is not None:
        with deferred_interrupts():
            writer.close()
    result = TrainResult(
        best_score=state.best_score, best_step=state.best_step, best_metrics=state.best_metrics,
        steps=state.step, train_seconds=state.train_seconds,
        examples_per_second=state.examples / max(state.train_seconds, 1e-9), model_dir=output_dir / BEST_MODEL,
        skipped_steps=state.skipped_steps,
        holdout_loss=state.best_loss if math.isfinite(state.best_loss) else None,
    )
    if state.skipped_steps:
        accelerator.print(f"{state.skipped_steps} of {state.step} steps had a NaN/inf loss or gradient and were "
                          "skipped (train.on_nonfinite: skip); see train_summary.json")
    if accelerator.is_main_process:
        write_json(output_dir / "train_history.json", state.history)
        write_json(output_dir / "train_summary.json", json.loads(json.dumps(asdict(result), default=str)))
    return result


def _adamw(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW with the fused kernel where this torch and device have one (CPU since torch 2.4), else the default
    (same update, same state dict, so a checkpoint resumes under either)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)
