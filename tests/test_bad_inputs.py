"""Every case of the bad-input catalogue (tests/bad_inputs/cases.py) through `multidistill.cli.main()`:
exit code 2, one `error:` message naming the culprit, no traceback, nothing on disk changed.

Set BAD_INPUTS_RECORD=<file.jsonl> to append each case's observed message (used for docs/reliability.md).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.bad_inputs.cases import CASES, COMMANDS, DELETE, PAYLOAD_MARKER, Case, set_path
from tests.conftest import write_tiny_tasks
from tests.test_cli import run_cli

SIGNAL_OBJECTIVE = {"classification": [{"loss": "hard", "weight": 0.5}, {"loss": "soft_ce", "weight": 0.5}],
                    "regression": [{"loss": "hard"}, {"loss": "score_mse"}]}


@pytest.fixture(scope="session")
def bad_input_assets(tmp_path_factory, tiny_model_dir) -> Path:
    """Models and a signal store over the toy tasks, built once; each case damages its own copy."""
    import torch

    from multidistill.config import DataConfig
    from multidistill.data.tasks import Task
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_tokenizer
    from multidistill.teachers.generate import build_signal_store

    root = tmp_path_factory.mktemp("bad_input_assets")
    specs = write_tiny_tasks(root / "data")  # the same files every tiny_run writes (fixed seed)
    tasks = [Task.model_validate(spec) for spec in specs]
    three = {"labels": ["0", "1", "2"], "metrics": ["accuracy"]}  # f1 is for 2 labels
    three_labels = [Task.model_validate({**spec, **three}) if spec["name"] == "toy_sent"
                    else Task.model_validate(spec) for spec in specs]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    for name, seed, model_tasks in (("teacher", 0, tasks), ("teacher_b", 1, tasks), ("other", 2, three_labels)):
        torch.manual_seed(seed)
        MultiTaskModel.from_backbone(str(tiny_model_dir), model_tasks, max_length=32).save_pretrained(
            root / name, tokenizer)
    data = DataConfig(tasks=[t.name for t in tasks], data_root=str(root / "data"), task_specs=tasks,
                      cache_dir=str(root / "cache"))
    build_signal_store([root / "teacher"], data, root / "store", seed=7)
    return root


def _config_for(case: Case, raw: dict, ws: dict[str, Path]) -> dict:
    """The config the case's command reads, before the case's patch."""
    config = copy.deepcopy(raw)
    if case.command == "distill":
        config.update(kind="distill", signals=str(ws["store"]), objective=copy.deepcopy(SIGNAL_OBJECTIVE))
    if COMMANDS[case.command][0] == "run":
        config = {"recipe": "mtdnn_kd", "output_dir": str(ws["out"]), "data": config["data"],
                  # teacher.seeds give the teachers' seeds: a train.seed there is refused
                  "teacher": {"model": dict(raw["model"]), "train": {k: v for k, v in raw["train"].items()
                                                                     if k != "seed"}},
                  "student": {"model": dict(raw["model"]), "train": dict(raw["train"])}}
    return config


def _format(value, ws: dict[str, Path]):
    if isinstance(value, str):
        return value.format(**{k: str(v) for k, v in ws.items()})
    return value


def _snapshot(root: Path, skip: Path) -> dict[str, str | None]:
    """Every file (content hash) and folder under ``root``, except ``skip`` (the tokenised-view cache)."""
    state: dict[str, str | None] = {}
    for path in sorted(root.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        key = str(path.relative_to(root))
        state[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return state


def _record(case: Case, output: str, ws: dict[str, Path]) -> None:
    target = os.environ.get("BAD_INPUTS_RECORD")
    if not target:
        return
    message = output[output.find("error:"):].strip()
    for name, path in sorted(ws.items(), key=lambda item: -len(str(item[1]))):
        message = message.replace(str(path), "{" + name + "}")
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": case.id, "category": case.category, "broken": case.broken,
                                 "command": case.command, "message": message}) + "\n")


def _params() -> list:
    return [pytest.param(case, id=case.id,
                         marks=[pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else [])
            for case in CASES]


def test_catalogue_is_complete() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 25
    assert {case.category for case in CASES} == {"data", "config", "model", "store"}
    assert all(case.command in COMMANDS and case.expect for case in CASES)


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_refused_cleanly(case: Case, tiny_run, bad_input_assets, tiny_model_dir, tmp_path, monkeypatch,
                                      capsys) -> None:
    raw, write = tiny_run
    ws = {"ws": tmp_path, "data": tmp_path / "data", "cache": tmp_path / "cache", "out": tmp_path / "run",
          "config": tmp_path / "config.yaml", "teacher": tmp_path / "teacher", "teacher_b": tmp_path / "teacher_b",
          "other": tmp_path / "other", "store": tmp_path / "store", "bert": tiny_model_dir}
    for name in ("teacher", "teacher_b", "other", "store"):
        shutil.copytree(bad_input_assets / name, ws[name])
    ws["out"].mkdir()
    (ws["out"] / "precious.txt").write_text("keep me")

    config = _config_for(case, raw, ws)
    for key, value in case.patch.items():
        set_path(config, key, DELETE if value is DELETE else _format(value, ws))
    write(config, ws["config"].name)
    for rel, content in case.files.items():
        target = ws["data"] / rel
        if content is None:
            target.unlink()
        else:
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
    for step in case.damage:
        step(ws)

    before = _snapshot(tmp_path, ws["cache"])
    args = [_format(arg, ws) for arg in (*COMMANDS[case.command], *case.args)]
    code, output = run_cli(monkeypatch, capsys, *args)
    _record(case, output, ws)

    assert not (tmp_path / PAYLOAD_MARKER).exists(), "a pickle payload ran while loading"
    assert code == 2, output
    assert "Traceback" not in output, output
    # One message, at the start of a line (progress bars of model loading may come before it; the CLI exits
    # right after printing it, so all that follows is the message, e.g. a config error's "  key 'a.b': ..." lines).
    starts = [line for line in output.splitlines() if line.startswith("error:")]
    assert output.count("error:") == 1 and len(starts) == 1, output
    for fragment in case.expect:
        assert fragment in output, (fragment, output)
    assert (ws["out"] / "precious.txt").read_text() == "keep me"
    assert _snapshot(tmp_path, ws["cache"]) == before, "a failed command changed files on disk"
