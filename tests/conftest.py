"""Shared fixtures: a tiny WordPiece tokenizer, a tiny BERT saved like a hub model, and tiny task data.

Nothing here touches the network; the tiny model is written with `save_pretrained` so tests exercise
the same `from_pretrained(path)` code path as real models.
"""

from __future__ import annotations

import importlib.util
import os
import random
import string
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str, monkeypatch: pytest.MonkeyPatch | None = None):
    """``benchmarks/<name>.py`` as a module (benchmarks/ is no package). With ``monkeypatch`` it is also registered
    in sys.modules for the test's duration, which dataclasses defined in the script need to resolve."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    if monkeypatch is not None:
        monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module
POSITIVE = ["good", "great", "fine", "nice", "happy", "love", "best", "fun"]
NEGATIVE = ["bad", "awful", "poor", "sad", "hate", "worst", "dull", "boring"]
FILLER = ["the", "a", "movie", "film", "was", "is", "very", "plot", "actor", "and", "it", "this"]
TINY_BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 64}

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from threads, and spare cores keep the suite fast beside other work.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files that hold a `slow` test first, each file's tests in their order: the workers take whole files in this
    order (`--dist loadfile --no-loadscope-reorder`), so the long ones start early instead of leaving one worker
    alone at the end (xdist's own reorder, by test count, put those few-test files last)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable


def find_shared_data() -> Path | None:
    """The shared GLUE/Amazon/MNLI folder beside the repo (or $MULTIDISTILL_SHARED_DATA), if present."""
    for candidate in (os.environ.get("MULTIDISTILL_SHARED_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "glue").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data; tests that need it are skipped where it is absent."""
    root = find_shared_data()
    if root is None:
        pytest.skip("shared data not found (set MULTIDISTILL_SHARED_DATA)")
    return root


def _vocab() -> list[str]:
    chars = list(string.ascii_lowercase + string.digits + ".,!?'\"-")
    words = sorted(set(POSITIVE + NEGATIVE + FILLER))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *[f"##{c}" for c in chars], *words]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT + WordPiece tokenizer, saved as a model folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(_vocab()) + "\n")
    # transformers 5 takes the vocabulary as `vocab` (a dict); `vocab_file=` would be silently ignored.
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(_vocab())}, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    spec = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    import torch

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(_vocab()), **spec)).save_pretrained(folder)
    return folder


def _sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
    return " ".join(words)


def write_tiny_tasks(root: Path, n_train: int = 96, n_dev: int = 24, seed: int = 0) -> list[dict]:
    """Write three toy tasks (single-sentence, pair, regression) as TSV; return their specs."""
    rng = random.Random(seed)
    for name in ("toy_sent", "toy_pair", "toy_reg"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = [(_sentence(rng, y), y) for y in (rng.randint(0, 1) for _ in range(n))]
        (root / "toy_sent" / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
        pairs = []
        for _ in range(n):
            y = rng.randint(0, 1)
            a = _sentence(rng, 1)
            pairs.append((a, a if y else _sentence(rng, 0), y))
        (root / "toy_pair" / f"{split}.tsv").write_text(
            "s1\ts2\tlabel\n" + "".join(f"{a}\t{b}\t{y}\n" for a, b, y in pairs))
        scores = []
        for _ in range(n):
            y = rng.randint(0, 1)
            scores.append((_sentence(rng, y), _sentence(rng, y), round(rng.uniform(0, 2) + 3 * y, 2)))
        (root / "toy_reg" / f"{split}.tsv").write_text(
            "s1\ts2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in scores))

    def files(folder: str, columns: dict) -> dict:
        return {split: {"path": f"{folder}/{split}.tsv", "columns": columns} for split in ("train", "dev")}

    return [
        {"name": "toy_sent", "type": "classification", "labels": ["0", "1"], "metrics": ["accuracy", "f1"],
         "files": files("toy_sent", {"text_a": "sentence", "label": "label"})},
        {"name": "toy_pair", "type": "classification", "labels": ["0", "1"], "pair": True,
         "metrics": ["f1", "accuracy"], "files": files("toy_pair", {"text_a": "s1", "text_b": "s2", "label": "label"})},
        {"name": "toy_reg", "type": "regression", "pair": True, "metrics": ["pearson", "spearman"],
         "files": files("toy_reg", {"text_a": "s1", "text_b": "s2", "label": "score"})},
    ]


@pytest.fixture
def tiny_run(tmp_path, tiny_model_dir):
    """A teacher-run config dict over the toy tasks, plus a helper to write it as YAML."""
    data_root = tmp_path / "data"
    specs = write_tiny_tasks(data_root)
    config = {
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(tiny_model_dir), "max_seq_length": 32},
        "data": {"data_root": str(data_root), "tasks": ["toy_sent", "toy_pair", "toy_reg"],
                 "task_specs": specs, "cache_dir": str(tmp_path / "cache")},
        "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "checkpoint_every_steps": 3,
                  "log_every_steps": 2, "seed": 7},
    }

    def write(cfg: dict | None = None, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg or config, sort_keys=False))
        return path

    return config, write
