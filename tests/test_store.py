"""The example store's tokenised views: cached per (data, tokenizer, max length), memory-mapped, reused."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from multidistill.data.store import ExampleStore
from multidistill.data.tasks import Task
from multidistill.errors import DataError
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


def test_view_key_holds_the_tokenizer_settings_its_serialisation_leaves_out(store, tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    right = store.tokenized("toy_sent", "dev", tokenizer, 4)
    tokenizer.truncation_side = "left"  # the same tokenizer.json: only the ids of long rows differ
    left = store.tokenized("toy_sent", "dev", tokenizer, 4)
    assert len(_views(tmp_path)) == 2 and list(left["input_ids"]) != list(right["input_ids"])


def test_truncated_view_is_rebuilt(store, tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    first = store.tokenized("toy_sent", "dev", tokenizer, 32)
    expected = [list(ids) for ids in first["input_ids"]]
    view = Path(first.cache_files[0]["filename"])
    del first
    view.write_bytes(view.read_bytes()[:100])
    assert [list(ids) for ids in store.tokenized("toy_sent", "dev", tokenizer, 32)["input_ids"]] == expected
    assert len(store.tokenized_rows("toy_sent", "dev", tokenizer, 32)) == 24


def test_a_damaged_example_cache_is_a_data_error_not_a_traceback(store, tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    store.examples("toy_sent", "dev")
    (arrow,) = (tmp_path / "cache" / "examples" / "toy_sent" / "dev").rglob("examples.arrow")
    arrow.write_bytes(b"\0" * arrow.stat().st_size)  # the size it was written with: found only when read
    fresh = ExampleStore(list(store.tasks.values()), tmp_path / "data", tmp_path / "cache")
    with pytest.raises(DataError, match="example cache .* is damaged"):
        fresh.tokenized("toy_sent", "dev", tokenizer, 32)


def test_dead_writers_temp_views_of_other_keys_are_removed(store, tiny_model_dir, tmp_path):
    dead = tmp_path / "cache" / "tokenized" / "toy_sent" / "dev" / ".0123456789abcdef.tmp-999999999-x"
    dead.mkdir(parents=True)  # a writer killed mid-view (no such pid), under a key no later run uses
    store.tokenized("toy_sent", "dev", AutoTokenizer.from_pretrained(tiny_model_dir), 16)
    assert not dead.exists()


def test_splits_without_labels_are_refused_naming_task_and_split(tmp_path):
    specs = write_tiny_tasks(tmp_path / "data", n_train=8, n_dev=4)[:1]
    specs[0]["files"]["dev"]["columns"] = {"text_a": "sentence"}  # the label column left unmapped
    store = ExampleStore([Task.model_validate(specs[0])], tmp_path / "data", tmp_path / "cache")
    assert store.labelled_rows("toy_sent", "train") == 8 and store.labelled_rows("toy_sent", "dev") == 0
    store.require_labels("toy_sent", "train", "it is trained on")
    with pytest.raises(DataError, match="task 'toy_sent' split 'dev' has no labelled rows: its file maps no label "
                                        "column.*because it is scored") as info:
        store.require_labels("toy_sent", "dev", "because it is scored")
    assert info.value.exit_code == 2 and "dev.tsv" in str(info.value)


def test_the_tokenizer_fingerprint_sees_the_truncation_side(tiny_model_dir):
    """A tokenizer that truncates on the left gives other ids for long texts: its stores must not match."""
    from transformers import AutoTokenizer

    from multidistill.utils.hashing import hash_tokenizer

    right = AutoTokenizer.from_pretrained(tiny_model_dir)
    left = AutoTokenizer.from_pretrained(tiny_model_dir, truncation_side="left")
    assert hash_tokenizer(right) == hash_tokenizer(AutoTokenizer.from_pretrained(tiny_model_dir))
    assert hash_tokenizer(left) != hash_tokenizer(right)


def test_one_vocabulary_under_two_tokenizer_classes_tokenises_the_same(tiny_model_dir, tmp_path):
    """The same WordPiece saved as BertTokenizerFast and DistilBertTokenizerFast: online teachers accept it (their
    tokens line up), while stored fingerprints keep the class (older stores and caches stay valid)."""
    import hashlib
    import json

    from transformers import AutoTokenizer, DistilBertTokenizerFast

    from multidistill.utils.hashing import hash_tokenizer, same_tokenization

    bert = AutoTokenizer.from_pretrained(tiny_model_dir)
    DistilBertTokenizerFast.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "distil")
    distil = AutoTokenizer.from_pretrained(tmp_path / "distil")
    assert type(distil).__name__ != type(bert).__name__
    assert distil("a fine film", "a dull plot")["input_ids"] == bert("a fine film", "a dull plot")["input_ids"]
    assert same_tokenization(bert, distil) and hash_tokenizer(bert) != hash_tokenizer(distil)
    # The stored fingerprint is as before this option existed: backend JSON, then class and special tokens.
    state = json.loads(bert.backend_tokenizer.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    extra = {"class": type(bert).__name__, "special": bert.all_special_tokens}
    body = json.dumps(state, sort_keys=True) + json.dumps(extra, sort_keys=True)
    assert hash_tokenizer(bert) == hashlib.sha256(body.encode()).hexdigest()


def test_a_split_the_task_has_no_file_for_is_a_data_error(tmp_path):
    """An export's default parity check asks for the dev split of a task trained without one: IndexError before."""
    from multidistill.data.tasks import Columns, DataFile

    task = Task(name="t", labels=["a", "b"],
                files={"train": DataFile(path="train.tsv", columns=Columns(text_a="text", label="label"))})
    store = ExampleStore([task], tmp_path, tmp_path / "cache")
    with pytest.raises(DataError, match="task 't' has no file for split 'dev' \\(it has: train\\)"):
        store.data_fingerprint("t", "dev")
