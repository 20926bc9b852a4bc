"""The example store's tokenised views: cached per (data, tokenizer, max length), memory-mapped, reused."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from multidistill.data.store import ExampleStore
from multidistill.data.tasks import Task
from tests.conftest import write_tiny_tasks


@pytest.fixture
def store(tmp_path):
    specs = [Task.model_validate(s) for s in write_tiny_tasks(tmp_path / "data")]
    return ExampleStore(specs, tmp_path / "data", tmp_path / "cache", {"toy_sent": 10})


def _views(tmp_path):
    return sorted(p for p in (tmp_path / "cache" / "tokenized").rglob("dataset_info.json"))


def test_raw_examples_have_the_common_schema(store):
    train = store.examples("toy_pair", "train")
    assert train.column_names == ["id", "text_a", "text_b", "label", "domain"]
    assert len(store.examples("toy_sent", "train")) == 10  # the cap applies to train only
    assert len(store.examples("toy_sent", "dev")) == 24


def test_views_are_cached_per_tokenizer_and_length_and_memory_mapped(store, tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    first = store.tokenized("toy_pair", "train", tokenizer, 32)
    assert first.cache_files, "a view is read back from Arrow files on disk"
    assert {"input_ids", "attention_mask", "label", "id"} <= set(first.column_names)
    assert len(_views(tmp_path)) == 1
    again = store.tokenized("toy_pair", "train", tokenizer, 32)
    assert again.cache_files == first.cache_files and len(_views(tmp_path)) == 1  # reused, not rebuilt
    short = store.tokenized("toy_pair", "train", tokenizer, 8)
    assert len(_views(tmp_path)) == 2 and max(len(ids) for ids in short["input_ids"]) == 8
    tokenizer.add_tokens(["brandnewword"])  # a different tokenizer gets its own view
    store.tokenized("toy_pair", "train", tokenizer, 32)
    assert len(_views(tmp_path)) == 3


def test_changed_data_gets_a_new_view(store, tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    store.tokenized("toy_sent", "dev", tokenizer, 32)
    path = tmp_path / "data" / "toy_sent" / "dev.tsv"
    path.write_text(path.read_text() + "a fine new row\t1\n")
    fresh = ExampleStore(list(store.tasks.values()), tmp_path / "data", tmp_path / "cache")
    assert len(fresh.tokenized("toy_sent", "dev", tokenizer, 32)) == 25
    assert len(_views(tmp_path)) == 2
