"""benchmarks/vs_textbrewer.py: its pure parts (medians, ratios, table, targets, run order) and its --tiny mode,
which runs every multidistill row end to end on a tiny BERT (TextBrewer's rows are skipped when it is absent)."""

from __future__ import annotations

import importlib.util

import pytest
from benchmarks import vs_textbrewer as bench


def _runs(rates: dict[str, list[float]], accuracy: float = 0.8) -> dict[str, list[dict]]:
    return {key: [{"repeat": i, "examples_per_second": r, "accuracy": accuracy} for i, r in enumerate(values)]
            for key, values in rates.items()}


def test_spread_is_median_and_range():
    s = bench.spread([30.0, 10.0, 20.0])
    assert (s.median, s.low, s.high, s.runs) == (20.0, 10.0, 30.0, 3)
    assert s.spread_percent == pytest.approx(100.0)
    with pytest.raises(ValueError):
        bench.spread([])


def test_summary_ratios_are_to_the_textbrewer_row_and_to_plain_fine_tuning():
    summary = bench.summarize(_runs({"tb_logit": [100, 90, 110], "md_store": [250, 260, 240],
                                     "tb_feature": [50, 50, 50], "md_feature": [80, 70, 75], "plain": [240, 250, 260]}))
    assert summary["md_store"]["vs_textbrewer"] == pytest.approx(2.5)
    assert summary["md_store"]["vs_plain"] == pytest.approx(1.0)
    assert summary["md_feature"]["vs_textbrewer"] == pytest.approx(1.5)
    assert summary["tb_logit"]["vs_textbrewer"] is None  # a baseline is not compared with itself
    lines = bench.targets(summary)
    assert lines[0].endswith("(target >= 2.0x: met)")
    assert lines[1].endswith("TextBrewer on its usual shuffled DataLoader: not measured")
    assert lines[3].startswith("(b) hidden_mse online vs TextBrewer: 1.50x")


def test_the_store_run_is_also_compared_with_textbrewer_as_usually_run():
    summary = bench.summarize(_runs({"tb_logit": [150.0], "tb_logit_shuffled": [100.0], "md_store": [210.0],
                                     "md_store_shuffled": [140.0]}))
    # Each shuffled row is compared with the other tool's row on the same kind of batches ...
    assert summary["md_store_shuffled"]["vs_textbrewer"] == pytest.approx(1.4)
    assert summary["md_store"]["vs_textbrewer"] == pytest.approx(1.4)
    # ... and the length-grouped store run (as the recipes ship it) with TextBrewer's usual shuffled DataLoader.
    assert summary["md_store"]["vs_textbrewer_usual"] == pytest.approx(2.1)
    assert bench.targets(summary)[1] == ("(a) store-backed, length-grouped, vs TextBrewer on its usual shuffled "
                                         "DataLoader: 2.10x (target >= 2.0x: met)")
    feature = bench.summarize(_runs({"tb_feature": [100.0], "tb_feature_shuffled": [50.0],
                                     "md_feature_store": [130.0]}))
    assert feature["md_feature_store"]["vs_textbrewer"] == pytest.approx(1.3)
    assert feature["md_feature_store"]["vs_textbrewer_usual"] == pytest.approx(2.6)
    assert bench.targets(feature)[-1].endswith("usual shuffled DataLoader: 2.60x (target >= 1.3x: met)")


def test_table_marks_skipped_rows_and_missing_baselines():
    summary = bench.summarize(_runs({"md_store": [200.0], "plain": [100.0]}))
    table = bench.markdown(summary, store_seconds=5.0, examples=1000, skipped={"tb_logit": "not importable"})
    assert "| TextBrewer GeneralDistiller, online teacher (same batches) | skipped: not importable" in table
    assert "| multidistill, signal store | 200.0 | 200.0..200.0 (0%) | - | 2.00x | 0.8000 |" in table
    # 1000 rows at 200/s is 5 s of training; with the 5 s store build: 100 examples/s.
    assert "gives 100.0 examples/s" in table
    assert "not measured" in bench.targets(summary)[0]


def test_the_feature_store_row_is_compared_with_textbrewer_and_its_build_shown_apart():
    summary = bench.summarize(_runs({"tb_feature": [50.0], "md_feature": [55.0], "md_feature_store": [100.0]}))
    assert summary["md_feature_store"]["vs_textbrewer"] == pytest.approx(2.0)
    table = bench.markdown(summary, store_seconds=None, examples=1000, skipped={},
                           feature_store={"seconds": 10.0, "bytes_per_example": 40960.0, "layers": [0, 2, 4, 6]})
    assert "| (b) feature KD | multidistill hidden_mse, feature store | 100.0 | 100.0..100.0 (0%) | 2.00x |" in table
    # 1000 rows at 100/s is 10 s of training; with the 10 s build: 50 examples/s.
    assert ("Feature store built once in 10.0 s wall clock (teacher logits and hidden states at layers [0, 2, 4, 6] "
            "over the 1000 training rows, float16, 40.0 KiB per example on disk); counted into one feature-store run "
            "it gives 50.0 examples/s.") in table
    assert bench.targets(summary)[4] == "(b) hidden_mse feature store vs TextBrewer: 2.00x (target >= 1.3x: met)"


def test_steady_rates_leave_out_the_first_and_the_last_step():
    clock = bench.StepClock()
    clock.wall, clock.cpu = [0.0, 1.0, 3.0, 10.0], [0.0, 2.0, 4.0, 50.0]
    # Steps 2 and 3 (batches 1 and 2: 8 + 4 examples) took 3 s of wall clock and 4 s of CPU.
    assert bench.steady_rates(clock, [32, 8, 4, 100]) == {"steady_examples_per_second": 4.0,
                                                           "examples_per_cpu_second": 3.0}
    clock.wall, clock.cpu = [0.0, 1.0], [0.0, 1.0]
    assert bench.steady_rates(clock, [1, 1]) == {}  # too few steps for a steady window


def test_run_order_rotates_each_repetition():
    keys = ["a", "b", "c"]
    assert [bench.run_order(keys, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                          ["a", "b", "c"]]


@pytest.mark.slow
def test_tiny_mode_runs_every_row(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    have_textbrewer = importlib.util.find_spec("textbrewer") is not None
    out = bench.main(["--tiny", "--repeats", "1", "--examples", "128", "--cache", str(tmp_path),
                      "--textbrewer-dir", str(tmp_path / "no-textbrewer-here")])
    summary, saved = out["summary"], out["saved"]
    for key in ("md_store", "md_store_shuffled", "md_store_bf16", "md_online", "md_feature", "md_feature_store",
                "plain"):
        assert summary[key]["speed"].median > 0
        assert all(run["examples_per_cpu_second"] > 0 for run in saved["runs"][key])
        assert 0.0 <= summary[key]["accuracy"] <= 1.0
    assert saved["store_seconds"] > 0
    # Only the bf16 row trains under bf16 autocast; every other row is the fp32 comparison.
    configs = {key: (tmp_path / "runs" / f"{key}-0" / "config.yaml").read_text() for key in saved["runs"]
               if bench.ROWS[key][2] == "multidistill"}
    assert [key for key, text in configs.items() if "bf16: true" in text] == ["md_store_bf16"]
    # Only the random-batch row turns length grouping off.
    assert [key for key, text in configs.items() if "group_by_length: false" in text] == ["md_store_shuffled"]
    # The feature store holds the tiny teacher's (4 layers) hidden states where hidden_mse reads them for the
    # 2-layer student: layers 0, 2, 4, 32 float16 values each per real token.
    assert saved["feature_store"]["seconds"] > 0 and saved["feature_store"]["layers"] == [0, 2, 4]
    assert saved["feature_store"]["bytes_per_example"] > 3 * 32 * 2 * 5
    if not have_textbrewer:
        assert set(saved["skipped"]) == {"tb_logit", "tb_logit_shuffled", "tb_feature", "tb_feature_shuffled"}
    # A re-run with the same settings reuses the recorded runs (resumable) and trains nothing.
    again = bench.main(["--tiny", "--repeats", "1", "--examples", "128", "--cache", str(tmp_path),
                        "--textbrewer-dir", str(tmp_path / "no-textbrewer-here"), "--rows", "plain"])
    assert again["saved"]["runs"]["plain"] == saved["runs"]["plain"]
