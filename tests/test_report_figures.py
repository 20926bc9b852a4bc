"""The report's figures read right: one colour per model whatever its name in each file, labels on bars that stay
readable, and training curves of stages of very different lengths, or of one task each, drawn and named as such."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_hex

from multidistill.report import build_report, plots
from multidistill.report.colours import PALETTE, model_colours, model_keys, text_colour
from tests.test_report import _benchmark, _stage, _summary


@pytest.fixture
def drawn(monkeypatch) -> dict:
    """Each figure the report draws, by file stem, kept open for inspection instead of closed after saving."""
    figures: dict = {}

    def keep(fig, out):
        figures[Path(out).stem] = fig
        fig.savefig(out, dpi=40)
        return Path(out)

    monkeypatch.setattr(plots, "_finish", keep)
    yield figures
    for fig in figures.values():
        plt.close(fig)


def test_the_palette_gives_ten_distinct_hues_before_any_light_shade():
    tab20 = plt.get_cmap("tab20").colors
    assert [to_hex(c) for c in PALETTE[:10]] == [to_hex(c) for c in tab20[0::2]]
    assert [to_hex(c) for c in PALETTE[10:]] == [to_hex(c) for c in tab20[1::2]]
    assert text_colour("#1f77b4") == "white" and text_colour("#aec7e8") == "black"  # tab blue, its light shade
    assert text_colour("#ff7f0e") == "black" and text_colour("#d62728") == "white"  # orange, red


def test_a_models_summary_row_benchmark_entry_and_stage_folder_share_one_colour():
    """MKD names its teacher 'teacher teacher-seed-1' in summary.json, 'teacher-seed-1' in benchmark.json (after its
    folder) and its stage folder teacher-seed-1; its student 'student (joint)', 'student' and student. A row the
    recipe made from several stages (`stages`) keys them to itself; adding benchmark.json recolours nothing."""
    rows = {"teacher teacher-seed-1": {}, "student (joint)": {},
            "student + per-task fine-tune": {"stages": ["finetune-a", "finetune-b"]}, "ensemble of 2": {}}
    stages = ["baseline-a", "finetune-a", "finetune-b", "student", "teacher-seed-1"]
    models = {"teacher-seed-1": {"path": "runs/mkd/teacher-seed-1/model"}, "student": {"path": "x/student/model"},
              "other": {"path": "elsewhere/model"}}
    keys = model_keys(rows, stages, models)
    assert keys["teacher teacher-seed-1"] == keys["teacher-seed-1"] == "teacher-seed-1"
    assert keys["student (joint)"] == "student"
    assert keys["finetune-a"] == keys["finetune-b"] == "student + per-task fine-tune"
    assert keys["ensemble of 2"] == "ensemble of 2" and keys["other"] == "other"
    with_bench = model_colours(rows, "teacher teacher-seed-1", stages, models)
    without = model_colours(rows, "teacher teacher-seed-1", stages, {})
    assert all(to_hex(without[name]) == to_hex(with_bench[name]) for name in without)
    assert to_hex(with_bench["teacher teacher-seed-1"]) == to_hex(with_bench["teacher-seed-1"])
    assert to_hex(with_bench["student (joint)"]) == to_hex(with_bench["student"])
    assert len({to_hex(with_bench[name]) for name in ("teacher-seed-1", "student", "baseline-a", "finetune-a",
                                                      "ensemble of 2", "other")}) == 6


def _legend_colours(fig) -> dict[str, str]:
    colours = {}
    for legend in fig.legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            colour = handle.get_facecolor() if hasattr(handle, "get_height") else handle.get_color()
            colours[text.get_text()] = to_hex(colour)
    return colours


def test_adding_benchmark_json_does_not_recolour_the_training_curves(tmp_path, drawn):
    run = tmp_path / "run"
    run.mkdir()
    summary = _summary()
    summary["rows"] = {"teacher teacher-seed-1": summary["rows"].pop(next(iter(summary["rows"]))),
                       "student (joint)": summary["rows"].pop("student: bilstm")}
    summary["reference"] = "teacher teacher-seed-1"
    (run / "summary.json").write_text(json.dumps(summary))
    for k, stage in enumerate(("teacher-seed-1", "student", "baseline-sst2")):
        _stage(run / stage, 60 + 30 * k, 1.0 + k, 0.7)
    build_report(run)
    before = _legend_colours(drawn["training_curves"])
    bench = _benchmark()
    bench["models"] = {"other-model": bench["models"].pop("student-minilm-l6-distilled-mtdnn-kd-seed-1"),
                       "student": {**bench["models"].pop("student-bilstm"), "path": "run/student/model"},
                       "teacher-seed-1": {**bench["models"].pop("teacher-minilm-l12"),
                                          "path": "run/teacher-seed-1/model"}}
    bench["reference"] = "teacher-seed-1"
    (run / "benchmark.json").write_text(json.dumps(bench))
    build_report(run)
    assert _legend_colours(drawn["training_curves"]) == before
    speed = {label.split("\n")[0].replace(" (reference)", ""): colour
             for label, colour in _legend_colours(drawn["score_vs_latency"]).items()}
    assert speed["teacher-seed-1"] == before["teacher-seed-1"] and speed["student"] == before["student"]
    assert speed["other-model"] not in before.values()
    bars = _legend_colours(drawn["retention"])
    assert bars["student (joint)"] == before["student"]


def _rows(values: dict[str, dict[str, float]]) -> dict[str, dict]:
    return {name: {"main": main} for name, main in values.items()}


def test_retention_labels_never_meet_the_100_line_and_take_the_bars_brightness(tmp_path, drawn):
    tasks = ["a", "b", "c"]
    rows = _rows({"ref": {"a": 1.0, "b": 1.0, "c": 1.0}, "dark": {"a": 1.03, "b": 0.995, "c": 0.6},
                  "light": {"a": 1.0, "b": 0.1, "c": 1.2}, "third": {"a": 0.5, "b": 0.99, "c": 1.001}})
    colours = {"ref": PALETTE[0], "dark": PALETTE[0], "light": PALETTE[11], "third": PALETTE[2]}
    plots.plot_retention(rows, "ref", tasks, tmp_path / "retention.png", colours=colours)
    fig = drawn["retention"]
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    line_y = ax.transData.transform((0, 100))[1]
    labels = [t for t in ax.texts if t.get_text().replace(".", "").isdigit()]
    assert len(labels) == 12  # three rows x (three tasks + average)
    for text in labels:
        box = text.get_window_extent(renderer)
        assert not box.y0 < line_y < box.y1, text.get_text()
        value = float(text.get_text())
        if 0 < value <= 100 and text.get_va() == "top":  # inside its bar: ink by the bar's brightness
            bar = next(p for p in ax.patches if abs(p.get_x() + p.get_width() / 2 - text.get_position()[0]) < 1e-9)
            assert text.get_color() == text_colour(bar.get_facecolor())
    inks = {t.get_color() for t in labels if t.get_va() == "top"}
    assert inks == {"white", "black"}  # dark bars white, the light shade black


def test_the_trivial_baselines_retention_is_a_line_behind_each_group_and_marks_what_it_also_reaches(tmp_path,
                                                                                                      drawn):
    """MRPC's "always paraphrase" keeps 97.8% of a teacher's F1: the figure draws what the constant keeps in each
    group (the "average" over the tasks it scored), behind the bars, and marks a bar whose row is at the baseline."""
    tasks = ["sst2", "mrpc"]
    rows = _rows({"ref": {"sst2": 0.9, "mrpc": 0.83}, "student": {"sst2": 0.85, "mrpc": 0.815}})
    rows["student"]["at_baseline"] = ["mrpc"]
    baseline = {"name": "trivial baseline", "main": {"sst2": 0.5, "mrpc": 0.812}}
    plots.plot_retention(rows, "ref", tasks, tmp_path / "retention.png", baseline=baseline)
    ax = drawn["retention"].axes[0]
    [floor] = [c for c in ax.collections if c.get_label().startswith("trivial baseline")]
    segments = floor.get_segments()  # sst2, mrpc, average
    heights = [segment[0][1] for segment in segments]
    assert heights == pytest.approx([100 * 0.5 / 0.9, 100 * 0.812 / 0.83, 100 * (0.5 + 0.812) / (0.9 + 0.83)])
    assert all(floor.get_zorder() < p.get_zorder() for p in ax.patches)  # behind the bars: never over a label
    for ((x0, _), (x1, _)), bar in zip(segments, ax.patches, strict=True):  # across its group, past both ends
        assert x0 < bar.get_x() and bar.get_x() + bar.get_width() < x1
    labels = {t.get_text() for t in ax.texts}
    assert f"{100 * 0.815 / 0.83:.1f}\u2020" in labels and f"{100 * 0.85 / 0.9:.1f}" in labels
    assert "\u2020" in ax.get_title()
    assert [t.get_text() for t in drawn["retention"].legends[0].get_texts()].count(
        "trivial baseline (a constant predictor)") == 1

    many = _rows({f"model {k}": {t: 0.6 + 0.02 * k for t in tasks} for k in range(8)})  # past MAX_BAR_ROWS: heatmap
    many["model 1"]["at_baseline"] = ["sst2"]
    plots.plot_retention(many, "model 0", tasks, tmp_path / "retention.png", baseline=baseline)
    ax = drawn["retention"].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "trivial baseline (a constant)"
    assert f"{100 * 0.62 / 0.6:.1f}\u2020" in {t.get_text() for t in ax.texts}


def test_many_rows_and_tasks_are_a_heatmap(tmp_path, drawn):
    tasks = [f"task{i}" for i in range(10)]
    rows = _rows({f"model {k}": {t: 0.5 + 0.04 * k + 0.01 * i for i, t in enumerate(tasks)} for k in range(11)})
    plots.plot_retention(rows, "model 0", tasks, tmp_path / "retention.png")
    ax = drawn["retention"].axes[0]
    assert len(ax.images) == 1 and not ax.patches  # one heatmap, no bars
    assert len(ax.texts) == 10 * 11  # ten rows x (ten tasks + average), each with its value
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"model {k}" for k in range(1, 11)]


def test_a_heatmap_keeps_its_colours_within_the_retention_range(tmp_path, drawn):
    """One -3364% cell (a reference score near 0) set the heatmap's colour scale, washing every other cell to white:
    the scale stops at `RETENTION_RANGE`, and the cell still says its value."""
    tasks = [f"task{i}" for i in range(10)] + ["stsb"]
    scores = {f"model {k}": {**{t: 0.5 + 0.04 * k for t in tasks[:-1]}, "stsb": 0.011 if k == 0 else -0.37}
              for k in range(11)}
    plots.plot_retention(_rows(scores), "model 0", tasks, tmp_path / "retention.png")
    ax = drawn["retention"].axes[0]
    norm = ax.images[0].norm
    low, high = plots.RETENTION_RANGE
    assert low <= norm.vmin and norm.vmax <= high
    assert f"{-0.37 / 0.011 * 100:.1f}" in {t.get_text() for t in ax.texts}
    assert ax.images[0].get_array().min() >= norm.vmin  # the clipped cell takes the end colour


def test_training_curves_of_short_and_long_stages_share_a_fraction_axis_with_integer_steps(tmp_path, drawn):
    loss = {"teacher": [(s, 1.0 / s) for s in range(1, 3001, 10)], "student": [(s, 2.0 / s) for s in range(1, 101)]}
    dev = {"teacher": [(1500, 0.7), (3000, 0.8)], "student": [(50, 0.6), (100, 0.8)]}
    plots.plot_training_curves(loss, dev, tmp_path / "training_curves.png")
    fig = drawn["training_curves"]
    for ax in fig.axes:
        assert ax.get_xlabel() == "fraction of the stage's training (1 = its last logged step)"
        assert ax.get_xlim()[1] < 1.2
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["teacher (3000 steps)", "student (100 steps)"]
    # both stages end at 0.8: their last dev points are side by side, in different markers, not on top of each other
    ends = [(line.get_xdata()[-1], line.get_marker()) for line in fig.axes[1].lines]
    assert ends[0][0] != ends[1][0] and ends[0][1] != ends[1][1]

    plots.plot_training_curves({"a": [(1, 1.0), (2, 0.5), (3, 0.4)]}, {"a": [(1, 0.5), (3, 0.6)]},
                               tmp_path / "training_curves.png")
    fig = drawn["training_curves"]
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.get_xlabel() == "optimizer step"
        assert all(float(tick).is_integer() for tick in ax.get_xticks())


def test_a_one_task_stage_is_not_called_a_mean_over_tasks(tmp_path, drawn):
    from multidistill.report.plots import dev_label

    assert dev_label({"s": ["sst2"], "t": ["sst2"]}, ["s", "t"]) == ("dev sst2 (main metric)", {})
    assert dev_label({"joint": ["a", "b"], "finetune-a": ["a"]}, ["joint", "finetune-a"]) == (
        "dev score (main metric; mean over the stage's tasks)", {"finetune-a": "a only"})
    loss = {"joint": [(s, 1.0) for s in range(1, 40)], "finetune-a": [(s, 1.0) for s in range(1, 30)]}
    dev = {"joint": [(39, 0.7)], "finetune-a": [(29, 0.8)]}
    plots.plot_training_curves(loss, dev, tmp_path / "training_curves.png",
                               tasks={"joint": ["a", "b"], "finetune-a": ["a"]})
    fig = drawn["training_curves"]
    assert "mean over the stage's tasks" in fig.axes[1].get_ylabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["joint", "finetune-a (a only)"]


def test_the_speed_figure_counts_many_tasks_on_its_axis():
    from multidistill.report.build import axis_score_label, score_label

    tasks = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    bench = {"tasks": tasks, "settings": {}}
    assert "wnli" in score_label(bench)
    assert axis_score_label(bench) == "dev score (mean main metric over 9 tasks)"
    assert axis_score_label({"tasks": ["sst2"], "settings": {}}) == score_label({"tasks": ["sst2"], "settings": {}})


# Nine tasks whose long names share a prefix and a suffix: eliding their middles gave one label for all.
LONG_TASKS = [f"customer_support_ticket_routing_{c}_production" for c in "abcdefghi"]


@pytest.mark.parametrize("rows_count", [2, 12])  # bars, and the heatmap past MAX_BAR_ROWS rows
def test_long_task_names_sharing_a_prefix_keep_distinct_tick_labels(tmp_path, drawn, rows_count):
    rows = _rows({f"model {k}": {t: 0.5 + 0.01 * k for t in LONG_TASKS} for k in range(rows_count)})
    plots.plot_retention(rows, "model 0", LONG_TASKS, tmp_path / "retention.png")
    labels = [t.get_text() for t in drawn["retention"].axes[0].get_xticklabels()]
    assert len(set(labels)) == len(LONG_TASKS) + 1 and labels[-1] == "average"
    assert all(len(label) <= 20 for label in labels)
    assert [label.split("_production")[0][-1] for label in labels[:-1]] == list("abcdefghi")


def test_distinct_short_names_drop_the_shared_prefix_or_fall_back_to_the_names():
    assert plots.distinct_short_names(["sst2", "mrpc"], 20) == ["sst2", "mrpc"]
    assert plots.distinct_short_names(LONG_TASKS[:2], 20) == ["custome…a_production", "custome…b_production"]
    apart_in_the_middle = ["p_" + "c" * 20 + "1" + "d" * 20, "p_" + "c" * 20 + "2" + "d" * 20]
    assert plots.distinct_short_names(apart_in_the_middle, 10) == apart_in_the_middle


def test_a_reference_near_zero_does_not_flatten_the_other_retention_bars(tmp_path, drawn):
    """A teacher pearson of 0.011 makes a student's -0.37 a -3363.6% retention: the axis keeps
    `RETENTION_RANGE`, the bar is cut (hatched) at its edge and its label still gives the real value."""
    tasks = ["a", "b", "stsb"]
    rows = _rows({"ref": {"a": 0.9, "b": 0.8, "stsb": 0.011}, "student": {"a": 0.85, "b": 0.7, "stsb": -0.37},
                  "lucky": {"a": 0.8, "b": 0.75, "stsb": 0.05}})
    plots.plot_retention(rows, "ref", tasks, tmp_path / "retention.png")
    ax = drawn["retention"].axes[0]
    low, high = plots.RETENTION_RANGE
    bottom, top = ax.get_ylim()
    assert low - 60 < bottom <= low and high <= top < high + 60
    assert {f"{-0.37 / 0.011 * 100:.1f}", f"{0.05 / 0.011 * 100:.1f}"} <= {t.get_text() for t in ax.texts}
    cut = [p for p in ax.patches if p.get_hatch()]
    assert sorted(p.get_height() for p in cut) == [low, high]
    assert all(low <= p.get_y() + p.get_height() <= high for p in ax.patches)
    assert "hatched" in ax.get_title()
