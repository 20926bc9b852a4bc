"""Build a run folder's report: report.md with quality and speed tables plus PNG figures.

Everything is read from files the run already holds (`report.inputs`: summary.json, benchmark.json, each stage's
train_history.json, tensorboard events and stage.json); only summary.json is required. Optional inputs that are
missing or unreadable drop their section with a note saying why, instead of failing the report.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from multidistill.errors import DataError
from multidistill.evaluation.baseline import AT_BASELINE_MARK
from multidistill.evaluation.retention import OUT_OF_RANGE_MARK, RETENTION_RANGE, out_of_range, retention
from multidistill.evaluation.seeds import has_seeds, mean_sd, seed_averages, spread_text
from multidistill.report.inputs import (
    BENCHMARK_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    STAGE_FILE,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    json_number,
    load_benchmark,
    load_stage_times,
    load_summary,
    load_training,
    stale_summary,
)
from multidistill.report.stage_names import stage_families, without_seed
from multidistill.utils.atomic import atomic_dir
from multidistill.utils.entry import api_call
from multidistill.utils.markdown import table_cell

REPORT_DIR = "report"
OS_JUNK = {".ds_store", "thumbs.db", "desktop.ini"}  # files a file browser drops in any folder it shows


# -------------------------------------------------------------------------------------------- formatting


def stage_time_rows(seconds: dict[str, float]) -> list[tuple[str, int, float]]:
    """Stage times summed per family (`stage_families` over the names without their seed), largest first:
    [(family, stages, seconds)]."""
    by_name: dict[str, list[str]] = {}
    for stage in seconds:
        by_name.setdefault(without_seed(stage), []).append(stage)
    rows = []
    for family, group in stage_families(list(by_name)).items():
        stages = [stage for name, _ in group for stage in by_name[name]]
        rows.append((family, len(stages), sum(seconds[stage] for stage in stages)))
    return sorted(rows, key=lambda row: -row[2])




def fmt_score(value: float | None) -> str:
    """A score with 4 decimals, or an en dash when unknown."""
    return "–" if value is None else f"{value:.4f}"


def fmt_pct(ratio: float | None) -> str:
    """A ratio (0.973) as a percentage with one decimal (97.3)."""
    return "–" if ratio is None else f"{100 * ratio:.1f}"


def fmt_ms(value: float | None) -> str:
    """Milliseconds: two decimals below 10 ms, one above."""
    return "–" if value is None else (f"{value:.2f}" if value < 10 else f"{value:.1f}")


def fmt_count(value: float | None) -> str:
    """A parameter count as 22.7M / 350.2K."""
    if value is None:
        return "–"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{int(value)}"


def fmt_duration(seconds: float) -> str:
    """``4.2 s`` (one decimal below 10 s, where a whole second is a large part), ``42 s``, ``12.5 min``, ``3.2 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def fmt_params(row: dict) -> str:
    """A summary row's parameters; a row scored from several models (per-task fine-tunes, an ensemble) counts
    them all, and says how many."""
    models = row.get("models", 1)
    return fmt_count(row["params"]) + (f" ({models} models)" if models > 1 and row["params"] else "")


def fmt_mb(num_bytes: float | None) -> str:
    """Bytes as MB (10^6 bytes)."""
    if num_bytes is None:
        return "–"
    return f"{num_bytes / 1e6:.2f}" if num_bytes < 1e7 else f"{num_bytes / 1e6:.1f}"


def fmt_mb_value(value: float | None) -> str:
    """A size already in MB, with one decimal."""
    return "–" if value is None else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A Markdown table; the first ``left`` columns are left-aligned, the rest (numbers) right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(table_cell(c) for c in row) + " |" for row in rows]
    return lines


def _task_retention(row: dict, base: dict, task: str) -> float | None:
    kept = retention(row["main"], base["main"], [task])
    return kept.ratio if kept else None


def _runtime_value(model: dict, stats: dict, key: str) -> float | None:
    """A runtime's own ``score``/``disk_bytes`` (an int8 export scores and weighs differently), else the model's."""
    value = stats.get(key)
    return value if value is not None else model.get(key)


def scored_rows(benchmark: dict) -> int | None:
    """The rows per task the benchmark scored when it scored a slice (`max_eval_examples`), else None (the
    whole split, as the quality table)."""
    rows = (benchmark.get("settings") or {}).get("max_eval_examples")
    return rows if type(rows) is int else None


def scored_split(benchmark: dict) -> str:
    """The split benchmark.json's scores are on (files written before `--split` hold dev scores)."""
    split = benchmark.get("split")
    return split if split in ("dev", "test") else "dev"


def score_label(benchmark: dict) -> str:
    """What benchmark.json's scores are: one task's main metric, or their mean over several tasks."""
    tasks = benchmark.get("tasks")
    tasks = [str(t) for t in tasks] if isinstance(tasks, list) and tasks else [str(benchmark.get("task", "?"))]
    rows, split = scored_rows(benchmark), scored_split(benchmark)
    cap = f", first {rows} {split} rows per task" if rows is not None else ""
    if len(tasks) == 1:
        return f"{split} score ({tasks[0]}, main metric{cap})"
    return f"{split} score (mean main metric over {', '.join(tasks)}{cap})"


def axis_score_label(benchmark: dict, width: int = 60) -> str:
    """`score_label`, short enough for a figure's axis: past ``width`` characters the tasks are counted, not listed
    (report.md's column list names them)."""
    label = score_label(benchmark)
    if len(label) <= width:
        return label
    tasks = benchmark.get("tasks") if isinstance(benchmark.get("tasks"), list) else []
    rows = scored_rows(benchmark)
    return (f"{scored_split(benchmark)} score (mean main metric over {len(tasks)} tasks"
            f"{f', first {rows} rows each' if rows else ''})")


def max_length_text(benchmark: dict) -> str:
    """What the benchmark's max length was: one setting for all, or (None) each model's own training length."""
    setting = benchmark.get("settings", {}).get("max_length")
    if setting is not None:
        return f"inputs truncated to {setting} tokens"
    own = [f"{name} {model['max_length']}" for name, model in benchmark["models"].items()
           if isinstance(model.get("max_length"), int)]
    return "inputs truncated to each model's own training length" + (f" ({', '.join(own)} tokens)" if own else "")


def latency_speedup(benchmark: dict, name: str, runtime: str) -> float | None:
    """The reference's median batch-1 latency / this row's (> 1 is faster): benchmark.json's ``latency_speedup``,
    or computed from the latencies of a file written before it was recorded."""
    recorded = json_number((benchmark.get("latency_speedup") or {}).get(name, {}).get(runtime))
    if recorded is not None:
        return recorded
    reference = benchmark["models"].get(benchmark.get("reference"), {}).get("runtimes", {}).get("pytorch_fp32", {})
    base, mine = reference.get("latency_ms_median"), benchmark["models"][name]["runtimes"][runtime]
    mine = mine.get("latency_ms_median")
    return base / mine if base and mine else None


def parity_status(runtime: str, raw: dict) -> str:
    """A runtime's parity column: ``failed`` when its export failed the check, ``ok`` for a checked ONNX graph,
    ``–`` for PyTorch (nothing to compare with)."""
    if raw.get("status") == "failed":
        return "FAILED"
    return "ok" if runtime.startswith("onnx") else "–"


def column_meanings(benchmark: dict, with_rss: bool = True) -> list[tuple[str, str]]:
    """(column, what it measures) for the speed table, shared by report.md and the CLI's table caption."""
    batch = benchmark.get("settings", {}).get("batch_size", 32)
    reference = benchmark.get("reference", "the reference")
    meanings = [
        ("score", score_label(benchmark)),
        ("latency", "one example at a time (batch 1), milliseconds per call: median and 95th percentile"),
        ("throughput", f"examples per second at batch {batch}"),
        ("throughput ×", f"this row's throughput / {reference} on PyTorch fp32's (> 1: more examples per second)"),
        ("latency ×", f"{reference} on PyTorch fp32's median latency / this row's (> 1: answers sooner)"),
        ("parameters", "the model's parameter count (the same for every runtime of a model)"),
        ("disk", "size of the weights file of that runtime (safetensors, or the ONNX graph), 10^6 bytes"),
    ]
    if with_rss:
        meanings.append(("peak RSS", f"peak resident memory (MiB) of a fresh process that loads the model and runs "
                                     f"3 batches of {batch}, interpreter and libraries included"))
    meanings.append(("parity", "ONNX rows: whether the export passed its parity check against PyTorch, made when "
                               "the export was written (its export.json names the split; a reused export keeps "
                               "the check of the benchmark that wrote it; FAILED rows keep their parity-check score "
                               "but have no speed)"))
    return meanings


def _parameters(fewer: float) -> str:
    """' with 3.1× fewer parameters', or more, or as many (within 5%: a teacher beside the reference)."""
    if fewer >= 1.05:
        return f" with {fewer:.1f}× fewer parameters"
    return f" with {1 / fewer:.1f}× more parameters" if fewer <= 0.95 else " with as many parameters"


def _ratio(ratio: float, better: str, worse: str, same: str) -> str:
    """'2.0× smaller' / '1.5× larger' / 'as large' for a ratio > 1 meaning ``better`` (within 5%: the same)."""
    if ratio >= 1.05:
        return f"{ratio:.1f}× {better}"
    return f"{1 / ratio:.1f}× {worse}" if ratio <= 0.95 else same


def _glance(summary: dict, benchmark: dict | None) -> list[str]:
    """One line per model answering 'how much quality did I keep' and 'how much faster/smaller is it'."""
    lines = []
    split = summary["split"]  # Meta-KD reports test where the task has one
    reference, rows = summary["reference"], summary["rows"]
    base = rows[reference]
    for name, row in rows.items():
        if name == reference or row["retention"] is None:
            continue
        kept = row["kept"]
        over = "" if len(kept.tasks) == len(summary["tasks"]) else f" on {', '.join(kept.tasks)}"
        text = (f"- **{name}** keeps **{fmt_pct(kept.ratio)}%** of the reference's average {split} score{over} "
                f"({fmt_score(kept.score)} vs {fmt_score(kept.reference_score)})")
        if row["params"] and base["params"]:
            text += _parameters(base["params"] / row["params"])
        if row.get("above_baseline") is not None:
            text += (f"; above the trivial baseline it keeps **{fmt_pct(row['above_baseline'])}%** of the "
                     f"reference's margin")
        if row.get("at_baseline"):
            text += f" (no better than a constant predictor on {', '.join(row['at_baseline'])})"
        lines.append(text + ".")
    return lines + (_speed_glance(benchmark) if benchmark else [])


def _speed_glance(benchmark: dict) -> list[str]:
    """Per benchmarked model, its fastest runtime against the reference on that same runtime, so a runtime's gain
    (ONNX over PyTorch) is not read as distillation's; where the reference was not timed on it, against the
    reference's PyTorch fp32, naming both runtimes."""
    from multidistill.report.plots import runtime_label

    lines = []
    ref_name = benchmark.get("reference")
    ref_model = benchmark["models"].get(ref_name) or {"runtimes": {}}
    ref_timed = {r: s for r, s in ref_model["runtimes"].items() if s.get("latency_ms_median")}
    rows = scored_rows(benchmark)
    for name, model in benchmark["models"].items():
        if name == ref_name:
            continue
        timed = [(r, s["latency_ms_median"]) for r, s in model["runtimes"].items() if s.get("latency_ms_median")]
        if not timed:
            continue
        runtime, latency = min(timed, key=lambda item: item[1])
        stats = model["runtimes"][runtime]
        text = f"- **{name}** is fastest on {runtime_label(runtime)}: {fmt_ms(latency)} ms at batch 1"
        against = runtime if runtime in ref_timed else next(
            (r for r in ("pytorch_fp32", *ref_timed) if r in ref_timed), None)
        ref_stats = ref_timed.get(against, {})
        if against is not None:
            text += (f"; against {ref_name} on {runtime_label(runtime)} too: " if against == runtime else
                     f"; against {ref_name} on {runtime_label(against)} ({ref_name} has no {runtime_label(runtime)} "
                     f"timing): ")
            parts = [_ratio(ref_stats["latency_ms_median"] / latency, "faster", "slower", "as fast") + " at batch 1"]
            mine, theirs = stats.get("throughput_examples_per_s"), ref_stats.get("throughput_examples_per_s")
            if mine and theirs:
                parts.append(f"{mine / theirs:.2f}× its throughput")
            disk, ref_disk = _runtime_value(model, stats, "disk_bytes"), _runtime_value(ref_model, ref_stats,
                                                                                         "disk_bytes")
            if disk and ref_disk:
                parts.append(_ratio(ref_disk / disk, "smaller", "larger", "as large") + " on disk")
            text += ", ".join(parts)
        score = _runtime_value(model, stats, "score")
        if score is not None:
            text += f"; {scored_split(benchmark)} score {fmt_score(score)}"
            ref_score = _runtime_value(ref_model, ref_stats, "score") if ref_stats else ref_model.get("score")
            if ref_score is not None:
                text += f" (reference {fmt_score(ref_score)})"
            if rows is not None:
                text += f" on the first {rows} {scored_split(benchmark)} rows per task"
        lines.append(text + ".")
    return lines


def _domain_sections(rows: dict[str, dict], tasks: list[str], split: str) -> list[str]:
    """A table per task with domains: each row's main metric on each domain's rows, and their unweighted mean (a
    model of one domain's rows, e.g. a Meta-KD student, is one column of the quality table instead)."""
    out = []
    for task in tasks:
        scored = {name: row["domains"][task] for name, row in rows.items() if task in row.get("domains", {})}
        if not scored:
            continue
        domains = list(dict.fromkeys(d for entry in scored.values() for d in entry["scores"]))
        metrics = {entry["metric"] for entry in scored.values()}
        metric = metrics.pop() if len(metrics) == 1 else "each row's main metric"  # one spec: one metric
        out += [f"### {task} per domain", "",
                f"{split.capitalize()} {metric} on each domain's rows; average: their unweighted mean (`evaluate`'s "
                "domain_average). Rows scored from several models (per-task fine-tunes, an ensemble of given "
                "teachers, seed means) have no domain scores and are not listed.", "",
                *_table(["model", *domains, "average"],
                        [[name, *(fmt_score(entry["scores"].get(d)) for d in domains), fmt_score(entry["average"])]
                         for name, entry in scored.items()]), ""]
    return out


def _time_section(times: dict) -> list[str]:
    """The "Time per stage" section (none for a run without recipe stages)."""
    if not times["seconds"]:
        return []
    rows = stage_time_rows(times["seconds"])
    total = sum(seconds for _, _, seconds in rows)
    table = [[family, str(count), fmt_duration(seconds), f"{100 * seconds / total:.0f}" if total else "–"]
             for family, count, seconds in rows]
    out = ["## Time per stage", "",
           f"Wall time of the {len(times['seconds'])} finished stages, {fmt_duration(total)} in all, from each "
           "stage's `stage.json`, summed over the runs of a stage that was stopped and resumed; stages named "
           "alike (one name before a `-`: seeds, targets, or the demo's student-bilstm and student-transformer) are "
           "summed in one row. Time a stage lost to a process killed outright is not "
           "counted, and a run paused meanwhile counts its pause.", "",
           *_table(["stages", "count", "wall time", "share %"], table), ""]
    if times["last_part_only"]:
        out += [f"_{len(times['last_part_only'])} stages were recorded before multidistill added a stage's time up "
                "over its runs: if one was resumed, only its last run is counted._", ""]
    return out


def render_markdown(run_dir: Path, summary: dict, benchmark: dict | None, benchmark_note: str | None,
                    training: dict, figures: dict[str, Path | None], inputs: list[str],
                    times: dict | None = None, warnings: list[str] | None = None) -> str:
    """The text of report.md; ``figures`` maps a figure key to its PNG (None when it was not drawn); ``times``
    is `load_stage_times`' result (no time section without it); ``warnings`` (`stale_summary`) head the report."""
    times = times or {"seconds": {}, "last_part_only": [], "files": [], "notes": []}
    from multidistill.report.plots import runtime_label

    reference, tasks, rows = summary["reference"], summary["tasks"], summary["rows"]
    split = summary["split"]
    base = rows[reference]
    out = [f"# Distillation report: {run_dir.resolve().name}", ""]
    out += [line for warning in warnings or [] for line in (f"> **Warning:** {warning}", "")]
    out += [f"Generated {datetime.now().strftime('%Y-%m-%d %H:%M')} from `{run_dir}`; reference: **{reference}**.", ""]
    out += [line for paragraph in summary.get("intro", []) for line in (paragraph, "")]
    glance = _glance(summary, benchmark)
    if glance:
        out += ["## At a glance", "", *glance, ""]

    baseline = summary.get("baseline")
    out += ["## Quality", "", f"{split.capitalize()} scores (each task's main metric); retention % = a row's "
            "average / the reference's average, both over the tasks the two were scored on.", ""]
    if baseline:
        out += [f"The {baseline['name']} row answers a constant (majority class, or the training mean); above "
                f"baseline % = (row - baseline) / (reference - baseline) on the same averages. {AT_BASELINE_MARK}: "
                f"below the baseline or within {baseline['margin']} above it, a score a constant predictor also "
                "reaches, so it is not retention.", ""]

    def marked(row: dict, task: str, text: str) -> str:
        return text + (AT_BASELINE_MARK if task in row.get("at_baseline", []) else "")

    def ranged(ratio: float | None) -> str:
        return fmt_pct(ratio) + (OUT_OF_RANGE_MARK if out_of_range(ratio) else "")

    others = [row for name, row in rows.items() if name != reference]
    # Each non-reference row's retention per task, for the ‡ note and the per-task table.
    per_task_kept = {name: {t: _task_retention(row, base, t) for t in tasks}
                     for name, row in rows.items() if name != reference}
    wild = [t for t in tasks if any(out_of_range(kept[t]) for kept in per_task_kept.values())]
    wild_average = [row for row in others if out_of_range(row["retention"])]
    low, high = RETENTION_RANGE
    # The reference's average over each such row's tasks (rows over the same tasks share it: named once).
    reference_averages = dict.fromkeys(fmt_score(row["kept"].reference_score) for row in wild_average
                                       if row.get("kept"))
    wild_note = "" if not (wild or wild_average) else (
        f"{OUT_OF_RANGE_MARK}: outside {low:g}..{high:g}%, where a ratio says more about the reference's score "
        "than about what the model keeps (most often a reference score near 0: "
        + ", ".join([f"{t} {fmt_score(base['main'].get(t))}" for t in wild]
                    + [f"its average {value}" for value in reference_averages]) + ")")

    seeded = {name: row for name, row in rows.items() if has_seeds(row)}
    if seeded:
        out += ["Rows trained with several seeds show their mean ± the standard deviation over the seeds' models "
                "(the average's: over each seed's average).", ""]
    table = []
    for name, row in rows.items():
        runs = row.get("runs") or {}
        table.append([f"{name} (reference)" if name == reference else name,
                      *(marked(row, t, fmt_score(row["main"].get(t)) + spread_text(runs.get(t))) for t in tasks),
                      fmt_score(row["average"]) + spread_text(seed_averages(runs, summary["averaged"])),
                      ranged(row["retention"]), *([fmt_pct(row["above_baseline"])] if baseline else []),
                      fmt_params(row)])
    if baseline:
        table.append([baseline["name"], *(fmt_score(baseline["main"].get(t)) for t in tasks),
                      fmt_score(baseline["average"]), fmt_pct(baseline["retention"]), fmt_pct(0.0), "–"])
    out += _table(["model", *tasks, "average", "retention %", *(["above baseline %"] if baseline else []),
                   "parameters"], table) + [""]
    if wild_average:
        out += [wild_note + ".", ""]
    if baseline and baseline["predictors"]:
        out += [f"{baseline['name']}: " + "; ".join(f"{t}: {p}" for t, p in baseline["predictors"].items()), ""]
    per_seed = {name: averages for name, row in seeded.items()
                if (averages := seed_averages(row["runs"], summary["averaged"])) is not None}
    if per_seed:
        count = max(len(v) for v in per_seed.values())
        out += ["Each seed's average over the tasks (seeds in the order the recipe lists them):", "",
                *_table(["model", *(f"seed {i + 1}" for i in range(count)), "mean ± sd"],
                        [[name, *(fmt_score(v) for v in values), *([""] * (count - len(values))),
                          fmt_score(mean_sd(values)[0]) + spread_text(values)]
                         for name, values in per_seed.items()]), ""]
    out += _domain_sections(rows, tasks, split)
    if figures.get("seeds"):
        out += [f"![Scores with each seed's model]({figures['seeds'].name})", ""]
    if figures.get("retention"):
        out += [f"![Retention per task vs {reference}]({figures['retention'].name})", ""]
        if baseline:
            out += [f"The figure shows what the {baseline['name']} (a constant predictor) keeps: a grey line behind "
                    "each group's bars (or, with many models, the heatmap's last row). A value near it kept little "
                    "that a constant would not.", ""]
        per_task = [[name, *(marked(row, t, ranged(per_task_kept[name][t])) for t in tasks),
                     ranged(row["retention"])] for name, row in rows.items() if name != reference]
        out += ["Retention per task (% of the reference's score; – where the reference score is not positive"
                + (f"; {AT_BASELINE_MARK}: no better than the trivial baseline" if baseline else "")
                + (f"; {wild_note}; the figure stops its bars and colours at the range's edge"
                   if wild_note else "") + "):",
                "", *_table(["model", *(f"{t} %" for t in tasks), "average %"], per_task), ""]

    out += ["## Speed", ""]
    if benchmark is None:
        out += [f"_{benchmark_note}_", ""]
    else:
        settings = benchmark["settings"]
        batch = settings.get("batch_size", 32)
        out += [f"Measured {benchmark.get('date', '?')} on {benchmark.get('machine', '?')} "
                f"({benchmark.get('cpus', '?')} CPUs, {benchmark.get('threads', '?')} threads), timed on task "
                f"{benchmark.get('task', '?')}, {max_length_text(benchmark)}: latency at batch 1 "
                f"over {settings.get('latency_runs', '?')} runs, throughput at batch {batch}, "
                f"{settings.get('rounds', '?')} rounds.", ""]
        with_rss = any(s.get("peak_rss_mb") is not None for m in benchmark["models"].values()
                       for s in m["runtimes"].values())
        table, unscored = [], []
        for name, model in benchmark["models"].items():
            for runtime, stats in model["runtimes"].items():
                speedup = json_number((benchmark["speedup"].get(name) or {}).get(runtime))
                latency_ratio = latency_speedup(benchmark, name, runtime)
                status = parity_status(runtime, model["raw_runtimes"].get(runtime, {}))
                score = _runtime_value(model, stats, "score")
                if score is None:
                    unscored.append(f"{name} ({runtime_label(runtime)})")
                throughput = stats.get("throughput_examples_per_s")
                table.append([name, runtime_label(runtime), fmt_score(score),
                              fmt_ms(stats.get("latency_ms_median")), fmt_ms(stats.get("latency_ms_p95")),
                              "–" if throughput is None else f"{throughput:.1f}",
                              "–" if speedup is None else f"{speedup:.2f}×",
                              "–" if latency_ratio is None else f"{latency_ratio:.2f}×", fmt_count(model["parameters"]),
                              fmt_mb(None if status == "FAILED" else _runtime_value(model, stats, "disk_bytes")),
                              *([fmt_mb_value(stats.get("peak_rss_mb"))] if with_rss else []), status])
        out += _table(["model", "runtime", "score", "latency median (ms)", "latency p95 (ms)",
                       f"throughput (ex/s, batch {batch})", "throughput ×", "latency ×", "parameters", "disk (MB)",
                       *(["peak RSS (MB)"] if with_rss else []), "parity"], table, left=2)
        out += ["", "What each column measures:", "",
                *(f"- **{column}**: {meaning}" for column, meaning in column_meanings(benchmark, with_rss)), ""]
        failures = benchmark.get("gate_failures") if isinstance(benchmark.get("gate_failures"), list) else []
        if failures:
            out += ["### Parity check failures", "",
                    "These runtimes' exports failed their parity check and were not measured for speed; the other "
                    f"rows were. The int8 rule: the main-metric drop on the checked {scored_split(benchmark)} "
                    "rows must not exceed the "
                    "larger of the tolerance and twice the drop's paired standard error (docs/export.md).", "",
                    *(f"- {table_cell(reason)}" for reason in failures), ""]
        if figures.get("speed"):
            out += [f"![Score vs latency and throughput]({figures['speed'].name})", ""]
            if unscored:
                out += [f"_Not in the figure (no score recorded): {', '.join(unscored)}._", ""]
        else:
            out += ["_No score-vs-speed figure: no model in benchmark.json has both a score and a timing._", ""]

    out += ["## Training", ""]
    if figures.get("training"):
        out += ["Train loss from each stage's tensorboard events; dev average from its train_history.json.", "",
                f"![Training curves]({figures['training'].name})", ""]
    else:
        out += ["_No training curves: no stage folder holds a train_history.json or tensorboard train/loss "
                "scalars._", ""]

    out += _time_section(times)
    notes = [*summary["notes"], *training["notes"], *times["notes"]]
    if notes:
        out += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    out += ["---", "", f"_How this was made: `multidistill report` read {describe_inputs(inputs)} "
            f"in `{run_dir}`; tensorboard folders are read for their `train/loss` and `eval/average` scalars._",
            ""]
    return "\n".join(out)


def describe_inputs(inputs: list[str], listed: int = 12) -> str:
    """The files a report read, each named while there are few; past ``listed``, the stage folders' training
    logs are counted instead (a Meta-KD run has 60+ stage folders: 120+ names are a wall, not a record)."""
    if len(inputs) <= listed:
        return ", ".join(f"`{f}`" for f in inputs)
    leaves = (HISTORY_FILE, f"{TENSORBOARD_DIR}/", STAGE_FILE)
    logs = [f for f in inputs if f.endswith(tuple(f"/{leaf}" for leaf in leaves))]
    others = [f for f in inputs if f not in logs]
    folders = list(dict.fromkeys(f.rsplit("/", 2 if f.endswith("/") else 1)[0] for f in logs))
    named = ", ".join(f"`{f}`" for f in folders[:3]) + (", …" if len(folders) > 3 else "")
    kinds = [f"`{leaf}`" for leaf in leaves if any(f.endswith(f"/{leaf}") for f in logs)]
    listed_kinds = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + f" and {kinds[-1]}"
    logs_read = f"the {listed_kinds} of {len(folders)} stage folders ({named})"
    return ", ".join(f"`{f}`" for f in others) + f", and {logs_read}" if others else logs_read


# -------------------------------------------------------------------------------------------------- build


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *, progress: bool = True) -> Path:
    """Write report.md and its figures to ``out_dir`` (default ``run_dir/report``); returns report.md's path.

    All inputs are read before anything is written, so a missing summary.json creates nothing; the
    report folder is built in a temporary sibling and swapped in only when complete. Warnings about the run
    (a summary older than what it summarises) go into report.md and, unless ``progress`` is False, to stderr; a
    report folder that cannot be written raises `OutputError`.
    """
    with api_call("build_report", progress=progress):
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise DataError("run folder is a file, not a folder" if run_dir.exists() else "run folder not found",
                            path=run_dir)
        out_dir = Path(out_dir) if out_dir is not None else run_dir / REPORT_DIR
        if out_dir.exists() and not out_dir.is_dir():  # a file there would be swapped out for the report folder
            raise DataError("is a file, not a folder: nothing was written; choose a folder with --out", path=out_dir)
        held = [p for p in out_dir.iterdir() if p.name.lower() not in OS_JUNK] if out_dir.is_dir() else []
        if held and not (out_dir / "report.md").is_file():
            # Replacing it would delete what it holds (a recipe's stage folder named report, the user's files).
            raise DataError("is not empty and holds no report.md, so it is not an earlier report: nothing was "
                            "written; choose another folder with --out", path=out_dir)
        if held:  # an earlier report holds report.md and its figures only; anything else is someone's
            foreign = sorted(p.name for p in held if p.name != "report.md" and p.suffix != ".png")
            if foreign:
                raise DataError(f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''} beside report.md, "
                                "which replacing it as an earlier report would delete: nothing was written; choose "
                                "another folder with --out", path=out_dir)
        summary = load_summary(run_dir)
        benchmark, benchmark_note = load_benchmark(run_dir)
        training = load_training(run_dir, skip=out_dir)
        times = load_stage_times(run_dir, skip=out_dir)
        warnings = stale_summary(run_dir, skip=out_dir)
        source = SUMMARY_FILE if (run_dir / SUMMARY_FILE).is_file() else METRICS_FILE
        inputs = [source, *([BENCHMARK_FILE] if benchmark else []), *training["files"], *times["files"]]

        from multidistill.report import plots
        from multidistill.report.colours import model_colours

        # One colour per model in every figure (`colours.model_keys`): a crowded training figure colours its stage
        # families by member instead, so its stages take no colours from the models'.
        stages = list(dict.fromkeys([*training["loss"], *training["dev"]]))
        colours = model_colours(summary["rows"], summary["reference"], [] if len(stages) > plots.MAX_CURVES else stages,
                                (benchmark or {}).get("models", {}))
        with atomic_dir(out_dir) as tmp:
            figures: dict[str, Path | None] = {
                "retention": plots.plot_retention(summary["rows"], summary["reference"], summary["tasks"],
                                                  tmp / "retention.png", colours=colours,
                                                  split=summary["split"], baseline=summary["baseline"]),
                "training": plots.plot_training_curves(training["loss"], training["dev"], tmp / "training_curves.png",
                                                       colours=colours, tasks=training["tasks"]),
                "seeds": plots.plot_seed_scores(summary["rows"], summary["tasks"], tmp / "seeds.png", colours=colours,
                                                split=summary["split"]),
                "speed": None,
            }
            if benchmark:
                figures["speed"] = plots.plot_score_vs_speed(
                    benchmark["models"], tmp / "score_vs_latency.png", task=benchmark.get("task"),
                    score_label=axis_score_label(benchmark), reference=benchmark.get("reference"),
                    batch_size=benchmark["settings"].get("batch_size", 32), colours=colours)
            text = render_markdown(run_dir, summary, benchmark, benchmark_note, training, figures, inputs, times,
                                   warnings)
            (tmp / "report.md").write_text(text, encoding="utf-8")
        for warning in warnings:  # also where the person who ran the command sees it, not only in report.md
            print(f"warning: {run_dir}: {warning}", file=sys.stderr)
        return out_dir / "report.md"
