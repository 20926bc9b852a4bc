"""Security checks: no code path unpickles, evaluates strings or loads YAML unsafely, and model code from a
folder or the hub never runs unless the user opts in with `trust_remote_code`.

The source scan parses every .py file under src/ (so `model.eval()` or a multi-line `torch.load(...)` call are
read correctly) and fails naming file:line for each hit.
"""

from __future__ import annotations

import ast
import inspect
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.test_bad_inputs import bad_input_assets  # noqa: F401 - the store fixture

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}
# The project's own loader (config.py): allowed because it derives from SafeLoader (checked below).
PROJECT_YAML_LOADERS = {("multidistill/config.py", "_Loader")}
RULES = ("pickle", "torch.load without weights_only=True", "trust_remote_code=True", "eval/exec", "unsafe yaml",
         "np.load allow_pickle=True")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value) or '<expr>'}.{node.attr}"  # `f(x).eval()` is a method, not eval
    return ""


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan(source: str, name: str) -> list[tuple[str, str]]:
    """(rule, "file:line: code") for every risky construct in ``source``."""
    tree = ast.parse(source)
    lines = source.splitlines()
    aliases: dict[str, str] = {}  # local name -> full dotted name, from imports
    hits: list[tuple[str, str]] = []

    def hit(rule: str, node: ast.AST) -> None:
        hits.append((rule, f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    hit("pickle", node)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if (node.module or "").split(".")[0] in PICKLE_MODULES:
                hit("pickle", node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "trust_remote_code" and _is_true(value):
                    hit("trust_remote_code=True", node)
        if not isinstance(node, ast.Call):
            continue
        head, _, rest = _dotted(node.func).partition(".")
        called = ".".join(filter(None, [aliases.get(head, head), rest]))
        keywords = {kw.arg: kw.value for kw in node.keywords}
        if _is_true(keywords.get("trust_remote_code")):
            hit("trust_remote_code=True", node)
        if called in {"eval", "exec", "builtins.eval", "builtins.exec"}:
            hit("eval/exec", node)
        if called.split(".")[0] in PICKLE_MODULES or called.endswith("read_pickle") or (
                called in {"__import__", "importlib.import_module"} and node.args
                and isinstance(node.args[0], ast.Constant) and node.args[0].value in PICKLE_MODULES):
            hit("pickle", node)
        if called == "torch.load" and not _is_true(keywords.get("weights_only")):
            hit("torch.load without weights_only=True", node)
        if called in {"numpy.load", "np.load"} and _is_true(keywords.get("allow_pickle")):
            hit("np.load allow_pickle=True", node)
        if called in {"yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"}:
            hit("unsafe yaml", node)
        if called in {"yaml.load", "yaml.load_all"}:
            loader = keywords.get("Loader", node.args[1] if len(node.args) > 1 else None)
            loader_name = _dotted(loader) if loader is not None else ""
            head, _, rest = loader_name.partition(".")
            resolved = ".".join(filter(None, [aliases.get(head, head), rest]))
            if resolved not in SAFE_YAML_LOADERS and (name, loader_name) not in PROJECT_YAML_LOADERS:
                hit("unsafe yaml", node)
    return hits


def _source_hits() -> list[tuple[str, str]]:
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        hits += scan(path.read_text(encoding="utf-8"), rel)
    return hits


def test_the_scan_covers_the_package() -> None:
    files = list(SRC.rglob("*.py"))
    assert len(files) > 20 and any(p.name == "config.py" for p in files)


@pytest.mark.parametrize("rule", RULES)
def test_no_risky_call_in_src(rule: str) -> None:
    found = [where for hit_rule, where in _source_hits() if hit_rule == rule]
    assert not found, f"{rule}:\n" + "\n".join(found)


def test_the_project_yaml_loader_is_safe() -> None:
    from multidistill.config import _Loader, parse_yaml

    assert issubclass(_Loader, yaml.SafeLoader)
    with pytest.raises(yaml.constructor.ConstructorError):
        parse_yaml("!!python/object/apply:os.system ['echo pwned']")


BAD = '''
import pickle
import cloudpickle as cp
from joblib import load as jl
import torch
from torch import load as tload
import yaml
import numpy as np
pickle.loads(b"")
torch.load("a.pt")
torch.load("a.pt", weights_only=False)
torch.load(
    "a.pt",
    map_location="cpu",
)
tload("b.pt")
AutoModel.from_pretrained("x", trust_remote_code=True)
kwargs = {"trust_remote_code": True}
eval("1 + 1")
exec("x = 1")
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.load(text, yaml.FullLoader)
yaml.unsafe_load(text)
np.load("x.npy", allow_pickle=True)
pd.read_pickle("x.pkl")
importlib.import_module("pickle")
'''

GOOD = '''
import torch
import yaml
import numpy as np
model.eval()
evaluator.eval(x)
load_model(folder).to("cpu").eval()
torch.load("a.pt", map_location="cpu", weights_only=True)
torch.load(
    "a.pt",
    weights_only=True,
)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
np.load("x.npz", allow_pickle=False)
AutoModel.from_pretrained("x", trust_remote_code=trust_remote_code)
AutoConfig.from_pretrained("x", trust_remote_code=False)
text = "never call eval( or pickle.loads( or torch.load( here"
'''


def test_the_scan_finds_every_planted_hit_and_nothing_else() -> None:
    hits = scan(BAD, "bad.py")
    lines = {int(where.split(":")[1]) for _, where in hits}
    harmless = (" ", ")", "import torch", "from torch", "import yaml", "import numpy")  # continuations, imports
    code_lines = [i for i, line in enumerate(BAD.splitlines(), start=1) if line and not line.startswith(harmless)]
    assert set(code_lines) <= lines, sorted(set(code_lines) - lines)
    assert {rule for rule, _ in hits} == set(RULES)
    assert scan(GOOD, "good.py") == []


# ------------------------------------------------------------------------------------------- remote code


def test_trust_remote_code_is_off_by_default() -> None:
    from multidistill.config import ModelConfig
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_backbone, load_tokenizer
    from multidistill.models.bilstm import BiLSTMModel
    from multidistill.models.build import load_encoder
    from multidistill.models.loading import load_model

    assert ModelConfig(name_or_path="some/model").trust_remote_code is False
    assert ModelConfig.model_fields["trust_remote_code"].default is False
    for loader in (load_backbone, load_tokenizer, load_encoder, load_model, MultiTaskModel.from_pretrained,
                   MultiTaskModel.from_backbone, BiLSTMModel.from_pretrained):
        assert inspect.signature(loader).parameters["trust_remote_code"].default is False, loader


def _plant_remote_code(folder: Path, marker: Path, model_type: str = "bert") -> None:
    """Point config.json (and tokenizer_config.json) at code in the folder that creates ``marker`` on import."""
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import BertConfig, BertModel, BertTokenizerFast\n"
        f"class EvilConfig(BertConfig):\n    model_type = {model_type!r}\n"
        "class EvilModel(BertModel):\n    config_class = EvilConfig\n"
        "class EvilTokenizer(BertTokenizerFast):\n    pass\n")


@pytest.fixture
def remote_code_folders(tmp_path, tiny_model_dir):
    """An HF encoder folder and a multidistill model folder, both with an `auto_map` to planted code."""
    from multidistill.data.tasks import Task
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_tokenizer

    marker = tmp_path / "REMOTE_CODE_RAN"
    hf = tmp_path / "hf"
    shutil.copytree(tiny_model_dir, hf)
    task = Task(name="t", labels=["0", "1"])
    saved = tmp_path / "saved"
    MultiTaskModel.from_backbone(str(tiny_model_dir), [task]).save_pretrained(saved,
                                                                              load_tokenizer(str(tiny_model_dir)))
    for folder in (hf, saved):
        _plant_remote_code(folder, marker)
    return hf, saved, marker


def test_auto_map_is_ignored_without_the_opt_in(remote_code_folders) -> None:
    """A known model_type with an auto_map loads the built-in classes; the folder's code never runs."""
    from transformers import BertConfig, BertModel

    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_backbone, load_tokenizer
    from multidistill.models.loading import load_model

    hf, saved, marker = remote_code_folders
    backbone = load_backbone(str(hf))
    assert type(backbone) is BertModel and type(backbone.config) is BertConfig
    assert type(load_tokenizer(str(hf))).__module__.startswith("transformers.")
    assert type(MultiTaskModel.from_pretrained(saved).backbone) is BertModel
    assert type(load_model(saved).backbone) is BertModel
    assert not marker.exists()


def test_custom_model_type_is_refused_cleanly_without_the_opt_in(remote_code_folders) -> None:
    """A model_type only the folder's code defines cannot load without trust_remote_code: a ModelError."""
    from multidistill.errors import ModelError
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_backbone

    hf, saved, marker = remote_code_folders
    for folder in (hf, saved):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "evil-bert"}))
    with pytest.raises(ModelError, match="custom code"):
        load_backbone(str(hf))
    with pytest.raises(ModelError, match="custom code"):
        MultiTaskModel.from_pretrained(saved)
    assert not marker.exists()


def test_the_hf_export_carries_no_auto_map(remote_code_folders, tmp_path) -> None:
    from multidistill.export.hf import export_hf

    _, saved, marker = remote_code_folders
    export_hf(saved, tmp_path / "out", task="t", skip_parity=True)  # a model saved without data
    for name in ("config.json", "tokenizer_config.json"):
        assert "auto_map" not in json.loads((tmp_path / "out" / name).read_text()), name
    assert not marker.exists()


def test_planted_links_are_never_written_through(tiny_run, tmp_path, monkeypatch, capsys) -> None:
    """A lock file or log.txt planted as a symbolic link in or beside a run folder: the target stays as it was."""
    from tests.test_cli import run_cli

    raw, write = tiny_run
    config = write({**raw, "train": {**raw["train"], "epochs": 0.5}})
    victim = tmp_path / "victim.txt"
    victim.write_text("PRECIOUS\n")
    lock = tmp_path / ".run.lock"  # the output folder is tmp_path / "run"
    lock.symlink_to(victim)
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(config))
    assert code == 2 and "is a symbolic link" in output and victim.read_text() == "PRECIOUS\n", output
    assert not (tmp_path / "run").exists()
    lock.unlink()
    lock.mkdir()  # a folder in its place: refused by name, not a traceback
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(config))
    assert code == 2 and "is a folder, not a lock file" in output, output
    lock.rmdir()
    assert run_cli(monkeypatch, capsys, "train-teacher", str(config))[0] == 0
    log = tmp_path / "run" / "log.txt"
    log.unlink()
    log.symlink_to(victim)
    assert run_cli(monkeypatch, capsys, "train-teacher", str(config), "--resume")[0] == 0
    assert victim.read_text() == "PRECIOUS\n"


def test_overwrite_takes_only_folders_that_are_really_ours(tiny_run, tmp_path) -> None:
    from multidistill.errors import ConfigError
    from multidistill.training.run_dir import is_run_dir, refuse_foreign_overwrite

    other = tmp_path / "userproj"
    (other / "src").mkdir(parents=True)
    (other / "src" / "thesis.tex").write_text("x")
    (other / "export.json").write_text('{"rows": [1]}')  # another tool's file of that name
    with pytest.raises(ConfigError, match="holds no multidistill output"):
        refuse_foreign_overwrite(other, "output folder", ("export.json",))
    (other / "export.json").write_text('{"kind": "onnx", "source": "/m"}')
    refuse_foreign_overwrite(other, "output folder", ("export.json",))  # ours: may be replaced
    # config.yaml beside a model/ folder is what many tools write; a run of ours has its model record or checkpoint
    (tmp_path / "ml" / "model").mkdir(parents=True)
    (tmp_path / "ml" / "config.yaml").write_text("a: 1\n")
    assert not is_run_dir(tmp_path / "ml")
    (tmp_path / "ml" / "model" / "multidistill_model.json").write_text("{}")
    assert is_run_dir(tmp_path / "ml")
    # A run from before markers cut before its first model save: config.yaml and a checkpoint of ours.
    step = tmp_path / "old" / "checkpoints" / "step-000000003"
    step.mkdir(parents=True)
    (tmp_path / "old" / "config.yaml").write_text("a: 1\n")
    assert not is_run_dir(tmp_path / "old")
    for name in ("loop_state.json", "trainables.safetensors", "training_state.pt"):
        (step / name).write_text("x")
    assert is_run_dir(tmp_path / "old")


def test_a_store_file_list_cannot_name_a_file_outside_the_store(bad_input_assets, tmp_path) -> None:  # noqa: F811
    from multidistill.errors import DataError
    from multidistill.teachers.store import open_signal_store

    store = tmp_path / "store"
    shutil.copytree(bad_input_assets / "store", store)
    split = store / "toy_sent" / "train"
    arrow = next(split.glob("*.arrow"))
    outside = tmp_path / "outside.arrow"
    shutil.move(arrow, outside)
    state = json.loads((split / "state.json").read_text())
    state["_data_files"] = [{"filename": str(outside)}]
    (split / "state.json").write_text(json.dumps(state))
    opened = open_signal_store(store)
    for read in (opened.signal_rows, opened.signals):
        with pytest.raises(DataError, match="not a file in this folder"):
            read("toy_sent", "train")
