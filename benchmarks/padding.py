"""Padding with random vs length-grouped batches on the shipped sample (the demo's data and tokenizer).

    HF_HUB_OFFLINE=1 python benchmarks/padding.py [--batch-size 32] [--examples 1000]

Prints, for one epoch's batch plan over the sample's training rows (the demo's 1,000 per task), the tokens
the batches hold after padding per real token, with `train.group_by_length` off and on, and each task's mean
and 95th-percentile length. No training: it counts tokens.
"""

from __future__ import annotations

import argparse

import numpy as np

from multidistill.config import DataConfig
from multidistill.data.batches import row_lengths
from multidistill.data.prepare import prepare_data
from multidistill.data.sampler import MultiTaskBatchPlanner
from multidistill.models.backbone import load_tokenizer
from multidistill.recipes.demo import MINILM, DemoConfig


def padded_per_real(lengths: dict[str, np.ndarray], batch_size: int, grouped: bool) -> float:
    planner = MultiTaskBatchPlanner({t: len(v) for t, v in lengths.items()}, batch_size, seed=42,
                                    lengths=lengths if grouped else None)
    plan = planner.epoch(0)
    padded = sum(len(b.indices) * int(lengths[b.task][b.indices].max()) for b in plan)
    real = sum(int(lengths[b.task][b.indices].sum()) for b in plan)
    return padded / real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--examples", type=int, default=1000, help="training rows per task")
    args = parser.parse_args()
    demo = DemoConfig()
    data = DataConfig.model_validate({**demo.data.model_dump(), "subset_seed": demo.subset_seed})
    tokenizer = load_tokenizer(MINILM)
    prepared = prepare_data(data, tokenizer, 128, max_examples_per_task=args.examples, seed=demo.subset_seed)
    lengths = {t: row_lengths(d) for t, d in prepared.train_sets.items()}
    print("| task | rows | mean tokens | p95 tokens |\n|---|---:|---:|---:|")
    for task, values in lengths.items():
        print(f"| {task} | {len(values)} | {values.mean():.1f} | {np.percentile(values, 95):.0f} |")
    random, grouped = (padded_per_real(lengths, args.batch_size, g) for g in (False, True))
    print(f"\nbatch {args.batch_size}: tokens after padding per real token: random {random:.2f}, "
          f"group_by_length {grouped:.2f} ({(1 - grouped / random) * 100:.0f}% fewer tokens)")


if __name__ == "__main__":
    main()
