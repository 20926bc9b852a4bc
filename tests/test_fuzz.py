"""Property tests: whatever a user hands over, the task readers and config loaders either succeed or raise
their own user error (`DataError` / `ConfigError`), which the CLI prints as one line; never anything else.

This extends the properties already in tests/test_readers.py (random bytes, one column map) and
tests/test_config.py (`load_config` on random text, YAML-ish text, nested dicts, overrides) with:
structured files of hostile cells for every text format and task shape (pair, regression, id and domain
columns, headerless), with the invariants a successful read must keep; non-UTF-8 bytes as config files; and
every one of those shapes for recipes (`load_recipe`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from multidistill.config import TeacherRunConfig, load_config, parse_yaml
from multidistill.data.convert import COLUMN_ORDER
from multidistill.data.readers import read_split
from multidistill.data.tasks import Columns, DataFile, Task
from multidistill.errors import ConfigError, DataError
from multidistill.recipes import load_recipe
from multidistill.recipes.mkd import MKDRecipe
from multidistill.recipes.mtdnn_kd import MTDNNKDRecipe

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One folder for the whole module (hypothesis reruns a test body many times; files are overwritten)."""
    return tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------------------------------------- task files

NAMES = ["text", "text_b", "label", "id", "domain"]
LABEL_LIKE = ["0", "1", "2", "-1", "1.5", " 1 ", "nan", "inf", "1e999", "x", "", "true"]
CELL_CHARS = list("ab01 .,;\"'\\{}[]:#\t") + ["é", "\ufeff", "\x00", "\u2028", "\r", "\n"]
hostile = st.one_of(st.text(alphabet=st.sampled_from(CELL_CHARS), max_size=8), st.sampled_from(LABEL_LIKE + NAMES))
# Files start valid and then get a few mutations (a hostile cell, a ragged row, a stray byte), so most of them
# get past parsing and the converter's checks are exercised too.
GOOD = {"text": st.sampled_from(["good film", "a b", "x"]), "text_b": st.sampled_from(["bad film", "y"]),
        "label": st.sampled_from(["0", "1", "2"]), "id": st.text(alphabet="abcdefgh", min_size=2, max_size=4),
        "domain": st.sampled_from(["books", "dvd", ""])}
rows = st.lists(st.fixed_dictionaries(GOOD), min_size=1, max_size=6)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | hostile,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile, inner, max_size=3),
                           max_leaves=6)


@st.composite
def task_shapes(draw) -> dict:
    """A one-split task over file ``f.<format>`` with a random shape and column map."""
    fmt = draw(st.sampled_from(["tsv", "csv", "jsonl"]))
    header = fmt == "jsonl" or draw(st.booleans())
    pair, with_id, with_domain = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    regression = draw(st.booleans())
    used = ["text", "text_b" if pair else None, "label", "id" if with_id else None, "domain" if with_domain else None]
    columns = {field: (name if header else NAMES.index(name)) for field, name in
               zip(("text_a", "text_b", "label", "id", "domain"), used, strict=True) if name is not None}
    data_file = DataFile(path=f"f.{fmt}", format=fmt, header=header, columns=Columns(**columns))
    task = Task(name="fuzz", type="regression" if regression else "classification",
                labels=[] if regression else ["0", "1", "2"], pair=pair, files={"train": data_file})
    return {"task": task, "fmt": fmt, "header": header}


def _delimited(draw, shape: dict) -> bytes:
    table = [[row[name] for name in NAMES] for row in draw(rows)]
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(table) - 1))
        if draw(st.booleans()):  # a hostile cell
            if table[at]:  # an earlier change may have shortened (or emptied) this row
                table[at][draw(st.integers(0, len(table[at]) - 1))] = draw(hostile)
        else:  # a ragged row
            table[at] = table[at][: draw(st.integers(0, len(NAMES)))] + draw(st.lists(hostile, max_size=2))
    if shape["header"] and draw(st.integers(0, 5)):
        table.insert(0, list(NAMES))  # the right header most of the time
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    if shape["fmt"] == "csv" and draw(st.booleans()):  # properly quoted CSV (cells may hold , " and newlines)
        out = io.StringIO()
        csv.writer(out, lineterminator=newline).writerows(table)
        return out.getvalue().encode("utf-8")
    sep = "\t" if shape["fmt"] == "tsv" else ","
    return newline.join(sep.join(row) for row in table).encode("utf-8")


def _jsonl(draw) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return "\n".join(draw(st.lists(st.one_of(json_values.map(json.dumps), hostile), max_size=6))).encode()
    records = draw(rows)
    for _ in range(draw(st.integers(0, 2))):  # drop or retype one field of one record
        record = records[draw(st.integers(0, len(records) - 1))]
        key = draw(st.sampled_from(NAMES))
        if draw(st.booleans()):
            record.pop(key, None)
        else:
            record[key] = draw(json_values)
    return "\n".join(json.dumps(record) for record in records).encode("utf-8")


@st.composite
def task_files(draw) -> tuple[dict, bytes]:
    shape = draw(task_shapes())
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(max_size=200))
    else:
        body = _jsonl(draw) if shape["fmt"] == "jsonl" else _delimited(draw, shape)
    if body and draw(st.integers(0, 5)) == 0:  # bytes that are not UTF-8 (or a BOM), somewhere
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9", b"\xef\xbb\xbf"])) + body[at:]
    return shape, body


@FUZZ
@given(case=task_files(), max_examples=st.none() | st.integers(1, 4))
def test_any_task_file_reads_or_raises_data_error(folder: Path, case, max_examples) -> None:
    shape, body = case
    task: Task = shape["task"]
    (folder / f"f.{shape['fmt']}").write_bytes(body)
    try:
        ds = read_split(task, "train", folder, max_examples=max_examples)
    except DataError as exc:
        assert str(exc)
        event("DataError")
        return
    event("read")
    # A successful read keeps every promise of read_split.
    assert ds.column_names == list(COLUMN_ORDER)
    assert 1 <= len(ds) <= (max_examples or len(ds))
    rows = ds[:]
    assert len(set(rows["id"])) == len(ds) and all(rows["id"])
    assert all(text.strip() for text in rows["text_a"])
    assert all(text.strip() for text in rows["text_b"]) if task.pair else set(rows["text_b"]) == {""}
    if task.type == "regression":
        assert all(math.isfinite(score) for score in rows["label"])
    else:
        assert set(rows["label"]) <= set(range(len(task.labels)))


# ------------------------------------------------------------------------------------------------ configs

RUN = {"output_dir": "runs/x", "model": {"name_or_path": "some/model"}, "data": {"tasks": ["sst2", "mrpc"]}}
MODEL = {"name_or_path": "some/model"}
RECIPES = {
    "mtdnn_kd": {"recipe": "mtdnn_kd", "output_dir": "runs/r", "data": {"tasks": ["sst2"]},
                 "teacher": {"model": MODEL, "seeds": [1, 2]}, "student": {"model": MODEL}},
    "mkd": {"recipe": "mkd", "output_dir": "runs/r", "data": {"tasks": ["sst2", "stsb"]},
            "teacher": {"model": MODEL}, "student": {"model": {**MODEL, "architecture": "bilstm"}},
            "finetune": {"enabled": True}},
}
YAMLISH = st.text(alphabet=st.sampled_from(list("abtr_.:-[]{},#'\"|>&*!? \n\t01e%@`")), max_size=120)
primitives = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
keys = st.sampled_from(["recipe", "output_dir", "data", "teacher", "student", "model", "train", "seeds",
                        "model_dirs", "objective", "augment", "finetune", "enabled", "tasks", "name_or_path",
                        "classification", "loss", "weight", "architecture", "bilstm", "p_mask"]) | st.text(max_size=6)
nested = st.recursive(primitives, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(keys, children, max_size=4), max_leaves=20)
overrides = st.lists(st.text(alphabet=st.sampled_from(list("studenmo.=-[]{},:1e ")), max_size=20), max_size=3)


def _write(folder: Path, content: str | bytes | dict, name: str) -> Path:
    path = folder / name
    if isinstance(content, dict):
        content = yaml.safe_dump(content, sort_keys=False)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _unhashable_recipe_name(path: Path) -> bool:
    """The one known crash (see test_recipe_name_that_is_not_a_string): `recipe:` holding a list or mapping."""
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except Exception:  # the loaders turn every parse failure into a ConfigError; nothing to exclude
        return False
    return isinstance(raw, dict) and isinstance(raw.get("recipe"), (list, dict))


def _recipe_or_config_error(path: Path, overrides: list[str] | None = None) -> None:
    try:
        recipe = load_recipe(path, overrides)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(recipe, (MTDNNKDRecipe, MKDRecipe))


def _config_or_config_error(path: Path) -> None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(config, TeacherRunConfig)


def test_base_recipes_are_valid(folder: Path) -> None:
    for name, recipe in RECIPES.items():
        assert load_recipe(_write(folder, recipe, f"{name}.yaml")).recipe == name


@FUZZ
@given(body=st.binary(max_size=300))
def test_any_bytes_as_config_or_recipe_raise_only_config_error(folder: Path, body: bytes) -> None:
    path = _write(folder, body, "bytes.yaml")
    _config_or_config_error(path)
    _recipe_or_config_error(path)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_as_recipe_raises_only_config_error(folder: Path, text: str) -> None:
    _recipe_or_config_error(_write(folder, text, "text.yaml"))


@FUZZ
@given(base=st.sampled_from(sorted(RECIPES)), text=YAMLISH)
def test_yamlish_text_after_a_valid_recipe_raises_only_config_error(folder: Path, base: str, text: str) -> None:
    # Appended text duplicates or extends top-level keys of a valid recipe, so validation often runs deep.
    _recipe_or_config_error(_write(folder, yaml.safe_dump(RECIPES[base], sort_keys=False) + text, "yamlish.yaml"))


@FUZZ
@given(raw=st.dictionaries(keys, nested, max_size=5),
       name=st.sampled_from(["mtdnn_kd", "mkd"]) | st.text(max_size=5) | nested)
def test_arbitrary_nested_dict_as_recipe_raises_only_config_error(folder: Path, raw: dict, name) -> None:
    _recipe_or_config_error(_write(folder, {**raw, "recipe": name}, "nested.yaml"))


@FUZZ
@given(base=st.sampled_from(sorted(RECIPES)),
       section=st.sampled_from(["data", "teacher", "student", "signals", "augment", "finetune", "baseline"]),
       subtree=st.dictionaries(keys, nested, max_size=4) | nested, sets=overrides)
def test_valid_recipe_with_a_mutated_section_raises_only_config_error(folder: Path, base: str, section: str,
                                                                      subtree, sets: list[str]) -> None:
    recipe = dict(RECIPES[base])
    original = recipe.get(section)
    recipe[section] = {**original, **subtree} if isinstance(original, dict) and isinstance(subtree, dict) else subtree
    _recipe_or_config_error(_write(folder, recipe, "mutated.yaml"), sets)


@FUZZ
@given(section=st.sampled_from(["model", "data", "train", "objective", "signals", "online_teachers"]),
       value=nested)
def test_run_config_with_any_value_in_a_section_raises_only_config_error(folder: Path, section: str, value) -> None:
    # test_config.py mutates sections with dicts; here a section may also be a scalar, a list or null.
    _config_or_config_error(_write(folder, {**RUN, section: value}, "section.yaml"))


def test_recipe_name_that_is_not_a_string(folder: Path) -> None:
    with pytest.raises(ConfigError, match="key 'recipe'"):
        load_recipe(_write(folder, {**RECIPES["mkd"], "recipe": ["mkd"]}, "listname.yaml"))
