"""`predict_file`: CSV / TSV / JSONL in, JSONL / CSV out, the same predictions as evaluation, and bad input
stopped (or skipped) before any output file exists."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, DataError, ModelError, OutputError, UnknownTaskError
from multidistill.inference import predict_file
from tests.conftest import write_tiny_tasks

SENTENCES = ["the movie was great", "awful, boring \"plot\"", "i love this film", "worst actor", "it is fine"]
PAIRS = [("good film", "good film"), ("bad movie", "great plot"), ("fun", "sad and dull"), ("a", "the")]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """An (untrained) tiny BERT student with a single-text, a pair and a regression task."""
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_tokenizer

    root = tmp_path_factory.mktemp("predict_model")
    tasks = [Task.model_validate(spec) for spec in write_tiny_tasks(root / "data", n_train=4, n_dev=4)]
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone(str(tiny_model_dir), tasks, max_length=16)
    with torch.no_grad():
        for head in model.heads.values():
            head.out.weight.normal_(0, 1.0)  # spread the probabilities so label choices mean something
    model.save_pretrained(root / "model", tokenizer=load_tokenizer(str(tiny_model_dir)))
    return root / "model"


def expected_logits(model_dir: Path, task: str, texts_a: list[str], texts_b: list[str] | None = None) -> np.ndarray:
    """What the evaluation code predicts for these texts."""
    import datasets

    from multidistill.data.store import tokenize
    from multidistill.evaluation.evaluate import predict
    from multidistill.models import load_model
    from multidistill.models.backbone import load_tokenizer

    model = load_model(model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    spec = model.tasks[task]
    label = [0.0 if spec.type == "regression" else 0] * len(texts_a)
    examples = datasets.Dataset.from_dict({"id": [str(i) for i in range(len(texts_a))], "text_a": texts_a,
                                           "text_b": texts_b or [""] * len(texts_a), "label": label})
    view = tokenize(examples, tokenizer, model.max_length, pair=spec.pair)
    return predict(model, spec, view, batch_size=2, pad_token_id=tokenizer.pad_token_id, device=torch.device("cpu"))


def write_input(path: Path, columns: list[str], rows: list[list]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(columns, row, strict=True))) + "\n" for row in rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([columns, *rows])
    else:
        path.write_text("".join("\t".join(str(v) for v in row) + "\n" for row in [columns, *rows]))
    return path


def read_output(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in path.read_text().splitlines()]


def _probabilities(record: dict, labels: list[str]) -> list[float]:
    if "probabilities" in record:
        assert list(record["probabilities"]) == labels
        return [record["probabilities"][label] for label in labels]
    return [float(record[f"p_{label}"]) for label in labels]


@pytest.mark.parametrize("input_suffix", [".csv", ".tsv", ".jsonl"])
@pytest.mark.parametrize("output_suffix", [".jsonl", ".csv"])
def test_single_text_predictions_match_evaluation(input_suffix, output_suffix, model_dir, tmp_path):
    source = write_input(tmp_path / f"in{input_suffix}", ["id", "sentence"],
                         [[f"r{i}", text] for i, text in enumerate(SENTENCES)])
    if input_suffix == ".tsv":  # TSV is GLUE-style: no quoting, so quotes stay part of the text
        assert '"plot"' in source.read_text()
    out = tmp_path / f"out{output_suffix}"
    counts = predict_file(model_dir, "toy_sent", source, out, batch_size=2, progress=False)
    assert counts["rows"] == counts["predicted"] == len(SENTENCES) and counts["skipped"] == 0
    assert counts["output"] == str(out)
    records = read_output(out)
    logits = expected_logits(model_dir, "toy_sent", SENTENCES)
    assert [str(r["id"]) for r in records] == [f"r{i}" for i in range(len(SENTENCES))]
    first_line = 1 if input_suffix == ".jsonl" else 2  # CSV / TSV start with a header line
    assert [int(r["line"]) for r in records] == list(range(first_line, first_line + len(SENTENCES)))
    for record, row in zip(records, logits, strict=True):
        probs = _probabilities(record, ["0", "1"])
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-6)
        expected = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        assert record["label"] == str(int(np.argmax(row)))
        assert math.isclose(float(record["score"]), max(probs), abs_tol=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, out.name])  # no temp files


@pytest.mark.parametrize(("suffix", "columns", "text_columns"), [
    (".tsv", ["sentence1", "sentence2"], None),
    (".csv", ["text_a", "text_b"], None),
    (".jsonl", ["question", "sentence"], None),
    (".jsonl", ["premise", "hypothesis"], ("premise", "hypothesis")),
    (".jsonl", ["premise", "hypothesis"], "premise, hypothesis"),  # a str, as --text-columns takes it
])
def test_pair_task(suffix, columns, text_columns, model_dir, tmp_path):
    source = write_input(tmp_path / f"in{suffix}", columns, [list(pair) for pair in PAIRS])
    out = tmp_path / "out.jsonl"
    predict_file(model_dir, "toy_pair", source, out, text_columns=text_columns, progress=False)
    records = read_output(out)
    logits = expected_logits(model_dir, "toy_pair", [a for a, _ in PAIRS], [b for _, b in PAIRS])
    assert [r["label"] for r in records] == [str(i) for i in logits.argmax(-1)]
    assert all("id" not in r for r in records)
    for record in records:
        assert math.isclose(sum(record["probabilities"].values()), 1.0, abs_tol=1e-6)


def test_regression_task_gives_scores(model_dir, tmp_path):
    source = write_input(tmp_path / "in.tsv", ["index", "sentence1", "sentence2"],
                         [[i, a, b] for i, (a, b) in enumerate(PAIRS)])
    for out in (tmp_path / "out.jsonl", tmp_path / "out.csv"):
        predict_file(model_dir, "toy_reg", source, out, progress=False)
        records = read_output(out)
        expected = expected_logits(model_dir, "toy_reg", [a for a, _ in PAIRS], [b for _, b in PAIRS])
        np.testing.assert_allclose([float(r["score"]) for r in records], expected, atol=1e-5)
        assert all("label" not in r and "probabilities" not in r for r in records)
        assert [str(r["id"]) for r in records] == [str(i) for i in range(len(PAIRS))]
    assert next(csv.reader((tmp_path / "out.csv").open())) == ["line", "id", "score"]


def test_csv_output_columns(model_dir, tmp_path):
    source = write_input(tmp_path / "in.jsonl", ["text"], [[s] for s in SENTENCES])
    predict_file(model_dir, "toy_sent", source, tmp_path / "out.txt", output_format="csv", progress=False)
    header = next(csv.reader((tmp_path / "out.txt").open()))
    assert header == ["line", "label", "score", "p_0", "p_1"]


BAD = [["r1", "good film"], ["r2", ""], ["r3", "fine"], ["r4", "   "], ["r5", "nice"]]


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".csv"])
def test_bad_rows_stop_the_run_before_anything_is_written(suffix, model_dir, tmp_path):
    source = write_input(tmp_path / f"in{suffix}", ["id", "text"], BAD)
    if suffix == ".jsonl":  # also a null text and a missing key
        with source.open("a") as f:
            f.write(json.dumps({"id": "r6", "text": None}) + "\n" + json.dumps({"id": "r7"}) + "\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError) as info:
        predict_file(model_dir, "toy_sent", source, out, progress=False)
    message = str(info.value)
    lines = [3, 5] if suffix != ".jsonl" else [2, 4, 6, 7]
    assert f"{len(lines)} row(s)" in message and "--skip-bad-rows" in message and str(source) in message
    assert f"lines {', '.join(map(str, lines))}" in message
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]

    counts = predict_file(model_dir, "toy_sent", source, out, skip_bad_rows=True, progress=False)
    assert counts["skipped"] == len(lines) and counts["skipped_lines"] == lines
    assert counts["predicted"] == 3 and counts["rows"] == 3 + len(lines)
    assert [r["id"] for r in read_output(out)] == ["r1", "r3", "r5"]


def test_malformed_rows_are_bad_rows(model_dir, tmp_path):
    source = tmp_path / "in.tsv"
    source.write_text("text\tid\ngood\t1\nextra\tfield\there\nbad\t3\n")
    with pytest.raises(DataError, match="line 3: has 3 tab-separated fields"):
        predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", progress=False)
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good"}\n{not json\n[1, 2]\n\n{"text": "bad"}\n')
    with pytest.raises(DataError, match=r"lines 2, 3\): line 2: invalid JSON"):
        predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", progress=False)
    counts = predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", skip_bad_rows=True, progress=False)
    assert counts["predicted"] == 2 and [r["line"] for r in read_output(tmp_path / "out.jsonl")] == [1, 5]


def test_a_key_given_twice_and_a_file_of_bad_rows_only(model_dir, tmp_path):
    """A JSON key given twice is a bad row (json kept the last value silently); --skip-bad-rows over a file with
    no good row is refused (it wrote an empty file and exited 0)."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good"}\n{"text": "a", "text": "b"}\n')
    with pytest.raises(DataError, match=r"line 2: invalid JSON \(key 'text' appears twice"):
        predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", progress=False)
    source.write_text('{"text": ""}\n{"other": "x"}\n')
    with pytest.raises(DataError, match="every row is bad"):
        predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", skip_bad_rows=True, progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_more_bad_rows_than_shown_are_counted(model_dir, tmp_path):
    source = write_input(tmp_path / "in.csv", ["text"], [[""] for _ in range(12)] + [["ok"]])
    with pytest.raises(DataError) as info:
        predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", progress=False)
    assert "12 row(s)" in str(info.value) and "lines 2, 3, 4, 5, 6, ..." in str(info.value)


@pytest.mark.parametrize(("task", "columns", "text_columns", "expected"), [
    ("toy_sent", ["review", "stars"], None, ["no text column", "'text'", "'review', 'stars'"]),
    ("toy_pair", ["text_a", "other"], None, ["pair task", "'sentence1'+'sentence2'", "'text_a', 'other'"]),
    ("toy_sent", ["review"], ("body", None), ["'body'", "--text-columns", "'review'"]),
])
def test_missing_columns_name_what_the_file_has(task, columns, text_columns, expected, model_dir, tmp_path):
    source = write_input(tmp_path / "in.csv", columns, [["x"] * len(columns)])
    with pytest.raises(DataError) as info:
        predict_file(model_dir, task, source, tmp_path / "out.jsonl", text_columns=text_columns, progress=False)
    for fragment in [str(source), *expected]:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert not (tmp_path / "out.jsonl").exists()


def test_text_columns_must_fit_the_task(model_dir, tmp_path):
    source = write_input(tmp_path / "in.csv", ["a", "b"], [["x", "y"]])
    given = predict_file(model_dir, "toy_sent", source, tmp_path / "o.jsonl", text_columns="b", progress=False)
    assert (given["text_columns"], given["columns_from"]) == (["b"], "given")  # one name, as the CLI takes it
    with pytest.raises(ConfigError, match=r"--text-columns takes one column name or two .*got 'a,b,c'"):
        predict_file(model_dir, "toy_sent", source, tmp_path / "o.jsonl", text_columns="a,b,c", progress=False)
    with pytest.raises(TypeError, match="text_columns takes .* not int"):
        predict_file(model_dir, "toy_sent", source, tmp_path / "o.jsonl", text_columns=3, progress=False)
    with pytest.raises(ConfigError, match="two"):
        predict_file(model_dir, "toy_pair", source, tmp_path / "o.jsonl", text_columns=("a", None), progress=False)
    with pytest.raises(ConfigError, match="one text"):
        predict_file(model_dir, "toy_sent", source, tmp_path / "o.jsonl", text_columns=("a", "b"), progress=False)


def test_non_utf8_names_the_line(model_dir, tmp_path):
    source = tmp_path / "in.tsv"
    source.write_bytes(b"text\ngood film\nbad \xff\xfe film\n")
    with pytest.raises(DataError, match=r"in.tsv, line 3: not valid UTF-8 \(bytes ff"):
        predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", progress=False)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda d: ("nope", d / "in.csv", d / "out.jsonl", "fp32"), UnknownTaskError, "no head for task 'nope'.*toy_sent"),
    (lambda d: ("toy_sent", d / "in.xlsx", d / "out.jsonl", "fp32"), DataError, "unknown input format"),
    (lambda d: ("toy_sent", d / "missing.csv", d / "out.jsonl", "fp32"), DataError, "not found"),
    (lambda d: ("toy_sent", d / "in.csv", d / "in.csv", "fp32"), ConfigError, "is the input file"),
    (lambda d: ("toy_sent", d / "in.csv", d / "out.jsonl", "int8"), ConfigError, "ONNX export"),
    (lambda d: ("toy_sent", d / "in.csv", d / "out.jsonl", "fp16"), ConfigError, "--precision"),
])
def test_user_errors(make, error, match, model_dir, tmp_path):
    write_input(tmp_path / "in.csv", ["text"], [["good"]])
    (tmp_path / "in.xlsx").write_text("x")
    task, source, out, precision = make(tmp_path)
    with pytest.raises(error, match=match):
        predict_file(model_dir, task, source, out, precision=precision, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "in.xlsx"]


def test_the_output_never_lands_inside_the_model_folder(model_dir, tmp_path):
    """--output over the model's own weights replaced them with predictions; now it is refused, nothing written."""
    source = write_input(tmp_path / "in.csv", ["text"], [["good"]])
    weights = Path(model_dir) / "model.safetensors"
    before = weights.read_bytes()
    for out in (weights, Path(model_dir) / "preds.jsonl"):
        with pytest.raises(ConfigError, match="is inside the model folder"):
            predict_file(model_dir, "toy_sent", source, out, progress=False)
    assert weights.read_bytes() == before and not (Path(model_dir) / "preds.jsonl").exists()


def test_not_a_model_folder(tmp_path):
    source = write_input(tmp_path / "in.csv", ["text"], [["good"]])
    with pytest.raises(ModelError, match="does not exist"):
        predict_file(tmp_path / "nowhere", "toy_sent", source, tmp_path / "out.jsonl", progress=False)


def test_predict_command(model_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from multidistill.inference.command import predict_command

    app = typer.Typer()
    app.command("predict")(predict_command)
    app.command("other")(lambda: None)
    source = write_input(tmp_path / "in.jsonl", ["q", "a"], [list(pair) for pair in PAIRS] + [["x", ""]])
    args = ["predict", str(model_dir), "--task", "toy_pair", "--input", str(source), "--output",
            str(tmp_path / "out.csv"), "--text-columns", "q, a", "--batch-size", "3"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, DataError) and "line 5" in str(result.exception)
    result = CliRunner().invoke(app, [*args, "--skip-bad-rows"])
    assert result.exit_code == 0, result.output
    assert "predicted 4 of 5" in result.output and "skipped 1" in result.output
    assert len(read_output(tmp_path / "out.csv")) == 4
    result = CliRunner().invoke(app, [*args[:-4], "--text-columns", "a,b,c"])
    assert isinstance(result.exception, ConfigError)
    assert "--skip-bad-rows" in CliRunner().invoke(app, ["predict", "--help"]).output


def test_onnx_export_as_source(model_dir, tmp_path, monkeypatch):
    onnx_export = pytest.importorskip("multidistill.export.onnx")
    if not hasattr(onnx_export, "export_onnx"):
        pytest.skip("multidistill.export.onnx has no export_onnx yet")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # some onnxruntime versions leave quantiser temp files in the cwd
    export_dir = tmp_path / "onnx"
    onnx_export.export_onnx(model_dir, export_dir, quantize="int8", skip_parity=True)  # a model without its data here
    source = write_input(tmp_path / "in.tsv", ["sentence1", "sentence2"], [list(pair) for pair in PAIRS])
    predict_file(export_dir, "toy_pair", source, tmp_path / "onnx.jsonl", progress=False)
    predict_file(model_dir, "toy_pair", source, tmp_path / "torch.jsonl", progress=False)
    onnx_records, torch_records = read_output(tmp_path / "onnx.jsonl"), read_output(tmp_path / "torch.jsonl")
    assert [r["label"] for r in onnx_records] == [r["label"] for r in torch_records]
    for a, b in zip(onnx_records, torch_records, strict=True):
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-4)

    predict_file(export_dir, "toy_reg", source, tmp_path / "reg.jsonl", progress=False)
    expected = expected_logits(model_dir, "toy_reg", [a for a, _ in PAIRS], [b for _, b in PAIRS])
    np.testing.assert_allclose([r["score"] for r in read_output(tmp_path / "reg.jsonl")], expected, atol=1e-4)

    counts = predict_file(export_dir, "toy_pair", source, tmp_path / "int8.csv", precision="int8", progress=False)
    assert counts["predicted"] == len(PAIRS)
    for record in read_output(tmp_path / "int8.csv"):
        assert math.isclose(float(record["p_0"]) + float(record["p_1"]), 1.0, abs_tol=1e-6)
    with pytest.raises(UnknownTaskError, match="toy_sent"):
        predict_file(export_dir, "nope", source, tmp_path / "x.jsonl", progress=False)


def test_rows_are_batched_longest_first_and_written_in_input_order(model_dir, tmp_path, monkeypatch):
    from multidistill.inference import predict as predict_module

    texts = ["short", "a much longer sentence with many more words in it", "mid length text here", "tiny",
             "another rather long sentence that needs a few more tokens"]
    source = write_input(tmp_path / "in.tsv", ["id", "sentence"], [[f"r{i}", t] for i, t in enumerate(texts)])
    widths: list[list[int]] = []
    real = predict_module._TorchPredictor.logits

    def logits(self, task, texts_a, texts_b):
        widths.append([len(self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"])
                       for text in texts_a])
        return real(self, task, texts_a, texts_b)

    monkeypatch.setattr(predict_module._TorchPredictor, "logits", logits)
    predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", batch_size=2, progress=False)
    flat = [width for batch in widths for width in batch]
    assert flat == sorted(flat, reverse=True) and len(flat) == len(texts)  # batches of like length
    records = read_output(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == [f"r{i}" for i in range(len(texts))]
    logits_expected = expected_logits(model_dir, "toy_sent", texts)
    assert [r["label"] for r in records] == [str(int(np.argmax(row))) for row in logits_expected]
    for record, row in zip(records, logits_expected, strict=True):
        expected = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        np.testing.assert_allclose(_probabilities(record, ["0", "1"]), expected, atol=1e-5)


def _cli(args: list[str]):
    import typer
    from typer.testing import CliRunner

    from multidistill.inference.command import predict_command

    app = typer.Typer()
    app.command("predict")(predict_command)
    app.command("other")(lambda: None)
    return CliRunner().invoke(app, ["predict", *args])


def test_stdin_stdout_pipes_and_devices_are_refused_before_anything_is_read(model_dir, tmp_path, monkeypatch):
    """`--output -` wrote a file named '-'; `--input -` / a pipe / a FIFO got "unknown input format ''" or
    "not found"; an output FIFO or /dev/null was refused only after the whole input had been predicted."""
    import os

    from multidistill.inference import predict as predict_module

    def never(*args, **kwargs):
        raise AssertionError("the input was read although the output is unusable")

    monkeypatch.chdir(tmp_path)
    source = write_input(tmp_path / "in.csv", ["text"], [["good"]])
    os.mkfifo(tmp_path / "fifo.csv")
    read_end, write_end = os.pipe()  # what `<(...)` hands over: /dev/fd/N
    try:
        for path, error, match in [("-", ConfigError, "--input -: reading stdin is not supported"),
                                   ("/dev/stdin", ConfigError, "reading stdin is not supported"),
                                   (tmp_path / "fifo.csv", DataError, "fifo.csv: is not a regular file"),
                                   (f"/dev/fd/{read_end}", DataError, "is not a regular file")]:
            with pytest.raises(error, match=match):  # a FIFO read would block: the test would hang
                predict_file(model_dir, "toy_sent", path, tmp_path / "out.jsonl", progress=False)
    finally:
        os.close(read_end)
        os.close(write_end)
    monkeypatch.setattr(predict_module._Predictor, "token_counts", never)
    for out, error, match in [("-", ConfigError, "writing to stdout is not supported"),
                              (tmp_path / "fifo.csv", OutputError, "is a named pipe"),
                              (os.devnull, OutputError, "is a character device"),
                              ("/dev/stdout", OutputError, "not a regular file")]:
        with pytest.raises(error, match=match):
            predict_file(model_dir, "toy_sent", source, out, progress=False)
    result = _cli([str(model_dir), "--task", "toy_sent", "--input", str(source), "--output", "-"])
    assert isinstance(result.exception, ConfigError) and "stdout" in str(result.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.csv", "in.csv"]  # no file named '-'


def test_the_tasks_own_columns_come_first(model_dir, tmp_path):
    """toy_pair was trained on columns s1/s2 (like MRPC's '#1 String'/'#2 String'): a file with them was refused
    for want of a default name; a file with both `sentence` (toy_sent's column) and `text` read `text`."""
    source = write_input(tmp_path / "in.tsv", ["id", "s1", "s2"], [[i, a, b] for i, (a, b) in enumerate(PAIRS)])
    counts = predict_file(model_dir, "toy_pair", source, tmp_path / "pair.jsonl", progress=False)
    assert counts["text_columns"] == ["s1", "s2"] and counts["columns_from"] == "task"
    logits = expected_logits(model_dir, "toy_pair", [a for a, _ in PAIRS], [b for _, b in PAIRS])
    assert [r["label"] for r in read_output(tmp_path / "pair.jsonl")] == [str(i) for i in logits.argmax(-1)]

    source = write_input(tmp_path / "both.csv", ["text", "sentence"], [["zz", s] for s in SENTENCES])
    counts = predict_file(model_dir, "toy_sent", source, tmp_path / "sent.jsonl", progress=False)
    assert counts["text_columns"] == ["sentence"] and counts["columns_from"] == "task"
    probs = [_probabilities(r, ["0", "1"]) for r in read_output(tmp_path / "sent.jsonl")]
    logits = expected_logits(model_dir, "toy_sent", SENTENCES)
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), atol=1e-5)

    source = write_input(tmp_path / "plain.csv", ["text"], [[s] for s in SENTENCES])
    counts = predict_file(model_dir, "toy_sent", source, tmp_path / "plain.jsonl", progress=False)
    assert counts["text_columns"] == ["text"] and counts["columns_from"] == "default"
    result = _cli([str(model_dir), "--task", "toy_pair", "--input", str(tmp_path / "in.tsv"), "--output",
                   str(tmp_path / "cli.csv")])
    assert result.exit_code == 0, result.output
    assert f"predicted {len(PAIRS)} of {len(PAIRS)} row(s) from 's1' + 's2' (the task's columns)" in result.output


def test_lengths_are_counted_in_chunks_with_a_progress_bar(model_dir, tmp_path, monkeypatch, capsys):
    """Lengths were counted by tokenising the whole input in one call (200k rows: 1.3 GB) with no progress shown."""
    from multidistill.inference import predict as predict_module

    texts = [f"{'very ' * (i % 7)}short text {i}" for i in range(23)]
    source = write_input(tmp_path / "in.jsonl", ["text"], [[t] for t in texts])
    monkeypatch.setattr(predict_module, "COUNT_CHUNK", 5, raising=False)
    monkeypatch.setattr(predict_module, "PROGRESS_DELAY_S", 0, raising=False)
    sizes: list[int] = []
    real = predict_module._Predictor.token_counts

    def token_counts(self, texts_a, texts_b, **kwargs):
        tokenizer = self.tokenizer

        def counting(a, b=None, **kw):
            sizes.append(len(a))
            return tokenizer(a, b, **kw)

        self.tokenizer = counting
        try:
            return real(self, texts_a, texts_b, **kwargs)
        finally:
            self.tokenizer = tokenizer

    monkeypatch.setattr(predict_module._Predictor, "token_counts", token_counts)
    predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", batch_size=4, progress=True)
    assert sizes == [5, 5, 5, 5, 3]
    stderr = capsys.readouterr().err
    assert "count tokens: " in stderr and "read: " in stderr
    logits = expected_logits(model_dir, "toy_sent", texts)  # chunked counting still predicts the same
    assert [r["label"] for r in read_output(tmp_path / "out.jsonl")] == [str(i) for i in logits.argmax(-1)]


@pytest.mark.parametrize(("name", "content", "match"), [
    ("pretty.json", '{\n  "text": "good film"\n}\n', r"no row could be read \(line 1: invalid JSON"),
    ("csv.jsonl", "text,label\ngood film,1\n", r"line 1: invalid JSON.*line 2: invalid JSON.*JSON Lines"),
    ("strings.jsonl", '"good film"\n"bad"\n', r"line 1: expected a JSON object, got str"),
])
def test_a_file_with_no_readable_row_says_why(name, content, match, model_dir, tmp_path):
    """Every line bad gave "no text column ... the file has: none" instead of what was wrong with the lines."""
    source = tmp_path / name
    source.write_text(content)
    for skip in (False, True):
        with pytest.raises(DataError, match=match) as info:
            predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", skip_bad_rows=skip, progress=False)
        assert "no text column" not in str(info.value)
    assert not (tmp_path / "out.jsonl").exists()


def test_json_numbers_are_text(model_dir, tmp_path):
    """{"text": 123} was refused as "a int" though the same CSV cell is text; booleans, null, objects, lists are not."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": 123}\n{"text": 1.5}\n{"text": true}\n{"text": {"a": 1}}\n{"text": [1]}\n'
                      '{"text": null}\n')
    with pytest.raises(DataError) as info:
        predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", progress=False)
    message = str(info.value)
    assert "4 row(s)" in message and "lines 3, 4, 5, 6" in message and "the boolean true" in message
    assert "an object" in message and "a list" in message
    counts = predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", skip_bad_rows=True, progress=False)
    assert counts["predicted"] == 2
    logits = expected_logits(model_dir, "toy_sent", ["123", "1.5"])
    records = read_output(tmp_path / "out.jsonl")
    assert [r["line"] for r in records] == [1, 2]
    assert [r["label"] for r in records] == [str(i) for i in logits.argmax(-1)]


def test_skipped_line_numbers_are_printed(model_dir, tmp_path):
    """--skip-bad-rows printed only how many rows it skipped, not which."""
    rows = [["good"], *([""] for _ in range(12)), ["fine"]]
    source = write_input(tmp_path / "in.jsonl", ["text"], rows)
    args = [str(model_dir), "--task", "toy_sent", "--input", str(source), "--output", str(tmp_path / "out.jsonl"),
            "--skip-bad-rows"]
    result = _cli(args)
    assert result.exit_code == 0, result.output
    assert "skipped 12 bad row(s): lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 2 more" in result.output
    source = write_input(tmp_path / "in.jsonl", ["text"], [["good"], [""]])
    assert "skipped 1 bad row(s): line 2\n" in _cli(args).output


def test_out_is_another_name_of_output(model_dir, tmp_path):
    """export, soft-targets and report take --out: `predict --out` was "No such option"."""
    source = write_input(tmp_path / "in.csv", ["text"], [["good"], ["bad"]])
    result = _cli([str(model_dir), "--task", "toy_sent", "--input", str(source), "--out", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 0, result.output
    assert len(read_output(tmp_path / "p.jsonl")) == 2


@pytest.mark.parametrize("name", ["out.tsv", "out.json", "out.txt", "out"])
def test_an_output_extension_that_is_not_a_format_is_refused(name, model_dir, tmp_path):
    """`--output x.tsv` or `x.json` silently got JSON Lines."""
    source = write_input(tmp_path / "in.csv", ["text"], [["good"]])
    with pytest.raises(ConfigError, match="name it .jsonl \\(JSON Lines\\) or .csv"):
        predict_file(model_dir, "toy_sent", source, tmp_path / name, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    result = _cli([str(model_dir), "--task", "toy_sent", "--input", str(source), "--output", str(tmp_path / name)])
    assert isinstance(result.exception, ConfigError)
    counts = predict_file(model_dir, "toy_sent", source, tmp_path / name, output_format="jsonl", progress=False)
    assert counts["format"] == "jsonl" and len(read_output(tmp_path / name)) == 1  # an explicit format still goes


def test_int8_on_a_missing_folder_says_it_is_missing(tmp_path):
    """It said "... is a model folder, which runs in fp32" of a folder that does not exist."""
    from multidistill.inference.predict import open_predictor

    with pytest.raises(ConfigError, match=r"needs an ONNX export .*/nowhere does not exist"):
        open_predictor(tmp_path / "nowhere", "int8")
    (tmp_path / "model.int8.onnx").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"model.int8.onnx is a file; give the export's folder"):
        open_predictor(tmp_path / "model.int8.onnx", "int8")


def test_a_cut_emoji_is_a_bad_row_not_a_tokenizer_traceback(model_dir, tmp_path):
    """JSON's "\\ud83d" without its pair decodes to a lone surrogate, which the tokenizer refuses with a TypeError."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "r1", "text": "fine"}\n{"id": "r2", "text": "cut \\ud83d"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"unpaired surrogate U\+D83D.*'text'|line 2"):
        predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", progress=False)
    counts = predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", skip_bad_rows=True, progress=False)
    assert counts["skipped_lines"] == [2] and counts["predicted"] == 1


@pytest.fixture(params=["left", "no_pad"])
def odd_tokenizer_model(request, model_dir, tmp_path) -> Path:
    """The tiny model with a tokenizer that pads on the left, or has no pad token at all (transformers refuses
    ``padding=True`` for it)."""
    import shutil

    from multidistill.models.backbone import load_tokenizer

    folder = tmp_path / f"model_{request.param}"
    shutil.copytree(model_dir, folder)
    if request.param == "left":  # as a checkpoint's tokenizer_config.json says it (setting the attribute is not saved)
        config_file = folder / "tokenizer_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "padding_side": "left"}))
    else:
        tokenizer = load_tokenizer(str(model_dir))
        tokenizer.pad_token = None
        tokenizer.save_pretrained(folder)
    reloaded = load_tokenizer(str(folder))
    assert reloaded.padding_side == "left" if request.param == "left" else reloaded.pad_token_id is None
    return folder


def test_predict_pads_as_training_does_whatever_the_tokenizer(odd_tokenizer_model, model_dir, tmp_path):
    """Rows of several lengths in one batch: the same logits as the evaluation path (right padding with `pad_id`)
    and as the model with its original tokenizer."""
    source = write_input(tmp_path / "in.tsv", ["sentence1", "sentence2"], [list(pair) for pair in PAIRS])
    predict_file(odd_tokenizer_model, "toy_pair", source, tmp_path / "odd.jsonl", batch_size=4, progress=False)
    predict_file(model_dir, "toy_pair", source, tmp_path / "plain.jsonl", batch_size=4, progress=False)
    odd, plain = read_output(tmp_path / "odd.jsonl"), read_output(tmp_path / "plain.jsonl")
    logits = expected_logits(model_dir, "toy_pair", [a for a, _ in PAIRS], [b for _, b in PAIRS])
    for a, b, row in zip(odd, plain, logits, strict=True):
        expected = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        np.testing.assert_allclose(list(a["probabilities"].values()), expected, atol=1e-5)
        np.testing.assert_allclose(list(b["probabilities"].values()), expected, atol=1e-5)
    # the regression head's raw scores show what saturated probabilities would hide
    predict_file(odd_tokenizer_model, "toy_reg", source, tmp_path / "reg.jsonl", batch_size=4, progress=False)
    expected = expected_logits(model_dir, "toy_reg", [a for a, _ in PAIRS], [b for _, b in PAIRS])
    np.testing.assert_allclose([r["score"] for r in read_output(tmp_path / "reg.jsonl")], expected, atol=1e-5)


def test_encode_texts_pads_on_the_right_with_pad_id():
    from multidistill.data.collate import encode_texts, pad_id
    from tests.test_bilstm import _no_pad_tokenizer, _tiny_tokenizer

    plain = _tiny_tokenizer()
    left = _tiny_tokenizer()
    left.padding_side = "left"
    none = _no_pad_tokenizer()
    assert (pad_id(plain), pad_id(none)) == (plain.pad_token_id, 0)
    texts = ["good film", "a"]
    want = encode_texts(plain, texts, None, 16)
    assert want["attention_mask"].tolist()[1][-1] == 0  # the short row is padded at its end
    for tokenizer in (left, none):
        got = encode_texts(tokenizer, texts, None, 16)
        assert got.keys() == want.keys()
        for name, value in got.items():
            expected = want[name].masked_fill(want["attention_mask"] == 0, pad_id(tokenizer)) \
                if name == "input_ids" else want[name]
            assert value.dtype == torch.int64 and torch.equal(value, expected), name


def test_onnx_export_and_predict_with_a_tokenizer_without_a_pad_token(model_dir, tmp_path, monkeypatch):
    """The graph's example inputs and `predict` over the export pad without the tokenizer's help."""
    onnx_export = pytest.importorskip("multidistill.export.onnx")
    import shutil

    from multidistill.models.backbone import load_tokenizer
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    tokenizer = load_tokenizer(str(model_dir))
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    onnx_export.export_onnx(folder, tmp_path / "onnx", skip_parity=True)
    saved = load_tokenizer(str(tmp_path / "onnx"))  # set up for a user's own batching (export/tokenizer.py)
    assert saved.pad_token is not None and saved.padding_side == "right" and saved.model_max_length == 16
    source = write_input(tmp_path / "in.tsv", ["sentence1", "sentence2"], [list(pair) for pair in PAIRS])
    predict_file(tmp_path / "onnx", "toy_reg", source, tmp_path / "reg.jsonl", progress=False)
    expected = expected_logits(model_dir, "toy_reg", [a for a, _ in PAIRS], [b for _, b in PAIRS])
    np.testing.assert_allclose([r["score"] for r in read_output(tmp_path / "reg.jsonl")], expected, atol=1e-4)


def test_rows_cut_at_the_models_length_and_rows_of_unknown_tokens_are_counted(model_dir, tmp_path):
    """A row in a script the vocabulary lacks (every token [UNK]) got a confident-looking prediction and a row
    past the model's length was cut, both silently. Both are counted in the summary and said by the command; the
    predictions are as before (the longest-first order comes from the same counts)."""
    long = " ".join(["the movie was great"] * 20)  # far past the model's 16 tokens
    texts = ["the movie was great", "这是好电影", long, "worst actor", "\u0645\u0631\u062d\u0628\u0627"]
    source = write_input(tmp_path / "in.csv", ["text"], [[t] for t in texts])
    result = predict_file(model_dir, "toy_sent", source, tmp_path / "out.jsonl", progress=False)
    assert (result["truncated"], result["unknown_only"]) == (1, 2)
    logits = expected_logits(model_dir, "toy_sent", texts)
    assert [r["label"] for r in read_output(tmp_path / "out.jsonl")] == [str(i) for i in logits.argmax(-1)]
    cli = _cli([str(model_dir), "--task", "toy_sent", "--input", str(source), "--output", str(tmp_path / "o.csv")])
    said = " ".join(cli.output.split())
    assert cli.exit_code == 0, cli.output
    assert "1 row(s) longer than the model's length were cut to it" in said, said
    assert "2 row(s) hold only tokens the tokenizer does not know" in said, said
    plain = predict_file(model_dir, "toy_sent", write_input(tmp_path / "p.csv", ["text"], [["good film"]]),
                         tmp_path / "p.jsonl", progress=False)
    assert (plain["truncated"], plain["unknown_only"]) == (0, 0)
    from multidistill.inference.texts import predict

    each = predict(model_dir, "toy_sent", texts, progress=False)  # the Python API says it per text
    assert [(p.truncated, p.unknown_only) for p in each] == [(False, False), (False, True), (True, False),
                                                             (False, False), (False, True)]
    assert [p.label for p in each] == [str(i) for i in logits.argmax(-1)]


def test_a_special_token_mask_that_does_not_match_the_ids_falls_back_to_the_special_ids():
    """An old-style slow tokenizer can give a special-token mask of another length than its ids (strict zip
    raised, stopping the whole prediction for a diagnostic count): its special ids are read instead."""
    from multidistill.inference.predict import _only_unknown

    assert _only_unknown([2, 1, 1, 3], [0, 0], unk=1, specials={2, 3})
    assert not _only_unknown([2, 1, 7, 3], [0, 0], unk=1, specials={2, 3})
    assert _only_unknown([2, 1, 3], [1, 0, 1], unk=1, specials=set())
    assert not _only_unknown([2, 3], [1, 1], unk=1, specials={2, 3})  # an empty text is not "unknown only"
