"""Peak memory of one model at inference, measured in a fresh subprocess (a process's peak RSS only grows,
so models measured in one process would hide each other).

    python -m multidistill.evaluation.memory MODEL_OR_EXPORT_DIR RUNTIME [--batch-size 32] [--seq-len 128]
    python -m multidistill.evaluation.memory --update BENCHMARK.json    # re-measure every model/runtime in it

prints JSON: baseline_rss_mb (after imports), peak_rss_mb (after loading and 3 batches), model_rss_mb
(the difference).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from multidistill.errors import ModelError


def _rss_mb() -> float:
    """This process's peak resident memory so far (MiB).

    VmHWM belongs to the process's own address space; ru_maxrss would not do here: Linux carries it over
    exec from the parent, so a probe started by a big process would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure_in_subprocess(source: str | Path, runtime: str, *, batch_size: int = 32, seq_len: int = 128,
                          timeout: float = 600) -> dict:
    """Run this module on ``source`` in a child process and return its JSON result."""
    cmd = [sys.executable, "-m", "multidistill.evaluation.memory", str(source), runtime,
           "--batch-size", str(batch_size), "--seq-len", str(seq_len)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ModelError(f"memory probe failed for {source} ({runtime}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _probe(source: Path, runtime: str, batch_size: int, seq_len: int) -> dict:
    import numpy as np
    import torch

    from multidistill.models.loading import load_model

    baseline = _rss_mb()
    ids = np.full((batch_size, seq_len), 5, dtype=np.int64)  # small ids exist in every vocabulary
    ids[:, 0] = 2
    mask = np.ones_like(ids)
    if runtime.startswith("onnx"):
        from multidistill.export.onnx import OnnxModel

        model = OnnxModel.load(source, precision=runtime.split("_")[1])
        task = next(iter(model.tasks))
        for _ in range(3):
            model.logits(task, ids, mask, np.zeros_like(ids))
    else:
        model = load_model(source).eval()
        task = next(iter(model.tasks))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=runtime == "pytorch_bf16"):
            for _ in range(3):
                model(task=task, input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                      token_type_ids=torch.zeros_like(torch.from_numpy(ids)))
    peak = _rss_mb()
    return {"baseline_rss_mb": baseline, "peak_rss_mb": peak, "model_rss_mb": peak - baseline}


def probe_workers() -> int:
    """How many probes run at once: one per core, at most 4 (each holds a model and its libraries in memory)."""
    return max(1, min(4, os.cpu_count() or 1))


def measure_report(report: dict, workers: int | None = None) -> dict:
    """Measure the memory of every model and runtime of a benchmark report, in place.

    Each probe is its own fresh process, so ``workers`` of them (default `probe_workers`) run side by side: a
    process's peak RSS does not depend on what other processes do, and most of a probe's time is its imports.
    """
    batch = report["settings"]["batch_size"]
    jobs = []
    for entry in report["models"].values():
        for runtime, values in entry["runtimes"].items():
            if values.get("status") == "failed":
                continue  # its export failed the parity check: there is no graph to load
            source = entry["export"] if runtime.startswith("onnx") else entry["path"]
            jobs.append((values, source, runtime, entry.get("max_length") or 128))
    with ThreadPoolExecutor(max_workers=workers or probe_workers()) as pool:
        probes = pool.map(lambda job: measure_in_subprocess(job[1], job[2], batch_size=batch, seq_len=job[3]), jobs)
        for (values, *_), probe in zip(jobs, probes, strict=True):
            values.update(peak_rss_mb=probe["peak_rss_mb"], model_rss_mb=probe["model_rss_mb"])
    return report


def update_benchmark(path: Path) -> dict:
    """Re-measure the memory columns of a benchmark JSON file, in place (atomically)."""
    from multidistill.utils.atomic import write_json

    report = measure_report(json.loads(path.read_text()))
    write_json(path, report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, nargs="?")
    parser.add_argument("runtime", nargs="?", choices=["pytorch_fp32", "pytorch_bf16", "onnx_fp32", "onnx_int8"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--update", type=Path, help="a benchmark JSON whose memory columns to re-measure")
    args = parser.parse_args()
    if args.update is not None:
        update_benchmark(args.update)
        return
    if args.source is None or args.runtime is None:
        parser.error("give SOURCE and RUNTIME, or --update BENCHMARK.json")
    print(json.dumps(_probe(args.source, args.runtime, args.batch_size, args.seq_len)))


if __name__ == "__main__":
    main()
