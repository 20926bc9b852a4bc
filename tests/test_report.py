"""`multidistill report`: report.md and readable PNGs from the files a run folder holds, written atomically."""

from __future__ import annotations

import io
import json
import math
import os
import struct
import time
from pathlib import Path

import pytest

from multidistill.errors import DataError
from multidistill.report import build_report
from multidistill.report.build import load_summary

TASKS = ["sst2", "mrpc", "cola"]
REFERENCE = "teacher (MiniLM-L12, 3 seeds)"
ROWS = {
    REFERENCE: ({"sst2": 0.9151, "mrpc": 0.8821, "cola": 0.4812}, 33_360_000),
    "student: mtdnn_kd 6-layer MiniLM distilled from the ensemble": ({"sst2": 0.9013, "mrpc": 0.8642,
                                                                       "cola": 0.4120}, 22_713_216),
    "student: bilstm": ({"sst2": 0.8612, "mrpc": 0.8011, "cola": 0.2015}, 2_410_000),
}
RUNTIMES = {
    "pytorch_fp32": (38.2, 45.1, 61.0), "pytorch_bf16": (52.4, 60.3, 44.5),
    "onnx_fp32": (27.9, 31.0, 83.2), "onnx_int8": (12.6, 14.8, 190.4),
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _summary() -> dict:
    base = sum(ROWS[REFERENCE][0].values()) / len(TASKS)
    rows = {}
    for name, (main, params) in ROWS.items():
        average = sum(main.values()) / len(main)
        tasks = {t: {"metric": v} for t, v in main.items()}
        rows[name] = {"metrics": {"tasks": tasks, "main": main, "average": average}, "params": params,
                      "retention": average / base}
    return {"reference": REFERENCE, "tasks": TASKS, "rows": rows}


def _benchmark() -> dict:
    """Shaped like `multidistill benchmark` output: per-runtime scores and file sizes (int8 differs)."""
    models = {}
    for k, (name, score, params, runtimes) in enumerate([
        ("teacher-minilm-l12", 0.9151, 33_360_000, ["pytorch_fp32", "pytorch_bf16", "onnx_fp32", "onnx_int8"]),
        ("student-minilm-l6-distilled-mtdnn-kd-seed-1", 0.9013, 22_713_216, ["pytorch_fp32", "onnx_int8"]),
        ("student-bilstm", 0.8612, 2_410_000, ["pytorch_fp32", "onnx_fp32", "onnx_int8"]),
    ]):
        scale = 1.0 / (1 + 1.5 * k)
        models[name] = {
            "path": f"runs/x/{name}", "kind": "BiLSTMModel" if "bilstm" in name else "MultiTaskModel",
            "parameters": params, "disk_bytes": params * 4, "score": score,
            "runtimes": {r: {"scores": {"sst2": score - 0.004 * (r == "onnx_int8")},
                             "score": score - 0.004 * (r == "onnx_int8"),
                             "disk_bytes": params * (1 if r == "onnx_int8" else 4),
                             "latency_ms_median": RUNTIMES[r][0] * scale, "latency_ms_p95": RUNTIMES[r][1] * scale,
                             "throughput_examples_per_s": RUNTIMES[r][2] / scale, "latency_runs": 50,
                             "throughput_batches": 10, "peak_rss_mb": 400.0 * scale}
                         for r in runtimes},
        }
    base = models["teacher-minilm-l12"]["runtimes"]["pytorch_fp32"]["throughput_examples_per_s"]
    speedup = {n: {r: s["throughput_examples_per_s"] / base for r, s in m["runtimes"].items()}
               for n, m in models.items()}
    return {"format_version": 1, "date": "2026-11-22 10:00", "machine": "x86_64", "cpus": 2, "threads": 2,
            "task": "sst2", "tasks": ["sst2"], "native_bf16": False,
            "settings": {"latency_runs": 50, "batch_size": 32, "rounds": 5, "max_length": 128},
            "reference": "teacher-minilm-l12", "models": models, "speedup": speedup}


def _stage(folder: Path, steps: int, start_loss: float, final_dev: float) -> None:
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True)
    history = []
    for epoch in range(1, 4):
        step = epoch * steps // 3
        average = final_dev - 0.08 / epoch
        history.append({"step": step, "epoch": epoch, "tasks": {"sst2": {"accuracy": average}},
                        "main": {"sst2": average}, "average": average})
    (folder / "train_history.json").write_text(json.dumps(history))
    writer = SummaryWriter(str(folder / "tensorboard"))
    for step in range(5, steps + 1, 5):
        writer.add_scalar("train/loss", start_loss * math.exp(-step / steps * 2) * (1 + 0.1 * math.sin(step)), step)
        writer.add_scalar("train/lr", 1e-4, step)
    for entry in history:
        writer.add_scalar("eval/average", entry["average"], entry["step"])
    writer.close()


def make_run(root: Path, *, benchmark: bool = True, stages: bool = True) -> Path:
    """A recipe-like run folder: summary.json, optionally benchmark.json and two trained stage folders."""
    run = root / "mtdnn_kd"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(_summary()))
    if benchmark:
        (run / "benchmark.json").write_text(json.dumps(_benchmark()))
    if stages:
        _stage(run / "teacher-seed-1", 300, 1.2, 0.76)
        _stage(run / "student", 450, 6.0, 0.72)
    return run


def record_stage(folder: Path, finished_ago_s: float = 3600, **fields) -> Path:
    """A recipe stage's stage.json, as recipes/stages.py writes it when the stage finishes ``finished_ago_s`` ago
    (before summary.json, for a positive value)."""
    folder.mkdir(parents=True, exist_ok=True)
    moment = time.time() - finished_ago_s
    path = folder / "stage.json"
    path.write_text(json.dumps({"format_version": 1, "name": folder.name, "fingerprint": "0" * 64,
                                "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(moment)), **fields}))
    os.utime(path, (moment, moment))
    return path


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    """One complete report, shared by the read-only checks (building it is the slow part)."""
    return build_report(make_run(tmp_path_factory.mktemp("full")))


def test_report_has_tables_figures_and_inputs(full_report):
    run_dir = full_report.parents[1]
    assert full_report == run_dir / "report" / "report.md"
    text = full_report.read_text()
    assert text.startswith("# Distillation report: mtdnn_kd")
    # quality table: header, the reference row, and every student's retention
    assert "| model | sst2 | mrpc | cola | average | retention % | parameters |" in text
    assert f"| {REFERENCE} (reference) | 0.9151 | 0.8821 | 0.4812 |" in text
    assert "| student: bilstm | 0.8612 | 0.8011 | 0.2015 | 0.6213 | 81.8 | 2.4M |" in text
    assert "| student: bilstm | 94.1 | 90.8 | 41.9 | 81.8 |" in text  # retention per task
    # speed table: one row per model x runtime, ms with 2 decimals below 10 ms
    assert "| model | runtime | score | latency median (ms) | latency p95 (ms)" in text
    # throughput × (190.4 / 61.0) and latency × (38.2 / 12.6) are two different ratios, each beside its own column
    assert ("| teacher-minilm-l12 | ONNX int8 | 0.9111 | 12.6 | 14.8 | 190.4 | 3.12× | 3.03× | 33.4M | 33.4 | 400.0 "
            "| ok |" in text)
    assert ("| teacher-minilm-l12 | PyTorch fp32 | 0.9151 | 38.2 | 45.1 | 61.0 | 1.00× | 1.00× | 33.4M | 133.4 "
            "| 400.0 | – |" in text)
    assert "| student-bilstm | ONNX int8 | 0.8572 | 3.15 | 3.70 |" in text
    assert "- **score**: dev score (sst2, main metric)" in text
    assert text.count("| student-bilstm |") == 3
    for png in ("retention.png", "score_vs_latency.png", "training_curves.png"):
        assert f"]({png})" in text
    assert "`teacher-seed-1/train_history.json`" in text and "`student/tensorboard/`" in text
    assert "`summary.json`" in text and "`benchmark.json`" in text
    assert sorted(p.name for p in full_report.parent.iterdir()) == [
        "report.md", "retention.png", "score_vs_latency.png", "training_curves.png"]


def test_pngs_are_valid_and_readable_size(full_report):
    import matplotlib.image

    for png in sorted(full_report.parent.glob("*.png")):
        data = png.read_bytes()
        assert data[:8] == PNG_SIGNATURE, f"{png.name} is not a PNG"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 900 and height >= 550, (png.name, width, height)
        image = matplotlib.image.imread(png)
        assert image.shape[:2] == (height, width)
        # not a blank canvas: a real figure has plenty of non-white pixels
        assert (image[..., :3] < 0.9).any(axis=-1).mean() > 0.01, png.name


def test_without_benchmark_the_report_says_why(tmp_path):
    run_dir = make_run(tmp_path, benchmark=False)
    text = build_report(run_dir).read_text()
    assert "No speed section: benchmark.json was not found" in text
    # the command that adds it, writing where the report reads (benchmark's --out defaults to ./benchmark.json)
    assert f"multidistill benchmark TEACHER/model STUDENT/model ... --tasks TASKS --out {run_dir / 'benchmark.json'}`" \
        in text
    assert "score_vs_latency.png" not in text
    assert not (run_dir / "report" / "score_vs_latency.png").exists()
    assert (run_dir / "report" / "retention.png").is_file()
    assert (run_dir / "report" / "training_curves.png").is_file()


def test_a_summary_of_test_scores_is_reported_as_test_and_equal_sizes_as_equal(tmp_path, monkeypatch):
    """Meta-KD's summary says split: test; the report and the retention figure say test, not dev. A row as large as
    the reference has as many parameters (not '1.0x fewer')."""
    from multidistill.report import plots

    labels = []
    drawn = plots.plot_retention
    monkeypatch.setattr(plots, "plot_retention", lambda *a, **k: labels.append(k.get("split")) or drawn(*a, **k))
    run_dir = make_run(tmp_path, benchmark=False, stages=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["split"] = "test"
    summary["rows"]["teacher twin"] = {**summary["rows"][REFERENCE], "params": 33_400_000}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    text = build_report(run_dir).read_text()
    assert "Test scores (each task's main metric)" in text and "Dev scores" not in text
    assert "of the reference's average test score" in text and "average dev score" not in text
    assert "**teacher twin** keeps **100.0%** of the reference's average test score (0.7595 vs 0.7595) with as many " \
           "parameters" in text
    assert "with 13.8× fewer parameters" in text
    assert labels == ["test"]


def test_many_stages_draw_each_stages_seeds_as_their_mean():
    """Past `MAX_CURVES` stage folders (Meta-KD: 60+), `-seed-<n>` stages become one mean curve over the steps
    every seed logged; a stage without seeds stays as it is."""
    from multidistill.report.plots import mean_over_seeds

    merged = mean_over_seeds({"student-books-seed-1": [(5, 1.0), (10, 3.0)],
                              "student-books-seed-2": [(5, 3.0), (10, 5.0), (15, 9.0)],
                              "meta-teacher": [(50, 0.5)], "lone-seed-7": [(1, 2.0)]})
    assert merged == {"student-books (mean of 2 seeds)": [(5, 2.0), (10, 4.0)], "meta-teacher": [(50, 0.5)],
                      "lone-seed-7": [(1, 2.0)]}


def test_unreadable_optional_inputs_degrade_to_notes(tmp_path):
    run_dir = make_run(tmp_path, stages=False)
    (run_dir / "benchmark.json").write_text("{not json")
    for stage in ("teacher-seed-1", "student"):
        (run_dir / stage / "tensorboard").mkdir(parents=True)
        (run_dir / stage / "train_history.json").write_text("[")
    text = build_report(run_dir).read_text()
    assert "No speed section: benchmark.json could not be read" in text
    assert "No training curves" in text
    assert "Skipped teacher-seed-1/train_history.json" in text


def test_a_resumed_stages_events_are_read_without_tensorboards_restart_warning(tmp_path, caplog):
    import logging

    from torch.utils.tensorboard import SummaryWriter

    from multidistill.report.inputs import load_training

    run_dir = make_run(tmp_path, stages=False)
    folder = run_dir / "student" / "tensorboard"
    writer = SummaryWriter(str(folder))
    for step in range(1, 7):  # the cut run logged up to step 6, its last checkpoint was step 3
        writer.add_scalar("train/loss", 10.0 + step, step)
    writer.close()
    time.sleep(1.1)  # event file names carry the second they were made: the resume's sorts after
    writer = SummaryWriter(str(folder), purge_step=4)  # as training/loop.py resumes
    for step in range(4, 9):
        writer.add_scalar("train/loss", float(step), step)
    writer.close()
    tb_logger = logging.getLogger("tensorboard")
    filters = list(tb_logger.filters)
    with caplog.at_level(logging.WARNING):
        training = load_training(run_dir, skip=run_dir / "report")
    assert training["loss"]["student"] == [(1, 11.0), (2, 12.0), (3, 13.0), *((s, float(s)) for s in range(4, 9))]
    assert not [r for r in caplog.records if r.name.startswith("tensorboard")], caplog.text
    assert tb_logger.filters == filters  # the filter lives for that read alone
    tb_logger.warning("Detected out of order event.step: logged elsewhere")
    assert "logged elsewhere" in caplog.text


def test_missing_summary_names_the_file_and_writes_nothing(tmp_path):
    run_dir = make_run(tmp_path, stages=False)
    (run_dir / "summary.json").unlink()
    with pytest.raises(DataError, match=r"summary\.json"):
        build_report(run_dir)
    assert not (run_dir / "report").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".report")]


def test_invalid_summary_names_the_field(tmp_path):
    run_dir = make_run(tmp_path, stages=False)
    (run_dir / "summary.json").write_text(json.dumps({"reference": "nobody", "rows": _summary()["rows"]}))
    with pytest.raises(DataError, match=r"summary\.json.*reference"):
        build_report(run_dir)
    (run_dir / "summary.json").write_text("[1, 2")
    with pytest.raises(DataError, match=r"summary\.json.*not valid JSON"):
        build_report(run_dir)
    assert not (run_dir / "report").exists()


def test_rerun_replaces_the_report_atomically(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, benchmark=False, stages=False)
    out = tmp_path / "elsewhere" / "report"
    build_report(run_dir, out)
    (out / "stale.png").write_text("a figure an older report drew")
    before = (out / "report.md").read_text()
    assert "student: bilstm" in before

    # A failure while drawing leaves the previous report exactly as it was, and no temporary folder behind.
    from multidistill.report import plots

    def boom(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(plots, "plot_training_curves", boom)
    with pytest.raises(RuntimeError, match="drawing failed"):
        build_report(run_dir, out)
    assert (out / "stale.png").is_file() and (out / "report.md").read_text() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["report"]
    monkeypatch.undo()

    # A successful re-run swaps in a complete new folder: nothing of the old one survives.
    payload = _summary()
    del payload["rows"]["student: bilstm"]
    (run_dir / "summary.json").write_text(json.dumps(payload))
    build_report(run_dir, out)
    assert not (out / "stale.png").exists()
    assert "student: bilstm" not in (out / "report.md").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["report"]


def test_summary_without_reference_uses_first_row(tmp_path):
    run_dir = make_run(tmp_path, benchmark=False, stages=False)
    payload = _summary()
    del payload["reference"]
    for row in payload["rows"].values():
        row.pop("retention")
    (run_dir / "summary.json").write_text(json.dumps(payload))
    summary = load_summary(run_dir)
    assert summary["reference"] == REFERENCE
    assert summary["rows"][REFERENCE]["retention"] == pytest.approx(1.0)
    assert "names no reference" in build_report(run_dir).read_text()


def test_command_writes_to_out_and_prints_the_path(tmp_path, capsys):
    from multidistill.report.command import report_command

    run_dir = make_run(tmp_path, benchmark=False, stages=False)
    report_command(run_dir, tmp_path / "custom")
    assert "custom/report.md" in capsys.readouterr().out.replace("\n", "")
    assert (tmp_path / "custom" / "report.md").is_file() and not (run_dir / "report").exists()


def test_every_speed_column_is_explained_and_max_length_none_is_said_in_words(tmp_path):
    run = make_run(tmp_path, stages=False)
    bench = _benchmark()
    bench["settings"]["max_length"] = None
    for name, model in bench["models"].items():
        model["max_length"] = 64 if "bilstm" in name else 128
    (run / "benchmark.json").write_text(json.dumps(bench))
    text = build_report(run).read_text()
    assert "max length None" not in text and "None" not in text
    assert ("inputs truncated to each model's own training length (teacher-minilm-l12 128, "
            "student-minilm-l6-distilled-mtdnn-kd-seed-1 128, student-bilstm 64 tokens)") in text
    for column in ("score", "latency", "throughput", "throughput ×", "latency ×", "parameters", "disk", "peak RSS",
                   "parity"):
        assert f"- **{column}**: " in text, column
    assert "examples per second at batch 32" in text and "peak resident memory (MiB) of a fresh process" in text
    assert "this row's throughput / teacher-minilm-l12 on PyTorch fp32's" in text


def test_a_failed_parity_row_is_reported_with_its_reasons(tmp_path):
    run = make_run(tmp_path, stages=False)
    bench = _benchmark()
    reason = ("student-bilstm onnx_int8: sst2 (int8): accuracy drops by 0.0550 (0.8650 -> 0.8100) > allowed 0.0300; "
              "predictions agree on 94.50% of 200 rows, max |logit difference| 0.31")
    bench["models"]["student-bilstm"]["runtimes"]["onnx_int8"] = {
        "status": "failed", "parity_failures": [reason.split(": ", 1)[1]], "scores": {"sst2": 0.81}, "score": 0.81,
        "scored_by": "export parity check", "disk_bytes": None}
    bench["gate_failures"] = [reason]
    del bench["speedup"]["student-bilstm"]["onnx_int8"]  # a failed row is not timed
    (run / "benchmark.json").write_text(json.dumps(bench))
    text = build_report(run).read_text()
    assert "| student-bilstm | ONNX int8 | 0.8100 | – | – | – | – | – | 2.4M | – | – | FAILED |" in text
    assert "### Parity check failures" in text and f"- {reason.replace('|', chr(92) + '|')}" in text
    assert "twice the drop's paired standard error" in text


def test_one_colour_per_model_in_every_figure(tmp_path, monkeypatch):
    """The teacher and each student keep one colour across the retention, speed and training figures."""
    from matplotlib.colors import to_hex

    from multidistill.report import plots

    run = tmp_path / "demo"
    run.mkdir()
    names = ["teacher", "student-transformer", "student-bilstm"]
    summary = _summary()
    summary["reference"] = "teacher"
    summary["rows"] = dict(zip(names, summary["rows"].values(), strict=True))
    (run / "summary.json").write_text(json.dumps(summary))
    bench = _benchmark()
    bench["reference"] = "teacher"
    bench["models"] = dict(zip(names, bench["models"].values(), strict=True))
    bench["speedup"] = dict(zip(names, bench["speedup"].values(), strict=True))
    (run / "benchmark.json").write_text(json.dumps(bench))
    for k, name in enumerate(names):  # stage folders named after their models, as in the demo
        _stage(run / name, 60 + 30 * k, 1.0 + k, 0.7)
    seen: dict[str, dict[str, str]] = {}
    finish = plots._finish

    def record(fig, out):
        colours = {}
        for legend in fig.legends:
            for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
                label = text.get_text().replace("\n", "").replace(" (reference)", "")
                colour = handle.get_facecolor() if hasattr(handle, "get_height") else handle.get_color()
                if label in names:
                    colours[label] = to_hex(colour)
        seen[Path(out).stem] = colours
        return finish(fig, out)

    monkeypatch.setattr(plots, "_finish", record)
    build_report(run)
    assert set(seen) == {"retention", "score_vs_latency", "training_curves"}
    assert set(seen["training_curves"]) == set(names) and set(seen["score_vs_latency"]) == set(names)
    assert set(seen["retention"]) == set(names[1:])  # the reference is the 100% line, not a bar
    for name in names:
        assert len({figure[name] for figure in seen.values() if name in figure}) == 1, (name, seen)


def test_many_stages_get_a_row_per_family_coloured_by_target(tmp_path):
    """Past `MAX_CURVES` stages, `student-books` / `student-dvd` form the family `student` (members books, dvd); a
    name sharing its prefix with no other stage is a family alone; the seeds' mean label stays on the member."""
    from multidistill.report.plots import MAX_CURVES, plot_training_curves
    from multidistill.report.stage_names import stage_families

    assert stage_families(["meta-teacher", "student-books (mean of 3 seeds)", "student-dvd (mean of 3 seeds)",
                           "student-nokd-books", "student-nokd-dvd", "teacher-mixed", "report-x"]) == {
        "meta-teacher": [("meta-teacher", "meta-teacher")],
        "student": [("student-books (mean of 3 seeds)", "books (mean of 3 seeds)"),
                    ("student-dvd (mean of 3 seeds)", "dvd (mean of 3 seeds)")],
        "student-nokd": [("student-nokd-books", "books"), ("student-nokd-dvd", "dvd")],
        "teacher-mixed": [("teacher-mixed", "teacher-mixed")],
        "report-x": [("report-x", "report-x")]}
    lone = "lone (mean of 2 seeds)"
    assert stage_families([lone]) == {"lone": [(lone, lone)]}
    # The longest shared prefix: a hyphenated task stays a member; `meta-teacher` shares only "meta" with the
    # without-target teachers, a family of one, so it stays alone.
    assert stage_families(["finetune-mitkd-cola", "finetune-mitkd-mnli-genre", "meta-teacher",
                           "meta-teacher-without-books", "meta-teacher-without-dvd"]) == {
        "finetune-mitkd": [("finetune-mitkd-cola", "cola"), ("finetune-mitkd-mnli-genre", "mnli-genre")],
        "meta-teacher": [("meta-teacher", "meta-teacher")],
        "meta-teacher-without": [("meta-teacher-without-books", "books"), ("meta-teacher-without-dvd", "dvd")]}
    stages = [f"{family}-{domain}-seed-{seed}" for family in ("student", "intermediate") for domain in ("books", "dvd")
              for seed in (1, 2, 3, 4, 5)]
    assert len(stages) > MAX_CURVES
    loss = {stage: [(step, 1.0 / step) for step in range(1, 40)] for stage in stages}
    dev = {stage: [(10, 0.5), (20, 0.7)] for stage in stages}
    dev["unlabelled-general"] = [(10, float("nan"))]  # a text-only stage: its dev average is NaN, so no curve
    import matplotlib.pyplot as plt

    made = []
    real_subplots = plt.subplots
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plt, "subplots", lambda *a, **k: made.append(a) or real_subplots(*a, **k))
        out = plot_training_curves(loss, dev, tmp_path / "curves.png")
    assert out.is_file() and made == [(2, 2)]  # two families (student, intermediate), loss | dev each


def test_the_footer_counts_stage_logs_when_there_are_many():
    """A few inputs are named one by one; past a dozen, the stage folders' logs are counted (a Meta-KD run's
    footer listed 200+ paths)."""
    from multidistill.report.build import describe_inputs

    few = ["summary.json", "student/train_history.json", "student/tensorboard/"]
    assert describe_inputs(few) == "`summary.json`, `student/train_history.json`, `student/tensorboard/`"
    many = ["summary.json", "benchmark.json", *(f"s-{i}/{leaf}" for i in range(8)
                                                for leaf in ("train_history.json", "tensorboard/")),
            "teachers/seed-1/tensorboard/"]
    assert describe_inputs(many) == ("`summary.json`, `benchmark.json`, and the `train_history.json` and "
                                     "`tensorboard/` of 9 stage folders (`s-0`, `s-1`, `s-2`, …)")


def test_stage_times_are_summed_per_family_and_old_records_are_flagged(tmp_path):
    """The time table reads each stage's stage.json: seeds and targets of one family summed in one row, largest
    first; a stage recorded before time was added up over its runs (no `parts`) is flagged; a stage.json without
    seconds becomes a note."""
    from multidistill.recipes.stages import STAGE_MANIFEST
    from multidistill.report.build import describe_inputs
    from multidistill.report.inputs import STAGE_FILE

    assert STAGE_FILE == STAGE_MANIFEST
    run_dir = make_run(tmp_path, benchmark=False, stages=False)
    times = {"meta-teacher": 600.0, "student-books-seed-1": 100.0, "student-books-seed-2": 110.0,
             "student-dvd-seed-1": 90.0, "student-nokd-books-seed-1": 30.0, "student-nokd-dvd-seed-1": 20.0}
    for stage, seconds in times.items():
        record_stage(run_dir / stage, seconds=seconds, **({} if stage == "meta-teacher" else {"parts": 1}))
    record_stage(run_dir / "broken")
    text = build_report(run_dir).read_text()
    section = text.split("## Time per stage")[1].split("\n## ")[0]
    assert "Wall time of the 6 finished stages, 15.8 min in all" in section
    lines = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert lines == ["| meta-teacher | 1 | 10.0 min | 63 |", "| student | 3 | 5.0 min | 32 |",
                     "| student-nokd | 2 | 50 s | 5 |"]
    assert "_1 stages were recorded before" in section
    assert "Skipped broken/stage.json: no 'seconds' recorded" in text
    assert describe_inputs(["summary.json", "a/stage.json"]) == "`summary.json`, `a/stage.json`"
    many = ["summary.json", *(f"s-{i}/{leaf}" for i in range(7) for leaf in ("train_history.json", "stage.json"))]
    assert describe_inputs(many).endswith("and the `train_history.json` and `stage.json` of 7 stage folders "
                                          "(`s-0`, `s-1`, `s-2`, …)")


def test_a_run_without_recipe_stages_has_no_time_section(tmp_path):
    assert "## Time per stage" not in build_report(make_run(tmp_path, benchmark=False)).read_text()


def test_a_folder_that_is_not_a_report_is_never_replaced(tmp_path):
    """A Meta-KD run once had a stage folder named report/: `multidistill report RUN_DIR` replaced it, scores and
    all. Now a non-empty output folder without report.md is refused and kept as it was."""
    run_dir = make_run(tmp_path, benchmark=False)
    stage = run_dir / "report"
    stage.mkdir()
    (stage / "scores.json").write_text("{}")
    with pytest.raises(DataError, match="holds no report.md"):
        build_report(run_dir)
    assert sorted(p.name for p in stage.iterdir()) == ["scores.json"]
    build_report(run_dir, tmp_path / "elsewhere")  # an empty or new folder, or an earlier report, is fine
    build_report(run_dir, tmp_path / "elsewhere")
    # a folder that merely holds a report.md beside the user's own files is no earlier report either
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "report.md").write_text("my notes")
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(DataError, match="holds todo.txt beside report.md"):
        build_report(run_dir, tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_seed_averages_and_spread_by_hand():
    from multidistill.evaluation.seeds import has_seeds, mean_sd, seed_averages

    runs = {"books": [0.80, 0.90, 0.85], "dvd": [0.60, 0.70, 0.65]}
    assert seed_averages(runs, ["books", "dvd"]) == pytest.approx([0.70, 0.80, 0.75])
    mean, sd = mean_sd([0.70, 0.80, 0.75])
    assert mean == pytest.approx(0.75) and sd == pytest.approx(0.05)  # sample sd: sqrt((0.05^2 * 2) / 2)
    assert mean_sd([0.7]) == (0.7, 0.0)
    # Unequal seed counts cannot be paired into per-seed averages; neither can one seed or a missing task.
    assert seed_averages({"books": [0.8, 0.9], "dvd": [0.6]}, ["books", "dvd"]) is None
    assert seed_averages({"books": [0.8], "dvd": [0.6]}, ["books", "dvd"]) is None
    assert seed_averages({"books": [0.8, 0.9]}, ["books", "dvd"]) is None
    assert has_seeds({"runs": runs}) and not has_seeds({"runs": {"books": [0.8]}}) and not has_seeds({})


def _seeded_run(root: Path) -> Path:
    """A Meta-KD-like summary: a teacher (one model) and two student rows with three seeds each."""
    run = root / "metakd"
    run.mkdir(parents=True)
    runs = {"meta-teacher": None, "Meta-KD student": {"books": [0.84, 0.86, 0.85], "dvd": [0.83, 0.82, 0.84]},
            "no-KD student": {"books": [0.80, 0.81, 0.79], "dvd": [0.76, 0.78, 0.77]}}
    rows = {}
    for name, per_task in runs.items():
        main = ({"books": 0.85, "dvd": 0.86} if per_task is None
                else {t: sum(v) / len(v) for t, v in per_task.items()})
        metrics = {"main": main, **({"runs": per_task} if per_task else {})}
        rows[name] = {"metrics": metrics, "params": 17_000_000}
    (run / "summary.json").write_text(json.dumps({"reference": "meta-teacher", "tasks": ["books", "dvd"],
                                                  "split": "test", "rows": rows}))
    return run


def test_rows_with_seeds_show_their_spread_per_seed_averages_and_a_figure(tmp_path):
    run = _seeded_run(tmp_path)
    report = build_report(run)
    text = report.read_text()
    # books: mean 0.85, sd 0.01; dvd: mean 0.83, sd 0.01; per-seed averages 0.835, 0.84, 0.845 -> sd 0.005
    assert "| Meta-KD student | 0.8500 ± 0.0100 | 0.8300 ± 0.0100 | 0.8400 ± 0.0050 |" in text
    assert "| meta-teacher (reference) | 0.8500 | 0.8600 | 0.8550 |" in text  # one model: no spread
    assert "| model | seed 1 | seed 2 | seed 3 | mean ± sd |" in text
    assert "| Meta-KD student | 0.8350 | 0.8400 | 0.8450 | 0.8400 ± 0.0050 |" in text
    assert "| no-KD student | 0.7800 | 0.7950 | 0.7800 | 0.7850 ± 0.0087 |" in text
    assert "](seeds.png)" in text
    png = (report.parent / "seeds.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE
    # Without seeds there is no seed figure and no ± (the full report above lists its files exactly).
    summary = json.loads((run / "summary.json").read_text())
    for row in summary["rows"].values():
        row["metrics"].pop("runs", None)
    (run / "summary.json").write_text(json.dumps(summary))
    text = build_report(run).read_text()
    assert "±" not in text and "seeds.png" not in text and not (report.parent / "seeds.png").exists()


@pytest.mark.parametrize("runs", [[0.8, 0.9], {"books": []}, {"books": [0.8, "x"]}, {"books": 0.8}])
def test_malformed_seed_runs_name_the_field(tmp_path, runs):
    run = _seeded_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["rows"]["no-KD student"]["metrics"]["runs"] = runs
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(DataError, match=r"summary\.json.*rows\.no-KD student\.metrics\.runs"):
        build_report(run)
    assert not (run / "report").exists()


def test_the_run_summary_table_shows_the_seed_spread(tmp_path, capsys):
    from multidistill.recipes.summary import write_summary

    rows = json.loads((_seeded_run(tmp_path) / "summary.json").read_text())["rows"]
    write_summary(tmp_path, rows, "meta-teacher", ["books", "dvd"], split="test")
    table = " ".join(capsys.readouterr().out.split())
    assert "0.8500 ± 0.0100" in table and "0.8400 ± 0.0050" in table and "0.8600 │" in table


def test_a_run_summary_table_too_wide_for_the_terminal_cuts_no_score_name_or_task(tmp_path, monkeypatch):
    """Nine long task names sharing a prefix at 120 columns once showed ``0.56…``, ``teach…`` and ``custome…`` for
    every task: the tasks are split over several tables instead, each value whole, each name wrapped, not cut."""
    from rich.console import Console

    from multidistill.recipes import summary

    tasks = [f"customer_support_ticket_routing_{c}_production" for c in "abcdefghi"]
    rows = {name: {"metrics": {"main": {t: 0.5612 + 0.01 * k + 0.001 * i for i, t in enumerate(tasks)},
                               "runs": {t: [0.55, 0.57] for t in tasks[:3]} if k == 2 else {}}, "params": params}
            for k, (name, params) in enumerate([("teacher teacher-seed-1", 110_000_000),
                                                ("teacher teacher-seed-2", 110_000_000),
                                                ("student (joint)", 25_000)])}
    console = Console(record=True, width=120, file=io.StringIO())
    monkeypatch.setattr(summary, "console", console)
    summary.write_summary(tmp_path, rows, "teacher teacher-seed-1", tasks)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 120
    for row in rows.values():
        assert all(f"{score:.4f}" in text for score in row["metrics"]["main"].values())
    assert text.count(" ± 0.0141") == 3 and "0.5812 ± 0.0141" in text and "teacher teacher-seed-2" in text
    assert all(f"routing_{c}_" in text for c in "abcdefghi")  # each task's header, wrapped at its underscores
    assert "25.0K" in text and " 0.0M" not in text and "110.0M" in text  # report.md's `fmt_count`
    narrow = Console(record=True, width=60, file=io.StringIO())  # the model names give way, not the values
    monkeypatch.setattr(summary, "console", narrow)
    summary.write_summary(tmp_path, rows, "teacher teacher-seed-1", tasks)
    text = narrow.export_text()
    assert "0.5812 ± 0.0141" in text and max(len(line) for line in text.splitlines()) <= 60
    assert text.count("scores (retention vs") <= 6  # a few tables of several columns, not one a column


def _recipe_run(root: Path) -> Path:
    """A recipe's run folder as it is when the recipe ends: stage folders with their stage.json, then
    summary.json written after the last of them."""
    run = make_run(root, benchmark=False)
    for stage in ("teacher-seed-1", "student"):
        record_stage(run / stage, seconds=12.0, parts=1)
    return run


def test_a_stage_made_again_after_the_summary_makes_the_report_say_it_is_stale(tmp_path, capsys):
    """The summary's rows describe models a recipe made before; a stage removed and started again (failed or stopped:
    no stage.json, a pending record) or finished again (a stage.json newer than summary.json) no longer matches
    them, and the report says so at the top and on stderr."""
    run = _recipe_run(tmp_path)
    text = build_report(run).read_text()
    assert "Warning" not in text and "stale" not in capsys.readouterr().err  # a finished recipe: no warning
    # A copied folder: every file newer than summary.json, but stage.json's recorded finish is older.
    for record in run.glob("*/stage.json"):
        os.utime(record)
    assert "stale" not in build_report(run).read_text()

    (run / "student" / "stage.json").unlink()  # `rm -r student`, then a re-run that failed mid-stage
    (run / ".pending").mkdir()
    (run / ".pending" / "student.json").write_text("{}")
    record_stage(run / "teacher-seed-1", finished_ago_s=-60, seconds=5.0, parts=1)  # made again since
    text = build_report(run).read_text()
    head = text.split("## At a glance")[0]
    assert "> **Warning:** summary.json may be stale: stage `student` started but did not finish" in head
    assert "> **Warning:** summary.json is stale: stage `teacher-seed-1` finished after it was written" in head
    err = capsys.readouterr().err
    assert "warning:" in err and "`student`" in err and "`teacher-seed-1`" in err
    assert "is stale" in build_report(run, progress=False).read_text()  # progress off: in report.md alone
    assert capsys.readouterr() == ("", "")


def test_a_single_training_run_is_reported_as_one_row_from_its_metrics(tmp_path):
    """`train-teacher` / `distill` write metrics.json, not summary.json: the report is one row and says what to run
    for a teacher-student comparison."""
    run = tmp_path / "my-teacher"
    _stage(run, 90, 1.0, 0.8)
    (run / "config.yaml").write_text("kind: teacher\ndata:\n  eval_split: dev\n")
    metrics = {"tasks": {"sst2": {"accuracy": 0.91}}, "main": {"sst2": 0.91}, "average": 0.91,
               "trivial_baselines": {"sst2": {"predictor": "always '1'", "main": 0.51, "metrics": {"accuracy": 0.51}}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = build_report(run).read_text()
    assert "| my-teacher (reference) | 0.9100 | 0.9100 | 100.0 |" in text
    assert "`my-teacher` is a single training run (`multidistill train-teacher`)" in text.split("## Quality")[0]
    assert "`multidistill run recipe.yaml`" in text and "read `metrics.json`" in text
    assert (run / "report" / "training_curves.png").is_file() and "stale" not in text


def test_os_junk_files_do_not_make_an_earlier_report_foreign(tmp_path):
    run = make_run(tmp_path, benchmark=False, stages=False)
    out = tmp_path / "site"
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"\0")  # a folder a file browser has shown is still an empty one
    build_report(run, out)
    for junk in (".DS_Store", "Thumbs.db", "desktop.ini"):
        (out / junk).write_bytes(b"\0")
    build_report(run, out)
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "retention.png"]


def test_a_stage_record_of_a_newer_format_is_refused_by_name(tmp_path):
    from multidistill.recipes.stages import STAGE_VERSION
    from multidistill.report.inputs import STAGE_VERSION as READ_VERSION

    assert READ_VERSION == STAGE_VERSION
    run = _recipe_run(tmp_path)
    record_stage(run / "student", format_version=STAGE_VERSION + 1, seconds=1.0)
    with pytest.raises(DataError, match=r"student/stage\.json.*format_version 2 is newer than this multidistill "
                                        r"reads \(1\).*upgrade multidistill"):
        build_report(run)
    assert not (run / "report").exists()


def test_the_report_names_the_ensemble_the_students_learned_from(tmp_path):
    """MT-DNN-KD's summary names its first teacher as reference; its students learned from the ensemble, whose row
    it records: the report keeps the recipe's reference, says what each student keeps of the ensemble too, and
    counts the ensemble's models."""
    run = make_run(tmp_path, benchmark=False, stages=False)
    summary = _summary()
    rows = summary["rows"]
    ensemble = {t: v + 0.01 for t, v in rows[REFERENCE]["metrics"]["main"].items()}
    summary["rows"] = {REFERENCE: rows[REFERENCE], "ensemble of 3": {"metrics": {"main": ensemble},
                                                                     "params": 3 * 33_360_000},
                       "student: bilstm": rows["student: bilstm"]}
    (run / "summary.json").write_text(json.dumps(summary))
    text = build_report(run).read_text()
    assert f"reference: **{REFERENCE}**." in text and "distilled from **ensemble of 3**" in text
    assert "| ensemble of 3 |" in text and "| 100.1M (3 models) |" in text
    kept = sum(ROWS["student: bilstm"][0].values()) / sum(ensemble.values())
    assert f"student: bilstm {100 * kept:.1f}%" in text
    kept = sum(ROWS["student: bilstm"][0].values()) / sum(rows[REFERENCE]["metrics"]["main"].values())
    assert f"**student: bilstm** keeps **{100 * kept:.1f}%**" in text


def test_a_row_of_several_models_counts_all_their_parameters():
    from multidistill.report.build import fmt_duration, fmt_params

    assert fmt_params({"params": 13_200, "models": 3}) == "13.2K (3 models)"
    assert fmt_params({"params": 4_400, "models": 1}) == "4.4K"
    assert [fmt_duration(s) for s in (0.44, 4.24, 9.96, 42.0, 600.0)] == ["0.4 s", "4.2 s", "10.0 s", "42 s",
                                                                         "10.0 min"]


def test_at_a_glance_compares_speed_and_size_on_the_same_runtime(tmp_path):
    """ONNX is 3x PyTorch for teacher and student alike: the student is not '3x faster' than the teacher on PyTorch.
    A student larger on disk is 'larger', not '0.5x smaller'; a runtime the reference lacks is named."""
    run = make_run(tmp_path, stages=False)
    bench = _benchmark()
    models = bench["models"]
    for name in models:
        for stats in models[name]["runtimes"].values():
            stats["disk_bytes"] = 8_000_000 if name == "student-bilstm" else 4_000_000
    (run / "benchmark.json").write_text(json.dumps(bench))
    text = build_report(run).read_text()
    teacher = models["teacher-minilm-l12"]["runtimes"]
    bilstm = models["student-bilstm"]["runtimes"]
    faster = teacher["onnx_int8"]["latency_ms_median"] / bilstm["onnx_int8"]["latency_ms_median"]
    throughput = bilstm["onnx_int8"]["throughput_examples_per_s"] / teacher["onnx_int8"]["throughput_examples_per_s"]
    assert (f"- **student-bilstm** is fastest on ONNX int8: {bilstm['onnx_int8']['latency_ms_median']:.2f} ms at "
            f"batch 1; against teacher-minilm-l12 on ONNX int8 too: {faster:.1f}× faster at batch 1, "
            f"{throughput:.2f}× its throughput, 2.0× larger on disk; dev score 0.8572 (reference 0.9111).") in text
    del teacher["onnx_int8"]
    (run / "benchmark.json").write_text(json.dumps(bench))
    text = build_report(run).read_text()
    assert ("against teacher-minilm-l12 on PyTorch fp32 (teacher-minilm-l12 has no ONNX int8 timing): "
            in text)


def test_every_row_is_averaged_over_the_summary_s_average_tasks(tmp_path):
    """MITKD lists an out-of-domain task its teacher was never scored on: the summary's average_tasks leaves it out
    of every row's average, so the teacher (2 tasks) and the student (3) are not averaged over different tasks."""
    run = make_run(tmp_path, benchmark=False, stages=False)
    summary = _summary()
    tasks = summary["tasks"]
    summary["average_tasks"] = tasks[:-1]
    (run / "summary.json").write_text(json.dumps(summary))
    from multidistill.report.inputs import load_summary

    loaded = load_summary(run)
    for name, row in loaded["rows"].items():
        expected = sum(row["main"][t] for t in tasks[:-1]) / len(tasks[:-1])
        assert abs(row["average"] - expected) < 1e-12, name


def test_retention_cells_of_a_reference_near_zero_are_marked(tmp_path):
    """A reference CoLA MCC of 0.011 makes a student's 0.2015 a 1831.8% retention: report.md keeps the value but
    marks it and names the reference score, as the figure cuts such a bar; in-range cells stay unmarked."""
    run = make_run(tmp_path, benchmark=False, stages=False)
    summary = json.loads(json.dumps(_summary()))  # a copy: its dicts are ROWS' own
    summary["rows"][REFERENCE]["metrics"]["main"]["cola"] = 0.011
    (run / "summary.json").write_text(json.dumps(summary))
    text = build_report(run).read_text()
    assert "| student: bilstm | 94.1 | 90.8 | 1831.8‡ |" in text
    assert "‡: outside -50..200%" in text and "near 0: cola 0.0110)" in text
    plain = build_report(make_run(tmp_path / "plain", benchmark=False, stages=False)).read_text()
    assert "‡" not in plain


def test_an_average_retention_out_of_range_is_marked_and_explained(tmp_path):
    """A reference CoLA MCC of -1.0 has no per-task ratio, but it pulls the reference's average near 0, so the
    averages' retention runs to thousands of %: the quality table and the per-task table's average mark it, and
    the note names the reference's average (review of the thirteenth session)."""
    run = make_run(tmp_path, benchmark=False, stages=False)
    summary = json.loads(json.dumps(_summary()))
    summary["rows"][REFERENCE]["metrics"]["main"] = {"sst2": 0.60, "mrpc": 0.45, "cola": -1.0}
    (run / "summary.json").write_text(json.dumps(summary))
    text = build_report(run).read_text()
    average = (0.8612 + 0.8011 + 0.2015) / 3 / ((0.60 + 0.45 - 1.0) / 3) * 100
    assert f"| student: bilstm | 143.5 | 178.0 | – | {average:.1f}‡ |" in text  # per task, average marked
    assert f"| 0.6213 | {average:.1f}‡ | 2.4M |" in text  # the quality table's retention column
    assert "its average 0.0167" in text


def test_a_task_with_domains_gets_a_table_of_each_rows_domain_scores(tmp_path):
    """Rows whose metrics hold `evaluate`'s per-domain scores (an MKD or MT-DNN-KD run on a task with domains) get
    one table per such task: the main metric on each domain and the domain average; rows without them are left
    out of it, and a run without domains has no such section."""
    run_dir = make_run(tmp_path, benchmark=False, stages=False)
    assert "per domain" not in build_report(run_dir).read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    for name, (books, dvd) in ((REFERENCE, (0.91, 0.8)), ("student: bilstm", (0.7, 0.65))):
        metrics = summary["rows"][name]["metrics"]
        metrics["tasks"]["sst2"] = {"accuracy": metrics["main"]["sst2"], "f1": 0.5}
        metrics["domains"] = {"sst2": {"books": {"accuracy": books, "f1": 0.1}, "dvd": {"accuracy": dvd, "f1": 0.2}}}
        metrics["domain_average"] = {"sst2": {"accuracy": (books + dvd) / 2, "f1": 0.15}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    text = build_report(run_dir).read_text()
    section = text[text.index("### sst2 per domain"):].split("\n\n")
    assert section[1].startswith("Dev accuracy on each domain's rows; average: their unweighted mean")
    table = section[2].splitlines()
    assert table[0].split("|")[1:-1] == [" model ", " books ", " dvd ", " average "]
    assert [[cell.strip() for cell in line.split("|")[1:-1]] for line in table[2:]] == [
        [REFERENCE, "0.9100", "0.8000", "0.8550"], ["student: bilstm", "0.7000", "0.6500", "0.6750"]]
