"""The Python API on a trained tiny teacher: the same inputs, refusals and defaults as the CLI, a quiet switch,
and predictions on texts held in memory."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml

import multidistill as md
from multidistill.errors import ConfigError
from tests.conftest import write_tiny_tasks


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A teacher trained from a YAML path with progress off, and what that printed."""
    root = tmp_path_factory.mktemp("api_runs")
    specs = write_tiny_tasks(root / "data", n_train=48, n_dev=16)
    config = {"output_dir": str(root / "run"), "model": {"name_or_path": str(tiny_model_dir), "max_seq_length": 32},
              "data": {"data_root": str(root / "data"), "tasks": ["toy_sent", "toy_pair", "toy_reg"],
                       "task_specs": specs, "cache_dir": str(root / "cache")},
              "train": {"epochs": 0.5, "batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "seed": 7}}
    path = root / "teacher.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        md.train_teacher(str(path), progress=False)
    return {"model": root / "run" / "model", "cache": str(root / "cache"), "printed": printed.getvalue()}


def test_a_run_with_progress_off_prints_nothing(trained):
    assert trained["printed"] == ""
    assert (trained["model"] / "model.safetensors").is_file()  # the run happened; it only printed nothing


def test_evaluate_takes_cli_style_tasks_writes_its_output_and_can_be_quiet(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "scores" / "eval_dev.json"
    metrics = md.evaluate_model_dir(trained["model"], tasks="toy_sent,toy_pair", cache_dir=trained["cache"],
                                    output=out, progress=False)
    assert set(metrics["tasks"]) == {"toy_sent", "toy_pair"}
    assert json.loads(out.read_text()) == json.loads(json.dumps(metrics))
    captured = capsys.readouterr()
    assert captured.out + captured.err == ""
    with pytest.raises(ConfigError, match="is a folder; give the path of the JSON file"):
        md.evaluate_model_dir(trained["model"], output=tmp_path, cache_dir=trained["cache"])
    md.evaluate_model_dir(trained["model"], tasks=["toy_sent"], cache_dir=trained["cache"])
    assert "eval toy_sent" not in capsys.readouterr().err  # stderr is no terminal: a log keeps no evaluation bar
    monkeypatch.setattr("multidistill.utils.progress.in_terminal", lambda: True)
    md.evaluate_model_dir(trained["model"], tasks=["toy_sent"], cache_dir=trained["cache"])
    assert "eval toy_sent" in capsys.readouterr().err  # progress on, in a terminal: its bars
    monkeypatch.setenv("TQDM_DISABLE", "1")  # tqdm's own switch still works with progress on
    md.evaluate_model_dir(trained["model"], tasks=["toy_sent"], cache_dir=trained["cache"])
    assert "eval toy_sent" not in capsys.readouterr().err


def test_predict_on_texts_gives_what_predict_file_writes(trained, tmp_path):
    texts = ["good film", "a bad plot and worse acting", "fine"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    md.predict_file(trained["model"], "toy_sent", tmp_path / "in.jsonl", tmp_path / "out.jsonl", progress=False)
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    predicted = md.predict(trained["model"], "toy_sent", texts, progress=False)  # the same batches: equal numbers
    assert [isinstance(p, md.Prediction) for p in predicted] == [True] * 3
    assert [(p.label, p.score, p.probabilities) for p in predicted] == \
        [(r["label"], r["score"], r["probabilities"]) for r in written]
    alone = md.predict(trained["model"], "toy_sent", "good film", progress=False)  # one str is one text
    assert len(alone) == 1 and alone[0].label == predicted[0].label  # (other padding: not the same last bits)
    assert alone[0].score == pytest.approx(predicted[0].score, abs=1e-5)
    scores = md.predict(trained["model"], "toy_reg", ["good film"], ["bad film"], progress=False)
    assert scores[0].label is None and isinstance(scores[0].score, float) and scores[0].probabilities == {}
    with pytest.raises(ConfigError, match="takes text pairs: give text_pairs"):
        md.predict(trained["model"], "toy_pair", ["a"], progress=False)
    with pytest.raises(md.DataError, match=r"texts\[1\] is empty"):
        md.predict(trained["model"], "toy_sent", ["a", " "], progress=False)
    assert md.predict(trained["model"], "toy_sent", [], progress=False) == []


def test_a_signal_store_from_task_names_reads_the_teachers_own_data(trained, tmp_path):
    from multidistill.config import DataConfig
    from multidistill.models.loading import saved_data_root
    from multidistill.models.multitask import read_model_tasks

    teacher, cache = trained["model"], trained["cache"]
    store = md.build_signal_store(str(teacher), "toy_sent", tmp_path / "store", cache_dir=cache, progress=False)
    assert list(store.manifest["tasks"]) == ["toy_sent"]
    data = DataConfig(tasks=["toy_sent"], data_root=saved_data_root(teacher), cache_dir=cache,
                      task_specs=read_model_tasks(teacher))
    assert md.build_signal_store([teacher], data, tmp_path / "store").fingerprint == store.fingerprint  # reused
    with pytest.raises(ConfigError, match="--teacher names the same folder twice"):
        md.build_signal_store([teacher, str(teacher)], ["toy_sent"], tmp_path / "twice", cache_dir=cache)
    with pytest.raises(ConfigError, match=r"--hidden-layers \(hidden_layers\) lists '2' twice"):
        md.build_signal_store([teacher], ["toy_sent"], tmp_path / "layers", hidden_layers=[2, 0, 2], cache_dir=cache)
    with pytest.raises(ConfigError, match="give it or autocast, not both"):
        md.build_signal_store([teacher], ["toy_sent"], tmp_path / "bf16", bf16=True, autocast=contextlib.nullcontext)
    with pytest.raises(ConfigError, match="data_root apply to tasks given by name"):
        md.build_signal_store([teacher], data, tmp_path / "root", data_root=str(tmp_path))
    assert not any((tmp_path / name).exists() for name in ("twice", "layers", "bf16", "root"))


def test_exports_check_the_models_own_dev_rows_by_default(trained, tmp_path):
    model, cache = trained["model"], trained["cache"]
    meta = md.export_onnx(model, tmp_path / "onnx", cache_dir=cache)
    assert meta["parity_checked"] and set(meta["parity"]["fp32"]) == {"toy_sent", "toy_pair", "toy_reg"}
    assert not md.export_onnx(model, tmp_path / "plain", skip_parity=True)["parity_checked"]
    with pytest.raises(ConfigError, match=r"--int8-method \(int8_method\), --per-channel/--no-per-channel "
                                          r"\(per_channel\) shape the int8 graph"):
        md.export_onnx(model, tmp_path / "x", quantize="none", int8_method="static", per_channel=False)
    with pytest.raises(ConfigError, match=r"--tolerance-fp32 \(tolerance_fp32\) must be >= 0"):
        md.export_onnx(model, tmp_path / "x", tolerance_fp32=-1.0)
    with pytest.raises(ConfigError, match="which --skip-parity skips"):
        md.export_onnx(model, tmp_path / "x", skip_parity=True, parity_examples=10)
    with pytest.raises(ConfigError, match="choose one of them|give one of them"):
        md.export_hf(model, tmp_path / "x", skip_parity=True, parity_data=md.DataConfig(tasks=["toy_sent"]))
    assert not (tmp_path / "x").exists()
    out = md.export_hf(model, tmp_path / "hf", task="toy_sent", cache_dir=cache)
    assert json.loads((out / "export.json").read_text())["check"]["source"] == "dev rows"


def test_exports_and_load_model_are_silent_with_progress_off(trained, tmp_path, capsys):
    """export_hf printed transformers' "Writing model shards" / "Loading weights" bars, with no switch to stop it."""
    model, cache = trained["model"], trained["cache"]
    md.export_hf(model, tmp_path / "hf", task="toy_sent", cache_dir=cache, progress=False)
    md.export_onnx(model, tmp_path / "onnx", cache_dir=cache, progress=False)
    assert not md.load_model(model, progress=False).training
    assert capsys.readouterr() == ("", "")


def test_benchmark_takes_cli_style_strings(trained, tmp_path, capsys):
    report = md.benchmark(str(trained["model"]), "toy_sent", runtimes="pytorch_fp32", rounds=1, latency_runs=1,
                          batch_size=4, memory=False, cache_dir=trained["cache"], out=tmp_path / "b.json",
                          progress=False)
    assert list(report["models"]) == ["run"] and report["gate_failures"] == []
    assert json.loads((tmp_path / "b.json").read_text())["tasks"] == ["toy_sent"]
    captured = capsys.readouterr()
    assert captured.out + captured.err == ""


def test_benchmark_refuses_to_replace_another_models_export_of_the_same_name(trained, tmp_path, monkeypatch):
    """out=None exports to ./exports/<model name>: a second `.../run/model` replaced the first one's export."""
    import shutil

    import torch

    from multidistill.models.backbone import load_tokenizer
    from multidistill.models.loading import load_model

    other = tmp_path / "elsewhere" / "run" / "model"  # named `run` as the trained model is
    shutil.copytree(trained["model"], other)
    model = load_model(other)
    with torch.no_grad():
        for parameter in model.heads.parameters():
            parameter.add_(1.0)
    model.save_pretrained(other, load_tokenizer(str(other)))
    monkeypatch.chdir(tmp_path)
    md.export_onnx(other, "exports/run", quantize="none", skip_parity=True)
    recorded = (tmp_path / "exports" / "run" / "export.json").read_bytes()
    with pytest.raises(ConfigError, match=r"exports/run holds the export of another model \(.*elsewhere/run/model\); "
                                          r"benchmarking .* would replace it: give another folder with --export-root"):
        md.benchmark(trained["model"], "toy_sent", runtimes="onnx_fp32", rounds=1, latency_runs=1, memory=False,
                     cache_dir=trained["cache"], progress=False)
    assert (tmp_path / "exports" / "run" / "export.json").read_bytes() == recorded


def test_a_strict_benchmark_raises_when_a_parity_gate_failed(monkeypatch):
    from multidistill.evaluation import benchmark as bench
    from multidistill.export.parity import ParityError

    monkeypatch.setattr(bench, "_benchmark", lambda *args, **kwargs: {"gate_failures": ["m onnx_int8: too far"]})
    assert bench.benchmark(["m"], ["t"])["gate_failures"]  # the default: returned, for the caller to read
    with pytest.raises(ParityError, match="1 parity check\\(s\\) failed.*\\n  m onnx_int8: too far"):
        bench.benchmark(["m"], ["t"], strict=True)


def test_a_path_is_one_model_folder(tmp_path):
    from multidistill.utils.arguments import as_list

    assert as_list(Path("runs/a/model"), "model_dirs") == [Path("runs/a/model")]
