"""`import_classifier` / `multidistill import-classifier`: a stock Hugging Face classifier of every family with a
stock head becomes a multidistill teacher with the classifier's own logits, in the task's label order; what it
cannot read is refused with nothing written; and the imported folder teaches, exports and lends its heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from multidistill.config import DataConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError, MultidistillError
from multidistill.models import load_model
from multidistill.models.families import FAMILIES as TABLE
from multidistill.models.heads import ClassificationHead, RegressionHead
from multidistill.models.stock_import import IMPORT_INFO_FILE, IMPORTABLE, import_classifier
from tests.test_export_hf import FAMILIES, PAIR, REG, SENT, SIZES, TEXTS

ALL = ("bert", "camembert", *FAMILIES)


def make_classifier(tiny_model_dir: Path, folder: Path, family: str = "bert", task: Task = SENT,
                    id2label: list[str] | None = None, seed: int = 0, **config) -> Path:
    """A randomly initialised stock classifier of ``family`` (heads and norms away from their defaults), saved with
    the tiny BERT tokenizer, as transformers' Trainer would save a fine-tuned one."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    vocab_size = max(tokenizer.get_vocab().values()) + 1
    spec = FAMILIES.get(family) or {"model_type": family, "max_position_embeddings": 64,
                                    **({"type_vocab_size": 1, "pad_token_id": 0} if family == "camembert" else {})}
    head = TABLE[spec["model_type"]].stock_head
    fixed = {key: value for key, value in head.config if key != head.activation_key}
    names = id2label if id2label is not None else (list(task.labels) if task.type == "classification" else ["score"])
    settings = {**SIZES, "vocab_size": vocab_size, **spec, **fixed, "num_labels": len(names),
                "id2label": dict(enumerate(names)), **config}
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(**settings))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower() or "classifier" in name or "summary" in name:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
        out = model.get_submodule(head.out)  # logits far enough apart that agreeing to 1e-4 means something
        out.weight.mul_(30)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def stock_logits(folder: Path, task: Task) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = _encode(tokenizer, task, model)
    with torch.no_grad():
        return model(**encoded).logits


def imported_logits(folder: Path, task: Task) -> torch.Tensor:
    from transformers import AutoTokenizer

    model = load_model(folder)
    encoded = _encode(AutoTokenizer.from_pretrained(folder), task, model.backbone)
    with torch.no_grad():
        return model(task.name, encoded["input_ids"], encoded["attention_mask"], encoded.get("token_type_ids")).logits


def _encode(tokenizer, task: Task, model=None) -> dict:
    texts_b = [b for _, b in TEXTS] if task.pair else None
    encoded = tokenizer([a for a, _ in TEXTS], texts_b, truncation=True, max_length=48, padding=True,
                        return_tensors="pt")
    if getattr(model.config, "type_vocab_size", 2) <= 1:  # the tiny BERT tokenizer's segment ids fit no such model
        encoded.pop("token_type_ids", None)
    return encoded


@pytest.mark.parametrize(("family", "task"), [
    *((family, (SENT, PAIR)[i % 2]) for i, family in enumerate(ALL)), ("bert", REG), ("roberta", REG),
    ("distilbert", REG), ("deberta-v2", REG),
])
def test_every_family_with_a_stock_head_imports_with_the_classifiers_own_logits(family, task, tiny_model_dir,
                                                                                 tmp_path):
    source = make_classifier(tiny_model_dir, tmp_path / "hf", family, task)
    out = import_classifier(str(source), tmp_path / "teacher", task=task, max_length=48)
    expected, got = stock_logits(source, task), imported_logits(out, task)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 1e-4
    assert float(expected.std()) > 0.01  # 100x the tolerance: not a comparison of near-constant logits
    record = json.loads((out / IMPORT_INFO_FILE).read_text())
    assert record["parity"]["max_abs_diff"] <= 1e-4 and record["task"] == task.name
    model = load_model(out)
    assert model.max_length == 48 and model.pooling == "cls"
    assert (model.head_activation is None) == (TABLE[model.backbone.config.model_type].stock_head.dense is None)
    assert not list(out.glob("*.bin")) and (out / "README.md").is_file()


def test_the_table_and_the_test_cover_the_same_families():
    assert set(IMPORTABLE) == {FAMILIES.get(f, {"model_type": f})["model_type"] for f in ALL}


def test_a_dense_head_golden():
    """tanh(W_d x + b_d), then the linear layer: by hand for x = (1, 2), W_d = I / 2, out = (1, -1)."""
    head = ClassificationHead(2, 1, dropout=0.0, activation="tanh").eval()
    regression = RegressionHead(2, activation="relu")
    with torch.no_grad():
        for module in (head, regression):
            module.hidden.dense.weight.copy_(torch.eye(2) / 2)
            module.hidden.dense.bias.zero_()
            module.out.weight.copy_(torch.tensor([[1.0, -1.0]]))
            module.out.bias.fill_(0.25)
        x = torch.tensor([[1.0, 2.0], [-2.0, 4.0]])
        assert head(x)[:, 0].tolist() == pytest.approx([np.tanh(0.5) - np.tanh(1.0) + 0.25,
                                                        np.tanh(-1.0) - np.tanh(2.0) + 0.25], abs=1e-6)
        assert regression(x)[:, 0].tolist() == pytest.approx([0.5 - 1.0 + 0.25, 0.0 - 2.0 + 0.25], abs=1e-6)
    with pytest.raises(ValueError, match="not one transformers knows"):
        ClassificationHead(2, 2, 0.1, activation="tahn")


# --- labels ----------------------------------------------------------------------------------------------------


INTS = Task(name="ints", labels=["1", "0"])  # integer labels, listed out of order
NAMED = Task(name="named", labels=["contradiction", "entailment", "neutral"],
             files={"train": {"path": "t", "format": "hf_disk", "columns": {"text_a": "a", "label": "l"},
                              "int_label_names": ["entailment", "neutral", "contradiction"]}})


@pytest.mark.parametrize(("task", "order"), [(INTS, [1, 0]), (NAMED, [2, 0, 1])])
def test_unnamed_outputs_are_read_by_the_integer_ids_the_data_gives(task, order, tiny_model_dir, tmp_path, capsys):
    names = [f"LABEL_{i}" for i in range(len(task.labels))]
    source = make_classifier(tiny_model_dir, tmp_path / "hf", "bert", task, id2label=names)
    out = import_classifier(str(source), tmp_path / "teacher", task=task)
    record = json.loads((out / IMPORT_INFO_FILE).read_text())
    assert record["labels"] == {"order": task.labels, "read_from": "positions (id2label has no names)",
                                "classifier_outputs": order}
    assert float((imported_logits(out, task) - stock_logits(source, task)[:, order]).abs().max()) <= 1e-4
    assert "names its outputs LABEL_0" in capsys.readouterr().err
    # labels that are neither the integers nor named by the files: --labels is needed
    other = make_classifier(tiny_model_dir, tmp_path / "hf2", "bert", SENT, id2label=["LABEL_0", "LABEL_1"])
    with pytest.raises(ModelError, match=r"are not the integers 0..1: give --labels"):
        import_classifier(str(other), tmp_path / "other", task=SENT)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(("id2label", "labels", "how"), [
    (["pos", "neg"], None, "the classifier's id2label"),
    (["POS", "Neg"], None, "the classifier's id2label (case aside)"),
    (["negative", "positive"], "neg,pos", "--labels"),
    (["negative", "positive"], ["pos", "neg"], "--labels"),
])
def test_outputs_are_put_in_the_tasks_label_order(id2label, labels, how, tiny_model_dir, tmp_path, capsys):
    source = make_classifier(tiny_model_dir, tmp_path / "hf", "roberta", SENT, id2label=id2label)
    out = import_classifier(str(source), tmp_path / "teacher", task=SENT, labels=labels)
    record = json.loads((out / IMPORT_INFO_FILE).read_text())
    assert record["labels"]["read_from"] == how
    given = labels.split(",") if isinstance(labels, str) else labels
    names = given or [name.lower() if name.lower() in SENT.labels else name for name in id2label]
    order = [names.index(label) for label in SENT.labels]
    assert record["labels"]["classifier_outputs"] == order
    expected = stock_logits(source, SENT)[:, order]
    assert float((imported_logits(out, SENT) - expected).abs().max()) <= 1e-4
    assert "names its outputs LABEL_0" not in capsys.readouterr().err


@pytest.mark.parametrize(("id2label", "task", "labels", "error", "message"), [
    (["negative", "positive"], SENT, None, ModelError, "give --labels with the task's label for each output"),
    (["a", "b", "c"], SENT, None, ModelError, "has 3 outputs; task 'sent' has 2 labels"),
    (["neg", "pos"], SENT, "neg,neg", ConfigError, "each once"),
    (["neg", "pos"], SENT, "neg,pos,x", ConfigError, "name the classifier's 2 outputs in order"),
    (["neg", "pos"], REG, None, ModelError, "is a regression and needs a classifier with one"),
    (["score"], REG, "x", ConfigError, r"is a regression \(one score\) and has no labels"),
])
def test_labels_that_do_not_match_are_refused_and_nothing_is_written(id2label, task, labels, error, message,
                                                                     tiny_model_dir, tmp_path):
    source = make_classifier(tiny_model_dir, tmp_path / "hf", "bert", SENT if len(id2label) > 1 else REG,
                             id2label=id2label)
    with pytest.raises(error, match=message):
        import_classifier(str(source), tmp_path / "teacher", task=task, labels=labels)
    assert not (tmp_path / "teacher").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


# --- refusals ----------------------------------------------------------------------------------------------------


def test_refusals_name_the_reason_and_leave_nothing(tiny_model_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    source = make_classifier(tiny_model_dir, tmp_path / "hf", "bert", SENT)
    # only pickled weights: never unpickled
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for item in source.iterdir():
        if item.suffix != ".safetensors":
            (pickled / item.name).write_bytes(item.read_bytes())
    torch.save(load_file(source / "model.safetensors"), pickled / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pytorch_model.bin: a pickle file, which is never unpickled"):
        import_classifier(str(pickled), tmp_path / "out", task=SENT)
    # a family whose stock head the table does not describe
    albert = tmp_path / "albert"
    albert.mkdir()
    (albert / "config.json").write_text(json.dumps({"model_type": "albert", "num_labels": 2}))
    with pytest.raises(ModelError, match="does not know where a 'albert' classifier keeps its head"):
        import_classifier(str(albert), tmp_path / "out", task=SENT)
    # a setting under which the stock head has another layout (EuroBERT mean-pooled)
    euro = make_classifier(tiny_model_dir, tmp_path / "euro", "eurobert", SENT, classifier_pooling="mean")
    with pytest.raises(ModelError, match="sets classifier_pooling to 'mean'"):
        import_classifier(str(euro), tmp_path / "out", task=SENT)
    # an unknown task
    with pytest.raises(MultidistillError, match="unknown task 'nosuchtask'"):
        import_classifier(str(source), tmp_path / "out", task="nosuchtask")
    # --out is the source, or inside it
    for out in (source, source / "teacher"):
        with pytest.raises(ConfigError, match="is, holds or lies inside the classifier's folder"):
            import_classifier(str(source), out, task=SENT)
    assert not (source / "teacher").exists()
    # a plain encoder: no trained head, which transformers would fill at random
    from transformers import AutoModel

    encoder = tmp_path / "encoder"
    AutoModel.from_pretrained(source).save_pretrained(encoder)
    for item in source.iterdir():
        if item.name.startswith(("vocab", "tokenizer", "special")):
            (encoder / item.name).write_bytes(item.read_bytes())
    with pytest.raises(ModelError, match="lacks .* of the classifier's weights .*classifier.weight"):
        import_classifier(str(encoder), tmp_path / "out", task=SENT)
    # a multidistill folder already
    ours = import_classifier(str(source), tmp_path / "ours", task=SENT)
    with pytest.raises(ModelError, match="is a multidistill model folder already"):
        import_classifier(str(ours), tmp_path / "out", task=SENT)
    # a multi-label classifier: independent sigmoid scores, no distribution to distil
    multi = make_classifier(tiny_model_dir, tmp_path / "multi", "bert", SENT,
                            problem_type="multi_label_classification")
    with pytest.raises(ModelError, match="multi_label_classification model"):
        import_classifier(str(multi), tmp_path / "out", task=SENT)
    # a head the table describes wrongly: the parity check refuses it (here: tanh read as relu)
    import multidistill.models.stock_import as stock_import

    real = stock_import.stock_layout
    monkeypatch.setattr(stock_import, "stock_layout", lambda config, src: (real(config, src)[0], "relu"))
    with pytest.raises(ModelError, match="logits differ from the classifier's"):
        import_classifier(str(source), tmp_path / "out", task=SENT)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_classifier_saved_in_half_precision_is_read_in_float32(dtype, tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    source = make_classifier(tiny_model_dir, tmp_path / "hf", "roberta", SENT)
    AutoModelForSequenceClassification.from_pretrained(source).to(dtype).save_pretrained(source)
    out = import_classifier(str(source), tmp_path / "teacher", task=SENT)
    model = load_model(out)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert json.loads((out / "config.json").read_text()).get("dtype") in (None, "float32")


def test_the_inference_length_is_recorded_within_the_encoders_positions(tiny_model_dir, tmp_path):
    from multidistill.teachers.generate import build_signal_store

    source = make_classifier(tiny_model_dir, tmp_path / "hf", "bert", SENT, max_position_embeddings=32)
    out = import_classifier(str(source), tmp_path / "teacher", task=SENT)
    assert load_model(out).max_length == 32  # not 128, which soft-targets would read rows at
    data = _data(tmp_path)
    build_signal_store([out], data, tmp_path / "signals", progress=False)  # long rows are cut at 32


def test_out_is_replaced_only_with_overwrite_and_only_when_ours(tiny_model_dir, tmp_path):
    source = make_classifier(tiny_model_dir, tmp_path / "hf", "bert", SENT)
    out = import_classifier(str(source), tmp_path / "teacher", task=SENT)
    with pytest.raises(ConfigError, match="not empty; pass --overwrite"):
        import_classifier(str(source), out, task=SENT)
    other = make_classifier(tiny_model_dir, tmp_path / "hf2", "bert", SENT, seed=1)
    import_classifier(str(other), out, task=SENT, overwrite=True)
    assert json.loads((out / IMPORT_INFO_FILE).read_text())["source"] == str(other)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no multidistill output"):
        import_classifier(str(source), foreign, task=SENT, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"


# --- what an imported folder does ------------------------------------------------------------------------------


def _data(tmp_path: Path, task: Task = SENT) -> DataConfig:
    rows = [("the movie was great", "pos"), ("awful plot and a boring actor", "neg"), ("love it", "pos"),
            ("hate it , the worst", "neg"), ("fine", "pos"), ("boring", "neg")]
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    for split in ("train", "dev"):
        (root / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    columns = {"text_a": "sentence", "label": "label"}
    spec = {**task.model_dump(), "files": {split: {"path": f"{split}.tsv", "columns": columns}
                                           for split in ("train", "dev")}}
    return DataConfig.model_validate({"tasks": [task.name], "task_specs": [spec], "data_root": str(root),
                                      "cache_dir": str(tmp_path / "cache")})


def test_an_imported_classifier_teaches_lends_its_heads_and_exports(tiny_model_dir, tmp_path):
    from multidistill.config import ModelConfig
    from multidistill.export.hf import export_hf
    from multidistill.models.build import build_model
    from multidistill.teachers.generate import build_signal_store

    data = _data(tmp_path)
    source = make_classifier(tiny_model_dir, tmp_path / "hf", "roberta", SENT, id2label=["pos", "neg"])
    teacher = import_classifier(str(source), tmp_path / "teacher", task="sent", data=data)
    assert load_model(teacher).data_root == str(tmp_path / "data")
    # soft targets: the classifier's own probabilities, in the task's label order
    store = build_signal_store([teacher], data, tmp_path / "signals", progress=False)
    mean = np.asarray(store.signals("sent", "train")["teacher_mean"])
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(source).eval()
    texts = [line.split("\t")[0] for line in (tmp_path / "data" / "train.tsv").read_text().splitlines()[1:]]
    with torch.no_grad():
        probs = torch.softmax(hf(**AutoTokenizer.from_pretrained(source)(texts, padding=True,
                                                                         return_tensors="pt")).logits, -1)
    assert np.abs(mean - probs[:, [1, 0]].numpy()).max() < 1e-4
    # a student given its heads: the dense layer and activation come with them
    student = build_model(ModelConfig(name_or_path=str(teacher), student_layers=[0], heads_from=str(teacher)),
                          [load_model(teacher).tasks["sent"]])
    assert student.head_activation == "tanh"
    assert torch.equal(student.heads["sent"].hidden.dense.weight, load_model(teacher).heads["sent"].hidden.dense.weight)
    student.save_pretrained(tmp_path / "student")
    assert load_model(tmp_path / "student").head_activation == "tanh"
    # back to a stock classifier: the dense layer maps onto the stock one as it is
    out = export_hf(teacher, tmp_path / "back", skip_parity=True, progress=False)
    back = AutoModelForSequenceClassification.from_pretrained(out).eval()
    encoded = AutoTokenizer.from_pretrained(out)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert float((back(**encoded).logits - hf(**encoded).logits[:, [1, 0]]).abs().max()) <= 1e-4


def test_a_stock_head_does_not_export_to_a_family_with_another_activation(tiny_model_dir, tmp_path):
    from multidistill.export.hf import export_hf

    source = make_classifier(tiny_model_dir, tmp_path / "hf", "bert", SENT)
    teacher = import_classifier(str(source), tmp_path / "teacher", task=SENT)
    model = load_model(teacher)
    model.head_activation = "relu"  # as if brought in from a family whose head is dense + ReLU
    from transformers import AutoTokenizer

    model.save_pretrained(tmp_path / "relu", tokenizer=AutoTokenizer.from_pretrained(teacher))
    with pytest.raises(ModelError, match="apply a dense layer and relu"):
        export_hf(tmp_path / "relu", tmp_path / "out", skip_parity=True, progress=False)
    assert not (tmp_path / "out").exists()


def test_the_cli_imports_a_task_its_config_declares(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import yaml

    from multidistill.cli import main

    data = _data(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {**data.model_dump(mode="json"), "tasks": ["other"]}}))
    source = make_classifier(tiny_model_dir, tmp_path / "hf", "distilbert", SENT, id2label=["negative", "positive"])
    argv = ["multidistill", "import-classifier", str(source), "--task", "sent", "--config", str(config),
            "--out", str(tmp_path / "teacher"), "--max-length", "32"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "give --labels" in capsys.readouterr().err
    assert not (tmp_path / "teacher").exists()
    monkeypatch.setattr("sys.argv", [*argv, "--labels", "neg,pos"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    assert "imported" in capsys.readouterr().out
    assert load_model(tmp_path / "teacher").max_length == 32
    card = (tmp_path / "teacher" / "README.md").read_text()
    assert "import-classifier" in card and "--labels neg,pos" in card
    monkeypatch.setattr("sys.argv", ["multidistill", "evaluate", str(tmp_path / "teacher")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    assert "sent" in capsys.readouterr().out


@pytest.mark.parametrize(("family", "config"), [("deberta-v2", {}), ("roformer", {"hidden_act": "silu"})])
def test_a_stock_head_with_its_own_activation_exports_back_as_it_is(family, config, tiny_model_dir, tmp_path):
    """DeBERTa's pooler_hidden_act (tanh here, the export's own heads use gelu) and RoFormer's hidden_act (silu,
    which no offset turns into the identity) stay what the classifier had."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from multidistill.export.hf import export_hf

    source = make_classifier(tiny_model_dir, tmp_path / "hf", family, SENT, **config)
    teacher = import_classifier(str(source), tmp_path / "teacher", task=SENT)
    out = export_hf(teacher, tmp_path / "back", skip_parity=True, progress=False)
    back = AutoModelForSequenceClassification.from_pretrained(out).eval()
    encoded = _encode(AutoTokenizer.from_pretrained(out), SENT, back)
    with torch.no_grad():
        assert float((back(**encoded).logits - stock_logits(source, SENT)).abs().max()) <= 1e-4


def test_the_model_card_says_where_the_classifier_came_from(tiny_model_dir, tmp_path):
    from multidistill.export.card_record import write_model_card

    source = make_classifier(tiny_model_dir, tmp_path / "hf", "bert", SENT)
    teacher = import_classifier(str(source), tmp_path / "teacher", task=SENT)
    for card in ((teacher / "README.md").read_text(),
                 write_model_card(tmp_path / "card", teacher, "onnx").read_text()):
        assert "A classifier fine-tuned elsewhere and brought in unchanged" in card
        assert str(source) in card and "trained on gold labels" not in card
    assert json.loads((teacher / "multidistill_model.json").read_text())["format_version"] == 2


def test_a_model_folder_of_a_newer_format_is_named_as_such(tiny_model_dir, tmp_path):
    source = make_classifier(tiny_model_dir, tmp_path / "hf", "bert", SENT)
    teacher = import_classifier(str(source), tmp_path / "teacher", task=SENT)
    config = json.loads((teacher / "multidistill_model.json").read_text())
    (teacher / "multidistill_model.json").write_text(json.dumps({**config, "format_version": 4}))
    with pytest.raises(ModelError, match=r"unsupported format_version 4 \(expected 1 or 2 or 3\) \(written by a newer"):
        load_model(teacher)


def test_mobilebert_with_transformers_default_head_imports(tiny_model_dir, tmp_path):
    """transformers' default MobileBERT classifier (classifier_activation True: the pooler's dense layer and tanh) is
    another layout than the one the export writes; the table's variant reads it."""
    source = make_classifier(tiny_model_dir, tmp_path / "hf", "mobilebert", SENT, classifier_activation=True)
    out = import_classifier(str(source), tmp_path / "teacher", task=SENT)
    assert load_model(out).head_activation == "tanh"
    assert float((imported_logits(out, SENT) - stock_logits(source, SENT)).abs().max()) <= 1e-4
    # and back to a stock classifier of that same layout
    from multidistill.export.hf import export_hf

    back = export_hf(out, tmp_path / "back", skip_parity=True, progress=False)
    assert json.loads((back / "config.json").read_text()).get("classifier_activation") is True
    assert float((stock_logits(back, SENT) - stock_logits(source, SENT)).abs().max()) <= 1e-4
