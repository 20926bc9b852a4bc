"""Per-label decision thresholds of multilabel tasks (`train.thresholds: per_label`): chosen on the eval rows once
training ends, saved in the model folder, and used by evaluate, predict, the model card and both exports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from multidistill.data import label_sets
from multidistill.data.tasks import Task
from multidistill.errors import ModelError
from multidistill.evaluation.metrics import compute_metrics, same_predictions
from multidistill.evaluation.thresholds import (
    GRID,
    choose_thresholds,
    offsets,
    read_thresholds,
    save_thresholds,
    saved_thresholds,
)
from multidistill.inference.predict import prediction_record
from tests.test_cli import run_cli
from tests.test_multilabel import LABELS, write_tags


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _logits(probabilities: list[list[float]]) -> np.ndarray:
    return np.array([[_logit(p) for p in row] for row in probabilities])


def _task() -> Task:
    return Task.model_validate({"name": "tags", "type": "multilabel", "labels": LABELS})


def test_each_label_gets_the_f1_best_threshold_nearest_one_half():
    # pos: every t in [0.3, 0.6) separates the rows (F1 1): the one nearest 0.5 is 0.5.
    # neg: only t in [0.1, 0.34) finds both gold rows without the third: 0.3 is nearest 0.5.
    # long: no row holds it: 0.5. The last row is unlabelled (-1) and must not count (it would make pos 0.9 best).
    probabilities = [[0.9, 0.40, 0.2], [0.6, 0.34, 0.1], [0.3, 0.10, 0.3], [0.1, 0.05, 0.2], [0.95, 0.9, 0.9]]
    gold = np.array([label_sets.encode([0, 1]), label_sets.encode([0, 1]), 0, 0, -1])
    assert choose_thresholds(_logits(probabilities), gold) == (0.5, 0.3, 0.5)
    assert GRID[0] == 0.05 and GRID[-1] == 0.95 and len(GRID) == 19


def test_ties_go_to_the_threshold_nearest_one_half_then_to_the_lower():
    # gold rows 2 and 4. F1 by hand: t < 0.47 predicts all four (2 hits, 2 wrong): 4/6; t = 0.5 predicts 0.52 and
    # 0.57 (1 hit): 2/4; t = 0.55 predicts 0.57 alone (1 hit): 2/3. Best 2/3 at 0.05..0.45 and at 0.55: 0.45 and
    # 0.55 are as near 0.5, and the lower wins.
    probabilities = [[0.47], [0.47], [0.52], [0.57]]
    assert choose_thresholds(_logits(probabilities), np.array([0, 1, 0, 1])) == (0.45,)
    # one best range, [0.50, 0.58): 0.5 itself
    assert choose_thresholds(_logits([[0.58], [0.50]]), np.array([1, 0])) == (0.5,)
    # ties farther out, where |t - 0.5| in floating point is not symmetric (|0.7 - 0.5| < |0.3 - 0.5|). Gold rows 0
    # and 1. F1 by hand: t <= 0.3 predicts all four (2 hits, 2 wrong): 2/3; 0.35..0.65 predicts 0.75 and both 0.66:
    # 2/5; t = 0.7 predicts 0.75 alone: 2/3. Best at 0.05..0.3 and 0.7: 0.3 and 0.7 are as near 0.5; the lower wins.
    probabilities = [[0.75], [0.32], [0.66], [0.66]]
    assert choose_thresholds(_logits(probabilities), np.array([1, 1, 0, 0])) == (0.3,)


def test_every_decision_agrees_at_the_exact_boundary():
    # a float32 logit equal to float32(logit(0.05)), which is above the float64 logit(0.05): over the threshold
    # for the metrics (float32 logits), the prediction record (float64) and the choice alike
    at = np.float32(offsets([0.05])[0])
    assert float(at) > offsets([0.05])[0]
    logits = np.array([[at, 0.0, 0.0]], dtype=np.float32)
    chosen = (0.05, 0.5, 0.5)
    gold = np.array([label_sets.encode([0])])
    assert compute_metrics(["exact_match"], logits, gold, "multilabel", chosen)["exact_match"] == 1.0
    assert prediction_record(logits[0], LABELS, multilabel=True, thresholds=chosen)["labels"] == ["pos"]
    assert same_predictions("multilabel", logits, logits.astype(np.float64), chosen).all()


def test_metrics_and_predictions_decide_at_the_thresholds():
    logits = _logits([[0.40, 0.8, 0.2], [0.25, 0.3, 0.7]])
    gold = np.array([label_sets.encode([0, 1]), label_sets.encode([2])])
    # at 0.5: row 0 predicts {neg} (misses pos), row 1 {long}: 2 hits of 3 gold, no false positive
    assert compute_metrics(["micro_f1", "exact_match"], logits, gold, "multilabel") == \
        pytest.approx({"micro_f1": 0.8, "exact_match": 0.5})
    # pos at 0.3: row 0 gains pos (right), row 1 stays without it (0.25): every set right
    chosen = (0.3, 0.5, 0.5)
    assert compute_metrics(["micro_f1", "exact_match"], logits, gold, "multilabel", chosen) == \
        pytest.approx({"micro_f1": 1.0, "exact_match": 1.0})
    assert prediction_record(logits[0], LABELS, multilabel=True)["labels"] == ["neg"]
    assert prediction_record(logits[0], LABELS, multilabel=True, thresholds=chosen)["labels"] == ["pos", "neg"]
    # two models on either side of 0.3 for pos agree at 0.5, not at the thresholds
    other = _logits([[0.35, 0.8, 0.2], [0.25, 0.3, 0.7]])
    assert same_predictions("multilabel", logits, other).all()
    assert same_predictions("multilabel", logits, other, (0.375, 0.5, 0.5)).tolist() == [False, True]
    assert offsets([0.5, 0.75]) == pytest.approx([0.0, math.log(3)])
    with pytest.raises(ValueError, match="multilabel"):
        compute_metrics(["accuracy"], np.zeros((1, 2)), np.array([0]), "classification", (0.5, 0.5))


@pytest.mark.parametrize(("saved", "message"), [
    ([0.5], "must map task names"),
    ({"other": {}}, "no multilabel task 'other'"),
    ({"tags": {"pos": 0.5, "neg": 0.5}}, "one threshold for each"),
    ({"tags": {"pos": 0.5, "neg": 0.5, "long": 1.0}}, r"thresholds\.tags\.long' must be a number between 0 and 1"),
    ({"tags": {"pos": 0.5, "neg": True, "long": 0.5}}, r"thresholds\.tags\.neg'"),
])
def test_bad_saved_thresholds_are_refused_naming_the_key(saved, message):
    with pytest.raises(ModelError, match=message):
        read_thresholds({"thresholds": saved}, {"tags": _task()}, "x/multidistill_model.json")


@pytest.fixture
def per_label_run(tiny_run, tmp_path):
    raw, write = tiny_run
    raw["data"]["task_specs"] = [*raw["data"]["task_specs"], write_tags(Path(raw["data"]["data_root"]))]
    raw["data"]["tasks"] = ["toy_sent", "tags"]
    raw["train"]["thresholds"] = "per_label"
    return raw, write


def test_per_label_thresholds_are_chosen_saved_and_used_everywhere(per_label_run, tmp_path, monkeypatch, capsys):
    from multidistill.evaluation.evaluate import predict as predict_logits
    from multidistill.evaluation.run import evaluate_model_dir
    from multidistill.inference.texts import predict
    from multidistill.models.multitask import MODEL_CONFIG_FILE

    raw, write = per_label_run
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write(raw)))
    assert code == 0, output
    model_dir = Path(raw["output_dir"]) / "model"
    config = json.loads((model_dir / MODEL_CONFIG_FILE).read_text())
    assert config["format_version"] == 3 and sorted(config["thresholds"]) == ["tags"]
    chosen = saved_thresholds(model_dir)["tags"]
    assert "tags: decision thresholds chosen on the eval rows" in output

    # they are what choose_thresholds gives on the dev rows, and evaluate scores at them
    from multidistill.config import DataConfig
    from multidistill.data.collate import pad_id
    from multidistill.data.prepare import prepare_data
    from multidistill.models import load_model
    from multidistill.models.backbone import load_tokenizer

    model, tokenizer = load_model(model_dir), load_tokenizer(str(model_dir))
    data = prepare_data(DataConfig(tasks=["tags"], data_root=raw["data"]["data_root"],
                                   cache_dir=raw["data"]["cache_dir"], task_specs=[model.tasks["tags"]]),
                        tokenizer, 32, max_examples_per_task=None, seed=0, need_train=False)
    import torch

    logits = predict_logits(model, data.tasks["tags"], data.eval_sets["tags"], batch_size=16,
                            pad_token_id=pad_id(tokenizer), device=torch.device("cpu"))
    gold = np.asarray(data.eval_sets["tags"]["label"])
    assert chosen == choose_thresholds(logits, gold)
    scores = evaluate_model_dir(model_dir, tasks="tags", cache_dir=raw["data"]["cache_dir"], progress=False)
    assert scores["tasks"]["tags"] == pytest.approx(compute_metrics(["micro_f1", "macro_f1"], logits, gold,
                                                                    "multilabel", chosen))
    assert scores["thresholds"] == {"tags": dict(zip(LABELS, chosen, strict=True))}  # the scores say what decided
    bench = tmp_path / "bench.json"
    code, output = run_cli(monkeypatch, capsys, "benchmark", str(model_dir), "--tasks", "tags", "--out", str(bench),
                           "--runtimes", "pytorch_fp32", "--rounds", "1", "--latency-runs", "2", "--cache-dir",
                           raw["data"]["cache_dir"])
    assert code == 0, output
    entry = json.loads(bench.read_text())["models"]["run"]
    assert entry["thresholds"] == scores["thresholds"]
    assert entry["runtimes"]["pytorch_fp32"]["scores"]["tags"] == pytest.approx(scores["tasks"]["tags"]["micro_f1"])
    # metrics.json keeps the selection scores at 0.5
    metrics = json.loads((Path(raw["output_dir"]) / "metrics.json").read_text())
    assert metrics["tasks"]["tags"] == pytest.approx(compute_metrics(["micro_f1", "macro_f1"], logits, gold,
                                                                     "multilabel"))

    # predict decides at them (a text whose set differs at 0.5 and at the thresholds, if the model gives one)
    texts = ["the film was great", "awful and boring but very long indeed here", "a plot", "sad fun long film"]
    ours = predict(model_dir, "tags", texts, progress=False)
    for prediction in ours:
        probs = np.array([prediction.probabilities[label] for label in LABELS])
        assert prediction.labels == [label for label, p, t in zip(LABELS, probs, chosen, strict=True) if p > t]
    card = (model_dir / "README.md").read_text()
    assert "decision thresholds" in card and f"pos {chosen[0]:g}" in card

    # the ONNX export records them, and predict over it gives the same sets
    out = tmp_path / "onnx"
    code, output = run_cli(monkeypatch, capsys, "export", str(model_dir), "--format", "onnx", "--out", str(out))
    assert code == 0, output
    record = json.loads((out / "export.json").read_text())
    assert record["format_version"] == 2 and list(record["thresholds"]["tags"].values()) == list(chosen)
    assert [p.labels for p in predict(out, "tags", texts, progress=False)] == [p.labels for p in ours]

    # the Hugging Face export carries them in config.json, and its card's snippet applies them
    out = tmp_path / "hf"
    code, output = run_cli(monkeypatch, capsys, "export", str(model_dir), "--format", "hf", "--task", "tags",
                           "--out", str(out))
    assert code == 0, output
    written = json.loads((out / "config.json").read_text())["multidistill_thresholds"]
    assert written == dict(zip(LABELS, chosen, strict=True))
    assert f"thresholds = torch.tensor({list(chosen)})" in (out / "README.md").read_text()
    # and import-classifier brings them back with the classifier
    back = tmp_path / "back"
    code, output = run_cli(monkeypatch, capsys, "import-classifier", str(out), "--task", "tags", "--out", str(back),
                           "--config", str(write(raw)))
    assert code == 0, output
    assert saved_thresholds(back) == {"tags": chosen}
    assert [p.labels for p in predict(back, "tags", texts, progress=False)] == [p.labels for p in ours]


def test_thresholds_saved_then_removed_restore_the_folder_format(tiny_run, tmp_path):
    from multidistill.models import load_model
    from multidistill.models.multitask import MODEL_CONFIG_FILE, MultiTaskModel

    raw, _ = tiny_run
    model = MultiTaskModel.from_backbone(raw["model"]["name_or_path"], [_task()])
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    save_thresholds(folder, {"tags": _task()}, {"tags": (0.3, 0.5, 0.7)})
    assert saved_thresholds(folder) == {"tags": (0.3, 0.5, 0.7)}
    assert json.loads((folder / MODEL_CONFIG_FILE).read_text())["thresholds"]["tags"] == \
        {"pos": 0.3, "neg": 0.5, "long": 0.7}
    load_model(folder)  # a version-3 folder loads
    save_thresholds(folder, {"tags": _task()}, {})
    config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    assert config["format_version"] == 1 and "thresholds" not in config and saved_thresholds(folder) == {}


def test_per_label_without_a_multilabel_task_says_so_and_a_resume_may_change_it(tiny_run, monkeypatch, capsys):
    raw, write = tiny_run
    raw["data"]["tasks"] = ["toy_sent"]
    raw["train"]["epochs"] = 1
    raw["train"]["thresholds"] = "per_label"
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write(raw)))
    assert code == 0, output
    assert "per_label chooses multilabel tasks' thresholds, and this run scores none" in output
    raw["train"]["thresholds"] = "fixed"
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write(raw)), "--resume")
    assert code == 0, output
    assert "key 'train.thresholds' was \"per_label\" in the checkpoint, now \"fixed\" (safe to change)" in output


def test_a_hand_edited_threshold_out_of_range_is_refused_by_the_commands_naming_the_key(tiny_run, tmp_path,
                                                                                      monkeypatch, capsys):
    from multidistill.models.backbone import load_tokenizer
    from multidistill.models.multitask import MODEL_CONFIG_FILE, MultiTaskModel

    raw, _ = tiny_run
    folder = tmp_path / "m"
    MultiTaskModel.from_backbone(raw["model"]["name_or_path"], [_task()]).save_pretrained(
        folder, load_tokenizer(raw["model"]["name_or_path"]))
    save_thresholds(folder, {"tags": _task()}, {"tags": (0.3, 0.5, 0.7)})
    config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    config["thresholds"]["tags"]["long"] = 1.5
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    source = tmp_path / "in.csv"
    source.write_text("text\na fine film\n")
    out = tmp_path / "out.jsonl"
    code, output = run_cli(monkeypatch, capsys, "predict", str(folder), "--task", "tags", "--input", str(source),
                           "--output", str(out))
    assert code == 2, output
    assert "key 'thresholds.tags.long' must be a number between 0 and 1" in " ".join(output.split())
    assert not out.exists()


def test_resuming_a_finished_run_with_per_label_chooses_thresholds_without_training(per_label_run, monkeypatch,
                                                                                   capsys):
    raw, write = per_label_run
    raw["train"]["thresholds"] = "fixed"
    raw["train"]["epochs"] = 1
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write(raw)))
    assert code == 0, output
    model_dir = Path(raw["output_dir"]) / "model"
    weights = (model_dir / "model.safetensors").read_bytes()
    assert saved_thresholds(model_dir) == {}
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write(raw)), "--resume", "--set",
                           "train.thresholds=per_label")
    assert code == 0, output
    assert "tags: decision thresholds chosen on the eval rows" in output
    assert set(saved_thresholds(model_dir)) == {"tags"}
    assert (model_dir / "model.safetensors").read_bytes() == weights  # not a step trained
    # and back: fixed removes them
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write(raw)), "--resume")
    assert code == 0, output
    assert saved_thresholds(model_dir) == {}


def test_saved_thresholds_leave_the_teacher_fingerprint_alone_but_not_the_exports(tiny_run, tmp_path):
    from multidistill.evaluation.benchmark import _refuse_another_models_export
    from multidistill.models.multitask import MultiTaskModel
    from multidistill.teachers.fingerprint import teacher_fingerprint

    raw, _ = tiny_run
    folder = tmp_path / "m"
    MultiTaskModel.from_backbone(raw["model"]["name_or_path"], [_task()]).save_pretrained(folder)
    before = teacher_fingerprint(folder)
    assert teacher_fingerprint(folder, with_thresholds=True) == before  # the same without thresholds
    save_thresholds(folder, {"tags": _task()}, {"tags": (0.3, 0.5, 0.7)})
    assert teacher_fingerprint(folder) == before  # signal stores and stages made from it stay valid
    assert teacher_fingerprint(folder, with_thresholds=True) != before  # an export of it is not the same
    save_thresholds(folder, {"tags": _task()}, {})
    assert teacher_fingerprint(folder, with_thresholds=True) == before
    # the benchmark reads an export that carries thresholds (format version 2) when it looks for one to reuse
    export = tmp_path / "exports" / "m"
    export.mkdir(parents=True)
    (export / "export.json").write_text(json.dumps({"format_version": 2, "source": str(folder)}))
    _refuse_another_models_export(export, folder)


def test_fixed_clears_thresholds_it_cannot_read_and_a_classifier_trained_further_loses_them(
        per_label_run, tmp_path, monkeypatch, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from multidistill.models.multitask import MODEL_CONFIG_FILE

    raw, write = per_label_run
    raw["train"]["epochs"] = 1
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write(raw)))
    assert code == 0, output
    model_dir = Path(raw["output_dir"]) / "model"
    # an HF export trained further (here: one bias moved) keeps the config attribute; the import leaves it out
    out = tmp_path / "hf"
    code, output = run_cli(monkeypatch, capsys, "export", str(model_dir), "--format", "hf", "--task", "tags",
                           "--out", str(out))
    assert code == 0, output
    further = AutoModelForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        further.classifier.bias += 1.0
    further.save_pretrained(tmp_path / "further")
    AutoTokenizer.from_pretrained(out).save_pretrained(tmp_path / "further")
    back = tmp_path / "back"
    code, output = run_cli(monkeypatch, capsys, "import-classifier", str(tmp_path / "further"), "--task", "tags",
                           "--out", str(back), "--config", str(write(raw)))
    assert code == 0, output
    assert "chosen for other weights than it holds now" in " ".join(output.split())
    assert saved_thresholds(back) == {}
    # a value the file holds but no version can read: fixed removes it on a resume, without reading it
    config = json.loads((model_dir / MODEL_CONFIG_FILE).read_text())
    config["thresholds"]["tags"]["pos"] = "high"
    (model_dir / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write(raw)), "--resume", "--set",
                           "train.thresholds=fixed")
    assert code == 0, output
    assert saved_thresholds(model_dir) == {}
