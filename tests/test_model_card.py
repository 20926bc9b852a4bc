"""Model cards (issue 16 part 4): every saved or exported model folder of a run has a README.md in Hugging Face
model-card form whose numbers are the run's metrics.json (and its teacher's), written atomically."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from multidistill.config import DataConfig, TeacherRunConfig
from multidistill.evaluation.baseline import AT_BASELINE_MARK
from multidistill.evaluation.retention import retention
from multidistill.export.card import CARD_FILE, CardRecord, TaskInfo, TeacherInfo, card_text, write_card
from multidistill.training.run import train_model
from tests.conftest import write_tiny_tasks

TASKS = ["toy_sent", "toy_pair", "toy_reg"]
TABLE_ROW = re.compile(r"^\| (\S+) \| (\S+) \| (-?[\d.]+|-)(?: †)? \|(?: (-?[\d.]+|-) \| (-?[\d.]+%|-) \|)?"
                       r"(?: (-?[\d.]+|-) \|)?$")


def _card(folder: Path) -> tuple[dict, str]:
    """(front matter, body) of ``folder``'s README.md."""
    text = (folder / CARD_FILE).read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def _score_table(body: str) -> dict[tuple[str, str], dict[str, str]]:
    """The dev-score table: (task, metric) -> {column name: cell}, read by the header's column names."""
    section = body.split("## Dev scores", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = {}
    for line in table[2:]:
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        if cells["metric"]:  # not the average row
            assert TABLE_ROW.match(line), line  # scores to 4 decimals, retention as a percentage
            rows[(cells["task"], cells["metric"])] = cells
    return rows


def _score_rows(body: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """The dev-score table: (task, metric) -> the model's, teacher's and retention cells (those the table has), the
    model's without its at-baseline mark."""
    return {key: tuple(cells[name].removesuffix(f" {AT_BASELINE_MARK}") for name in ("this model", "teacher",
                                                                                   "retention") if name in cells)
            for key, cells in _score_table(body).items()}


def _four(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def check_card_numbers(folder: Path, metrics: dict, tasks: list[str], teacher: dict | None = None) -> dict:
    """The card's model-index holds exactly metrics.json's values for ``tasks``, its score table shows them (and the
    teacher's, with retention) to 4 digits, and its speed line is metrics.json's; returns the front matter."""
    front, body = _card(folder)
    index = {(r["dataset"]["name"], m["type"]): m["value"]
             for r in front["model-index"][0]["results"] for m in r["metrics"]}
    expected = {(t, metric): value for t in tasks for metric, value in metrics["tasks"][t].items()}
    assert index == expected  # exact floats: YAML keeps every digit
    rows = _score_rows(body)
    assert set(expected) <= set(rows)
    for (task, metric), value in expected.items():
        cells = rows[(task, metric)]
        assert cells[0] == _four(value), (task, metric, cells)
        if teacher is not None:
            theirs = teacher["tasks"][task][metric]
            assert cells[1] == _four(theirs)
            if metric == metrics_main_metric(metrics, task):
                kept = retention({task: value}, {task: theirs})
                assert cells[2] == (f"{100 * kept.ratio:.1f}%" if kept else "-")
            else:
                assert cells[2] == "-"
    if teacher is not None and len(tasks) > 1:
        kept = retention({t: metrics["main"][t] for t in tasks}, teacher["main"])
        assert f"| average of main scores | | {metrics['average']:.4f} | {kept.reference_score:.4f} | " \
               f"{100 * kept.ratio:.1f}% |" in body
    assert f"training throughput: {metrics['examples_per_second']:.1f} examples/s" in body
    assert f"step {metrics['best_step']}" in body
    assert "knowledge-distillation" in front["tags"]
    return front


def metrics_main_metric(metrics: dict, task: str) -> str:
    """A task's main metric: its first metric, whose value metrics.json also lists under ``main``."""
    metric = next(iter(metrics["tasks"][task]))
    assert metrics["tasks"][task][metric] == metrics["main"][task]
    return metric


@pytest.fixture(scope="module")
def card_run(tmp_path_factory, tiny_model_dir):
    """A tiny teacher (gold labels, from Python), its signal store, and a student distilled from it through the
    CLI (`multidistill distill CONFIG`), both with [CLS] pooling so that they also export to Hugging Face."""
    from multidistill import cli
    from multidistill.teachers.generate import build_signal_store

    root = tmp_path_factory.mktemp("cards")
    specs = write_tiny_tasks(root / "data")
    data = {"data_root": str(root / "data"), "tasks": TASKS, "task_specs": specs, "cache_dir": str(root / "cache")}
    base = {"model": {"name_or_path": str(tiny_model_dir), "max_seq_length": 32, "pooling": "cls"}, "data": data,
            "train": {"epochs": 1, "batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "seed": 7}}
    train_model(TeacherRunConfig.model_validate({**base, "output_dir": str(root / "teacher")}))
    build_signal_store([root / "teacher" / "model"], DataConfig.model_validate(data), root / "store")
    student = {**base, "kind": "distill", "output_dir": str(root / "student"), "signals": str(root / "store"),
               "model": {**base["model"], "name_or_path": str(root / "teacher" / "model"), "student_layers": [1]},
               "objective": {"classification": [{"loss": "soft_kl"}, {"loss": "hard"}],
                             "regression": [{"loss": "score_mse"}]}}
    config = root / "student.yaml"
    config.write_text(yaml.safe_dump(student))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["multidistill", "distill", str(config), "--set", "train.seed=7"])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
            raise SystemExit(0)
    assert exit_info.value.code in (0, None)
    return root


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_saved_models_have_cards_whose_numbers_are_the_runs_metrics(card_run):
    teacher, student = _metrics(card_run / "teacher"), _metrics(card_run / "student")
    front = check_card_numbers(card_run / "teacher" / "model", teacher, TASKS)
    assert front["library_name"] == "multidistill" and front["pipeline_tag"] == "text-classification"
    assert "teacher" in front["tags"] and "multi-task" in front["tags"]
    assert "base_model" not in front  # a local folder is not a Hub id

    front = check_card_numbers(card_run / "student" / "model", student, TASKS, teacher=teacher)
    assert "student" in front["tags"]
    _, body = _card(card_run / "student" / "model")
    # What it is: layers, hidden size, parameters (read from the weights), the teacher and its signals.
    from multidistill.recipes.summary import count_parameters

    params = count_parameters(card_run / "student" / "model")
    assert "| layers | 1 |" in body and "| hidden size | 32 |" in body and f"| parameters | {params:,} |" in body
    assert f"| teacher | `{card_run / 'teacher' / 'model'}` |" in body
    assert "toy_sent: soft_kl + hard; toy_pair: soft_kl + hard; toy_reg: score_mse" in body
    # The data: each task's training rows as metrics.json counts them.
    for task in TASKS:
        assert re.search(rf"^\| {task} \| .* \| {student['train_examples'][task]} \| ", body, re.M), task
    assert "multidistill predict PATH --task toy_sent" in body


def test_the_card_names_the_command_and_config_that_made_the_model(card_run):
    _, body = _card(card_run / "student" / "model")
    recorded = json.loads((card_run / "student" / "command.json").read_text())
    assert recorded["command"] == f"multidistill distill {card_run / 'student.yaml'} --set train.seed=7"
    assert f" && {recorded['command']}\n```" in body  # after `cd <folder>`: runs as pasted
    assert f"`{card_run / 'student' / 'config.yaml'}`" in body
    _, teacher_body = _card(card_run / "teacher" / "model")
    assert "Made from Python (no command line recorded)." in teacher_body  # train_model called directly
    assert json.loads((card_run / "teacher" / "command.json").read_text())["command"] is None


def test_exports_have_cards_with_the_runs_numbers(card_run, tmp_path):
    from multidistill.export.hf import export_hf
    from multidistill.export.onnx import export_onnx

    student, teacher = _metrics(card_run / "student"), _metrics(card_run / "teacher")
    data = DataConfig.model_validate(yaml.safe_load((card_run / "student" / "config.yaml").read_text())["data"])
    meta = export_onnx(card_run / "student" / "model", tmp_path / "onnx", parity_data=data, parity_examples=8)
    front = check_card_numbers(tmp_path / "onnx", student, TASKS, teacher=teacher)
    assert front["library_name"] == "onnx" and "onnx" in front["tags"]
    _, body = _card(tmp_path / "onnx")
    for task, numbers in meta["parity"]["fp32"].items():  # the export check is export.json's
        assert f"| fp32 | {task} | 8 | {numbers['max_abs_diff']:.1e} |" in body
    assert "OnnxModel.load" in body and "onnxruntime.InferenceSession" in body

    out = export_hf(card_run / "student" / "model", tmp_path / "hf", parity_data=data, parity_examples=8)
    front, body = _card(out)
    assert front["library_name"] == "transformers" and all(f"`{t}/`" in body for t in TASKS)
    for task in TASKS:  # each task's own folder: its own numbers only
        front = check_card_numbers(out / task, student, [task], teacher=teacher)
        assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-classification"
        _, body = _card(out / task)
        assert "AutoModelForSequenceClassification.from_pretrained" in body and "8 dev rows" in body
    single = export_hf(card_run / "student" / "model", tmp_path / "one", task="toy_pair", check_rows=[("a", "b")])
    check_card_numbers(single, student, ["toy_pair"], teacher=teacher)


def test_a_benchmark_adds_its_measured_speed_to_the_cards(card_run, tmp_path):
    """`multidistill benchmark` rewrites the cards of a run's model and of the ONNX export it measured, with the
    speed numbers of its benchmark.json; the dev scores stay metrics.json's."""
    from multidistill.evaluation.benchmark import benchmark

    model_dir = card_run / "student" / "model"
    config = yaml.safe_load((card_run / "student" / "config.yaml").read_text())["data"]
    benchmark([model_dir], TASKS, data_root=config["data_root"], out=tmp_path / "benchmark.json",
              runtimes=("pytorch_fp32", "onnx_fp32"), export_root=tmp_path / "exports", rounds=1, latency_runs=2,
              memory=False, cache_dir=config["cache_dir"], max_eval_examples=8)
    report = json.loads((tmp_path / "benchmark.json").read_text())
    runtimes = report["models"]["student"]["runtimes"]
    for folder in (model_dir, tmp_path / "exports" / "student"):
        check_card_numbers(folder, _metrics(card_run / "student"), TASKS, teacher=_metrics(card_run / "teacher"))
        _, body = _card(folder)
        for runtime, numbers in runtimes.items():
            assert (f"| {runtime} | {numbers['latency_ms_median']:.2f} | {numbers['latency_ms_p95']:.2f} | "
                    f"{numbers['throughput_examples_per_s']:.1f} | {numbers['score']:.4f} |") in body, runtime
        assert f"throughput at batch {report['settings']['batch_size']}" in body


def test_a_general_students_encoder_has_a_card(tiny_run, tmp_path):
    from tests.test_general_student import general_config

    raw, _ = tiny_run
    train_model(general_config(raw, tmp_path))
    for folder, library, pipeline in (("encoder", "transformers", "feature-extraction"),
                                      ("model", "multidistill", "feature-extraction")):
        front, body = _card(tmp_path / "general" / folder)
        assert front["library_name"] == library and front["pipeline_tag"] == pipeline
        assert "general-student" in front["tags"] and "model-index" not in front  # no dev metrics: unlabelled text
        assert f"| teacher | `{raw['model']['name_or_path']}` |" in body
    assert "AutoModel.from_pretrained" in _card(tmp_path / "general" / "encoder")[1]


def test_a_card_that_cannot_be_made_is_a_warning_not_a_lost_run(tiny_run, tmp_path, monkeypatch):
    from multidistill.export import card_record

    def broken(*args, **kwargs):
        raise KeyError("a bug in the card")

    monkeypatch.setattr(card_record, "model_card_record", broken)
    raw, _ = tiny_run
    with pytest.warns(UserWarning, match="no model card written .*a bug in the card"):
        train_model(TeacherRunConfig.model_validate({**raw, "train": {**raw["train"], "epochs": 0.5}}))
    run = Path(raw["output_dir"])
    assert (run / "metrics.json").is_file() and (run / "model" / "model.safetensors").is_file()
    assert not (run / "model" / CARD_FILE).exists()


def _record(**changes) -> CardRecord:
    fields = dict(
        title="student", form="multidistill", role="student", architecture="bert encoder, [CLS] pooling",
        parameters=22_700_000, layers=3, hidden_size=384, base_model=None, initialised_from="/runs/teacher/model",
        tasks=(TaskInfo("sst2", "classification", ("0", "1"), metrics=("accuracy",), train_examples=2000),
               TaskInfo("stsb", "regression", pair=True, metrics=("pearson", "spearman"), train_examples=500)),
        metrics={"tasks": {"sst2": {"accuracy": 0.8}, "stsb": {"pearson": 0.6, "spearman": None}},
                 "main": {"sst2": 0.8, "stsb": 0.6}, "average": 0.7, "best_step": 40, "train_seconds": 12.0,
                 "examples_per_second": 250.0},
        teachers=(TeacherInfo("/runs/teacher/model", metrics={"sst2": {"accuracy": 0.9}, "stsb": {"pearson": 0.8}},
                              main={"sst2": 0.9, "stsb": 0.8}),),
        command="multidistill run configs/mkd.yaml", config_file="/runs/student/config.yaml",
        run_dir="/runs/student")
    return CardRecord(**{**fields, **changes})


def test_card_text_is_a_pure_function_of_its_record():
    text = card_text(_record())
    assert text == card_text(_record())
    front, body = text[4:].split("\n---\n", 1)
    front = yaml.safe_load(front)
    assert front["metrics"] == ["accuracy", "pearson"]  # a metric without a value (null) is left out
    assert "A distilled student (bert encoder, [CLS] pooling, 3 layers, hidden size 384, 22.7M parameters)" in body
    # Retention by hand: 0.8 / 0.9 = 88.9%, 0.6 / 0.8 = 75.0%, average 0.7 / 0.85 = 82.4%.
    assert "| sst2 | accuracy | 0.8000 | 0.9000 | 88.9% |" in body
    assert "multidistill evaluate PATH --tasks sst2\n" in body  # a task without domains: no --per-domain
    assert "| stsb | pearson | 0.6000 | 0.8000 | 75.0% |" in body
    assert "| stsb | spearman | - | - | - |" in body
    assert "| average of main scores | | 0.7000 | 0.8500 | 82.4% |" in body
    assert "250.0 examples/s over 12.0 s" in body and "multidistill run configs/mkd.yaml" in body
    # No teacher scores: no teacher columns; a Hub base model goes to the front matter.
    text = card_text(_record(teachers=(), base_model="sentence-transformers/all-MiniLM-L6-v2"))
    assert "retention" not in text.split("## Dev scores")[1].split("\n## ")[0].split("\n")[2]
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in text
    # A task with domains: each domain's metrics and their mean, as metrics.json holds them.
    metrics = {**_record().metrics, "domains": {"sst2": {"books": {"accuracy": 0.75}, "dvd": {"accuracy": 0.85}}},
               "domain_average": {"sst2": {"accuracy": 0.8}}}
    text = card_text(_record(metrics=metrics))
    assert "| sst2 | books | accuracy | 0.7500 |\n| sst2 | dvd | accuracy | 0.8500 |\n" \
           "| sst2 | mean over domains | accuracy | 0.8000 |" in text


def test_a_domain_experts_card_compares_it_with_its_teacher_on_its_own_domains():
    """A student scored on one domain of its meta-teacher's three: the teacher's task-level score (all three
    domains' dev rows) is not comparable; its score on the student's domain is."""
    teacher = TeacherInfo("/runs/meta-teacher/model", metrics={"sst2": {"accuracy": 0.9}}, main={"sst2": 0.9},
                          domains={"sst2": {"books": {"accuracy": 0.8}, "dvd": {"accuracy": 0.95},
                                            "electronics": {"accuracy": 0.95}}})
    metrics = {"tasks": {"sst2": {"accuracy": 0.7}}, "main": {"sst2": 0.7}, "average": 0.7,
               "domains": {"sst2": {"books": {"accuracy": 0.7}}}, "domain_average": {"sst2": {"accuracy": 0.7}}}
    tasks = (TaskInfo("sst2", "classification", ("0", "1"), metrics=("accuracy",)),)
    body = card_text(_record(tasks=tasks, metrics=metrics, teachers=(teacher,))).split("\n---\n", 1)[1]
    # Not 0.7 / 0.9 = 77.8% against the teacher's three domains ...
    assert "| sst2 | accuracy | 0.7000 | - | - |" in body and "77.8%" not in body
    assert "scored on other domains than its teacher (task sst2)" in body
    # ... but 0.7 / 0.8 = 87.5% against its books score.
    assert "| sst2 | books | accuracy | 0.7000 | 0.8000 | 87.5% |" in body
    assert "multidistill evaluate PATH --tasks sst2 --per-domain" in body  # its scores by domain, as above
    # Scored on the teacher's own domains, the task-level comparison stands.
    same = {**metrics, "domains": teacher.domains}
    body = card_text(_record(tasks=tasks, metrics=same, teachers=(teacher,)))
    assert "| sst2 | accuracy | 0.7000 | 0.9000 | 77.8% |" in body and "other domains" not in body
    assert "| sst2 | dvd | accuracy | 0.9500 | 0.9500 | 100.0% |" in body


def test_a_card_is_written_atomically(tmp_path, monkeypatch):
    from multidistill.export import card

    write_card(tmp_path, _record())
    before = (tmp_path / CARD_FILE).read_text()

    def broken(record):
        raise RuntimeError("cut mid-card")

    monkeypatch.setattr(card, "_scores_section", broken)
    with pytest.raises(RuntimeError, match="cut mid-card"):
        write_card(tmp_path, _record(title="other"))
    assert (tmp_path / CARD_FILE).read_text() == before  # the old card, whole
    assert [p.name for p in tmp_path.iterdir()] == [CARD_FILE]  # no temporary file left


def test_a_resumed_run_keeps_its_first_command(tmp_path):
    from multidistill.utils.command import read_command, record_command, set_cli_command

    try:
        set_cli_command(["distill", "a.yaml"])
        record_command(tmp_path, resume=False)
        set_cli_command(["distill", "a.yaml", "--resume"])
        record_command(tmp_path, resume=True)
    finally:
        set_cli_command(None)
    recorded = read_command(tmp_path)
    assert recorded["command"] == "multidistill distill a.yaml"
    assert [r["command"] for r in recorded["resumed_by"]] == ["multidistill distill a.yaml --resume"]


def test_a_resumed_run_without_a_record_does_not_claim_to_have_started_it(tmp_path):
    from multidistill.utils.command import read_command, record_command, set_cli_command

    try:
        set_cli_command(["distill", "a.yaml", "--resume"])
        record_command(tmp_path, resume=True)  # a run started before commands were recorded
    finally:
        set_cli_command(None)
    recorded = read_command(tmp_path)
    assert recorded["command"] is None and recorded["first_unrecorded"]
    assert [r["command"] for r in recorded["resumed_by"]] == ["multidistill distill a.yaml --resume"]


def test_the_card_says_how_a_run_was_resumed_and_when_its_first_command_is_unknown(tmp_path):
    write_card(tmp_path, _record(command=None, command_unrecorded=True,
                                 resumed_by=("multidistill distill a.yaml --resume", None)))
    _, body = _card(tmp_path)
    assert "Started by a command that was not recorded" in body and "Made from Python" not in body
    assert "Resumed by:\n\n```bash\nmultidistill distill a.yaml --resume\n# (from Python)\n```" in body


def test_a_model_saved_outside_a_run_gets_a_card_without_scores(tiny_model_dir, tmp_path):
    """A BiLSTM folder saved by hand: the card says what it is and has no score or command it cannot know."""
    from transformers import AutoTokenizer

    from multidistill.data.tasks import Task
    from multidistill.export.card_record import model_card_record
    from multidistill.models import BiLSTMModel, BiLSTMSpec

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    spec = BiLSTMSpec(embedding_dim=16, hidden_size=8, mlp_hidden=12, num_layers=2)
    model = BiLSTMModel.from_tokenizer(spec, [Task(name="sent", labels=["neg", "pos"])], tokenizer)
    model.save_pretrained(tmp_path / "bilstm", tokenizer=tokenizer)
    record = model_card_record(tmp_path / "bilstm", "multidistill")
    assert (record.architecture, record.layers, record.hidden_size) == ("BiLSTM", 2, 16)
    assert record.parameters == sum(p.numel() for p in model.parameters())
    write_card(tmp_path / "bilstm", record)
    front, body = _card(tmp_path / "bilstm")
    assert "model-index" not in front and "## Dev scores" not in body and "## Measured speed" not in body
    assert "Made from Python (no command line recorded)." in body


@pytest.mark.parametrize(("pooling", "said"), [("mean", "mean pooling"), ("cls", "[CLS] pooling")])
def test_the_card_names_the_models_own_pooling(tiny_model_dir, tmp_path, pooling, said):
    """The architecture line reads the pooling the folder's model uses (it said [CLS] for every encoder before)."""
    from transformers import AutoTokenizer

    from multidistill.config import ModelConfig
    from multidistill.data.tasks import Task
    from multidistill.export.card_record import model_card_record
    from multidistill.models.build import build_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = build_model(ModelConfig(name_or_path=str(tiny_model_dir), pooling=pooling, max_seq_length=32),
                        [Task(name="sent", labels=["neg", "pos"])], tokenizer)
    model.save_pretrained(tmp_path / "model", tokenizer=tokenizer)
    record = model_card_record(tmp_path / "model", "multidistill")
    assert record.architecture == f"bert encoder, {said}"


# ------------------------------------------------------------------------------------------------ card audit


def _copy_student(card_run: Path, tmp_path: Path) -> Path:
    """A copy of the card run's student run folder under ``tmp_path`` (its card can be rewritten freely)."""
    import shutil

    shutil.copytree(card_run / "student", tmp_path / "student")
    return tmp_path / "student"


def _edit_yaml(path: Path, edit) -> None:
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw))


def _edit_json(path: Path, edit) -> None:
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def test_a_students_card_hides_the_scores_of_a_teacher_retrained_in_place(card_run, tmp_path):
    """The store's manifest and the student's metrics.json record the teacher weights it was distilled from; once the
    teacher folder holds other weights (`train-teacher --overwrite`), the student's card shows none of its scores."""
    import shutil

    from safetensors.torch import load_file, save_file

    from multidistill.export.card_record import OTHER_WEIGHTS, model_card_record
    from multidistill.teachers.fingerprint import weights_fingerprint

    teacher_model = str((card_run / "teacher" / "model").resolve())
    fingerprint = weights_fingerprint(teacher_model)
    assert _metrics(card_run / "student")["teacher_weights"] == {teacher_model: fingerprint}
    assert json.loads((card_run / "store" / "manifest.json").read_text())["teacher_weights"] == [fingerprint]

    # The same run and store, with the teacher copied where it can be retrained.
    shutil.copytree(card_run / "teacher", tmp_path / "teacher")
    teacher = str(tmp_path / "teacher" / "model")
    (tmp_path / "store").mkdir()
    manifest = json.loads((card_run / "store" / "manifest.json").read_text())
    (tmp_path / "store" / "manifest.json").write_text(json.dumps({**manifest, "teachers": [teacher]}))
    student = _copy_student(card_run, tmp_path)
    _edit_yaml(student / "config.yaml", lambda c: c.update(signals=str(tmp_path / "store")))
    _edit_json(student / "metrics.json", lambda m: m.update(teacher_weights={teacher: fingerprint}))

    def teacher_cells() -> tuple[dict, str]:
        record = model_card_record(student / "model", "multidistill")
        write_card(student / "model", record)
        return record.teachers[0], _card(student / "model")[1]

    info, body = teacher_cells()
    assert info.main == _metrics(card_run / "teacher")["main"] and info.note is None  # the same weights

    weights = load_file(tmp_path / "teacher" / "model" / "model.safetensors")  # retrained in place
    save_file({name: tensor + 1 for name, tensor in weights.items()},
              tmp_path / "teacher" / "model" / "model.safetensors")
    _edit_json(tmp_path / "teacher" / "metrics.json", lambda m: m["main"].update(toy_sent=0.999))
    info, body = teacher_cells()
    assert info.metrics is None and info.main is None
    assert f"| teacher | `{teacher}` ({OTHER_WEIGHTS}) |" in body
    assert "| teacher | retention |" not in body and "0.9990" not in body
    shutil.rmtree(tmp_path / "teacher")
    info, body = teacher_cells()
    assert info.metrics is None and "not found when this card was written" in body

    # A store and run from before the record: the teacher's current scores, as before.
    shutil.copytree(card_run / "teacher", tmp_path / "teacher")
    _edit_json(tmp_path / "teacher" / "metrics.json", lambda m: m["main"].update(toy_sent=0.999))
    _edit_json(student / "metrics.json", lambda m: m.pop("teacher_weights"))
    _edit_json(tmp_path / "store" / "manifest.json", lambda m: m.pop("teacher_weights"))
    info, _ = teacher_cells()
    assert info.main["toy_sent"] == 0.999 and info.note is None


def test_the_score_table_shows_the_constant_predictor_and_marks_scores_it_reaches(card_run):
    """metrics.json records each task's trivial baseline (majority class / training mean fitted on the training
    rows, scored on dev); the card shows it beside the scores and marks a main score no better than it with †."""
    import csv

    student = _metrics(card_run / "student")
    trivial = student["trivial_baselines"]
    assert set(trivial) == set(TASKS)

    def labels(split: str) -> list[str]:
        with open(card_run / "data" / "toy_sent" / f"{split}.tsv") as handle:
            return [row["label"] for row in csv.DictReader(handle, delimiter="\t")]

    train, dev = labels("train"), labels("dev")
    majority = max(("0", "1"), key=lambda label: (train.count(label), label == "0"))  # the lowest on a tie
    assert trivial["toy_sent"]["main"] == pytest.approx(dev.count(majority) / len(dev))
    assert trivial["toy_sent"]["predictor"].startswith(f"always '{majority}' (majority class")

    _, body = _card(card_run / "student" / "model")
    table = _score_table(body)
    for task in TASKS:
        for metric, value in student["tasks"][task].items():
            cells = table[(task, metric)]
            assert cells["constant predictor"] == _four(trivial[task]["metrics"][metric])
            main = metric == metrics_main_metric(student, task)
            marked = main and value <= trivial[task]["main"] + 0.01 + 1e-12
            assert cells["this model"] == _four(value) + (" †" if marked else "")
    assert "a constant predictor does as well, so it is not retention" in body

    # By hand: 0.80 is within 0.01 of a constant 0.795, 0.6 is above 0.0.
    trivial = {"sst2": {"predictor": "always '1'", "main": 0.795, "metrics": {"accuracy": 0.795}},
               "stsb": {"predictor": "constant 2.5", "main": 0.0, "metrics": {"pearson": 0.0, "spearman": 0.0}}}
    body = card_text(_record(metrics={**_record().metrics, "trivial_baselines": trivial}))
    assert "| sst2 | accuracy | 0.8000 † | 0.9000 | 88.9% | 0.7950 |" in body
    assert "| stsb | pearson | 0.6000 | 0.8000 | 75.0% | 0.0000 |" in body
    assert "| average of main scores | | 0.7000 | 0.8500 | 82.4% | - |" in body
    assert "constant predictor" not in card_text(_record())  # a run without the record: as before


def test_the_onnx_snippet_runs_on_a_text_longer_than_the_model_reads(card_run, tmp_path):
    """The card's Python snippet truncates as the Hugging Face one does, so a long text does not overrun the
    position table."""
    from multidistill.export.onnx import export_onnx

    export_onnx(card_run / "student" / "model", tmp_path / "onnx")
    _, body = _card(tmp_path / "onnx")
    snippet = body.split("## How to use", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert "truncation=True, max_length=32" in snippet
    long_text = " ".join(["great"] * 400)
    scope: dict = {}
    exec(snippet.replace("PATH", str(tmp_path / "onnx")).replace('"first text"', repr(long_text)), scope)
    assert scope["logits"].shape == (1, 2)


def test_the_card_says_what_the_model_started_from_and_where_its_rows_came_from(card_run, tmp_path):
    """Random init from model.backbone_config is said as such (no base_model); init_from and heads_from are named;
    a training split read from elsewhere than the data root (a transfer set) is named as the config names it."""
    from multidistill.export.card_record import model_card_record

    student = _copy_student(card_run, tmp_path)

    def record_with(model: dict, data: dict | None = None):
        def edit(config: dict) -> None:
            config["model"] = {**config["model"], **model}
            config["data"].update(data or {})
        _edit_yaml(student / "config.yaml", edit)
        return model_card_record(student / "model", "multidistill")

    record = record_with({"name_or_path": "prajjwal1/bert-tiny", "student_layers": None,
                          "backbone_config": {"model_type": "bert", "hidden_size": 32}})
    assert record.base_model is None and record.initialised_from.startswith("random weights")
    assert "a bert encoder sized by `model.backbone_config`" in record.initialised_from
    assert "tokenizer of `prajjwal1/bert-tiny`" in record.initialised_from
    assert "base_model" not in card_text(record)
    record = record_with({"backbone_config": None, "heads_from": str(card_run / "teacher" / "model")})
    assert record.base_model == "prajjwal1/bert-tiny"  # pretrained weights from the Hub: its base model
    assert record.initialised_from == f"`prajjwal1/bert-tiny`; task heads from `{card_run / 'teacher' / 'model'}`"
    record = record_with({"heads_from": None, "init_from": "/runs/joint/model"})
    assert record.base_model is None and record.initialised_from.startswith("`/runs/joint/model` (a saved")

    specs = yaml.safe_load((student / "config.yaml").read_text())["data"]["task_specs"]
    specs[0]["files"]["train"] = {"path": "/runs/mkd/transfer/toy_sent", "format": "hf_disk",
                                  "columns": {"text_a": "text_a", "label": "label"}}
    record = record_with({}, {"task_specs": specs})
    write_card(student / "model", record)
    _, body = _card(student / "model")
    assert "toy_sent: `/runs/mkd/transfer/toy_sent` (hf_disk); toy_pair: `toy_pair/train.tsv`" in body
    assert f"relative paths are under the data root `{card_run / 'data'}`" in body
    assert "`train_examples` in the run's `metrics.json`" in body


def test_a_killed_run_leaves_its_best_model_with_a_card(tiny_run):
    """The loop's best-model save writes a card that says the run had not ended (no scores yet), so a run killed
    after it leaves a described model folder; the card written at the end replaces it."""
    raw, _ = tiny_run

    class Killed(Exception):
        pass

    def kill(state) -> None:
        if state.step == 4:
            raise Killed

    config = {**raw, "train": {**raw["train"], "eval_every_steps": 3}}
    with pytest.raises(Killed):
        train_model(TeacherRunConfig.model_validate(config), on_step=kill)
    run = Path(raw["output_dir"])
    assert not (run / "metrics.json").exists()
    front, body = _card(run / "model")
    assert "Training had not finished when this card was written" in body
    assert "## Dev scores" not in body and "model-index" not in front
    # written inside the model's atomic save (from its temporary folder), it reads as if written after it
    from multidistill.export.card_record import model_card_record

    after = card_text(model_card_record(run / "model", "multidistill", in_progress=True))
    assert (run / "model" / CARD_FILE).read_text() == after and ".tmp-" not in after

    train_model(TeacherRunConfig.model_validate(config), resume=True)
    _, body = _card(run / "model")
    assert "Training had not finished" not in body and "## Dev scores" in body


def test_an_onnx_card_shows_an_int8_graph_that_failed_its_check_as_removed(card_run, tmp_path, monkeypatch):
    from multidistill.export.onnx import export_onnx
    from tests.test_export_onnx import inject_int8_disagreement

    inject_int8_disagreement(monkeypatch)  # an int8 graph that fails its check on any CPU
    data = DataConfig.model_validate(yaml.safe_load((card_run / "student" / "config.yaml").read_text())["data"])
    meta = export_onnx(card_run / "student" / "model", tmp_path / "onnx", quantize="int8", parity_data=data,
                       parity_examples=8, min_agreement_int8=1.0, on_parity_failure="omit")
    assert "int8" in meta["parity_failures"] and "int8" not in meta["files"]
    _, body = _card(tmp_path / "onnx")
    for task in TASKS:
        assert re.search(rf"^\| int8 \| {task} \| 8 \| .* \| FAILED: graph removed \|$", body, re.M), task
        assert re.search(rf"^\| fp32 \| {task} \| 8 \| .* \| passed \|$", body, re.M), task
    assert "The int8 graph failed its parity check and was removed from this folder" in body
    for reason in meta["parity_failures"]["int8"]:
        assert f"- {reason}" in body
    assert "quantize int8, dynamic method, per-channel weight scales (graph removed: failed its parity check)" in body


def test_export_cards_give_the_exports_settings_and_promise_no_update_they_never_get(card_run, tmp_path):
    """'How it was made' adds the export's own settings from its export.json; only a run's model folder, which
    `multidistill benchmark` rewrites, says the benchmark adds its speed to the card."""
    from multidistill.export.hf import export_hf
    from multidistill.export.onnx import export_onnx

    export_onnx(card_run / "student" / "model", tmp_path / "onnx", opset=17, skip_parity=True)
    _, body = _card(tmp_path / "onnx")
    assert "export settings (`export.json`): format ONNX, opset 17, plain graph" in body
    assert "quantize none (fp32 only), no parity check against PyTorch" in body
    single = export_hf(card_run / "student" / "model", tmp_path / "hf", task="toy_pair", check_rows=[("a", "b")])
    _, hf_body = _card(single)
    assert ("export settings (`export.json`): format Hugging Face `AutoModelForSequenceClassification`, task "
            "toy_pair, model type bert, max length 32") in hf_body
    for export_body in (body, hf_body):
        assert "adds them to this card" not in export_body
        assert f"run on the model folder `{(card_run / 'student' / 'model').resolve()}`" in export_body
        assert "(this card is not updated)" in export_body
    from multidistill.export.card_record import model_card_record

    assert "adds them to this card" in card_text(model_card_record(card_run / "student" / "model", "multidistill"))


def test_the_speed_block_labels_the_score_as_the_report_does(card_run):
    from multidistill.export.card_record import model_card_record
    from multidistill.report.build import score_label

    model_dir = card_run / "student" / "model"
    report = {"task": "toy_sent", "tasks": TASKS, "settings": {"batch_size": 32, "max_eval_examples": 8},
              "threads": 1, "machine": "cpu", "date": "2024-01-01 00:00",
              "models": {"student": {"path": str(model_dir), "runtimes": {"pytorch_fp32": {
                  "status": "ok", "latency_ms_median": 1.0, "latency_ms_p95": 2.0,
                  "throughput_examples_per_s": 100.0, "score": 0.5}}}}}
    body = card_text(model_card_record(model_dir, "multidistill", benchmark=report))
    label = "dev score (mean main metric over toy_sent, toy_pair, toy_reg, first 8 dev rows per task)"
    assert score_label(report) == label and f"score: {label}; throughput at batch 32" in body
    assert "(task toy_sent," not in body


def test_the_card_says_where_the_command_was_run(card_run):
    """command.json's cwd: the recorded command's relative paths (its config file) read from there, so the block
    changes into that folder first and runs as pasted."""
    import shlex

    recorded = json.loads((card_run / "student" / "command.json").read_text())
    _, body = _card(card_run / "student" / "model")
    assert f"```bash\ncd {shlex.quote(recorded['cwd'])} && {recorded['command']}\n```" in body
    body = card_text(_record(command="multidistill distill a.yaml", command_cwd="/home/my runs",
                             resumed_by=("multidistill distill a.yaml --resume", None), resumed_in=("/home/b", None)))
    assert "```bash\ncd '/home/my runs' && multidistill distill a.yaml\n```" in body
    assert "cd /home/b && multidistill distill a.yaml --resume\n# (from Python)\n" in body


def test_a_multi_task_hf_root_declares_no_pipeline_and_shows_each_folders_check(card_run, tmp_path):
    from multidistill.export.hf import export_hf

    out = export_hf(card_run / "student" / "model", tmp_path / "hf", check_rows=[("a", "b")])
    front, body = _card(out)
    assert front["library_name"] == "transformers" and "pipeline_tag" not in front
    checks = json.loads((out / "export.json").read_text())["checks"]
    section = body.split("## Export check\n\n", 1)[1].split("\n## ", 1)[0]
    for task, check in checks.items():
        assert f"- `{task}/`: Loaded back with `AutoModelForSequenceClassification`" in section
        assert f"max |logit difference| {check['max_abs_diff']:.1e}" in section
    for task in TASKS:  # a task folder is a loadable classifier
        assert _card(out / task)[0]["pipeline_tag"] == "text-classification"


def test_a_relative_online_teacher_is_found_from_the_folder_the_run_ran_in(card_run, tmp_path, monkeypatch):
    """An online teacher named by a relative path was looked up from wherever the card was rewritten (`benchmark`
    from another folder): "not found", its scores hidden. It is read from the run's recorded working folder."""
    import shutil

    from multidistill.export.card_record import model_card_record
    from multidistill.teachers.fingerprint import weights_fingerprint

    shutil.copytree(card_run / "teacher", tmp_path / "work" / "teacher")
    student = _copy_student(card_run, tmp_path)
    _edit_yaml(student / "config.yaml", lambda c: c.update(signals=None, online_teachers=["teacher/model"]))
    fingerprint = weights_fingerprint(str(tmp_path / "work" / "teacher" / "model"))
    _edit_json(student / "metrics.json", lambda m: m.update(teacher_weights={"teacher/model": fingerprint}))
    _edit_json(student / "command.json", lambda c: c.update(cwd=str(tmp_path / "work")))
    monkeypatch.chdir(tmp_path)  # elsewhere: teacher/model does not exist here
    info = model_card_record(student / "model", "multidistill").teachers[0]
    assert info.note is None and info.main == _metrics(card_run / "teacher")["main"]


def test_the_card_lists_only_the_domains_a_run_trained_on():
    """A Meta-KD student of one target (domains_include) and the meta-teacher without it (domains_exclude) trained
    on some of the task's domain files: the card names those, what it left out, and the share and fold of a
    domain's rows a run kept (domain_fraction, domain_holdout)."""
    from multidistill.export.card_record import _train_files

    columns = {"text_a": 0, "label": 1}
    spec = {"name": "reviews", "type": "classification", "labels": ["0", "1"],
            "domain_files": {d: {"train": {"path": f"reviews/{d}/train.tsv", "columns": columns}}
                             for d in ("books", "dvd", "music")}}

    def files(**ref) -> str:
        return _train_files({"task_specs": [spec], "tasks": [{"name": "reviews", **ref}]})["reviews"]

    assert files() == ("books `reviews/books/train.tsv`, dvd `reviews/dvd/train.tsv`, music "
                       "`reviews/music/train.tsv`")
    assert files(domains_include=["books"]) == "books `reviews/books/train.tsv` (domains dvd, music left out)"
    assert files(domains_exclude=["books"]) == ("dvd `reviews/dvd/train.tsv`, music `reviews/music/train.tsv` "
                                                "(domain books left out)")
    assert files(domain_fraction={"books": 0.25}, domain_holdout={"domain": "dvd", "folds": 5, "fold": 2}) == (
        "books `reviews/books/train.tsv` (25% of its rows, seeded), dvd `reviews/dvd/train.tsv` (fold 2 of 5 left "
        "out), music `reviews/music/train.tsv`")
    column = {"name": "genres", "type": "classification", "labels": ["0", "1"], "domains": ["fiction", "travel"],
              "files": {"train": {"path": "genres/train.tsv", "columns": {"text_a": 0, "label": 1, "domain": 2}}}}
    assert _train_files({"task_specs": [column], "tasks": [{"name": "genres", "domains_exclude": ["travel"]}]}) == {
        "genres": "`genres/train.tsv`, the rows of domain fiction only"}


def test_with_several_teachers_the_card_says_its_retention_is_not_against_their_ensemble():
    """A recipe's report measures retention against the teachers' ensemble; the card against the mean of their own
    scores: the card names its reference and says why the two differ."""
    teachers = tuple(TeacherInfo(f"/runs/teacher-seed-{k}/model", metrics={"sst2": {"accuracy": 0.9}},
                                 main={"sst2": 0.9}) for k in (1, 2))
    several = card_text(_record(teachers=teachers))
    assert "Teacher: the mean of the 2 teachers' dev scores" in several
    assert "Retention is against that column" in several and "not their ensemble's score" in several
    assert "not their ensemble's score" not in card_text(_record())


def test_the_kept_model_and_its_card_are_one_write(tiny_model_dir, tmp_path, monkeypatch):
    """A kill while the card is written leaves the folder as it was (the previous save, with its card): the card is
    written into the save's temporary folder, before the rename."""
    import torch

    from multidistill.data.tasks import Task
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_tokenizer
    from multidistill.training import run as run_module

    tokenizer = load_tokenizer(str(tiny_model_dir))
    tasks = [Task.model_validate(spec) for spec in write_tiny_tasks(tmp_path / "data", n_train=2, n_dev=2)]
    model = MultiTaskModel.from_backbone(str(tiny_model_dir), tasks)
    folder = tmp_path / "model"
    run_module.save_kept_model(model, folder, tokenizer)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert "README.md" in before

    class Killed(BaseException):
        pass

    def killed(target, *args, **kwargs):
        assert target.name.startswith(".model.tmp-")  # the card goes into the temporary folder
        raise Killed

    monkeypatch.setattr(run_module, "write_model_card", killed)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(Killed):
        run_module.save_kept_model(model, folder, tokenizer)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model"]


def _table_rows_keep_their_columns(body: str) -> int:
    """Each markdown table's rows have as many cells as its header, counting unescaped pipes; returns the rows
    checked."""
    checked, columns = 0, None
    for line in body.split("\n"):
        if not line.startswith("|"):
            columns = None
            continue
        cells = len(re.split(r"(?<!\\)\|", line)) - 2
        columns = columns or cells
        assert cells == columns, line
        checked += 1
    return checked


def test_card_tables_escape_user_text_and_keep_each_label_whole():
    """Labels were joined with ", " into the cell as written: a label with a pipe split the table's row and one with
    a comma read as two labels. Every table cell of user-given text (labels, task and domain names, paths) escapes
    its pipes; each label is a code span of its own."""
    tasks = (TaskInfo("pipe", "classification", ("good|great", "bad, awful", "`x`"), metrics=("accuracy",)),)
    metrics = {"tasks": {"pipe": {"accuracy": 0.5}}, "main": {"pipe": 0.5}, "average": 0.5,
               "domains": {"pipe": {"a|b": {"accuracy": 0.5}}}, "domain_average": {"pipe": {"accuracy": 0.5}}}
    teacher = TeacherInfo("/runs/a|b/model", metrics={"pipe": {"accuracy": 0.9}}, main={"pipe": 0.9},
                          domains={"pipe": {"a|b": {"accuracy": 0.9}}})
    body = card_text(_record(tasks=tasks, metrics=metrics, teachers=(teacher,), signals="/runs/x|y/signals",
                             initialised_from="/runs/a|b/model")).split("\n---\n", 1)[1]
    assert r"| pipe | classification | `good\|great`, `bad, awful`, `` `x` `` | no |" in body
    assert r"| teacher | `/runs/a\|b/model` |" in body and r"| teacher signals | `/runs/x\|y/signals` |" in body
    assert r"| pipe | a\|b | accuracy | 0.5000 | 0.9000 | 55.6% |" in body
    assert _table_rows_keep_their_columns(body) >= 12
    # Labels without commas or pipes read as before, each in a code span.
    assert "| sst2 | classification | `0`, `1` | no | 2000 |" in card_text(_record())
