"""Each student seed's average over the target domains, from a Meta-KD run's summary.json (its rows' `runs`).

    python benchmarks/metakd_per_seed.py runs/bench_metakd/fraction-1

Prints a Markdown table: one row per student row with more than one seed, the seeds' averages (in %) and their
mean ± standard deviation. It reads the summary only.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def per_seed_rows(summary: dict) -> list[tuple[str, list[float]]]:
    """[(row name, [average over the domains of seed i, in %])] for every row with more than one seed (the same
    per-seed averages as `multidistill report`)."""
    from multidistill.evaluation.seeds import seed_averages

    out = []
    for name, row in summary["rows"].items():
        runs = row.get("metrics", {}).get("runs") or {}
        averages = seed_averages(runs, list(runs))
        if averages is not None:
            out.append((name, [100 * v for v in averages]))
    return out


def table(rows: list[tuple[str, list[float]]]) -> str:
    seeds = max((len(values) for _, values in rows), default=0)
    lines = ["| student | " + " | ".join(f"seed {i + 1}" for i in range(seeds)) + " | mean ± sd |",
             "|---|" + "---:|" * (seeds + 1)]
    for name, values in rows:
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values)
                     + f" | {statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a Meta-KD run folder (holds summary.json)")
    args = parser.parse_args()
    print(table(per_seed_rows(json.loads((args.folder / "summary.json").read_text()))))


if __name__ == "__main__":
    main()
