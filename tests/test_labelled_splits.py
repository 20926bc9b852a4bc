"""Splits without gold labels: refused where labels are needed (scored dev sets, label-reading losses), before
any view is built; rows without one are left out of scoring (tests/test_metrics.py)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from multidistill.config import DataConfig
from multidistill.data.prepare import prepare_data
from multidistill.errors import DataError
from tests.conftest import write_tiny_tasks


def _config(tmp_path, unmapped_split: str | None) -> DataConfig:
    specs = write_tiny_tasks(tmp_path / "data", n_train=8, n_dev=4)[:1]
    if unmapped_split is not None:
        specs[0]["files"][unmapped_split]["columns"] = {"text_a": "sentence"}
    return DataConfig(tasks=["toy_sent"], task_specs=specs, data_root=str(tmp_path / "data"),
                      cache_dir=str(tmp_path / "cache"))


def _prepare(config: DataConfig, tokenizer, **kw):
    return prepare_data(config, tokenizer, 16, max_examples_per_task=None, seed=0, **kw)


def test_an_unlabelled_eval_split_is_refused_before_any_view(tmp_path, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(DataError, match="task 'toy_sent' split 'dev' has no labelled rows.*scored"):
        _prepare(_config(tmp_path, "dev"), tokenizer, need_train=False)
    assert not (tmp_path / "cache" / "tokenized").exists()


def test_an_unlabelled_train_split_is_refused_only_for_a_loss_that_reads_labels(tmp_path, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = _config(tmp_path, "train")
    with pytest.raises(DataError, match="task 'toy_sent' split 'train' has no labelled rows.*read gold labels"):
        _prepare(config, tokenizer, labelled_train=["toy_sent"])
    assert len(_prepare(config, tokenizer).train_sets["toy_sent"]) == 8  # soft targets only: fine
