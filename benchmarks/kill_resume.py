"""Reliability acceptance: SIGKILL train-teacher, soft-targets and distill many times, resume, compare.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/kill_resume.py --kills 20   # from the repo root

The harness of tests/kill_harness.py at a larger size: the tiny BERT and toy data of the tests (written here),
each stage SIGKILLed at random moments and inside write windows (checkpoints, the best model, store shards,
the store itself), re-run until it finishes, and compared with an uncut run of the same command. The kills are
split 40/30/30 over the three stages; a chain that ends before its planned kills are spent (a late kill finds
the run finished) is topped up with another chain, so every stage gets at least its share.

Two more chains (issue 14): `train-teacher-overwrite` kills a `--overwrite` of a finished run (after each kill a
loadable model must exist, in the run folder or in the old run moved aside), and `train-teacher-contend` freezes
the running command (SIGSTOP; it keeps its lock) before each kill and runs a `--resume` of the same folder beside
it (the lock must refuse it: exit 2, naming the frozen process). Their kills (--overwrite-kills, --contend-kills)
come on top of --kills.

Prints a markdown table (copied into docs/reliability.md) and writes RUNS/results.json with every attempt.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.kill_harness import ChainReport, Kill, kill_and_resume, make_world, stage_specs, write_kind  # noqa: E402

# Write windows to aim at, per stage, in turn (regexes on the temporary entry's name).
WRITE_TARGETS = {
    "train-teacher": [r"^\.step-", r"^\.model\.tmp-", None],
    "soft-targets": [r"^\.shard-", r"^\.shard-", r"^\.signals\.tmp-"],
    "distill": [r"^\.model\.tmp-", r"^\.step-", None],
    "train-teacher-overwrite": [r"^\.step-", r"^\.model\.tmp-", None],
}
# Kills beside a second writer: the same train-teacher chain, each kill preceded by a `--resume` of the frozen
# run that its lock must refuse (tests/kill_harness.py, Kill("contend")).
CONTEND = "train-teacher-contend"
SHARE = {"train-teacher": 0.4, "soft-targets": 0.3, "distill": 0.3}


def kill_plan(stage: str, count: int) -> list[Kill]:
    """Alternate random kills and aimed ones; for soft-targets the store's own write is hit last."""
    if stage == CONTEND:
        return [Kill("contend") for _ in range(count)]
    targets = WRITE_TARGETS[stage]
    plan = [Kill("random") if i % 2 == 0 else Kill("write", targets[(i // 2) % len(targets)]) for i in range(count)]
    if stage == "soft-targets" and count >= 2:
        # Shard kills need shards left to write: the store write comes once all shards exist, so it goes last.
        plan = [k for k in plan if k.target != r"^\.signals\.tmp-"]
        plan = [*plan[:count - 1], Kill("write", r"^\.signals\.tmp-")]
    return plan


def run_stage(specs, stage: str, kills: int, work: Path, seed: int, slow_writes: float) -> list[ChainReport]:
    reports: list[ChainReport] = []
    chain = 0
    while sum(r.kills for r in reports) < kills and chain < 4:
        missing = kills - sum(r.kills for r in reports)
        reports.append(kill_and_resume(specs[stage], work / f"{stage}-{chain}", kill_plan(stage, missing),
                                       seed=seed * 100 + chain, slow_writes=slow_writes, timeout=900))
        chain += 1
    return reports


def summarize(stage: str, reports: list[ChainReport]) -> dict:
    cut: Counter[str] = Counter()
    for attempt in (a for r in reports for a in r.attempts if a.during_write):
        cut.update({write_kind(Path(name).name) for name in attempt.cut_writes})
    return {
        "stage": stage, "chains": len(reports), "kills": sum(r.kills for r in reports),
        "kills_during_write": sum(r.kills_during_write for r in reports),
        "resumes": sum(r.resumes for r in reports), "max_diff": max(r.max_diff for r in reports),
        "unreadable": sum(r.unreadable for r in reports),
        "leftover_temps": sum(len(r.leftover_temps) for r in reports),
        "uncut_seconds": [r.uncut_seconds for r in reports],
        "writes_cut": dict(cut.most_common()),
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| stage | kills | kills during a write (what was being written) | resumes survived "
             "| max abs diff vs uncut run | unreadable artifacts found | temp folders left at the end |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        what = "store arrays" if row["stage"] == "soft-targets" else "weights"
        what_cut = ", ".join(f"{kind} {n}" for kind, n in row["writes_cut"].items())
        lines.append(f"| {row['stage']} | {row['kills']} | {row['kills_during_write']} ({what_cut}) | {row['resumes']} "
                     f"| {row['max_diff']:.1e} ({what}) | {row['unreadable']} | {row['leftover_temps']} |")
    total = {k: sum(r[k] for r in rows) for k in ("kills", "kills_during_write", "resumes", "unreadable",
                                                  "leftover_temps")}
    lines.append(f"| **all** | **{total['kills']}** | **{total['kills_during_write']}** | **{total['resumes']}** "
                 f"| **{max(r['max_diff'] for r in rows):.1e}** | **{total['unreadable']}** "
                 f"| **{total['leftover_temps']}** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="Kills in total over the three stages.")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/kill_resume"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=3, help="Stages run side by side.")
    parser.add_argument("--slow-writes", type=float, default=0.3,
                        help="Seconds each atomic write sleeps before its rename in aimed attempts.")
    parser.add_argument("--n-train", type=int, default=200, help="Training rows per toy task.")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--overwrite-kills", type=int, default=3,
                        help="Extra kills of a train-teacher --overwrite of a finished run (0: none).")
    parser.add_argument("--contend-kills", type=int, default=3,
                        help="Extra kills of train-teacher, each right after a refused --resume beside it (0: none).")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    runs = args.runs_dir
    work = runs / "work"
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    world = make_world(work / "world", n_train=args.n_train)
    specs = stage_specs(world, epochs=args.epochs, checkpoint_every=3, eval_every=12, shard_size=args.shard_size)
    counts = {stage: max(1, math.floor(args.kills * share + 0.5)) for stage, share in SHARE.items()}
    counts["train-teacher"] += max(0, args.kills - sum(counts.values()))
    specs[CONTEND] = dataclasses.replace(specs["train-teacher"], name=CONTEND)
    extra = {"train-teacher-overwrite": args.overwrite_kills, CONTEND: args.contend_kills}
    counts.update({stage: n for stage, n in extra.items() if n > 0})
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {stage: pool.submit(run_stage, specs, stage, n, work, args.seed + i, args.slow_writes)
                   for i, (stage, n) in enumerate(counts.items())}
        reports = {stage: future.result() for stage, future in futures.items()}
    rows = [summarize(stage, reports[stage]) for stage in counts]
    table = markdown(rows)
    results = {
        "command": f"python benchmarks/kill_resume.py --kills {args.kills} --overwrite-kills {args.overwrite_kills} "
                   f"--contend-kills {args.contend_kills}",
        "settings": {k: str(v) for k, v in vars(args).items()}, "planned_kills": counts,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "stages": rows,
        "chains": {stage: [{**r.row(), "attempts": [a.__dict__ for a in r.attempts]} for r in chain]
                   for stage, chain in reports.items()},
        "table": table,
    }
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table)
    print(f"\n{sum(r['kills'] for r in rows)} kills in {results['seconds']:.0f}s; written: {runs / 'results.json'}")
    bad = [r for r in rows if r["unreadable"] or r["max_diff"] > 1e-6]
    if bad or sum(r["kills"] for r in rows) < args.kills + sum(extra.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
