"""Tests for `multidistill.config`: shipped configs, strict keys, `--set` overrides and YAML errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from multidistill.config import (
    DataConfig,
    TeacherRunConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    read_yaml,
)
from multidistill.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

BASE = {
    "output_dir": "runs/x",
    "model": {"name_or_path": "some/model"},
    "data": {"tasks": ["sst2", "mrpc"]},
}


def write_yaml(folder: Path, content: dict | str, name: str = "config.yaml") -> Path:
    path = folder / name
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def with_section(section: str, **values) -> dict:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def config_error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# ---------------------------------------------------------------- shipped configs


def test_configs_folder_is_not_empty() -> None:
    assert SHIPPED_CONFIGS, "no configs/*.yaml found"


RUN_CONFIGS = [p for p in SHIPPED_CONFIGS if "recipe" not in read_yaml(p)]
RECIPE_CONFIGS = [p for p in SHIPPED_CONFIGS if "recipe" in read_yaml(p)]


@pytest.mark.parametrize("path", RECIPE_CONFIGS, ids=[p.name for p in RECIPE_CONFIGS])
def test_shipped_recipe_loads(path: Path) -> None:
    from multidistill.recipes import load_recipe

    recipe = load_recipe(path)
    raw = read_yaml(path)
    assert recipe.recipe == raw["recipe"] and recipe.data.task_names
    assert set(raw) == recipe.model_fields_set
    for section in ("teacher", "student"):
        assert set(raw[section]) <= getattr(recipe, section).model_fields_set | {"objective"}, section


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[p.name for p in RUN_CONFIGS])
def test_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, TeacherRunConfig)
    assert cfg.data.task_names  # every shipped config trains on something
    # Every key set in the file survives into the object (nothing silently dropped or renamed).
    raw = read_yaml(path)
    assert cfg.output_dir == raw["output_dir"]
    assert set(raw) == cfg.model_fields_set
    for section in ("model", "data", "train"):
        assert set(raw.get(section) or {}) == getattr(cfg, section).model_fields_set, section


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = load_config(write_yaml(tmp_path, BASE))
    assert cfg.kind == "teacher"
    assert cfg.train == TrainConfig()
    assert cfg.data.task_names == ["sst2", "mrpc"]
    assert cfg.model.pooling == "cls"


# ---------------------------------------------------------------- strict keys and types


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    message = config_error(write_yaml(tmp_path, {**BASE, "outptu_dirr": "x"}))
    assert "'outptu_dirr'" in message and "unknown key" in message
    assert "config.yaml" in message


@pytest.mark.parametrize(("section", "key"), [("train", "lrr"), ("model", "poolin"), ("data", "task")])
def test_unknown_nested_key_names_dotted_path(tmp_path: Path, section: str, key: str) -> None:
    message = config_error(write_yaml(tmp_path, with_section(section, **{key: 1})))
    assert f"'{section}.{key}'" in message
    assert "unknown key" in message


def test_unknown_key_deep_inside_a_task_spec(tmp_path: Path) -> None:
    spec = {"name": "t", "labels": ["0", "1"],
            "files": {"train": {"path": "t.tsv", "columns": {"text_a": "s", "lable": "y"}}}}
    message = config_error(write_yaml(tmp_path, with_section("data", task_specs=[spec])))
    assert "data.task_specs.0.files.train.columns.lable" in message


@pytest.mark.parametrize("value", ["abc", -1, 0, 2.5])
def test_bad_batch_size_names_the_key(tmp_path: Path, value) -> None:
    message = config_error(write_yaml(tmp_path, with_section("train", batch_size=value)))
    assert "'train.batch_size'" in message
    assert message.count("key '") == 1  # only the bad key is reported


@pytest.mark.parametrize(("section", "key", "value"), [
    ("train", "lr", 0), ("train", "warmup_ratio", 1.5), ("train", "sampling", "random"),
    ("train", "temperature_tau", 0), ("model", "dropout", 1.0), ("model", "pooling", "max"),
    ("data", "eval_split", "train"),
])
def test_out_of_range_values_are_rejected(tmp_path: Path, section: str, key: str, value) -> None:
    assert f"'{section}.{key}'" in config_error(write_yaml(tmp_path, with_section(section, **{key: value})))


def test_missing_required_sections_are_each_named(tmp_path: Path) -> None:
    message = config_error(write_yaml(tmp_path, {"output_dir": "x"}))
    assert "'model'" in message and "'data'" in message and "Field required" in message


def test_bf16_and_fp16_together_rejected(tmp_path: Path) -> None:
    message = config_error(write_yaml(tmp_path, with_section("train", bf16=True, fp16=True)))
    assert "bf16" in message and "fp16" in message and "'train'" in message
    # Either one alone is fine.
    assert load_config(write_yaml(tmp_path, with_section("train", bf16=True))).train.bf16 is True
    assert load_config(write_yaml(tmp_path, with_section("train", fp16=True))).train.fp16 is True


# ---------------------------------------------------------------- data.tasks shorthand


def test_tasks_comma_string_shorthand(tmp_path: Path) -> None:
    cfg = load_config(write_yaml(tmp_path, with_section("data", tasks=" sst2, mrpc ,cola,")))
    assert cfg.data.task_names == ["sst2", "mrpc", "cola"]


def test_tasks_mixed_names_and_refs() -> None:
    data = DataConfig.model_validate({"tasks": ["sst2", {"name": "mrpc", "max_examples": 10}]})
    assert data.task_names == ["sst2", "mrpc"]
    assert [ref.max_examples for ref in data.tasks] == [None, 10]


@pytest.mark.parametrize("tasks", ["", " , ", []])
def test_empty_task_list_rejected(tmp_path: Path, tasks) -> None:
    assert "'data.tasks'" in config_error(write_yaml(tmp_path, with_section("data", tasks=tasks)))


# ---------------------------------------------------------------- --set overrides


def test_override_value_types() -> None:
    overrides = ["train.lr=3.0e-5", "data.tasks=[a,b]", "train.bf16=true", "train.batch_size=16",
                 "model.name_or_path=x/y", "train.eval_every_steps=null"]
    raw = apply_overrides({}, overrides)
    assert raw == {"train": {"lr": 3e-5, "bf16": True, "batch_size": 16, "eval_every_steps": None},
                   "data": {"tasks": ["a", "b"]}, "model": {"name_or_path": "x/y"}}
    assert type(raw["train"]["lr"]) is float and type(raw["train"]["batch_size"]) is int


def test_overrides_through_load_config(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, BASE)
    cfg = load_config(path, ["train.lr=3e-5", "data.tasks=[a,b]", "train.bf16=true"])
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == pytest.approx(3e-5)
    assert cfg.data.task_names == ["a", "b"]
    assert cfg.train.bf16 is True
    # The file itself is untouched by overrides.
    assert load_config(path).train.lr == TrainConfig().lr


def test_an_override_changes_only_its_own_path_when_the_yaml_aliases_a_section(tmp_path: Path) -> None:
    """YAML anchors load as one shared object: a --set on one alias must not reach the others."""
    from multidistill.recipes.config import load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text("recipe: mtdnn_kd\noutput_dir: runs/x\ndata: {tasks: [sst2]}\n"
                    "teacher: {model: &m {name_or_path: some/model}, train: &t {lr: 1.0e-4, epochs: 2}}\n"
                    "student: {model: *m, train: *t}\n")
    recipe = load_recipe(path, ["student.train.lr=0.5", "student.model.name_or_path=other/model"])
    assert recipe.student.train.lr == 0.5 and recipe.teacher.train.lr == 1e-4
    assert recipe.student.model.name_or_path == "other/model"
    assert recipe.teacher.model.name_or_path == "some/model"
    assert recipe.teacher.train.epochs == recipe.student.train.epochs == 2  # the alias still gives both its values


def test_recursive_and_exploding_aliases_are_refused(tmp_path: Path) -> None:
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("output_dir: x\na: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="recursive alias"):
        read_yaml(recursive)
    bomb = tmp_path / "bomb.yaml"  # 10 aliases of 10 aliases ... of a 10-item list: 10^6 values
    lines = ["l0: &l0 [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 6)]
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="expand to more than 100,000 values"):
        read_yaml(bomb)


def test_override_exponent_without_dot_is_a_float() -> None:
    raw = apply_overrides({}, ["model.backbone_config.layer_norm_eps=1e-12"])
    assert isinstance(raw["model"]["backbone_config"]["layer_norm_eps"], float)


def test_override_replaces_file_value(tmp_path: Path) -> None:
    cfg = load_config(write_yaml(tmp_path, with_section("train", seed=1)), ["train.seed=3"])
    assert cfg.train.seed == 3


def test_an_override_key_given_twice_is_refused_naming_both(tmp_path: Path) -> None:
    """The last one won silently (a YAML key given twice is refused, naming both lines)."""
    path = write_yaml(tmp_path, with_section("train", seed=1))
    with pytest.raises(ConfigError, match=r"^--set ' train.seed=3': key 'train.seed' is given twice \(first by "
                                          r"--set 'train.seed=2'\); keep one of them$"):
        load_config(path, ["train.seed=2", "train.lr=0.1", " train.seed=3"])
    with pytest.raises(ConfigError, match="key 'train.seed' is given twice"):
        load_config(path, ["train.seed=2", "train.seed=2"])  # even with the same value: one of them is a slip
    # A section and a key inside it are two keys: merged in order, as before.
    cfg = load_config(path, ["train={seed: 2, lr: 0.1}", "train.seed=3"])
    assert (cfg.train.seed, cfg.train.lr) == (3, 0.1)
    with pytest.raises(ConfigError, match="key 'student.train.lr' is given twice"):
        from multidistill.recipes.config import load_recipe

        load_recipe(REPO / "configs" / "mtdnn_kd.yaml", ["student.train.lr=0.1", "student.train.lr=0.2"])


def test_override_creates_nested_sections() -> None:
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}
    # A section that is present but null (`train:` with nothing under it) is replaced by a mapping.
    assert apply_overrides({"train": None}, ["train.lr=0.5"]) == {"train": {"lr": 0.5}}
    # Existing siblings are kept.
    assert apply_overrides({"train": {"seed": 1}}, ["train.lr=0.5"]) == {"train": {"seed": 1, "lr": 0.5}}


def test_override_creates_missing_section_in_config(tmp_path: Path) -> None:
    cfg = load_config(write_yaml(tmp_path, BASE), ["model.backbone_config.model_type=bert",
                                                    "model.backbone_config.hidden_size=64"])
    assert cfg.model.backbone_config == {"model_type": "bert", "hidden_size": 64}


def test_override_value_keeps_later_equals_signs() -> None:
    assert apply_overrides({}, ["model.name_or_path=a=b"]) == {"model": {"name_or_path": "a=b"}}


def test_override_empty_value_is_empty_string() -> None:
    assert apply_overrides({}, ["output_dir="]) == {"output_dir": ""}


@pytest.mark.parametrize("item", ["foo", "train.lr", "=1", " =1"])
def test_override_without_key_or_equals_rejected(item: str) -> None:
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides({}, [item])


def test_an_override_that_is_not_a_str_is_a_type_error_naming_it(tmp_path: Path) -> None:
    """A (key, value) pair was an AttributeError from inside the parser."""
    with pytest.raises(TypeError, match=r'overrides\[1\] is a tuple .*each override is one "key.path=value" str'):
        load_config(write_yaml(tmp_path, BASE), ["train.seed=1", ("train.lr", 1e-3)])


@pytest.mark.parametrize("joined", ["train.lr=1e-3,train.epochs=2", "train.lr=1e-3 train.epochs=2"])
def test_several_overrides_in_one_str_get_the_one_item_each_hint(tmp_path: Path, joined: str) -> None:
    with pytest.raises(ConfigError, match=r"key 'train.lr': .*\(from --set\); '.*' holds several overrides in one: "
                                          r"give each its own --set, or in Python its own list item: "
                                          r"\['train.lr=1e-3', 'train.epochs=2'\]"):
        load_config(write_yaml(tmp_path, BASE), joined)
    assert "several overrides" not in config_error(write_yaml(tmp_path, BASE), ["train.lr=a,b"])


@pytest.mark.parametrize("joined", ["output_dir=runs/a,train.epochs=2", "output_dir=runs/a train.epochs=2",
                                    "output_dir=runs/a, train.epochs=2,model.pooling=mean"])
def test_several_overrides_joined_after_a_str_key_are_refused_not_taken_as_its_value(tmp_path: Path,
                                                                                      joined: str) -> None:
    """A str key takes any text, so `output_dir=runs/a,train.epochs=2` validated: output_dir became the whole text
    and train.epochs kept its value, silently. Refused when every later item names a field; a value whose later
    items name none (a path with `=` in it) is kept as written."""
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(tmp_path, BASE), joined)
    said = str(info.value)
    assert f"--set '{joined}': holds several overrides in one, so key 'output_dir' would be set to the whole " in said
    assert "give each its own --set" in said and "'output_dir=runs/a'" in said and "'train.epochs=2'" in said
    assert load_config(write_yaml(tmp_path, BASE), "output_dir=runs/a,b=c").output_dir == "runs/a,b=c"
    assert load_config(write_yaml(tmp_path, BASE), "output_dir=runs/x=1").output_dir == "runs/x=1"
    assert "quote it in YAML" in said
    meant = "sweeps/lr=1e-3,train.epochs=3"  # a Hydra-style folder name: quoted, the text is meant
    for quoted in (f'output_dir="{meant}"', f"output_dir='{meant}'"):
        assert load_config(write_yaml(tmp_path, BASE), quoted).output_dir == meant


def test_override_through_scalar_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides({"train": {"lr": 0.1}}, ["train.lr.x=1"])
    assert "'train.lr' is not a section" in str(info.value)


def test_override_through_list_rejected() -> None:
    with pytest.raises(ConfigError, match=r"'data.tasks' is a list, whose items cannot be set one by one; give the "
                                          r"whole list: --set data.tasks=\[...\]"):
        apply_overrides({"data": {"tasks": ["a"]}}, ["data.tasks.0.max_examples=1"])
    with pytest.raises(ConfigError, match="'data.output' is not a section"):
        apply_overrides({"data": {"output": "x"}}, ["data.output.x=1"])


def test_a_mapping_given_with_set_is_merged_into_the_section() -> None:
    """`--set 'teacher.train={lr: 2e-4}'` replaced the whole section: the file's epochs and batch size went back to
    their defaults without a word."""
    raw = {"teacher": {"train": {"epochs": 5, "batch_size": 16, "lr": 1e-3}, "objective": {"a": {"b": 1, "c": 2}}}}
    got = apply_overrides(raw, ["teacher.train={lr: 2e-4}", "teacher.objective={a: {b: 3}, d: [1]}"])
    assert got["teacher"]["train"] == {"epochs": 5, "batch_size": 16, "lr": 2e-4}
    assert got["teacher"]["objective"] == {"a": {"b": 3, "c": 2}, "d": [1]}
    assert apply_overrides({"x": None}, ["x={a: 1}"]) == {"x": {"a": 1}}
    assert apply_overrides({"x": {"a": 1}}, ["x=null"]) == {"x": None}  # a section is still removed with null
    assert apply_overrides({"x": {"a": 1}}, ["x={}"]) == {"x": {}}  # and emptied with {} (a review found a no-op)


@pytest.mark.parametrize(("override", "message"), [
    ("train.seed=no", r"key 'train': Value error, 'seed' takes a number, not false \(YAML reads an unquoted"),
    ("train.lr=yes", r"'lr' takes a number, not true"),
    ("train.batch_size=true", r"'batch_size' takes a number, not true"),
    ("train.max_examples_per_task=on", r"'max_examples_per_task' takes a number, not true"),
    ("data.tasks=[no]", r"key 'data.tasks.0.*YAML read an unquoted yes/no/on/off/true/false as false: quote it"),
    ("output_dir=42", r"key 'output_dir'.*YAML read the unquoted value as the number 42: quote it.*\(from --set\)"),
    ("output_dir=007", r"--set 'output_dir=007': the unquoted value 007 is a YAML 1.1 octal number \(7\)"),
    ("train.batch_size=32.5", r"key 'train.batch_size': Input should be a valid integer, got a number with a "
                              r"fractional part \(from --set\)$"),
    ("output_dir=2024-01-01", r"YAML read the unquoted value as the date 2024-01-01: quote it"),
    ("train.lrr=0.1", r"key 'train.lrr': unknown key \(check spelling\); did you mean 'lr'\? \(from --set\)"),
    ("trian.lr=0.1", r"key 'trian': unknown key \(check spelling\); did you mean 'train'\?"),
    ("lr=0.1", r"key 'lr': unknown key \(check spelling\); did you mean 'train.lr'\? \(from --set\)"),
])
def test_config_errors_say_what_yaml_read_and_where_it_came_from(tiny_run, override, message) -> None:
    _, write = tiny_run
    with pytest.raises(ConfigError, match=message):
        load_config(write(), [override])


def test_a_comma_list_for_a_list_key_gets_the_bracket_hint() -> None:
    from multidistill.recipes.config import load_recipe

    with pytest.raises(ConfigError, match=r"key 'teacher.seeds': Input should be a valid list; write a list in "
                                          r"brackets: \[1,2\] \(from --set\)"):
        load_recipe(REPO / "configs/mtdnn_kd.yaml", ["teacher.seeds='1,2'"])
    with pytest.raises(ConfigError, match=r"key 'student.lr': unknown key \(check spelling\); did you mean "
                                          r"'student.train.lr'\?"):
        load_recipe(REPO / "configs/mtdnn_kd.yaml", ["student.lr=3e-5"])


@pytest.mark.parametrize(("text", "message"), [
    ("seed: 017", r"line 1 invalid YAML: the unquoted value 017 is a YAML 1.1 octal number \(15\); write the number "
                  r"in decimal, or quote it"),
    ("epochs: 1:30", r"the unquoted value 1:30 is a YAML 1.1 base-60 number \(90\)"),
])
def test_yaml_11_octal_and_base_60_integers_are_refused(tmp_path, text, message) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        read_yaml(path)
    assert read_yaml(_write(tmp_path, "seed: 17\nepochs: 0x10\nx: 0\ny: -5\n")) == {"seed": 17, "epochs": 16, "x": 0,
                                                                                  "y": -5}


def _write(tmp_path, text: str):
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text", ["1e5", "1e-5", ".5e3", "017", "1:30", "no", "2024-01-01", "0x10", "3.0"])
def test_a_recorded_config_loads_back_with_text_that_looks_like_numbers(tiny_run, tmp_path, text) -> None:
    """yaml.safe_dump left `1e5` unquoted and the project's loader read it back as a float: a run whose folder was
    named so could not be resumed from its own config.yaml."""
    from multidistill.training.run_dir import save_config

    _, write = tiny_run
    config = load_config(write(), [f"output_dir='{text}'"])
    assert config.output_dir == text
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_override_invalid_yaml_value_rejected() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        apply_overrides({}, ["data.tasks=[a, b"])


@pytest.mark.parametrize("word", ["@teacher", "@teacher/sub", "`x", "%x", "|x", ">x", "*x"])
def test_override_one_word_yaml_cannot_read_is_that_word(word: str) -> None:
    """YAML reserves '@' and '`' (and reads '|', '%', '*' as syntax): unquoted, `--set
    student.model.name_or_path=@teacher`, the documented way to name the teacher, was a raw scanner error."""
    assert apply_overrides({}, [f"student.model.name_or_path={word}"]) == {"student": {"model": {"name_or_path": word}}}
    assert apply_overrides({}, [f"a=\"{word}\""]) == {"a": word}  # quoted, as before


def test_override_at_teacher_names_the_teacher_in_a_recipe() -> None:
    from multidistill.recipes import load_recipe

    recipe = load_recipe(REPO / "configs" / "mkd_bilstm.yaml", ["student.model.name_or_path=@teacher"])
    assert recipe.student.model.name_or_path == "@teacher"


@pytest.mark.parametrize(("item", "hint"), [
    ("teacher.model_dirs=[@teacher]", r"""--set 'teacher.model_dirs="\[@teacher\]"'.*its own quotes: \["@teacher"\]"""),
    ("a=x: @y", r"""quote the value in YAML \(inside the shell's own quotes\): --set 'a="x: @y"'"""),
    ("a=\"x", r"quote the value in YAML \(inside the shell's own quotes\), escaping its quotes"),
    ("train.seed=2021-02-30", r"day is out of range.*\n.*--set 'train.seed=\"2021-02-30\"'"),
])
def test_override_yaml_cannot_read_suggests_quoting(item: str, hint: str) -> None:
    """More than one word, or a value YAML reads but refuses (a date, a tag), stays an error that says how to
    quote it; a YAML structure is not guessed at."""
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        apply_overrides({}, [item])
    assert info.match(hint)


def test_override_unknown_key_reported_with_path(tmp_path: Path) -> None:
    assert "'train.lrr'" in config_error(write_yaml(tmp_path, BASE), ["train.lrr=1"])


def test_override_bad_value_reported_with_path(tmp_path: Path) -> None:
    assert "'train.batch_size'" in config_error(write_yaml(tmp_path, BASE), ["train.batch_size=-1"])


# ---------------------------------------------------------------- file-level errors


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "output_dir: x\nmodel:\n  name_or_path: m\ndata:\n  tasks: [sst2, mrpc\n"
                                "train:\n  lr: 1\n", name="broken.yaml")
    message = config_error(path)
    assert "broken.yaml" in message and "invalid YAML" in message
    assert "line 6" in message  # the unclosed '[' of line 5 is detected on line 6


def test_tab_indentation_error_names_line(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "output_dir: x\nmodel:\n\tname_or_path: m\n", name="tabs.yaml")
    message = config_error(path)
    assert "tabs.yaml" in message and "line 3" in message


@pytest.mark.parametrize("content", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_top_level_rejected(tmp_path: Path, content: str) -> None:
    message = config_error(write_yaml(tmp_path, content))
    assert "top level must be a mapping" in message and "config.yaml" in message


def test_empty_file_reports_required_keys(tmp_path: Path) -> None:
    message = config_error(write_yaml(tmp_path, "# only a comment\n"))
    assert "'output_dir'" in message


def test_missing_file_rejected(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(missing)
    assert "nope.yaml" in str(info.value)


def test_directory_instead_of_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder; give the YAML file"):
        read_yaml(tmp_path)


def test_non_utf8_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("output_dir: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


@pytest.mark.parametrize("content", ["train: {seed: 2021-02-30}\n", "train: {lr: !!float abc}\n",
                                     "train: {lr: !!float ''}\n", "train: {seed: !!int x}\n"])
def test_yaml_constructor_errors_become_config_errors(tmp_path: Path, content: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write_yaml(tmp_path, yaml.safe_dump(BASE) + content))


@pytest.mark.parametrize("item", ["train.seed=2021-02-30", "train.lr=!!float x"])
def test_override_constructor_errors_become_config_errors(item: str) -> None:
    with pytest.raises(ConfigError):
        apply_overrides({}, [item])


def test_deeply_nested_yaml_becomes_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(write_yaml(tmp_path, "output_dir: " + "[" * 5000 + "]" * 5000 + "\n"))


# ---------------------------------------------------------------- properties: never a non-ConfigError


def _load_or_config_error(path: Path, overrides: list[str] | None = None) -> None:
    try:
        cfg = load_config(path, overrides)
    except ConfigError as exc:
        assert str(exc)  # always a message to show the user
    else:
        assert isinstance(cfg, TeacherRunConfig)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_loads_or_raises_config_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("prop") / "any.yaml"
    path.write_text(text, encoding="utf-8")
    _load_or_config_error(path)


# Characters that matter to YAML, mixed with letters, so generated text is often almost-valid YAML.
yamlish_text = st.text(alphabet=st.sampled_from(list("abtr_.:-[]{},#'\"|>&*!? \n\t01e")), max_size=120)


@settings(max_examples=100, deadline=None)
@given(text=yamlish_text)
def test_yamlish_text_loads_or_raises_config_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("prop") / "yamlish.yaml"
    path.write_text(yaml.safe_dump(BASE) + text, encoding="utf-8")
    _load_or_config_error(path)


primitives = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
keys = st.sampled_from(["output_dir", "model", "data", "train", "tasks", "name", "lr", "batch_size",
                        "name_or_path", "task_specs", "bf16", "labels"]) | st.text(max_size=8)
nested = st.recursive(primitives, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(keys, children, max_size=4), max_leaves=20)


@settings(max_examples=100, deadline=None)
@given(raw=st.dictionaries(keys, nested, max_size=5))
def test_arbitrary_nested_dict_loads_or_raises_config_error(tmp_path_factory, raw: dict) -> None:
    path = tmp_path_factory.mktemp("prop") / "nested.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    _load_or_config_error(path)


@settings(max_examples=100, deadline=None)
@given(section=st.sampled_from(["model", "data", "train"]), subtree=st.dictionaries(keys, nested, max_size=4))
def test_valid_config_with_arbitrary_section_loads_or_raises_config_error(tmp_path_factory, section: str,
                                                                          subtree: dict) -> None:
    # Keep the rest of the config valid so validation reaches deep into the mutated section.
    cfg = {**BASE, section: {**BASE.get(section, {}), **subtree}}
    path = tmp_path_factory.mktemp("prop") / "mutated.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    _load_or_config_error(path)


@settings(max_examples=100, deadline=None)
@given(overrides=st.lists(st.text(alphabet=st.sampled_from(list("trainlr.=-[]{},:1e ")), max_size=20),
                          max_size=3))
def test_arbitrary_overrides_load_or_raise_config_error(tmp_path_factory, overrides: list[str]) -> None:
    path = tmp_path_factory.mktemp("prop") / "base.yaml"
    path.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    _load_or_config_error(path, overrides)


def test_nan_lr_is_rejected(tmp_path: Path) -> None:
    # A NaN learning rate must not slip through the gt=0 bound.
    assert "'train.lr'" in config_error(write_yaml(tmp_path, with_section("train", lr=math.nan)))


def test_a_section_given_in_part_keeps_its_fields_default() -> None:
    """A recipe section whose default is not the bare class (MKD's finetune.train: 1 epoch; MITKD's general.train:
    select lowest_loss) keeps those values when the YAML gives only some keys; a bad key is still named."""
    from pydantic import ValidationError

    from multidistill.recipes.config import FinetuneSection
    from multidistill.recipes.mitkd import GeneralStudentSection

    assert FinetuneSection.model_validate({"train": {"lr": 1e-4}}).train.epochs == 1
    general = GeneralStudentSection.model_validate({"model": {"name_or_path": "x"}, "train": {"epochs": 2}}).train
    assert (general.epochs, general.select) == (2, "lowest_loss")
    with pytest.raises(ValidationError, match="train.epochs"):
        FinetuneSection.model_validate({"train": {"epochs": 0}})


@pytest.mark.parametrize("term, match", [
    ({"loss": "soft_ce", "params": {"temperature": 0}}, "temperature must be a finite number > 0"),
    ({"loss": "soft_ce", "params": {"temperature": float("nan")}}, "temperature must be a finite number > 0"),
    ({"loss": "soft_kl", "params": {"temperature": float("inf")}}, "temperature must be a finite number > 0"),
    ({"loss": "soft_ce", "params": {"temperature": "2"}}, "temperature must be a finite number > 0"),
    ({"loss": "soft_ce", "params": {"teacher_is_probs": "no"}}, "teacher_is_probs must be true or false"),
    ({"loss": "soft_ce", "params": {"temprature": 2}}, "unexpected keyword argument 'temprature'"),
    ({"loss": "hard", "params": {"temperature": 2}}, "unexpected keyword argument 'temperature'"),
])
def test_loss_parameters_are_checked_with_the_config_and_named_by_key(tmp_path: Path, term, match) -> None:
    """They were found only when the stage that trains with them started (after teachers and signals), or never
    (NaN diverged at step 1; a truthy string passed as true)."""
    raw = {**BASE, "kind": "distill", "objective": {"classification": [term]}}
    with pytest.raises(ConfigError, match=match) as info:
        load_config(write_yaml(tmp_path, raw))
    assert "key 'objective.classification.0'" in str(info.value)


def test_an_objective_whose_terms_all_weigh_nothing_is_refused(tmp_path: Path) -> None:
    raw = {**BASE, "objective": {"regression": [{"loss": "hard", "weight": 0}]}}
    with pytest.raises(ConfigError, match="every term of objective.regression has weight 0"):
        load_config(write_yaml(tmp_path, raw))


@pytest.mark.parametrize("objective, match", [
    ({"regression": [{"loss": "soft_ce"}]}, "objective.regression.0: loss 'soft_ce' is for classification tasks"),
    ({"classification": [{"loss": "hard"}, {"loss": "score_mse"}]},
     "objective.classification.1: loss 'score_mse' is for regression tasks"),
])
def test_a_loss_for_the_other_task_type_is_refused(tmp_path: Path, objective, match) -> None:
    """soft_ce on a one-score regression head was always 0; score_mse on a classifier compared logits with
    probabilities."""
    with pytest.raises(ConfigError, match=match):
        load_config(write_yaml(tmp_path, {**BASE, "objective": objective}))


@pytest.mark.parametrize("extra, match", [({"student_layers": [0]}, "student_layers apply to a Transformer"),
                                          ({"pooling": "mean"}, "pooling apply to a Transformer"),
                                          # it only turned bilstm.init_embeddings off, without a word
                                          ({"backbone_config": {"hidden_size": 16}},
                                           "key 'model'.*backbone_config builds a Transformer encoder.*drop it")])
def test_transformer_settings_on_a_bilstm_student_are_refused(tmp_path: Path, extra, match) -> None:
    """They were accepted and ignored."""
    raw = {**BASE, "model": {"name_or_path": "some/model", "architecture": "bilstm", **extra}}
    with pytest.raises(ConfigError, match=match):
        load_config(write_yaml(tmp_path, raw))


def test_a_task_reference_may_be_a_name_alone_wherever_one_is_taken():
    """`finetune.tasks: [sst2]` reads as `[{name: sst2}]`, as data.tasks always did."""
    from multidistill.config import TaskRef
    from multidistill.recipes.mitkd import MITKDFinetune

    assert TaskRef.model_validate("sst2") == TaskRef(name="sst2")
    finetune = MITKDFinetune.model_validate({"tasks": ["sst2", {"name": "mrpc", "max_examples": 5}]})
    assert finetune.tasks == [TaskRef(name="sst2"), TaskRef(name="mrpc", max_examples=5)]


def test_a_setting_of_a_choice_not_made_is_refused():
    """holdout_fraction without select: lowest_loss and temperature_tau without temperature sampling were ignored."""
    from pydantic import ValidationError

    from multidistill.config import TrainConfig

    with pytest.raises(ValidationError, match="holdout_fraction applies to select: lowest_loss"):
        TrainConfig(holdout_fraction=0.2)
    with pytest.raises(ValidationError, match="temperature_tau applies to sampling: temperature"):
        TrainConfig(temperature_tau=0.9)
    assert TrainConfig(select="lowest_loss", holdout_fraction=0.2).holdout_fraction == 0.2
    assert TrainConfig(sampling="temperature", temperature_tau=0.9).temperature_tau == 0.9
    assert TrainConfig.model_validate(TrainConfig().model_dump()) == TrainConfig()  # a recorded config loads


def test_fp16_without_a_gpu_is_refused_before_the_run_folder(tiny_run, tmp_path):

    from multidistill.config import TeacherRunConfig
    from multidistill.errors import ConfigError
    from multidistill.training.run import has_accelerator, train_model

    if has_accelerator():
        pytest.skip("a GPU is here: fp16 applies")
    raw, _ = tiny_run
    with pytest.raises(ConfigError, match="key 'train.fp16': fp16 autocast needs a GPU"):
        train_model(TeacherRunConfig.model_validate({**raw, "train": {**raw["train"], "fp16": True}}))
    assert not (tmp_path / "run").exists()


def test_model_settings_of_the_other_architecture_are_refused():
    """model.dropout on a BiLSTM and a bilstm spec on a Transformer trained exactly as without them."""
    from pydantic import ValidationError

    from multidistill.config import ModelConfig

    with pytest.raises(ValidationError, match="a BiLSTM's is bilstm.dropout"):
        ModelConfig(name_or_path="m", architecture="bilstm", dropout=0.5)
    with pytest.raises(ValidationError, match="bilstm sets a BiLSTM student's sizes"):
        ModelConfig(name_or_path="m", bilstm={"hidden_size": 64})
    bilstm = ModelConfig(name_or_path="m", architecture="bilstm", bilstm={"hidden_size": 64, "dropout": 0.3})
    assert ModelConfig.model_validate(bilstm.model_dump()) == bilstm  # a recorded config loads


def test_a_misspelt_loss_in_a_recipe_is_refused_when_the_config_loads():
    """It passed every check and was refused at the student's stage, after the teachers had trained."""
    from multidistill.recipes.config import load_recipe

    with pytest.raises(ConfigError, match=r"student\.objective\.classification\.0.*unknown loss 'sfot_ce' "
                                          r"\(did you mean 'soft_ce'\?\)"):
        load_recipe(REPO / "configs/mkd_bilstm.yaml", ["student.objective.classification=[{loss: sfot_ce}]"])


_YAMLISH = st.text(alphabet="0123456789eE.:+-_xobnoyesNOTruefals ~=<>!&*#%@`'\"\t", max_size=12)


@settings(max_examples=400, deadline=None, derandomize=True)
@example("1e5")
@example(["1E-5", ".5e3", "+2e10"])
@example({"017": "1:30", "no": "2024-01-01", "0x10": "1_000"})
@given(st.recursive(st.one_of(_YAMLISH, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none()),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(_YAMLISH, inner, max_size=3)), max_leaves=8))
def test_what_dump_yaml_writes_parse_yaml_reads_back_equal(value) -> None:
    """A recorded config (config.yaml, recipe.yaml) must load back as it was, whatever its text looks like to a
    YAML 1.1 reader (`1e5`, `017`, `no`, `1:30`, `2024-01-01`)."""
    import io

    from multidistill.config import dump_yaml, parse_yaml

    stream = io.StringIO()
    dump_yaml({"v": value}, stream)
    assert parse_yaml(stream.getvalue()) == {"v": value}


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from("abc"), st.one_of(st.integers(), st.dictionaries(
    st.sampled_from("xyz"), st.integers(), max_size=3)), max_size=3),
       st.dictionaries(st.sampled_from("abc"), st.one_of(st.integers(), st.dictionaries(
           st.sampled_from("xyz"), st.integers(), max_size=3)), max_size=3))
def test_a_mapping_set_on_a_section_is_a_deep_merge(base, update) -> None:
    import json

    from multidistill.config import apply_overrides

    got = apply_overrides({"s": json.loads(json.dumps(base))}, [f"s={json.dumps(update)}"])["s"]
    if not update:  # `{}` empties the section
        assert got == {}
        return
    for key in set(base) | set(update):
        if key in update and isinstance(update[key], dict) and update[key] and isinstance(base.get(key), dict):
            assert got[key] == {**base[key], **update[key]}
        else:
            assert got[key] == (update[key] if key in update else base[key])


@pytest.mark.parametrize("objective", [
    None,  # the default: hard only
    {"classification": [{"loss": "hard"}, {"loss": "soft_ce"}]},
    # the domain term is there, but the run's tasks have their own terms
    {"classification": [{"loss": "hard"}, {"loss": "domain_adversarial"}],
     "tasks": {"sst2": [{"loss": "hard"}], "mrpc": [{"loss": "hard"}]}},
])
def test_a_domain_branch_that_no_term_trains_is_refused(tmp_path: Path, objective) -> None:
    """It was built, saved untrained, and its domains never checked against the data's."""
    raw = {**BASE, "model": {"name_or_path": "some/model", "domain_branch": {"domains": ["books", "dvd"]}}}
    if objective is not None:
        raw["objective"] = objective
    message = config_error(write_yaml(tmp_path, raw))
    assert "model.domain_branch: no term of the objective reads the domain branch's outputs" in message
    assert "add such a term to the objective, or drop model.domain_branch" in message


@pytest.mark.parametrize("objective", [
    {"classification": [{"loss": "hard"}, {"loss": "domain_adversarial", "weight": 0.5}]},  # Meta-KD's meta-teacher
    {"classification": [{"loss": "hidden_mse"}, {"loss": "transferable_mse", "weight": 0.5}]},  # its stage A
    {"tasks": {"mrpc": [{"loss": "hard"}, {"loss": "domain_adversarial"}]}},  # one task's own terms
])
def test_a_domain_branch_with_a_term_on_its_outputs_loads(tmp_path: Path, objective) -> None:
    raw = {**BASE, "kind": "distill", "objective": objective,
           "model": {"name_or_path": "some/model", "domain_branch": {"domains": ["books", "dvd"]}}}
    config = load_config(write_yaml(tmp_path, raw))
    assert config.model.domain_branch.domains == ["books", "dvd"]
    assert load_config(config.model_dump()) == config  # a recorded config loads back
