"""Issue 16: where a multidistill distillation step's time goes (cProfile over whole training runs).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/profile_step.py [vs_textbrewer.py options]
    python benchmarks/profile_step.py --tiny                                   # seconds, no network

Options other than --rows are vs_textbrewer.py's (--examples, --data-root, --cache, ...).
Uses the world of benchmarks/vs_textbrewer.py (its cached teacher, student recipe, data and signal store) and
runs the store-backed, online-teacher and hidden_mse rows through `train_model` under cProfile. Each step's work
is split into the loop's parts by the cumulative time of the functions that do them (rows read and padded,
teacher signals added, host-to-device copy, student forward + loss, backward, clipping, optimizer and schedule,
logging); "other" is the rest of the training time (evaluation excluded). Prints one markdown table, in
milliseconds per step and percent of the step.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vs_textbrewer as bench  # noqa: E402

# Part -> (file suffix, function name) whose cumulative time is that part.
PARTS: dict[str, list[tuple[str, str]]] = {
    "read rows (Arrow)": [("data/rows.py", "__getitem__")],
    "collate (pad to tensors)": [("data/collate.py", "collate")],
    "teacher signals (enrich)": [("teachers/online.py", "__call__"), ("teachers/stored.py", "__call__")],
    "host-to-device copy": [("data/collate.py", "to_device")],
    "student forward + loss": [("training/loop.py", "forward")],
    "backward": [("accelerate/accelerator.py", "backward")],
    "clip gradients": [("accelerate/accelerator.py", "clip_grad_norm_")],
    "optimizer step": [("torch/optim/optimizer.py", "wrapper")],
    "zero grad": [("torch/optim/optimizer.py", "zero_grad")],
    "logging (tqdm, TensorBoard)": [("tqdm/std.py", "update"), ("tqdm/std.py", "set_postfix"),
                                    ("tensorboard/writer.py", "add_scalar")],
}


# Functions that evaluation calls too: only their calls from the loop itself count.
FROM_LOOP = {"__getitem__", "collate", "to_device"}


def part_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of each part's functions (for FROM_LOOP ones, only the calls made by the loop)."""
    out = {}
    for part, functions in PARTS.items():
        total = 0.0
        for (filename, _, name), (_, _, _, cumulative, callers) in stats.stats.items():
            if not any(filename.endswith(suffix) and name == fn for suffix, fn in functions):
                continue
            if name in FROM_LOOP:
                cumulative = sum(times[3] for caller, times in callers.items()
                                 if caller[0].endswith("training/loop.py"))
            total += cumulative
        out[part] = total
    return out


def profile_row(world, key: str, cache: Path, store: Path) -> tuple[dict[str, float], float, int]:
    """(seconds per part, training seconds, steps) of one run of ``key``."""
    from multidistill.training.run import train_model

    profiler = cProfile.Profile()
    result = profiler.runcall(train_model, bench.md_config(world, key, cache / "profile" / key, store),
                              overwrite=True)
    stats = pstats.Stats(profiler)
    return part_seconds(stats), result.train_seconds, result.steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["md_store", "md_online", "md_feature", "plain"],
                        choices=[key for key, row in bench.ROWS.items() if row[2] == "multidistill"])
    args, rest = parser.parse_known_args(argv)
    world_args = bench.parse_args(rest)  # vs_textbrewer.py's settings, so its cached teacher and store are reused
    cache = world_args.cache
    cache.mkdir(parents=True, exist_ok=True)
    world = bench.make_world(world_args, cache)
    store = cache / "signals"
    if not (store / "manifest.json").is_file():
        bench.build_store(world, store)
    table = {key: profile_row(world, key, cache, store) for key in args.rows}
    print("\n| part: ms per step (share of the step) | " + " | ".join(bench.ROWS[k][1] for k in table) + " |")
    print("|---|" + "---|" * len(table))
    for part in PARTS:
        cells = [f"{1000 * parts[part] / steps:.1f} ({100 * parts[part] / seconds:.0f}%)"
                 for parts, seconds, steps in table.values()]
        print(f"| {part} | " + " | ".join(cells) + " |")
    cells = []
    for parts, seconds, steps in table.values():
        other = seconds - sum(parts.values())
        cells.append(f"{1000 * other / steps:.1f} ({100 * other / seconds:.0f}%)")
    print("| other | " + " | ".join(cells) + " |")
    print("| **step (training time / steps)** | " + " | ".join(f"{1000 * s / n:.1f}" for _, s, n in table.values())
          + " |")


if __name__ == "__main__":
    main()
