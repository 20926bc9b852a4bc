"""Speed of models on real inputs: latency at batch 1 and throughput at batch 32.

Models (or runtimes of one model) are measured in the same process, alternating round by round, so a
background load or a frequency change hits every contender alike and the ratios stay meaningful.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from multidistill.data.collate import collate
from multidistill.data.tasks import Task

Forward = Callable[[dict], object]


@dataclass
class SpeedResult:
    latency_ms_median: float
    latency_ms_p95: float
    throughput_examples_per_s: float
    latency_runs: int
    throughput_batches: int

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
                  warmup: int = 3) -> dict[str, SpeedResult]:
    """Latency (ms, batch 1) and throughput (examples/s, batch ``batch_size``) of each contender.

    ``contenders`` maps a name to (forward function or PyTorch model, tokenised dataset of ``task`` in
    that contender's tokenizer, pad token id). Each round runs every contender in turn: ``latency_runs / rounds``
    single-example calls and ``throughput_batches`` full batches; reported values are the median (and
    p95) over all rounds.
    """
    latencies: dict[str, list[float]] = {name: [] for name in contenders}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    per_round = max(1, latency_runs // rounds)
    prepared = {}
    for name, (forward, dataset, pad) in contenders.items():
        if isinstance(forward, torch.nn.Module):  # a PyTorch model: plain fp32 forward
            forward = torch_forward(forward, task)
        singles = [collate(task, dataset[i:i + 1], pad) for i in range(min(len(dataset), latency_runs))]
        batches = [collate(task, dataset[i:i + batch_size], pad)
                   for i in range(0, min(len(dataset), batch_size * throughput_batches), batch_size)]
        for batch in singles[:warmup] + batches[:1]:
            forward(batch)
        prepared[name] = (forward, singles, batches)
    for round_index in range(rounds):
        for name, (forward, singles, batches) in prepared.items():
            for j in range(per_round):
                batch = singles[(round_index * per_round + j) % len(singles)]
                start = time.perf_counter()
                forward(batch)
                latencies[name].append((time.perf_counter() - start) * 1000)
            count, start = 0, time.perf_counter()
            for batch in batches:
                forward(batch)
                count += len(batch["ids"])
            rates[name].append(count / (time.perf_counter() - start))
    return {name: SpeedResult(latency_ms_median=statistics.median(latencies[name]),
                              latency_ms_p95=float(np.percentile(latencies[name], 95)),
                              throughput_examples_per_s=statistics.median(rates[name]),
                              latency_runs=len(latencies[name]), throughput_batches=len(batches) * rounds)
            for name, (_, _, batches) in prepared.items()}
