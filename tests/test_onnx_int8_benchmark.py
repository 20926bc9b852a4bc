"""benchmarks/onnx_int8.py (issue 16, part 2): its table and CPU description (the timed run is a benchmark), and
the speed comparison's longest-first batches and CPU-time rates it reports."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from multidistill.data.tasks import BUILTIN_TASKS
from multidistill.evaluation.speed import compare_speed
from tests.conftest import load_benchmark


def _load(name: str = "onnx_int8"):
    return load_benchmark(name)


def _report(bench) -> dict:
    timed = {"latency_ms_median": 10.0, "latency_ms_p95": 12.0, "throughput_examples_per_s": 300.0}
    report = {
        "date": "today", "commit": "abc", "threads": 1, "onnxruntime": "1.x", "torch": "2.x", "speed_task": "sst2",
        "tasks": ["sst2", "mrpc"], "cpu": {"model_name": "Xeon", "flags": {"avx512_vnni": True, "amx_int8": False}},
        "settings": {"parity_examples": 200, "rounds": 5, "latency_runs": 30, "throughput_batches": 4},
        "rows": {
            bench.REFERENCE: {"status": "ok", "score": 0.75, **timed, "throughput_examples_per_s": 100.0,
                              "latency_ms_median": 40.0, "speedup_b1": 1.0, "speedup_b32": 1.0,
                              "throughput_longest_first_examples_per_s": 180.0, "speedup_b32_longest_first": 1.0,
                              "speedup_b32_cpu": 1.0, "speedup_b32_longest_first_cpu": 1.0,
                              "score_delta_points": 0.0},
            "int8 dynamic": {"status": "ok", "score": 0.752, "agreement_min": 0.98, "disk_mb": 53.2, **timed,
                             "throughput_longest_first_examples_per_s": 450.0, "speedup_b32_longest_first": 2.5,
                             "speedup_b32_cpu": 2.9, "speedup_b32_longest_first_cpu": 2.4,
                             "speedup_b1": 4.0, "speedup_b32": 3.0, "score_delta_points": 0.2},
            "int8 static QDQ": {"status": "failed", "score": 0.73, "reasons": ["sst2 (int8): accuracy drops"]},
        },
    }
    return report


def test_table_has_every_row_with_its_speedups_and_names_gate_failures():
    bench = _load()
    report = _report(bench)
    table = bench.markdown(report)
    assert 'CPU "Xeon" (avx512_vnni yes, amx_int8 no), 1 thread(s)' in table
    assert "then the same rows batched longest first (sorted)" in table
    assert "5 interleaved rounds, batch-1" in table  # a report from before the settle pause says nothing of it
    paused = bench.markdown({**report, "settings": {**report["settings"], "settle_s": 0.05}})
    assert "5 interleaved rounds (50 ms pause before each turn), batch-1" in paused
    assert "(no pause between turns)" in bench.markdown({**report, "settings": {**report["settings"], "settle_s": 0}})
    assert ("| torch fp32 eager | 0.7500 | +0.00 | - | 40.0 (12.0) | 1.00x | 100 | 1.00x | 180 | 1.00x | 1.00x | "
            "1.00x | - |") in table
    assert ("| int8 dynamic | 0.7520 | +0.20 | 98.0% | 10.0 (12.0) | 4.00x | 300 | 3.00x | 450 | 2.50x | 2.90x | "
            "2.40x | 53.2 |") in table
    assert "| int8 static QDQ | 0.7300 | failed its parity gate, not timed: sst2 (int8): accuracy drops |" in table


def test_probe_table_is_the_benchmark_table_with_the_skipped_probes_named():
    probe = _load("onnx_int8_probe")
    report = {**_report(probe), "skipped": {"int8 MatMulNBits 8-bit, block 32": "skipped: No module named 'onnx_ir'"}}
    table = probe._markdown(report)
    assert table.startswith(probe.markdown(report))
    assert table.endswith("\nint8 MatMulNBits 8-bit, block 32: skipped: No module named 'onnx_ir'\n")


def test_probe_table_adds_where_the_time_goes():
    probe = _load("onnx_int8_probe")
    report = {**_report(probe), "skipped": {},
              "op_profiles": {"int8 dynamic (export default)": {"DynamicQuantizeMatMul": 30.24, "Softmax": 19.2}},
              "kernels": {"gemm": {"shape": "8x4 @ 4x8", "onnxruntime_int8_gops": 1100.0, "torch_fp32_gflops": 160.0},
                          "softmax": {"shape": "32x12x50x50", "onnxruntime_ms": {"float32 lowest": 1.9, "-60": 0.4},
                                      "torch_ms": {"float32 lowest": 0.8, "-60": 0.7}}}}
    table = probe._markdown(report)
    assert ("Kernel time by op type, int8 dynamic (export default) (batch 32, onnxruntime profiler): "
            "DynamicQuantizeMatMul 30.2%, Softmax 19.2%") in table
    assert ("GEMM 8x4 @ 4x8: onnxruntime int8 1100 GOPS, PyTorch fp32 160 GFLOPS (6.9x). Softmax 32x12x50x50, "
            "padding mask: float32 lowest: onnxruntime 1.90 ms, PyTorch 0.80 ms; -60: onnxruntime 0.40 ms, PyTorch "
            "0.70 ms.") in table


def test_probe_kernels_time_what_they_name():
    pytest.importorskip("onnxruntime")
    probe = _load("onnx_int8_probe")
    gemm = probe.gemm_rates(16, 8, 16)
    assert gemm["shape"] == "16x8 @ 8x16" and gemm["onnxruntime_int8_gops"] > 0 and gemm["torch_fp32_gflops"] > 0
    softmax = probe.softmax_times(2, 3, 8)
    assert softmax["shape"] == "2x3x8x8"
    for side in ("onnxruntime_ms", "torch_ms"):
        assert set(softmax[side]) == {"float32 lowest", "-60", "none"} and min(softmax[side].values()) > 0


def test_cpu_info_names_the_int8_flags():
    info = _load().cpu_info()
    assert info["model_name"] and set(info["flags"]) >= {"avx512_vnni", "amx_int8"}


@pytest.mark.parametrize("cpu_time", [False, True])
def test_longest_first_throughput_times_the_same_rows_with_less_padding(cpu_time):
    task = BUILTIN_TASKS["sst2"]
    lengths = [3, 30, 5, 28, 4, 31, 6, 29]  # alternating short and long rows: every consecutive pair pads to ~30
    rows = Dataset.from_dict({"id": [str(i) for i in range(8)], "label": [0] * 8,
                              "input_ids": [[2] + [7] * (n - 2) + [3] for n in lengths],
                              "attention_mask": [[1] * n for n in lengths]})
    seen: list[tuple[int, ...]] = []

    def forward(batch: dict) -> np.ndarray:
        seen.append(tuple(batch["input_ids"].shape))
        return np.zeros((len(batch["input_ids"]), 2), dtype=np.float32)

    result = compare_speed({"model": (forward, rows, 0)}, task, rounds=2, latency_runs=2, throughput_batches=4,
                           batch_size=2, warmup=0, longest_first=True, cpu_time=cpu_time)["model"]
    batch_shapes = [shape for shape in seen if shape[0] == 2]
    # After one warm-up batch, per round: the consecutive batches (each padded to ~30), then the same 8 rows
    # longest first.
    assert batch_shapes[1:9] == [(2, 30), (2, 28), (2, 31), (2, 29), (2, 31), (2, 29), (2, 6), (2, 4)]
    assert result.throughput_examples_per_s > 0 and result.throughput_longest_first_examples_per_s > 0
    assert (result.throughput_cpu_examples_per_s is not None) is cpu_time
    assert (result.throughput_longest_first_cpu_examples_per_s is not None) is cpu_time
    plain = compare_speed({"model": (forward, rows, 0)}, task, rounds=1, latency_runs=1, throughput_batches=4,
                          batch_size=2, warmup=0)["model"]
    assert plain.throughput_longest_first_examples_per_s is None and plain.throughput_cpu_examples_per_s is None


def test_each_contender_turn_starts_after_the_settle_pause(monkeypatch):
    """A pause precedes every contender's turn in every round (not its warm-up), so what the previous contender
    left running is not timed with the next; settle_s=0 never pauses, and a negative pause is refused."""
    import multidistill.evaluation.speed as speed

    task = BUILTIN_TASKS["sst2"]
    rows = Dataset.from_dict({"id": ["0", "1"], "label": [0, 1], "input_ids": [[2, 7, 3], [2, 7, 7, 3]],
                              "attention_mask": [[1] * 3, [1] * 4]})
    events: list[str] = []
    monkeypatch.setattr(speed.time, "sleep", lambda seconds: events.append(f"sleep {seconds}"))

    def contender(name: str):
        def forward(batch: dict) -> np.ndarray:
            events.append(name)
            return np.zeros((len(batch["input_ids"]), 2), dtype=np.float32)
        return forward

    contenders = {"a": (contender("a"), rows, 0), "b": (contender("b"), rows, 0)}
    speed.compare_speed(contenders, task, rounds=2, latency_runs=2, throughput_batches=1, batch_size=2, warmup=0,
                        settle_s=0.25)
    timed = events[events.index("sleep 0.25"):]  # after the warm-up batches
    assert timed == ["sleep 0.25", "a", "a", "sleep 0.25", "b", "b"] * 2  # one single, one batch a turn
    assert speed.SETTLE_S > 0  # the default pauses
    events.clear()
    speed.compare_speed(contenders, task, rounds=1, latency_runs=1, throughput_batches=1, batch_size=2, warmup=0,
                        settle_s=0)
    assert not [event for event in events if event.startswith("sleep")]
    with pytest.raises(ValueError, match="settle_s"):
        speed.compare_speed(contenders, task, rounds=1, settle_s=-1)


def test_probe_merges_shared_input_projections_into_one_matmul_with_the_same_outputs(tmp_path):
    """Two projections of one activation (and one of another) become MatMul + Add + Split on the weights side by
    side; the fp32 graph computes what the original did, under the original output names."""
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {name: rng.normal(size=shape).astype(np.float32) for name, shape in
               {"wq": (4, 3), "wk": (4, 5), "wo": (4, 2), "bq": (3,), "bk": (5,), "bo": (2,),
                "wv": (4, 3), "wb": (4, 3), "bb": (1,)}.items()}
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q0"]), helper.make_node("Add", ["bq", "q0"], ["q"]),
             helper.make_node("MatMul", ["x", "wk"], ["k0"]), helper.make_node("Add", ["k0", "bk"], ["k"]),
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MatMul", ["r", "wo"], ["o0"]), helper.make_node("Add", ["o0", "bo"], ["o"]),
             # not merged: a MatMul whose output is also a graph output, and one with a broadcast (1,) bias
             helper.make_node("MatMul", ["x", "wv"], ["v0"]), helper.make_node("Add", ["v0", "bq"], ["v"]),
             helper.make_node("MatMul", ["x", "wb"], ["b0"]), helper.make_node("Add", ["b0", "bb"], ["b"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("q", "k", "o", "v0", "v", "b")],
        [numpy_helper.from_array(array, name) for name, array in weights.items()])
    source = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    probe = load_benchmark("onnx_int8_probe")

    assert probe._merged_projections(source, tmp_path / "merged.onnx") == 1
    merged = onnx.load(str(tmp_path / "merged.fp32.onnx"))
    assert [node.op_type for node in merged.graph.node].count("Split") == 1
    assert [node.op_type for node in merged.graph.node].count("MatMul") == 4  # q and k merged; o, v, b alone
    x = rng.normal(size=(2, 6, 4)).astype(np.float32)
    expected = onnxruntime.InferenceSession(str(source)).run(None, {"x": x})
    got = onnxruntime.InferenceSession(str(tmp_path / "merged.fp32.onnx")).run(None, {"x": x})
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-6)
    assert (tmp_path / "merged.onnx").is_file()  # the int8 graph the probe times


def test_speed_order_table_gives_each_pause_its_rates_speedups_and_the_sessions_ratio():
    bench = load_benchmark("speed_order")
    rates = {bench.REFERENCE: {"b32": 400.0, "b32 sorted": 600.0},
             "int8 session A": {"b32": 1200.0, "b32 sorted": 1800.0},
             "int8 session B": {"b32": 960.0, "b32 sorted": 1800.0}}
    report = {"date": "today", "commit": "abc", "cpu": {"model_name": "Xeon"}, "threads": 2, "task": "sst2",
              "rounds": 9, "runs": [{"settle_ms": 0.0, "rates": rates}, {"settle_ms": 50.0, "rates": rates}]}
    table = bench.markdown(report)
    assert "| 0 ms | b32 | 400 | 1200 (3.00x) | 960 (2.40x) | 0.80 |" in table
    assert "| 50 ms | b32 sorted | 600 | 1800 (3.00x) | 1800 (3.00x) | 1.00 |" in table
    assert 'CPU "Xeon", 2 thread(s); sst2 dev inputs, 9 rounds' in table
