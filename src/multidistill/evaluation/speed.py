"""Speed of models on real inputs: latency at batch 1 and throughput at batch 32.

Models (or runtimes of one model) are measured in the same process, alternating round by round, so a
background load or a frequency change hits every contender alike and the ratios stay meaningful.

Throughput batches are consecutive rows by default, each padded to its longest row. ``longest_first=True`` also
times the same rows batched longest first, as every batched inference path here runs them (`data.batches`), so
each batch is padded less; ``cpu_time`` also reports examples per second of the process's CPU time, which a
machine shared with other jobs disturbs less than wall time (with one thread per contender).

Each contender's turn starts after a short pause (``settle_s``): what the previous contender left running (most
likely an onnxruntime session's pool threads, which spin-wait for new work after a run) would otherwise share the
cores with the first batches timed. Measured on a 2-core Xeon: the same int8 graph in two sessions timed back to
back differed by 16-20% at batch 32 without the pause, by 5% or less with 50 ms (docs/benchmarks.md, "Fourth
round").
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from multidistill.data.batches import row_lengths
from multidistill.data.collate import collate
from multidistill.data.tasks import Task

Forward = Callable[[dict], object]
SETTLE_S = 0.05  # seconds of pause before each contender's turn in a round


@dataclass
class SpeedResult:
    latency_ms_median: float
    latency_ms_p95: float
    throughput_examples_per_s: float
    latency_runs: int
    throughput_batches: int
    # The same rows batched longest first (`compare_speed(longest_first=True)`), and CPU-time rates.
    throughput_longest_first_examples_per_s: float | None = None
    throughput_cpu_examples_per_s: float | None = None
    throughput_longest_first_cpu_examples_per_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def torch_forward(model: torch.nn.Module, task: Task, *, bf16: bool = False) -> Forward:
    """A forward function over collated batches for a PyTorch model (optionally under bf16 autocast)."""
    model.eval()

    @torch.no_grad()
    def forward(batch: dict):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(task=task.name, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         token_type_ids=batch.get("token_type_ids")).logits

    return forward


def compare_speed(contenders: dict[str, tuple[Forward, object, int]], task: Task, *, rounds: int = 5,
                  latency_runs: int = 50, throughput_batches: int = 4, batch_size: int = 32,
                  warmup: int = 3, longest_first: bool = False, cpu_time: bool = False,
                  settle_s: float = SETTLE_S) -> dict[str, SpeedResult]:
    """Latency (ms, batch 1) and throughput (examples/s, batch ``batch_size``) of each contender.

    ``contenders`` maps a name to (forward function or PyTorch model, tokenised dataset of ``task`` in
    that contender's tokenizer, pad token id). Each round runs every contender in turn: ``latency_runs / rounds``
    single-example calls and ``throughput_batches`` full batches (then, with ``longest_first``, the same rows
    batched longest first); reported values are the median (and p95) over all rounds. ``cpu_time`` adds the
    throughputs per second of process CPU time. Each turn starts after ``settle_s`` seconds of pause, so the
    previous contender's lingering threads are not timed with it (0: no pause).
    """
    if not settle_s >= 0:
        raise ValueError(f"settle_s must be a number of seconds >= 0, got {settle_s}")
    for name, value in {"rounds": rounds, "latency_runs": latency_runs, "throughput_batches": throughput_batches,
                        "batch_size": batch_size}.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    latencies: dict[str, list[float]] = {name: [] for name in contenders}
    kinds = ["consecutive"] + (["longest_first"] if longest_first else [])
    rates = {name: {(kind, clock): [] for kind in kinds for clock in ("wall", "cpu")} for name in contenders}
    per_round = max(1, latency_runs // rounds)
    prepared = {}
    for name, (forward, dataset, pad) in contenders.items():
        if isinstance(forward, torch.nn.Module):  # a PyTorch model: plain fp32 forward
            forward = torch_forward(forward, task)
        singles = [collate(task, dataset[i:i + 1], pad) for i in range(min(len(dataset), latency_runs))]
        rows = min(len(dataset), batch_size * throughput_batches)
        batches = {"consecutive": [collate(task, dataset[i:i + batch_size], pad) for i in range(0, rows, batch_size)]}
        if longest_first:
            order = [int(i) for i in np.argsort(-row_lengths(dataset)[:rows], kind="stable")]
            batches["longest_first"] = [collate(task, dataset[order[i:i + batch_size]], pad)
                                        for i in range(0, rows, batch_size)]
        for batch in singles[:warmup] + batches["consecutive"][:1]:
            forward(batch)
        prepared[name] = (forward, singles, batches)
    for round_index in range(rounds):
        for name, (forward, singles, batches) in prepared.items():
            if settle_s:
                time.sleep(settle_s)
            for j in range(per_round):
                batch = singles[(round_index * per_round + j) % len(singles)]
                start = time.perf_counter()
                forward(batch)
                latencies[name].append((time.perf_counter() - start) * 1000)
            for kind in kinds:
                count, start, cpu_start = 0, time.perf_counter(), time.process_time()
                for batch in batches[kind]:
                    forward(batch)
                    count += len(batch["ids"])
                rates[name][kind, "wall"].append(count / (time.perf_counter() - start))
                rates[name][kind, "cpu"].append(count / max(time.process_time() - cpu_start, 1e-9))

    def median(name: str, kind: str, clock: str, wanted: bool = True) -> float | None:
        return statistics.median(rates[name][kind, clock]) if wanted and kind in kinds else None

    return {name: SpeedResult(latency_ms_median=statistics.median(latencies[name]),
                              latency_ms_p95=float(np.percentile(latencies[name], 95)),
                              throughput_examples_per_s=median(name, "consecutive", "wall"),
                              latency_runs=len(latencies[name]),
                              throughput_batches=len(batches["consecutive"]) * rounds,
                              throughput_longest_first_examples_per_s=median(name, "longest_first", "wall"),
                              throughput_cpu_examples_per_s=median(name, "consecutive", "cpu", cpu_time),
                              throughput_longest_first_cpu_examples_per_s=median(name, "longest_first", "cpu",
                                                                                 cpu_time))
            for name, (_, _, batches) in prepared.items()}
