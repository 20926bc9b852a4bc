"""Turn rows of a tokenised view, or texts, into padded tensors (padded to the batch's longest row).

Every place that feeds a model pads here, on the right with `pad_id`, so training, evaluation, `predict` and the
exports' checks give a model the same inputs whatever the tokenizer's own padding side or pad token (a tokenizer
without one cannot pad itself: transformers refuses ``padding=True``)."""

from __future__ import annotations

import numpy as np
import torch

from multidistill.data.tasks import Task
from multidistill.models.features import EncoderFeatures

TOKEN_FIELDS = ("input_ids", "attention_mask", "token_type_ids")


def pad_id(tokenizer) -> int:
    """The id padding is filled with: the tokenizer's pad token, or 0 when it has none (the attention mask hides
    padding, so the id is never read)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def pad_tokens(rows: dict[str, list], pad_token_id: int) -> dict[str, torch.Tensor]:
    """The token fields of ``rows`` (lists of ids per row) as int64 tensors padded on the right to the longest row:
    ``input_ids`` with ``pad_token_id``, the masks and token types with 0."""
    lengths = [len(ids) for ids in rows["input_ids"]]
    width = max(lengths)
    padded = {}
    for name in TOKEN_FIELDS:
        if name not in rows:
            continue
        fill = pad_token_id if name == "input_ids" else 0
        out = np.full((len(lengths), width), fill, dtype=np.int64)
        for i, values in enumerate(rows[name]):
            out[i, : len(values)] = values
        padded[name] = torch.from_numpy(out)
    return padded


def encode_texts(tokenizer, texts_a: list[str], texts_b: list[str] | None, max_length: int) -> dict[str, torch.Tensor]:
    """Texts (pairs when ``texts_b`` is given) tokenised as the tokenised views are (truncated to ``max_length``,
    special tokens added) and padded as `collate` pads them."""
    encoded = tokenizer(texts_a, texts_b, truncation=True, max_length=max_length)
    return pad_tokens({name: encoded[name] for name in TOKEN_FIELDS if name in encoded}, pad_id(tokenizer))


def collate(task: Task, rows: dict[str, list], pad_token_id: int) -> dict:
    """``rows`` is a column dict as returned by `Dataset.__getitem__` with a list of indices. The batch holds
    ``task``, ``ids``, the padded token tensors, ``labels`` and, for a task with domains, ``domain_ids``
    (LongTensor [B], indices into `Task.domains`)."""
    batch: dict = {"task": task.name, "ids": list(rows["id"]), **pad_tokens(rows, pad_token_id)}
    label_dtype = torch.float32 if task.type == "regression" else torch.int64
    batch["labels"] = torch.tensor(rows["label"], dtype=label_dtype)
    if "domain_id" in rows:  # a task with domains: index into Task.domains
        batch["domain_ids"] = torch.as_tensor(np.asarray(rows["domain_id"]), dtype=torch.int64)
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device``; so are stored teacher features (a list of `EncoderFeatures`)."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        if isinstance(value, list) and value and all(isinstance(v, EncoderFeatures) for v in value):
            return [v.to(device) for v in value]
        return value

    return {k: move(v) for k, v in batch.items()}
