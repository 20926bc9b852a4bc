"""Meta-KD acceptance on Amazon books / dvd / electronics: the per-domain table at each target fraction.

    HF_HUB_OFFLINE=1 python benchmarks/metakd_amazon.py [--fractions 1.0 0.1] [--seeds 1 2 3]
        [--domain-fraction 0.25] [--baselines no_kd single_domain mixed meta_without_target] [--quick]
        [--root runs/bench_metakd] [--set key=value ...]

Runs `configs/metakd_amazon.yaml` (MiniLM-L6 teachers, a 3-layer student cut from the pretrained MiniLM, every
baseline) once per fraction of the target domain's training rows (`data.fraction`), each into ROOT/fraction-<f>.
Every stage is a recipe stage: a cut run resumes where it stopped when the same command is run again, and finished
stages are reused. Prints and writes (ROOT/metakd_amazon.md, ROOT/metakd_amazon.json) one table per fraction:
each row's test accuracy per domain (mean over the student seeds, +- their standard deviation) and the average.

`--domain-fraction F` keeps F of every domain's training rows (a smaller, quicker run; data.fraction then still
sets the target's share of its full rows); `--quick` runs 1 epoch per training stage (a smoke run, not a result).
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOMAINS = ("books", "dvd", "electronics")
QUICK = ["teacher.train.epochs=1", "student.intermediate.epochs=1", "student.prediction.epochs=1"]


def run_fraction(fraction: float, args: argparse.Namespace) -> dict:
    """One recipe run (resumed or reused where its stages exist); returns its summary."""
    from multidistill.recipes import load_recipe, run_recipe

    overrides = [f"output_dir={args.root / f'fraction-{fraction:g}'}", f"data.fraction={fraction}",
                 f"student.seeds={list(args.seeds)}", f"baselines={list(args.baselines)}"]
    if args.domain_fraction is not None:
        overrides.append("data.tasks=[{name: amazon, domain_fraction: {"
                         + ", ".join(f"{d}: {args.domain_fraction}" for d in DOMAINS) + "}}]")
    overrides += (QUICK if args.quick else []) + list(args.set or [])
    return run_recipe(load_recipe(args.config, overrides))


def table(fraction: float, summary: dict) -> str:
    """A markdown table of one summary: per domain mean +- spread, the average, parameters."""
    domains = summary["tasks"]
    lines = [f"### {fraction:g} of the target domain's training rows", "",
             "| model | " + " | ".join(domains) + " | average | parameters |",
             "|---|" + "---:|" * (len(domains) + 2)]
    for name, row in summary["rows"].items():
        main, spread = row["metrics"]["main"], row["metrics"].get("spread", {})
        cells = [f"{100 * main[d]:.1f} ± {100 * spread.get(d, 0.0):.1f}" if d in main else "" for d in domains]
        average = sum(main.values()) / len(main) if main else float("nan")
        params = f"{row.get('params', 0) / 1e6:.1f}M"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * average:.1f} | {params} |")
    return "\n".join(lines + ["", *[f"note: {n}" for n in summary.get("notes", [])], ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "metakd_amazon.yaml")
    parser.add_argument("--root", type=Path, default=Path("runs/bench_metakd"))
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--baselines", nargs="*", default=["no_kd", "single_domain", "mixed", "meta_without_target"])
    parser.add_argument("--domain-fraction", type=float, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--set", action="append", help="extra recipe overrides, key=value")
    args = parser.parse_args()
    from multidistill.utils.atomic import atomic_file, write_json

    results = {f"{f:g}": run_fraction(f, args) for f in args.fractions}
    text = "\n".join(table(float(f), summary) for f, summary in results.items())
    print(text)
    args.root.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.root / "metakd_amazon.md") as handle:
        handle.write(text)
    write_json(args.root / "metakd_amazon.json", {"args": {k: str(v) for k, v in vars(args).items()},
                                                 "summaries": results})
    print(f"wrote {args.root / 'metakd_amazon.md'}")


if __name__ == "__main__":
    main()
