"""Scale acceptance: memory and throughput of a distillation run over 10k, 100k and 1M soft-target rows.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/scale.py                       # from the repo root
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/scale.py --sizes 10000 100000 --repeats 1   # quicker

For each size N the parent writes a synthetic single-sentence task (a TSV of N seeded random-word sentences with
binary labels; the dev split is the same 1,000 rows for every N) and builds its signal store through the real
code path (`build_signal_store`, run by a randomly initialised tiny BERT teacher: its logits are as good as random
ones). Then, in a fresh subprocess per run, `train_model` runs a `distill` config (a tiny BERT student built from
`model.backbone_config`, tiny WordPiece tokenizer, soft_ce + hard) for a fixed number of optimizer steps, with an
empty cache folder, so every run reads the TSV, validates it, writes the raw Arrow cache and tokenises it again.

Each child reports its peak RSS (``ru_maxrss``), its RSS (and the anonymous / file-backed parts of it, from
/proc/self/status) right before the first training step and after the last one, the peak of the anonymous part
(sampled every 20 ms), the time `prepare_data` took, and the training examples/s (evaluation excluded). The
parent prints a markdown table (median over the repeats) and writes RUNS/results.json with every run.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.conftest import FILLER, NEGATIVE, POSITIVE, TINY_BERT, _vocab  # noqa: E402

DEV_ROWS = 1000
MAX_LENGTH = 32
TASK = "scale_sent"


# ------------------------------------------------------------------------------------------------- the world


def write_tokenizer_and_teacher(work: Path) -> tuple[Path, Path]:
    """The tests' tiny WordPiece tokenizer (saved alone) and a random tiny BERT teacher over the scale task."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from multidistill.data.tasks import Task
    from multidistill.models import MultiTaskModel

    tok_dir, teacher_dir = work / "tokenizer", work / "teacher"
    if (teacher_dir / "model.safetensors").is_file():
        return tok_dir, teacher_dir
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(_vocab())}, do_lower_case=True)
    tokenizer.save_pretrained(tok_dir)
    spec = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(_vocab()), **spec)).save_pretrained(work / "teacher_backbone")
    tokenizer.save_pretrained(work / "teacher_backbone")
    model = MultiTaskModel.from_backbone(str(work / "teacher_backbone"), [Task.model_validate(task_spec(0))],
                                         max_length=MAX_LENGTH)
    model.save_pretrained(teacher_dir, tokenizer)
    return tok_dir, teacher_dir


def task_spec(n: int) -> dict:
    return {"name": TASK, "type": "classification", "labels": ["0", "1"], "metrics": ["accuracy"],
            "files": {"train": {"path": f"n{n}/train.tsv", "columns": {"text_a": "sentence", "label": "label"}},
                      "dev": {"path": "dev.tsv", "columns": {"text_a": "sentence", "label": "label"}}}}


def write_tsv(path: Path, rows: int, seed: int) -> None:
    """``rows`` sentences of 4-12 random words (a label word among them) and their binary labels."""
    import numpy as np

    if path.is_file():
        return
    rng = np.random.default_rng(seed)
    filler, pos, neg = np.array(FILLER), np.array(POSITIVE), np.array(NEGATIVE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write("sentence\tlabel\n")
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            labels = rng.integers(0, 2, n)
            lengths = rng.integers(3, 12, n)
            words = filler[rng.integers(0, len(filler), (n, 11))]
            hint = np.where(labels == 1, pos[rng.integers(0, len(pos), n)], neg[rng.integers(0, len(neg), n)])
            out.write("".join(f"{' '.join(words[i, :lengths[i]])} {hint[i]}\t{labels[i]}\n" for i in range(n)))
    tmp.replace(path)


def data_config(work: Path, n: int, cache: Path) -> dict:
    return {"data_root": str(work / "data"), "tasks": [TASK], "task_specs": [task_spec(n)], "cache_dir": str(cache)}


def build_store(work: Path, n: int) -> float:
    """The signal store of size ``n`` (built once, reused); returns the seconds it took (0 when reused)."""
    from multidistill.config import DataConfig
    from multidistill.teachers.generate import build_signal_store

    out = work / "stores" / f"n{n}"
    if (out / "manifest.json").is_file():
        return 0.0
    _, teacher = write_tokenizer_and_teacher(work)
    start = time.perf_counter()
    data = DataConfig.model_validate(data_config(work, n, work / "store_cache"))
    build_signal_store([teacher], data, out, batch_size=256, shard_size=65_536)
    seconds = time.perf_counter() - start
    shutil.rmtree(work / "store_cache", ignore_errors=True)
    return seconds


# ------------------------------------------------------------------------------------------------ one run


def _status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in KiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            values[key] = int(rest.split()[0])
    return values


def _arrow_mapped_kib() -> int:
    """Resident KiB of this process's mappings of Arrow files (the memory-mapped data), from /proc/self/smaps."""
    total, arrow = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line: range perms offset dev inode path
            arrow = line.rstrip().endswith(".arrow")
        elif arrow and first == "Rss:":
            total += int(line.split()[1])
    return total


def _drop_arrow_pages() -> None:
    """Unmap the resident pages of this process's read-only Arrow mappings (madvise MADV_DONTNEED).

    They are clean page-cache pages of the memory-mapped data: the next access maps them again, unchanged. Used
    once, after the last step, to show how much of the RSS they are (a measurement, not part of training).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5].endswith(".arrow") and "w" not in parts[1]:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            libc.madvise(start, end - start, 4)  # MADV_DONTNEED


def child(work: Path, n: int, run: int, steps: int, batch_size: int) -> dict:
    """One distillation run of ``steps`` optimizer steps in this (fresh) process; returns its measurements."""
    import multidistill.training.run as run_module
    from multidistill.config import TeacherRunConfig

    tok_dir = work / "tokenizer"
    cache = work / "cache" / f"n{n}-r{run}"
    shutil.rmtree(cache, ignore_errors=True)
    steps_per_epoch = -(-n // batch_size)  # the planner cuts ceil(n / batch) batches per epoch
    config = TeacherRunConfig.model_validate({
        "kind": "distill", "output_dir": str(work / "runs" / f"n{n}-r{run}"), "signals": str(work / "stores" / f"n{n}"),
        "model": {"name_or_path": str(tok_dir), "backbone_config": {**TINY_BERT, "vocab_size": len(_vocab())},
                  "max_seq_length": MAX_LENGTH},
        "data": data_config(work, n, cache),
        # ceil(epochs * steps_per_epoch) == steps exactly.
        "train": {"epochs": (steps - 0.5) / steps_per_epoch, "batch_size": batch_size, "eval_batch_size": 256,
                  "lr": 1e-3, "checkpoint_every_steps": 10 * steps, "log_every_steps": 50, "seed": 42},
        "objective": {"classification": [{"loss": "hard", "weight": 0.5},
                                         {"loss": "soft_ce", "weight": 0.5, "params": {"temperature": 1.0}}]},
    })
    peak = {"RssAnon": 0, "RssFile": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = _status()
            for key in peak:
                peak[key] = max(peak[key], now.get(key, 0))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timing: dict = {}
    real_prepare = run_module.prepare_data

    def timed_prepare(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real_prepare(*args, **kwargs)
        finally:
            timing["prepare_seconds"] = time.perf_counter() - start

    before: dict = {}
    last: dict = {}

    def on_step(state) -> None:
        if state.step == 1:
            before.update(_status(), arrow=_arrow_mapped_kib())
        if state.step == steps:
            last.update(_status(), arrow=_arrow_mapped_kib())
            _drop_arrow_pages()
            last["dropped"] = _status()["VmRSS"]

    run_module.prepare_data = timed_prepare
    start = time.perf_counter()
    result = run_module.train_model(config, overwrite=True, on_step=on_step)
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    after = _status()
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "rows": n, "run": run, "steps": result.steps, "batch_size": batch_size,
        "examples_per_second": result.examples_per_second, "train_seconds": result.train_seconds,
        "prepare_seconds": timing.get("prepare_seconds"), "wall_seconds": wall,
        # VmHWM is this process's own peak; ru_maxrss also counts the forking parent's peak (Linux carries it over
        # exec), which is why the parent keeps its own footprint small (the stores are built in subprocesses).
        "peak_rss_mib": after["VmHWM"] / 1024,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_training_mib": before.get("VmRSS", 0) / 1024,
        "peak_rss_before_training_mib": before.get("VmHWM", 0) / 1024,
        "anon_before_training_mib": before.get("RssAnon", 0) / 1024,
        "file_before_training_mib": before.get("RssFile", 0) / 1024,
        "arrow_mapped_before_training_mib": before.get("arrow", 0) / 1024,
        "rss_last_step_mib": last.get("VmRSS", 0) / 1024, "anon_last_step_mib": last.get("RssAnon", 0) / 1024,
        "file_last_step_mib": last.get("RssFile", 0) / 1024, "arrow_mapped_last_step_mib": last.get("arrow", 0) / 1024,
        "rss_last_step_without_mapped_data_mib": last.get("dropped", 0) / 1024,
        "peak_anon_mib": peak["RssAnon"] / 1024, "peak_file_mib": peak["RssFile"] / 1024,
    }


# ------------------------------------------------------------------------------------------------- parent


def run_child(work: Path, n: int, run: int, args: argparse.Namespace) -> dict:
    out = work / f"child-n{n}-r{run}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--work", str(work), "--child", str(n), str(run), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--child-out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"run n={n} #{run} failed with code {proc.returncode}")
    return json.loads(out.read_text())


def build_store_in_subprocess(work: Path, n: int) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__, "--work", str(work), "--build-store", str(n)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"building the store for n={n} failed with code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table(results: dict) -> str:
    lines = ["| rows | runs | peak RSS MiB | of which mapped Arrow data MiB | peak RSS without it MiB "
             "| peak anonymous MiB | RSS before training MiB | prepare s | train ex/s (each run) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base: dict = {}

    def cell(value: float, key: str) -> str:
        base.setdefault(key, value)
        return f"{value:.0f}" if value == base[key] else f"{value:.0f} ({(value / base[key] - 1) * 100:+.1f}%)"

    for n, entry in results.items():
        runs = entry["runs"]
        peak, arrow = median(runs, "peak_rss_mib"), median(runs, "arrow_mapped_last_step_mib")
        rates = ", ".join(f"{r['examples_per_second']:.0f}" for r in runs)
        lines.append(f"| {int(n):,} | {len(runs)} | {cell(peak, 'peak')} | {arrow:.0f} | {cell(peak - arrow, 'net')} "
                     f"| {cell(median(runs, 'peak_anon_mib'), 'anon')} | {median(runs, 'rss_before_training_mib'):.0f} "
                     f"| {median(runs, 'prepare_seconds'):.1f} | {cell(median(runs, 'examples_per_second'), 'rate')} "
                     f"({rates}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (median reported)")
    parser.add_argument("--repeats-large", type=int, default=None,
                        help="runs for sizes of 1M rows and more (default: --repeats)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "scale")
    parser.add_argument("--child", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--build-store", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work.resolve()

    if args.child is not None:
        n, run = args.child
        args.child_out.write_text(json.dumps(child(work, n, run, args.steps, args.batch_size)))
        return
    if args.build_store is not None:
        print(json.dumps({"seconds": build_store(work, args.build_store)}))
        return

    work.mkdir(parents=True, exist_ok=True)
    write_tsv(work / "data" / "dev.tsv", DEV_ROWS, seed=12345)
    results: dict = {}
    for n in args.sizes:
        start = time.perf_counter()
        write_tsv(work / "data" / f"n{n}" / "train.tsv", n, seed=n)
        write_seconds = time.perf_counter() - start
        store_seconds = build_store_in_subprocess(work, n)
        results[str(n)] = {"write_tsv_seconds": write_seconds, "build_store_seconds": store_seconds, "runs": []}
    # Repeats are the outer loop, so a change in the machine's load hits every size alike.
    for run in range(args.repeats):
        for n in args.sizes:
            if run >= (args.repeats_large if (args.repeats_large is not None and n >= 1_000_000) else args.repeats):
                continue
            results[str(n)]["runs"].append(run_child(work, n, run, args))
            print(f"n={n:,} run {run}: " + json.dumps({k: round(v, 1) for k, v in results[str(n)]["runs"][-1].items()}),
                  flush=True)
    payload = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                           "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
               "steps": args.steps, "batch_size": args.batch_size, "results": results}
    (work / "results.json").write_text(json.dumps(payload, indent=2))
    print(table(results))
    print(f"\nwrote {work / 'results.json'}")


if __name__ == "__main__":
    main()
