"""Teacher hidden states in the signal store: computed once by `soft-targets --hidden-layers`, read back per batch.

A store built with ``hidden_layers`` holds, beside each row's logits, the teachers' hidden states at those layers
(layer 0 is the embedding output, as in `EncoderFeatures`), for the row's real tokens only, in float16: column
``teacher_hidden_states``, one (T, K * S * H) block per example (T real tokens; K teachers, S stored layers and H
the teachers' width, in that order). `StoredSignals` pads the blocks of a batch to its width and hands them to the
feature losses as the same ``teacher_features`` (K `EncoderFeatures`) that online teachers give, so a loss cannot
tell stored from online.

Features are per token: they line up with a student only when it tokenises the rows exactly as the store did.
The manifest records the tokenizer's hash and the max length, a run whose student differs is refused naming both,
and every batch checks each row's token count against the stored one.

float16, not bfloat16: on MiniLM-L6's hidden states (layers 0..6) the rounding error against float32 is 2e-4
relative (Frobenius), 8x below bfloat16's 1.6e-3, and their values (|h| < 11) sit far inside float16's range;
a value outside it (|h| > 65504) or NaN/inf is refused when the store is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from multidistill.data.batches import longest_first
from multidistill.data.collate import collate, to_device
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, DataError
from multidistill.models.features import EncoderFeatures, ModelDims

HIDDEN_COLUMN = "teacher_hidden_states"
FEATURE_DTYPE = "float16"
# What a store can hold; everything else (attention scores, Q/K/V, pooled) needs an online teacher.
STORED_FEATURES = ("hidden_states",)
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class FeatureSpec:
    """What a store's feature column holds: the layers, the teachers' sizes and the tokenisation it is per token of."""

    layers: tuple[int, ...]
    dims: ModelDims
    teachers: int
    tokenizer: str          # hash of the teachers' (one) tokenizer (`utils.hashing.hash_tokenizer`)
    tokenizer_source: str   # the folder it was read from, to name it in errors
    max_length: int

    @property
    def width(self) -> int:
        """Values per token: K teachers x S layers x H."""
        return self.teachers * len(self.layers) * self.dims.hidden_size

    def record(self) -> dict:
        """The manifest's ``features`` entry."""
        return {"hidden_states": list(self.layers), "dtype": FEATURE_DTYPE, "column": HIDDEN_COLUMN,
                "teachers": self.teachers, "tokenizer": self.tokenizer, "tokenizer_source": self.tokenizer_source,
                "max_length": self.max_length,
                "dims": {"hidden_size": self.dims.hidden_size, "num_layers": self.dims.num_layers,
                         "num_attention_heads": self.dims.num_attention_heads}}

    @classmethod
    def from_manifest(cls, manifest: dict, where: Path) -> FeatureSpec | None:
        """The spec of a store's manifest; None for a store without features; a malformed entry is refused."""
        entry = manifest.get("features")
        if entry is None:
            return None
        try:
            layers = tuple(entry["hidden_states"])
            dims = ModelDims(**{k: int(entry["dims"][k]) for k in ("hidden_size", "num_layers", "num_attention_heads")})
            spec = cls(layers, dims, int(entry["teachers"]), str(entry["tokenizer"]), str(entry["tokenizer_source"]),
                       int(entry["max_length"]))
            valid = (entry["dtype"] == FEATURE_DTYPE and entry["column"] == HIDDEN_COLUMN and layers
                     and all(type(n) is int and 0 <= n <= dims.num_layers for n in layers) and spec.teachers >= 1)
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise DataError(f"{where}: its 'features' entry is not valid (layers, dtype {FEATURE_DTYPE}, teachers, "
                            "tokenizer, dims); rebuild the store with `multidistill soft-targets --hidden-layers`")
        return spec


def check_hidden_layers(layers: Sequence[int], dims: ModelDims, teacher: str | Path) -> tuple[int, ...]:
    """The requested layers, sorted and unique, each in 0..L of the teacher (`ConfigError` naming the key)."""
    if not layers:
        raise ConfigError("key 'hidden_layers' (--hidden-layers): give at least one layer (0 is the embedding output)")
    bad = [n for n in layers if type(n) is not int or not 0 <= n <= dims.num_layers]
    if bad:
        raise ConfigError(f"key 'hidden_layers' (--hidden-layers): layer(s) {bad} are outside teacher {teacher}, "
                          f"whose hidden states are 0 (the embedding output) .. {dims.num_layers}")
    return tuple(sorted(set(layers)))


def storable(hidden: np.ndarray, where: str) -> np.ndarray:
    """``hidden`` as float16, refusing NaN/inf and values beyond float16's range (they would become inf)."""
    if not np.isfinite(hidden).all():
        raise DataError(f"{where}: teacher hidden states contain NaN/inf; check the teacher (a diverged run?)")
    top = float(np.abs(hidden).max()) if hidden.size else 0.0
    if top > _FLOAT16_MAX:
        raise DataError(f"{where}: a teacher hidden state reaches {top:.4g}, beyond float16's range "
                        f"({_FLOAT16_MAX:.0f}) that the store keeps them in; use an online teacher (key "
                        "'online_teachers') for this teacher's features")
    return hidden.astype(np.float16)


def hidden_column(lengths: np.ndarray, hidden: np.ndarray) -> pa.Array:
    """The Arrow column of n rows: row i is ``lengths[i]`` tokens of ``hidden`` (sum T, D), one list of D per token."""
    tokens, width = hidden.shape
    values = pa.array(np.ascontiguousarray(hidden).reshape(-1))
    per_token = pa.LargeListArray.from_arrays(pa.array(np.arange(tokens + 1, dtype=np.int64) * width), values)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), per_token)


def label_hidden(teacher: torch.nn.Module, task: Task, view, layers: Sequence[int], *, batch_size: int,
                 pad_token_id: int, device: torch.device, autocast: Callable | None = None,
                 where: str = "teacher") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One forward per batch (rows longest first) giving both: logits (n, C) float32, each row's real-token count
    (n,) and the hidden states at ``layers`` of every real token, in row order, (sum T, S, H) float16 (`storable`,
    batch by batch, so a shard never holds them in float32)."""
    teacher.eval()
    order = longest_first(view) if len(view) else np.zeros(0, dtype=np.int64)
    logits = np.zeros((len(view), task.num_labels), dtype=np.float32)
    blocks: list[np.ndarray] = [np.zeros((0, len(layers), 0), dtype=np.float16)] * len(view)
    want = {"hidden_states": tuple(layers), "logits": ()}
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = to_device(collate(task, view[rows], pad_token_id), device)
        with torch.no_grad(), autocast() if autocast is not None else contextlib.nullcontext():
            features = teacher.features(task.name, batch["input_ids"], batch["attention_mask"],
                                        batch.get("token_type_ids"), want=want)
        logits[rows] = features.logits.float().cpu().numpy().reshape(len(rows), task.num_labels)
        stacked = storable(torch.stack([features.hidden_states[n] for n in layers], dim=2).float().cpu().numpy(),
                           where)
        real = batch["attention_mask"].sum(1).tolist()
        for i, row in enumerate(rows.tolist()):
            blocks[row] = stacked[i, :real[i]]  # (T, S, H): padding dropped (batches pad on the right)
    lengths = np.array([len(b) for b in blocks], dtype=np.int32)
    hidden = np.concatenate(blocks) if blocks else np.zeros((0, len(layers), 0), dtype=np.float16)
    return logits, lengths, hidden


def check_request(spec: FeatureSpec | None, root: Path, task: str, want: Mapping[str, Sequence[int]]) -> None:
    """Refuse (`ConfigError`, key 'signals') a request for features or layers that the store does not hold."""
    if spec is None:
        raise ConfigError(f"key 'signals': store {root} holds no teacher features (it was built without "
                          f"--hidden-layers), and the loss terms of task '{task}' read them; rebuild it with "
                          "`multidistill soft-targets --hidden-layers ...`, or list the teacher under "
                          "'online_teachers'")
    other = sorted(set(want) - set(STORED_FEATURES))
    if other:
        raise ConfigError(f"key 'signals': the loss terms of task '{task}' read the teacher's {other}, and a store "
                          f"holds hidden states only (store {root}: layers {list(spec.layers)}); use an online "
                          "teacher for them (key 'online_teachers'), or loss terms that read hidden states "
                          "(hidden_mse, cosine_hidden)")
    missing = sorted(set(want.get("hidden_states", ())) - set(spec.layers))
    if missing:
        raise ConfigError(f"key 'signals': the loss terms of task '{task}' read the teacher's hidden states at "
                          f"layer(s) {missing}, which store {root} does not hold (it holds {list(spec.layers)}); "
                          "rebuild it with those layers added (`multidistill soft-targets --hidden-layers "
                          f"{','.join(map(str, sorted(set(spec.layers) | set(missing))))}`), or use an online "
                          "teacher (key 'online_teachers')")


def check_tokenization(spec: FeatureSpec, root: Path, tokenizer_hash: str, tokenizer_name: str,
                       max_length: int) -> None:
    """Refuse a student that tokenises otherwise than the store (features are per token), naming both sides."""
    if tokenizer_hash != spec.tokenizer:
        raise ConfigError(f"key 'signals': store {root} holds hidden states per token of the tokenizer of "
                          f"{spec.tokenizer_source} (hash {spec.tokenizer[:12]}), and the student tokenises with "
                          f"{tokenizer_name} (hash {tokenizer_hash[:12]}): token-level losses compare position by "
                          "position, which only line up with one tokenizer. Build the store from a teacher with the "
                          "student's tokenizer, or use an online teacher (key 'online_teachers')")
    if max_length != spec.max_length:
        raise ConfigError(f"key 'model.max_seq_length': the student truncates at {max_length} tokens and store "
                          f"{root} holds hidden states of rows truncated at {spec.max_length}; use the same length "
                          f"(set model.max_seq_length: {spec.max_length}, or rebuild the store with "
                          f"`soft-targets --max-seq-length {max_length}`)")


def batch_features(blocks: Sequence[np.ndarray], ids: Sequence, attention_mask: torch.Tensor, spec: FeatureSpec,
                   layers: Sequence[int], where: str) -> list[EncoderFeatures]:
    """K `EncoderFeatures` (one per stored teacher) of a batch from its rows' stored blocks, padded to the batch's
    width; ``hidden_states`` has the model's L + 1 entries, the ``layers`` asked filled and the others None."""
    count, width = attention_mask.shape
    real = attention_mask.sum(1).tolist()
    padded = np.zeros((count, width, spec.width), dtype=np.float16)
    for i, block in enumerate(blocks):
        block = np.asarray(block)
        if block.shape != (real[i], spec.width):
            stored = block.shape[0] if block.ndim == 2 else "no"
            raise DataError(f"{where}: example id '{ids[i]}' has {stored} stored tokens and {real[i]} in the "
                            "batch: the store was built from another tokenisation of these rows; rebuild it for "
                            "this data and tokenizer")
        padded[i, :real[i]] = block
    stacked = torch.from_numpy(padded).view(count, width, spec.teachers, len(spec.layers), spec.dims.hidden_size)
    position = {layer: spec.layers.index(layer) for layer in layers}
    features = []
    for teacher in range(spec.teachers):
        hidden: list[torch.Tensor | None] = [None] * (spec.dims.num_layers + 1)
        for layer, at in position.items():
            hidden[layer] = stacked[:, :, teacher, at].contiguous()
        features.append(EncoderFeatures(attention_mask=attention_mask, dims=spec.dims, hidden_states=tuple(hidden)))
    return features
