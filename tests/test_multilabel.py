"""Multilabel tasks (a set of labels a row: GoEmotions, toxicity tags): read from text cells, JSON lists and
Hugging Face sequences into bit masks, a sigmoid head with binary cross-entropy, soft targets as the teachers' mean
sigmoids (`soft_bce`), metrics over label sets, and the whole path (teacher -> store -> student -> export, import,
predict) on a tiny model."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from multidistill.data import label_sets
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, DataError, ModelError
from multidistill.evaluation.baseline import trivial_baseline
from multidistill.evaluation.metrics import compute_metrics
from multidistill.inference.predict import prediction_record
from multidistill.losses import build_loss
from multidistill.teachers.reduce import teacher_mean
from tests.conftest import FILLER, NEGATIVE, POSITIVE
from tests.test_cli import run_cli
from tests.test_recipes import stage_names, tiny_recipe, write

LN2, LN3 = math.log(2), math.log(3)
LABELS = ["pos", "neg", "long"]


def _task(**extra) -> Task:
    return Task.model_validate({"name": "tags", "type": "multilabel", "labels": LABELS, **extra})


def _tags(sentence: str) -> list[str]:
    words = sentence.split()
    hits = (("pos", any(w in POSITIVE for w in words)), ("neg", any(w in NEGATIVE for w in words)),
            ("long", len(words) > 5))
    return [name for name, hit in hits if hit]


def write_tags(root: Path, n_train: int = 96, n_dev: int = 32, seed: int = 0) -> dict:
    """A toy multilabel task: a sentence is tagged pos / neg when it holds such a word, long past five words (a
    sentence may hold none of them, or all three). Train is TSV with joined cells, dev JSONL with lists."""
    rng = random.Random(seed)

    def sentence() -> str:
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 7))]
        for pool in (POSITIVE, NEGATIVE):
            if rng.random() < 0.5:
                words.insert(rng.randrange(len(words) + 1), rng.choice(pool))
        return " ".join(words)

    (root / "tags").mkdir(parents=True, exist_ok=True)
    train = [sentence() for _ in range(n_train)]
    (root / "tags" / "train.tsv").write_text("text\ttags\n" + "".join(
        f"{s}\t{','.join(_tags(s)) or '[]'}\n" for s in train))
    dev = [sentence() for _ in range(n_dev)]
    (root / "tags" / "dev.jsonl").write_text("".join(json.dumps({"text": s, "tags": _tags(s)}) + "\n" for s in dev))
    return {"name": "tags", "type": "multilabel", "labels": LABELS,
            "files": {"train": {"path": "tags/train.tsv", "columns": {"text_a": "text", "label": "tags"}},
                      "dev": {"path": "tags/dev.jsonl", "format": "jsonl",
                              "columns": {"text_a": "text", "label": "tags"}}}}


# -- the spec ------------------------------------------------------------------------------------------------------


def test_a_multilabel_spec_defaults_to_set_metrics_and_refuses_what_it_cannot_read():
    assert _task().metrics == ["micro_f1", "macro_f1"] and _task().num_labels == 3 and _task().is_multilabel
    with pytest.raises(ValueError, match="a multilabel task needs 2 to 63 labels, it has 64"):
        _task(labels=[f"l{i}" for i in range(64)])
    with pytest.raises(ValueError, match="metric 'accuracy' is a classification metric; a multilabel task takes"):
        _task(metrics=["accuracy"])
    with pytest.raises(ValueError, match="label 'a,b' holds files.train.label_separator ','"):
        _task(labels=["a,b", "c"], files={"train": {"path": "x.tsv", "columns": {"text_a": 0, "label": 1}}})
    with pytest.raises(ValueError, match="label '\\[none\\]' starts with '\\[', which a label cell reads as the start"):
        _task(labels=["[none]", "c"], files={"train": {"path": "x.jsonl", "format": "jsonl",
                                                       "columns": {"text_a": 0, "label": 1}}})
    with pytest.raises(ValueError, match="label 'a,b' holds files.train.label_separator"):  # jsonl strings too
        _task(labels=["a,b", "c"], files={"train": {"path": "x.jsonl", "format": "jsonl",
                                                    "columns": {"text_a": "t", "label": "y"}}})
    with pytest.raises(ValueError, match="label_separator is for multilabel tasks only"):
        Task.model_validate({"name": "t", "labels": ["0", "1"], "files": {"train": {
            "path": "x.tsv", "label_separator": "|", "columns": {"text_a": 0, "label": 1}}}})


# -- reading ------------------------------------------------------------------------------------------------------


def _read(tmp_path: Path, spec: dict, split: str = "train"):
    from multidistill.data.readers import read_split

    return read_split(Task.model_validate(spec), split, tmp_path)


def test_label_sets_are_read_from_joined_cells_json_lists_and_jsonl_lists(tmp_path):
    (tmp_path / "a.tsv").write_text("text\ttags\nx y\tneg, pos\nz\t[]\nw\tlong\nv\t[\"long\", \"pos\"]\n")
    spec = {"name": "tags", "type": "multilabel", "labels": LABELS,
            "files": {"train": {"path": "a.tsv", "columns": {"text_a": "text", "label": "tags"}}}}
    assert _read(tmp_path, spec)["label"] == [0b011, 0, 0b100, 0b101]
    (tmp_path / "b.jsonl").write_text('{"t": "x", "y": ["long"]}\n{"t": "z", "y": []}\n')
    spec["files"]["train"] = {"path": "b.jsonl", "format": "jsonl", "columns": {"text_a": "t", "label": "y"}}
    assert _read(tmp_path, spec)["label"] == [0b100, 0]
    (tmp_path / "c.tsv").write_text("text\ttags\nx\tpos|long\n")
    spec["files"]["train"] = {"path": "c.tsv", "label_separator": "|", "columns": {"text_a": "text", "label": "tags"}}
    assert _read(tmp_path, spec)["label"] == [0b101]


@pytest.mark.parametrize(("cell", "message"), [
    ("pos,lng", r"line 3, field 'label' \(column 'tags'\): label 'lng' is not one of the task's labels: 'pos', "
                r"'neg', 'long'"),
    ("pos,,neg", "line 3, .*: label cell 'pos,,neg' has an empty label between its separators"),
    ("[\"pos\"", "line 3, .*: label cell '\\[\"pos\"' starts with '\\[' but is not a JSON list"),
    ("", "line 3, .*: empty label .* \\(a row with none of the labels: \\[\\]\\)"),
])
def test_a_bad_label_cell_names_its_line_and_nothing_is_read(tmp_path, cell, message):
    (tmp_path / "a.tsv").write_text(f"text\ttags\nx\tpos\ny\t{cell}\n")
    spec = {"name": "tags", "type": "multilabel", "labels": LABELS,
            "files": {"train": {"path": "a.tsv", "columns": {"text_a": "text", "label": "tags"}}}}
    with pytest.raises(DataError, match=message):
        _read(tmp_path, spec)


def test_hf_sequences_of_class_labels_and_of_names_are_read_by_name(tmp_path):
    names = ["long", "pos", "neg"]  # the dataset's own order differs from the task's
    features = datasets.Features({"text": datasets.Value("string"),
                                  "y": datasets.Sequence(datasets.ClassLabel(names=names))})
    datasets.Dataset.from_dict({"text": ["a", "b", "c"], "y": [[0, 1], [], [-1]]},
                               features=features).save_to_disk(str(tmp_path / "cl"))
    spec = {"name": "tags", "type": "multilabel", "labels": LABELS,
            "files": {"train": {"path": "cl", "format": "hf_disk", "columns": {"text_a": "text", "label": "y"}}}}
    # [-1]: the ClassLabel "no label" mark (the augmented variants of our own transfer sets)
    assert _read(tmp_path, spec)["label"] == [0b101, 0, -1]
    datasets.Dataset.from_dict({"text": ["a"], "y": [["neg", "pos"]]}).save_to_disk(str(tmp_path / "names"))
    spec["files"]["train"]["path"] = "names"
    assert _read(tmp_path, spec)["label"] == [0b011]
    datasets.Dataset.from_dict({"text": ["a"], "y": ["pos"]}).save_to_disk(str(tmp_path / "scalar"))
    spec["files"]["train"]["path"] = "scalar"
    assert _read(tmp_path, spec)["label"] == [0b001]  # a text cell, as in a TSV file
    one = datasets.Features({"text": datasets.Value("string"), "y": datasets.ClassLabel(names=names)})
    datasets.Dataset.from_dict({"text": ["a", "b"], "y": [0, 2]}, features=one).save_to_disk(str(tmp_path / "one"))
    spec["files"]["train"]["path"] = "one"
    assert _read(tmp_path, spec)["label"] == [0b100, 0b010]  # one class a row: a set of one, by the feature's names


@pytest.mark.parametrize(("rows", "features", "message"), [
    ([[1, 0, 1]], None, "row 0: label 'neg' is given twice in one row's labels \\(a 0/1 vector, one entry per label"),
    ([None], datasets.Sequence(datasets.Value("string")), "row 0: empty label \\(column 'y' is null\\)"),
    ([[0, -1]], datasets.Sequence(datasets.ClassLabel(names=LABELS)), "row 0: class index -1 \\('no label'\\) among"),
])
def test_a_bad_hf_label_list_is_refused_naming_its_row(tmp_path, rows, features, message):
    schema = None if features is None else datasets.Features({"text": datasets.Value("string"), "y": features})
    datasets.Dataset.from_dict({"text": ["a"] * len(rows), "y": rows}, features=schema).save_to_disk(
        str(tmp_path / "d"))
    spec = {"name": "tags", "type": "multilabel", "labels": LABELS,
            "files": {"train": {"path": "d", "format": "hf_disk", "columns": {"text_a": "text", "label": "y"}}}}
    with pytest.raises(DataError, match=message):
        _read(tmp_path, spec)


# -- head, losses, targets (golden numbers by hand) ------------------------------------------------------------------


def test_hard_loss_is_the_mean_binary_cross_entropy_over_the_labels():
    # logits [0, ln 3], gold {label 1}: label 0: -ln(1 - 1/2) = ln 2; label 1: sigmoid(ln 3) = 3/4, -ln 3/4.
    loss = build_loss("hard")
    task = Task.model_validate({"name": "t", "type": "multilabel", "labels": ["a", "b"]})
    got = loss(torch.tensor([[0.0, LN3], [5.0, 5.0]]), torch.tensor([0b10, -1]), task)
    assert got[0].item() == pytest.approx((LN2 + 2 * LN2 - LN3) / 2, abs=1e-6)
    assert got[1].item() == 0.0  # a row without labels (an augmented variant) adds nothing


def test_soft_bce_against_the_teachers_probabilities_at_two_temperatures():
    # student [0, ln 3] -> p = [1/2, 3/4]; teacher q = [1/2, 1/4].
    # label 0: -(1/2 ln 1/2 + 1/2 ln 1/2) = ln 2; label 1: -(1/4 ln 3/4 + 3/4 ln 1/4) = 2 ln 2 - ln3 / 4.
    student, teacher = torch.tensor([[0.0, LN3]]), torch.tensor([[0.5, 0.25]])
    got = build_loss("soft_bce")(student, teacher)
    assert got.item() == pytest.approx((3 * LN2 - LN3 / 4) / 2, abs=1e-6)
    # T = 2: q_T = sigmoid(logit(1/4) / 2) = 1 / (1 + sqrt 3), p_T = sigmoid(ln 3 / 2) = sqrt 3 / (1 + sqrt 3);
    # the loss is multiplied by T^2 = 4.
    s3 = math.sqrt(3)
    q, p = 1 / (1 + s3), s3 / (1 + s3)
    label1 = -(q * math.log(p) + (1 - q) * math.log(1 - p))
    assert build_loss("soft_bce", temperature=2.0)(student, teacher).item() == pytest.approx(
        4 * (LN2 + label1) / 2, abs=1e-6)
    # from the mean logits instead: the same targets for one teacher
    logits = torch.logit(teacher)
    assert build_loss("soft_bce", teacher_is_probs=False)(student, logits).item() == pytest.approx(got.item(),
                                                                                                 abs=1e-6)


def test_soft_bce_is_smallest_at_the_teachers_probabilities():
    teacher = torch.tensor([[0.2, 0.9, 0.5]])
    student = torch.logit(teacher).clone().requires_grad_(True)
    build_loss("soft_bce")(student, teacher).sum().backward()
    assert student.grad.abs().max() < 1e-6


def test_the_teachers_mean_is_the_mean_of_their_sigmoids_not_a_softmax():
    logits = torch.tensor([[[0.0, LN3], [LN3, 0.0]]])  # (N=1, K=2, C=2)
    assert teacher_mean("multilabel", logits).numpy() == pytest.approx(np.array([[(0.5 + 0.75) / 2] * 2]))


def test_an_objective_that_distils_other_tasks_but_not_a_multilabel_one_is_refused():
    from multidistill.config import ObjectiveConfig
    from multidistill.training.objective import refuse_unset_type_terms

    tasks = [_task()]
    kd = ObjectiveConfig.model_validate({"classification": [{"loss": "hard"}, {"loss": "soft_ce"}]})
    with pytest.raises(ConfigError, match=r"task\(s\) \['tags'\] are multilabel, and its multilabel terms are not "
                                          r"set, .* \[\{loss: hard, weight: 0.5\}, \{loss: soft_bce, weight: 0.5\}\]"):
        refuse_unset_type_terms(kd, tasks)
    # gold labels only (a teacher's or a fine-tune's objective), the multilabel list given, or per-task terms: fine
    for fine in ({"classification": [{"loss": "hard"}], "regression": [{"loss": "hard"}]},
                 {"classification": [{"loss": "soft_ce"}], "multilabel": [{"loss": "soft_bce"}]},
                 {"classification": [{"loss": "soft_ce"}], "tasks": {"tags": [{"loss": "hard"}]}}):
        refuse_unset_type_terms(ObjectiveConfig.model_validate(fine), tasks)
    refuse_unset_type_terms(None, tasks)


def test_init_from_a_head_of_another_type_is_refused(tiny_model_dir, tmp_path):
    from multidistill.config import ModelConfig
    from multidistill.models.build import build_model
    from multidistill.models.multitask import MultiTaskModel

    single = Task.model_validate({"name": "tags", "labels": LABELS})
    MultiTaskModel.from_backbone(str(tiny_model_dir), [single]).save_pretrained(tmp_path / "saved")
    with pytest.raises(ConfigError, match="key 'model.init_from': task 'tags' is multilabel here, but its head in "
                                          ".* is classification"):
        build_model(ModelConfig(name_or_path=str(tiny_model_dir), init_from=str(tmp_path / "saved")), [_task()])


def test_class_distribution_losses_are_refused_for_multilabel_tasks():
    from multidistill.config import ObjectiveConfig

    with pytest.raises(ValueError, match="objective.multilabel.0: loss 'soft_ce' is for classification tasks, not "
                                         "multilabel ones"):
        ObjectiveConfig.model_validate({"multilabel": [{"loss": "soft_ce"}]})
    with pytest.raises(ValueError, match="loss 'soft_bce' is for multilabel tasks, not classification ones"):
        ObjectiveConfig.model_validate({"classification": [{"loss": "soft_bce"}]})


# -- metrics ------------------------------------------------------------------------------------------------------


def test_set_metrics_by_hand():
    # gold: {0}, {0, 1}, {}, {2}; predicted (logit > 0): {0}, {0}, {}, {1}
    gold = np.array([0b001, 0b011, 0, 0b100, -1])
    logits = np.array([[2, -1, -1], [3, -2, -1], [-1, -1, -1], [-1, 1, -1], [9, 9, 9]], dtype=float)
    got = compute_metrics(["micro_f1", "macro_f1", "samples_f1", "exact_match"], logits, gold, "multilabel")
    # micro: TP 2, FP 1, FN 2 -> 4 / (4 + 3) = 4/7
    assert got["micro_f1"] == pytest.approx(4 / 7)
    # per label: 0: TP 2 -> F1 1; 1: TP 0, FP 1, FN 1 -> 0; 2: FN 1 -> 0; all three in gold -> 1/3
    assert got["macro_f1"] == pytest.approx(1 / 3)
    # per row: 1, 2/3, 1 (nothing expected, nothing said), 0 -> (8/3) / 4
    assert got["samples_f1"] == pytest.approx(2 / 3)
    assert got["exact_match"] == pytest.approx(2 / 4)  # the -1 row is not scored
    with pytest.raises(ConfigError, match=r"unknown multilabel metric\(s\) \['accuracy'\]"):
        compute_metrics(["accuracy"], logits, gold, "multilabel")


def test_macro_f1_leaves_out_labels_no_scored_row_holds():
    gold = np.array([0b001, 0b001])
    logits = np.array([[1, 1, -1], [1, -1, -1]], dtype=float)  # label 1 predicted once, never gold
    assert compute_metrics(["macro_f1"], logits, gold, "multilabel")["macro_f1"] == pytest.approx(1.0)


def test_the_trivial_baseline_answers_the_most_frequent_label_set():
    task = _task()
    baseline = trivial_baseline(task, [0b001, 0b001, 0b011, 0], [0b001, 0b010])
    assert baseline.predictor.startswith("always {pos} (most frequent label set, 50% of training)")
    assert baseline.metrics["micro_f1"] == pytest.approx(0.5)  # TP 1, FP 1, FN 1: 2 TP / (2 TP + FP + FN)


def test_a_prediction_names_every_label_over_one_half():
    record = prediction_record(np.array([0.0, LN3, 2.0]), LABELS, multilabel=True)
    assert record["labels"] == ["neg", "long"]
    assert record["probabilities"]["pos"] == pytest.approx(0.5)
    assert record["probabilities"]["neg"] == pytest.approx(0.75)
    assert label_sets.names(0b101, LABELS) == ["pos", "long"]


# -- end to end on the tiny model ------------------------------------------------------------------------------------


@pytest.fixture
def tags_run(tiny_run, tmp_path):
    raw, _ = tiny_run
    spec = write_tags(Path(raw["data"]["data_root"]))
    raw["data"]["task_specs"] = [*raw["data"]["task_specs"], spec]
    raw["data"]["tasks"] = ["toy_sent", "tags"]
    return tiny_run


def test_mtdnn_kd_teaches_a_multilabel_task_then_export_and_predict_keep_its_sets(tags_run, tmp_path, monkeypatch,
                                                                               capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from multidistill.evaluation.run import evaluate_model_dir

    recipe = tiny_recipe("mtdnn_kd.yaml", tags_run, tmp_path)
    recipe["teacher"]["seeds"] = [1, 2]
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    assert stage_names(root) == ["signals", "student", "teacher-seed-1", "teacher-seed-2"]
    # the store's soft targets are the two teachers' mean sigmoids
    from multidistill.teachers.store import open_signal_store

    rows = open_signal_store(root / "signals").signals("tags", "train")
    logits = torch.tensor(np.asarray(rows["teacher_logits"]))
    assert np.allclose(np.asarray(rows["teacher_mean"]), torch.sigmoid(logits).mean(1).numpy(), atol=1e-6)
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary["tasks"]) == {"toy_sent", "tags"}
    student = summary["rows"]["student"]
    assert 0 <= student["metrics"]["main"]["tags"] <= 1
    # the report's numbers are `evaluate`'s: micro F1 of the sets, then macro F1
    result = evaluate_model_dir(root / "student" / "model", data_root=recipe["data"]["data_root"],
                                cache_dir=str(tmp_path / "cache"), progress=False)["tasks"]["tags"]
    assert list(result) == ["micro_f1", "macro_f1"]
    assert result["micro_f1"] == pytest.approx(student["metrics"]["main"]["tags"])

    # export as a stock multi-label classifier: transformers reads it as one, with the same logits
    out = tmp_path / "hf"
    code, output = run_cli(monkeypatch, capsys, "export", str(root / "student" / "model"), "--format", "hf",
                           "--task", "tags", "--out", str(out))
    assert code == 0, output
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["id2label"]["2"] == "long"
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    text = "the film was great and very long and the plot was sad"
    with torch.no_grad():
        theirs = hf(**AutoTokenizer.from_pretrained(out)(text, return_tensors="pt")).logits[0]
    from multidistill.inference.texts import predict

    ours = predict(root / "student" / "model", "tags", [text], progress=False)[0]
    assert ours.label is None and ours.score is None
    assert ours.labels == [LABELS[i] for i in range(3) if theirs[i] > 0]
    assert [ours.probabilities[name] for name in LABELS] == pytest.approx(torch.sigmoid(theirs).tolist(), abs=1e-4)

    # and `import-classifier` brings the stock multi-label classifier back as a teacher of the task
    back = tmp_path / "back"
    code, output = run_cli(monkeypatch, capsys, "import-classifier", str(out), "--task", "tags", "--out", str(back),
                           "--config", str(write(recipe, tmp_path)))
    assert code == 0, output
    again = predict(back, "tags", [text], progress=False)[0]
    assert again.labels == ours.labels

    # predict over a file: a JSON list of labels per row, as a data cell may hold it
    source = tmp_path / "in.csv"
    source.write_text(f"text\n{text}\n")
    code, output = run_cli(monkeypatch, capsys, "predict", str(root / "student" / "model"), "--input", str(source),
                           "--task", "tags", "--output", str(tmp_path / "out.csv"))
    assert code == 0, output
    header, line = (tmp_path / "out.csv").read_text().splitlines()
    assert header == "line,labels,p_pos,p_neg,p_long"
    assert json.loads(next(iter(__import__("csv").reader([line])))[1]) == ours.labels


def test_a_single_label_classifier_is_refused_for_a_multilabel_task(tiny_model_dir, tmp_path):
    from multidistill.models.stock_import import import_classifier
    from tests.test_stock_import import make_classifier

    task = _task()
    source = make_classifier(tiny_model_dir, tmp_path / "hf", "bert", task, id2label=LABELS)
    with pytest.raises(ModelError, match="task 'tags' is multilabel, and classifier .* is not a "
                                         "multi_label_classification model"):
        import_classifier(str(source), tmp_path / "out", task=task, max_length=32, progress=False)
    assert not (tmp_path / "out").exists()
    labelled = make_classifier(tiny_model_dir, tmp_path / "ml", "bert", task, id2label=LABELS,
                               problem_type="multi_label_classification")
    single = Task.model_validate({"name": "tags", "labels": LABELS})
    with pytest.raises(ModelError, match="is a multi_label_classification model .* task 'tags' is a classification"):
        import_classifier(str(labelled), tmp_path / "out", task=single, max_length=32, progress=False)


def test_mkd_transfer_set_keeps_label_sets_and_marks_variants_without_labels(tags_run, tmp_path, monkeypatch,
                                                                            capsys):
    recipe = tiny_recipe("mkd_bilstm.yaml", tags_run, tmp_path)
    recipe["augment"]["pos_tagger"] = "none"
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    saved = datasets.load_from_disk(str(root / "transfer" / "tags"))
    assert isinstance(saved.features["label"].feature, datasets.ClassLabel)
    labels = saved["label"][:]
    # the original rows keep their sets (in the task's label order); the augmented variants have none ([-1], the
    # ClassLabel "no label" mark), and are labelled by the teacher alone
    originals = [(text, value) for i, text, value in zip(saved["id"], saved["text_a"], labels, strict=True)
                 if "~aug" not in i]
    assert originals and all(sorted(LABELS[k] for k in value) == sorted(_tags(text)) for text, value in originals)
    assert all(value == [-1] for i, value in zip(saved["id"], labels, strict=True) if "~aug" in i)
    summary = json.loads((root / "summary.json").read_text())
    assert all("tags" in row["metrics"]["main"] for row in summary["rows"].values())


def test_meta_kd_refuses_a_multilabel_task_before_any_stage_writes(tiny_run, tmp_path, monkeypatch, capsys):
    from tests.test_metakd import tiny_metakd

    recipe = tiny_metakd(tiny_run, tmp_path)
    root = Path(recipe["data"]["data_root"])
    write_tags(root)
    files = {split: {"path": "tags/train.tsv", "columns": {"text_a": "text", "label": "tags"}}
             for split in ("train", "dev", "test")}
    spec = {"name": "tagged", "type": "multilabel", "labels": LABELS, "domain_files": {"a": files, "b": files}}
    recipe["data"] = {**recipe["data"], "tasks": ["tagged"], "task_specs": [*recipe["data"]["task_specs"], spec]}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2, output
    assert "task 'tagged' is a multilabel task; Meta-KD's expertise weights need the teacher's probability" in output
    assert not Path(recipe["output_dir"]).exists()


@pytest.mark.parametrize(("objective", "expect"), [
    ({"classification": [{"loss": "hard"}, {"loss": "soft_ce"}], "tasks": {"tags": [{"loss": "soft_ce"}]}},
     "key 'objective.tasks.tags.0': loss 'soft_ce' is for classification tasks, not multilabel ones"),
    ({"classification": [{"loss": "hard"}, {"loss": "soft_ce"}]},
     "key 'objective': task(s) ['tags'] are multilabel, and its multilabel terms are not set"),
])
def test_a_recipe_refuses_multilabel_terms_that_cannot_work_before_any_stage(tags_run, tmp_path, monkeypatch, capsys,
                                                                            objective, expect):
    recipe = tiny_recipe("mtdnn_kd.yaml", tags_run, tmp_path)
    recipe["student"]["objective"] = objective
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2, output
    assert "stage 'student'" in output and expect in output, output
    assert not Path(recipe["output_dir"]).exists()


def test_a_checkpoint_from_before_multilabel_resumes_a_run_without_such_a_task():
    # The shipped MT-DNN-KD / MKD objectives now set objective.multilabel; a checkpoint written before had no such
    # key, and a run without a multilabel task leaves it out of what it records and compares.
    from pydantic import BaseModel

    from multidistill.config import ObjectiveConfig
    from multidistill.recipes.mkd import mkd_objective
    from multidistill.training.run_settings import compare, run_settings

    class Run(BaseModel):
        objective: ObjectiveConfig

    before = run_settings(Run(objective=mkd_objective()), {})
    before["config"] = {k: v for k, v in before["config"].items() if not k.startswith("objective.multilabel")}
    before["defaults"] = [k for k in before["defaults"] if not k.startswith("objective.multilabel")]
    assert compare(before, run_settings(Run(objective=mkd_objective()), {}, unused=("objective.multilabel",))) == \
        ([], [])
    refused, _ = compare(before, run_settings(Run(objective=mkd_objective()), {}))  # what a multilabel run compares
    assert refused and "key 'objective.multilabel.0.loss' was (not set) in the checkpoint" in refused[0]
