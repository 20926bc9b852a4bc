"""benchmarks/onnx_int8.py (issue 16, part 2): its table and CPU description (the timed run is a benchmark)."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def _load():
    spec = importlib.util.spec_from_file_location("onnx_int8_benchmark", REPO / "benchmarks" / "onnx_int8.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_has_every_row_with_its_speedups_and_names_gate_failures():
    bench = _load()
    timed = {"latency_ms_median": 10.0, "latency_ms_p95": 12.0, "throughput_examples_per_s": 300.0}
    report = {
        "date": "today", "commit": "abc", "threads": 1, "onnxruntime": "1.x", "torch": "2.x", "speed_task": "sst2",
        "tasks": ["sst2", "mrpc"], "cpu": {"model_name": "Xeon", "flags": {"avx512_vnni": True, "amx_int8": False}},
        "settings": {"parity_examples": 200, "rounds": 5, "latency_runs": 30, "throughput_batches": 4},
        "rows": {
            bench.REFERENCE: {"status": "ok", "score": 0.75, **timed, "throughput_examples_per_s": 100.0,
                              "latency_ms_median": 40.0, "speedup_b1": 1.0, "speedup_b32": 1.0,
                              "score_delta_points": 0.0},
            "int8 dynamic": {"status": "ok", "score": 0.752, "agreement_min": 0.98, "disk_mb": 53.2, **timed,
                             "speedup_b1": 4.0, "speedup_b32": 3.0, "score_delta_points": 0.2},
            "int8 static QDQ": {"status": "failed", "score": 0.73, "reasons": ["sst2 (int8): accuracy drops"]},
        },
    }
    table = bench.markdown(report)
    assert 'CPU "Xeon" (avx512_vnni yes, amx_int8 no), 1 thread(s)' in table
    assert "| torch fp32 eager | 0.7500 | +0.00 | - | 40.0 (12.0) | 1.00x | 100 | 1.00x | - |" in table
    assert "| int8 dynamic | 0.7520 | +0.20 | 98.0% | 10.0 (12.0) | 4.00x | 300 | 3.00x | 53.2 |" in table
    assert "| int8 static QDQ | 0.7300 | failed its parity gate, not timed: sst2 (int8): accuracy drops |" in table


def test_cpu_info_names_the_int8_flags():
    info = _load().cpu_info()
    assert info["model_name"] and set(info["flags"]) >= {"avx512_vnni", "amx_int8"}
