"""`multidistill benchmark` and `multidistill demo` end to end on a tiny BERT and toy data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import run_cli

pytest.importorskip("onnxruntime")


def demo_overrides(tiny_run, tmp_path: Path) -> list[str]:
    raw, _ = tiny_run
    data = json.dumps(raw["data"])
    train = "{epochs: 1, batch_size: 8, eval_batch_size: 16, lr: 0.003, checkpoint_every_steps: 5, seed: 7}"
    return [
        f"output_dir={tmp_path / 'demo'}", f"data={data}", "max_examples_per_task=null",
        f"teacher.name_or_path={raw['model']['name_or_path']}", "teacher.max_seq_length=32",
        f"teacher_train={train}", f"transformer.train={train}", f"bilstm.train={train}",
        "transformer.model.student_layers=[1]", "transformer.model.max_seq_length=32",
        "bilstm.model.max_seq_length=32", "bilstm.model.bilstm={embedding_dim: 16, hidden_size: 8, mlp_hidden: 8}",
        "benchmark.rounds=2", "benchmark.latency_runs=4", "benchmark.memory=false",
    ]


def test_demo_runs_every_stage_then_resumes_for_free(tiny_run, tmp_path, monkeypatch, capsys):
    overrides = sum((["--set", o] for o in demo_overrides(tiny_run, tmp_path)), [])
    code, output = run_cli(monkeypatch, capsys, "demo", "--quick", *overrides)
    assert code == 0, output
    root = tmp_path / "demo"
    bench = json.loads((root / "benchmark.json").read_text())
    assert list(bench["models"]) == ["teacher", "student-transformer", "student-bilstm"]
    for entry in bench["models"].values():
        assert set(entry["runtimes"]) == {"pytorch_fp32", "onnx_fp32", "onnx_int8"}
        for values in entry["runtimes"].values():
            assert values["latency_ms_median"] > 0 and values["throughput_examples_per_s"] > 0
            assert set(values["scores"]) == {"toy_sent", "toy_pair", "toy_reg"}
    assert bench["speedup"]["teacher"]["pytorch_fp32"] == pytest.approx(1.0)
    # The ONNX fp32 export scores what PyTorch scores (parity-checked at export).
    teacher = bench["models"]["teacher"]["runtimes"]
    assert teacher["onnx_fp32"]["score"] == pytest.approx(teacher["pytorch_fp32"]["score"], abs=1e-3)
    # Those scores came from the export's parity check (same rows); scoring afresh gives the same numbers.
    assert {v["scored_by"] for v in teacher.values()} == {"export parity check"}
    from multidistill.evaluation.benchmark import benchmark

    raw, _ = tiny_run
    again = benchmark([root / "teacher" / "model"], raw["data"]["tasks"], data_root=raw["data"]["data_root"],
                      runtimes=("pytorch_fp32", "onnx_fp32", "onnx_int8"), export_root=root / "benchmark" / "exports",
                      rounds=1, latency_runs=2, memory=False, cache_dir=raw["data"]["cache_dir"],
                      max_eval_examples=200)["models"]["teacher"]["runtimes"]
    for runtime, values in again.items():
        assert values["scored_by"] == "benchmark"
        assert values["scores"] == pytest.approx(teacher[runtime]["scores"], abs=1e-4), runtime
    report = root / "report" / "report.md"
    assert report.is_file() and str(report) in output.replace("\n", "")
    assert all((root / "report" / p).stat().st_size > 1000 for p in ("retention.png", "score_vs_latency.png"))
    summary = json.loads((root / "summary.json").read_text())
    assert list(summary["rows"]) == ["teacher", "student-transformer", "student-bilstm"]

    code, output = run_cli(monkeypatch, capsys, "demo", "--quick", *overrides)
    assert code == 0, output
    assert output.count("done, reusing") == 5  # teacher, signals, two students, benchmark


def test_benchmark_command_compares_teacher_and_student(tiny_run, tmp_path, monkeypatch, capsys):
    from multidistill.models.backbone import load_tokenizer
    from multidistill.models.layers import keep_layers
    from multidistill.models.loading import load_model

    raw, write = tiny_run
    assert run_cli(monkeypatch, capsys, "train-teacher", str(write()), "--set", "train.epochs=0.5")[0] == 0
    teacher_dir = tmp_path / "run" / "model"
    teacher = load_model(teacher_dir)
    teacher.backbone = keep_layers(teacher.backbone, [1])
    teacher.save_pretrained(tmp_path / "student" / "model", load_tokenizer(str(teacher_dir)))
    out = tmp_path / "bench.json"
    code, output = run_cli(monkeypatch, capsys, "benchmark", str(teacher_dir), str(tmp_path / "student" / "model"),
                           "--tasks", "toy_sent,toy_reg", "--data-root", raw["data"]["data_root"], "--out", str(out),
                           "--runtimes", "pytorch_fp32,pytorch_bf16", "--rounds", "2", "--latency-runs", "6",
                           "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, output
    bench = json.loads(out.read_text())
    assert bench["reference"] == "run" and set(bench["models"]) == {"run", "student"}
    student = bench["models"]["student"]
    assert student["parameters"] < bench["models"]["run"]["parameters"]
    assert student["runtimes"]["pytorch_fp32"]["peak_rss_mb"] > 0
    assert set(student["runtimes"]["pytorch_fp32"]["scores"]) == {"toy_sent", "toy_reg"}

    code, output = run_cli(monkeypatch, capsys, "benchmark", str(teacher_dir), "--tasks", "nope",
                           "--data-root", raw["data"]["data_root"], "--out", str(tmp_path / "b2.json"))
    assert code == 2 and "no head for" in output and not (tmp_path / "b2.json").exists()
    code, output = run_cli(monkeypatch, capsys, "benchmark", str(teacher_dir), "--tasks", "toy_sent",
                           "--runtimes", "tpu", "--out", str(tmp_path / "b3.json"))
    assert code == 2 and "--runtimes" in output
