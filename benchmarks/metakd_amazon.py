"""Meta-KD acceptance on Amazon books / dvd / electronics: the per-domain table at each target fraction.

    HF_HUB_OFFLINE=1 python benchmarks/metakd_amazon.py [--fractions 1.0 0.1] [--seeds 1 2 3]
        [--domain-fraction 0.25] [--baselines no_kd single_domain mixed meta_without_target] [--quick]
        [--root runs/bench_metakd] [--keep-checkpoints] [--speed-rounds 5] [--precision auto|fp32|bf16]
        [--set key=value ...]
    HF_HUB_OFFLINE=1 python benchmarks/metakd_amazon.py --config configs/metakd_mnli.yaml --root runs/bench_metakd_mnli
        --fractions 1.0 --domain-fraction 0.25        # the issue's second data set: MNLI genres as domains

Runs `configs/metakd_amazon.yaml` (MiniLM-L6 teachers, a 3-layer student cut from the pretrained MiniLM, every
baseline) once per fraction of the target domain's training rows (`data.fraction`), each into ROOT/fraction-<f>.
Every stage is a recipe stage: a cut run resumes where it stopped when the same command is run again, and finished
stages are reused. Prints and writes (ROOT/<config name>.md and .json) one table per fraction:
each row's test accuracy per domain (mean over the student seeds, +- their standard deviation) and the average.
Any Meta-KD config works (`--config`): the domains are the recipe's own (`check_inputs`), e.g. MNLI's five genres
with configs/metakd_mnli.yaml, whose sample has no test split (its table is on dev, as that config says).

`--precision` sets the training stages' autocast (teacher.train, student.intermediate, student.prediction; the
prototype encoder, the signal stores and the evaluations stay fp32): `auto` (the default) is bf16 where the CPU has
native bf16 kernels (AVX512-BF16/AMX) and fp32 elsewhere. Measured on such a CPU (2-core Xeon with AMX, 2026-12-04,
`benchmarks/bf16_probe.py --task amazon --features`): a stage-A step (MiniLM-L6 teacher features, 3-layer student
forward and backward, batches of 32 Amazon reviews) ran 24.0 ex/s in fp32 and 46.6 ex/s in bf16 (1.94x; the
MiniLM-L6 forward 2.89x); without native bf16 autocast is 7-20x slower, so `auto` keeps fp32 there. The precision
enters every stage's fingerprint, so a run folder made in one precision is not resumed in the other.

`--domain-fraction F` keeps F of every domain's training rows (a smaller, quicker run; data.fraction then still
sets the target's share of its full rows, replacing F in the target's own stages); `--quick` runs 1 epoch per
training stage and drops stage B's step floor (a smoke run, not a result).

The meta-teacher without the target (and its prototypes) never sees the target's rows, so it is the same at every
fraction: a fraction's run hard-links those finished stages from another fraction's folder made with the same recipe
(`share_stages`; the stage runner still checks their fingerprints), which saves three meta-teachers.

Before and after each fraction the resumable checkpoints of its finished stages are removed (`prune_checkpoints`;
`--keep-checkpoints` keeps them): a finished stage is reused as it is and never resumed, its model is in model/,
and the 146 training stages of both fractions (126 students, 20 teachers) would otherwise keep ~29 GiB of
checkpoints (0.19 GiB a 3-layer student, 0.25 GiB a MiniLM-L6 teacher) beside ~10 GiB of models.

Throughput (the issue's "parameters and throughput"): after the runs, the first fraction's meta-teacher and its
Meta-KD student of the first target (first seed) on the task's dev rows, alternating in this process
(`multidistill benchmark`, PyTorch fp32, medians of --speed-rounds; it also puts the speed on their model cards):
latency at batch 1, examples/s at batch 32. Every student of the table has the student's shape and every teacher
the teacher's, so these two rows stand for all of them (the domain branch is not run at inference).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A smoke run: one epoch per training stage, and no step floor in stage B (it would make stage B 150 steps).
QUICK = ["teacher.train.epochs=1", "student.intermediate.epochs=1", "student.prediction.epochs=1",
         "student.prediction.min_steps=null"]


def prune_checkpoints(root: Path) -> int:
    """Remove ``checkpoints/`` of every finished stage under ``root`` (a folder with stage.json); returns how many.

    Checkpoints only serve to continue a cut stage; a finished one is reused from its manifest and model/."""
    from multidistill.recipes.stages import STAGE_MANIFEST
    from multidistill.training.run_dir import CHECKPOINTS

    pruned = 0
    for manifest in sorted(root.glob(f"*/{STAGE_MANIFEST}")) if root.is_dir() else []:
        if (manifest.parent / CHECKPOINTS).is_dir():
            shutil.rmtree(manifest.parent / CHECKPOINTS)
            pruned += 1
    return pruned


# The stages whose data leaves the target domain out entirely: data.fraction (the target's share of its rows) does
# not reach them, so every fraction's run makes the same ones (~12 min a meta-teacher here).
FRACTION_FREE = ("prototypes-without-*", "meta-teacher-without-*")


def _without_fraction(settings: dict) -> dict:
    return {**{k: v for k, v in settings.items() if k != "output_dir"},
            "data": {k: v for k, v in settings.get("data", {}).items() if k != "fraction"}}


def share_stages(root: Path, out: Path, settings: dict) -> list[str]:
    """Before the run into ``out``: hard-link the finished fraction-free stages (`FRACTION_FREE`) of every other
    ``root/fraction-*`` run whose recipe.yaml equals ``settings`` (this run's recipe, `model_dump(mode="json")`) but
    for output_dir and data.fraction, where ``out`` lacks them; returns their names.

    The stage runner still checks each one's fingerprint before it reuses it (a mismatch is refused, never reused);
    the paths inside a run folder enter fingerprints relative to it (`stages.portable`), so a stage made in another
    fraction's folder (whose settings name its own prototypes' folder) matches here. A stage fingerprinted by a
    version before that would not, so it is not shared.
    Checkpoints are not copied (a finished stage is never resumed); a stage is copied under a temporary name and
    renamed, so a cut copy is never taken for a finished stage."""
    import json
    import os

    import yaml

    from multidistill.recipes.stages import STAGE_MANIFEST, fingerprints
    from multidistill.training.run_dir import CHECKPOINTS, claim_run_root

    mine, shared = _without_fraction(settings), []
    for sibling in sorted(root.glob("fraction-*")):
        recipe = sibling / "recipe.yaml"
        if sibling == out or not recipe.is_file() or _without_fraction(yaml.safe_load(recipe.read_text())) != mine:
            continue
        for pattern in FRACTION_FREE:
            for manifest in sorted(sibling.glob(f"{pattern}/{STAGE_MANIFEST}")):
                stage = manifest.parent
                record = json.loads(manifest.read_text())
                made_portable = fingerprints(record.get("name"), record.get("config"), record.get("inputs"), sibling)[0]
                if (out / stage.name).exists() or stage.name in shared or record.get("fingerprint") != made_portable:
                    continue
                with claim_run_root(out, legacy=("recipe.yaml",)):  # makes and marks ``out`` as a run's folder
                    partial = out / f".{stage.name}.sharing"
                    shutil.rmtree(partial, ignore_errors=True)
                    shutil.copytree(stage, partial, copy_function=os.link, ignore=shutil.ignore_patterns(CHECKPOINTS))
                    partial.rename(out / stage.name)
                shared.append(stage.name)
    return shared


def run_fraction(fraction: float, args: argparse.Namespace) -> dict:
    """One recipe run (resumed or reused where its stages exist); returns its summary."""
    from multidistill.config import load_config
    from multidistill.recipes import load_recipe, run_recipe

    out = args.root / f"fraction-{fraction:g}"
    if not args.keep_checkpoints:
        prune_checkpoints(out)
    presets = [f"output_dir={out}", f"data.fraction={fraction}",
               f"student.seeds={list(args.seeds)}", f"baselines={list(args.baselines)}"]
    presets += precision_overrides(args.precision) + (QUICK if args.quick else [])
    recipe = load_recipe(args.config, presets)
    if args.domain_fraction is not None:
        recipe = load_recipe(args.config, [*presets, domain_fraction_override(recipe, args.domain_fraction)])
    if args.set:  # applied after the script's presets, so a --set of a preset's key replaces it (a key given twice
        # in one list is refused)
        recipe = load_config(recipe, list(args.set), schema=type(recipe))
    shared = share_stages(args.root, out, recipe.model_dump(mode="json"))
    if shared:
        print(f"reusing from another fraction's run (their data leaves the target out): {', '.join(shared)}")
    summary = run_recipe(recipe)
    if not args.keep_checkpoints:
        prune_checkpoints(out)
    return summary


def precision_overrides(precision: str) -> list[str]:
    """The recipe overrides of ``--precision``: bf16 autocast for every training stage (teachers, stage A, stage B
    and the baseline students, whose settings default to stage B's), or none for fp32; ``auto`` = bf16 only where
    the CPU has native bf16 kernels (`cpu_has_fast_bf16`)."""
    from multidistill.training.device import cpu_has_fast_bf16

    bf16 = precision == "bf16" or (precision == "auto" and cpu_has_fast_bf16())
    stages = ("teacher.train", "student.intermediate", "student.prediction")
    return [f"{key}.bf16=true" for key in stages] if bf16 else []


def domain_fraction_override(recipe, fraction: float) -> str:
    """The override that keeps ``fraction`` of every domain's training rows of the recipe's task (its other
    settings, e.g. domains_include, kept); the domains are the data's (`metakd.check_inputs`)."""
    import json

    from multidistill.recipes.metakd import check_inputs

    task = recipe.data.tasks[0].model_dump(mode="json")
    task["domain_fraction"] = {domain: fraction for domain in check_inputs(recipe).kept}
    return f"data.tasks={json.dumps([task])}"


def table(fraction: float, summary: dict) -> str:
    """A markdown table of one summary: per domain mean +- spread over the row's runs (only where it has more than
    one: a teacher is one run, and has no spread to compare with), the average, parameters."""
    domains = summary["tasks"]
    lines = [f"### {fraction:g} of the target domain's training rows", "",
             "| model | " + " | ".join(domains) + " | average | parameters |",
             "|---|" + "---:|" * (len(domains) + 2)]
    for name, row in summary["rows"].items():
        main, spread, runs = (row["metrics"].get(key, {}) for key in ("main", "spread", "runs"))
        cells = [(f"{100 * main[d]:.1f}" + (f" ± {100 * spread[d]:.1f}" if len(runs.get(d, [])) > 1 else ""))
                 if d in main else "" for d in domains]
        average = sum(main.values()) / len(main) if main else float("nan")
        params = f"{row.get('params', 0) / 1e6:.1f}M"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * average:.1f} | {params} |")
    return "\n".join(lines + ["", *[f"note: {n}" for n in summary.get("notes", [])], ""])


def speed_folders(root: Path, domains: list[str]) -> dict[str, Path]:
    """The two training-run folders whose models stand for the table's teachers and students: the meta-teacher of
    ``root`` (one recipe run) and the first Meta-KD student (stage B, student-<domain>-...) in name order."""
    teachers = sorted(root.glob("meta-teacher*/model"), key=lambda p: ("without" in p.parent.name, p.parent.name))
    students = sorted(p for p in root.glob("student-*/model")
                      if p.parent.name.split("-")[1] in domains)  # not student-nokd-/student-single-/...
    if not teachers or not students:
        raise SystemExit(f"no meta-teacher or Meta-KD student in {root}: run the recipe first")
    return {"meta-teacher": teachers[0].parent, "Meta-KD student": students[0].parent}


def measure_speed(folders: dict[str, Path], rounds: int) -> dict[str, dict]:
    """Parameters, latency (batch 1) and throughput (batch 32) of each run folder's model, PyTorch fp32, through
    the package's own `multidistill benchmark` (`evaluation.benchmark.benchmark`) on the task's dev rows."""
    from multidistill.evaluation.benchmark import benchmark
    from multidistill.models import load_model

    models = [folder / "model" for folder in folders.values()]
    task = next(iter(load_model(models[-1]).tasks))
    report = benchmark(models, [task], data_root=None, runtimes=("pytorch_fp32",), rounds=rounds,
                       latency_runs=10 * rounds, memory=False)
    entries = report["models"].values()  # in the order of ``models``
    return {name: {**entry["runtimes"]["pytorch_fp32"], "params": entry["parameters"], "folder": str(folder)}
            for (name, folder), entry in zip(folders.items(), entries, strict=True)}


def speed_table(speed: dict[str, dict]) -> str:
    """Markdown: parameters, latency and throughput per model, and each throughput over the first row's."""
    first = next(iter(speed.values()))["throughput_examples_per_s"]
    lines = ["### Inference speed (PyTorch fp32, this CPU)", "",
             "| model | parameters | latency ms (batch 1) | examples/s (batch 32) | x teacher |",
             "|---|---:|---:|---:|---:|"]
    for name, row in speed.items():
        lines.append(f"| {name} | {row['params'] / 1e6:.1f}M | {row['latency_ms_median']:.1f} | "
                     f"{row['throughput_examples_per_s']:.0f} | {row['throughput_examples_per_s'] / first:.2f} |")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "metakd_amazon.yaml")
    parser.add_argument("--root", type=Path, default=Path("runs/bench_metakd"))
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--baselines", nargs="*", default=["no_kd", "single_domain", "mixed", "meta_without_target"])
    parser.add_argument("--domain-fraction", type=float, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep finished stages' checkpoints/")
    parser.add_argument("--speed-rounds", type=int, default=5, help="rounds of the speed table (0: none)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="training stages' autocast; auto = bf16 where the CPU has native bf16 (default)")
    parser.add_argument("--set", action="append", help="extra recipe overrides, key=value")
    args = parser.parse_args()
    from multidistill.utils.atomic import atomic_file, write_json

    results = {f"{f:g}": run_fraction(f, args) for f in args.fractions}
    text = "\n".join(table(float(f), summary) for f, summary in results.items())
    speed = {}
    if args.speed_rounds > 0:
        first = f"{args.fractions[0]:g}"
        speed = measure_speed(speed_folders(args.root / f"fraction-{first}", results[first]["tasks"]),
                              args.speed_rounds)
        text += "\n" + speed_table(speed)
    print(text)
    args.root.mkdir(parents=True, exist_ok=True)
    report = args.root / f"{args.config.stem}.md"
    with atomic_file(report) as handle:
        handle.write(text)
    write_json(report.with_suffix(".json"), {"args": {k: str(v) for k, v in vars(args).items()},
                                             "summaries": results, "speed": speed})
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
