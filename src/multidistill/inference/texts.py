"""`predict`: label texts held in memory with a saved model folder or an ONNX export, exactly as `predict_file`
labels a file's rows (the same batching, truncation and outputs)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from multidistill.data.convert import surrogate_problem
from multidistill.errors import ConfigError, DataError
from multidistill.inference.predict import InputRow, open_predictor, predict_rows, prediction_record
from multidistill.utils.arguments import as_list
from multidistill.utils.entry import api_call


@dataclass(frozen=True)
class Prediction:
    """One text's prediction, as a `predict_file` output record holds it: for a classification task ``label``
    (the most probable), ``score`` (its probability) and ``probabilities`` (label -> probability); for a
    regression task ``label`` None, ``score`` the predicted value (None when not finite) and no probabilities;
    for a multilabel task ``labels``, the labels whose own probability is over their threshold (0.5, or the ones
    saved with the model by ``train.thresholds: per_label``; ``label`` and ``score`` None),
    and each label's ``probabilities``.
    ``truncated``: the text (with its pair) was longer than the model's length and its end was cut off;
    ``unknown_only``: every token of it was the tokenizer's unknown token (e.g. a script the vocabulary lacks), so
    the prediction rests on no word at all. `predict_file` reports the same two as counts."""

    label: str | None
    score: float | None
    probabilities: dict[str, float] = field(default_factory=dict)
    labels: list[str] | None = None
    truncated: bool = False
    unknown_only: bool = False


def predict(source: str | os.PathLike, task: str, texts: Sequence[str] | str,
            text_pairs: Sequence[str] | str | None = None, *, batch_size: int = 64, precision: str = "fp32",
            progress: bool = True) -> list[Prediction]:
    """Predict ``task`` for each of ``texts`` (one str is one text) with the model folder or ONNX export
    ``source``; pair tasks take the second texts in ``text_pairs``, one per text. Returns one `Prediction` per
    text, in order; batching (longest first), truncation (the model's training length) and the numbers are
    those of `predict_file`. ``precision`` int8 needs an ONNX export with an int8 graph. ``progress`` False: no
    bars. An empty or non-str text, or one with an unpaired surrogate, is refused, naming its index.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    texts_a = _texts(texts, "texts")
    texts_b = _texts(text_pairs, "text_pairs") if text_pairs is not None else None
    if texts_b is not None and len(texts_b) != len(texts_a):
        raise ConfigError(f"text_pairs holds {len(texts_b)} texts for {len(texts_a)} texts; give one per text")
    with api_call("predict", progress=progress):
        predictor = open_predictor(Path(source), precision)
        spec = predictor.task(task)
        if spec.pair != (texts_b is not None):
            raise ConfigError(f"task '{spec.name}' takes text pairs: give text_pairs, one per text" if spec.pair
                              else f"task '{spec.name}' takes one text: leave text_pairs out")
        if not texts_a:
            return []
        rows = [InputRow(i, text, texts_b[i] if texts_b is not None else None, None) for i, text in enumerate(texts_a)]
        logits, tokens = predict_rows(predictor, spec, rows, batch_size, progress)
    labels = spec.labels if spec.has_labels else []
    thresholds = predictor.thresholds.get(spec.name)
    return [Prediction(**{"label": None, "score": None,
                          **prediction_record(values, labels, spec.is_multilabel, thresholds)},
                       truncated=bool(cut),
                       unknown_only=bool(unknown))
            for values, cut, unknown in zip(logits, tokens.cut, tokens.unknown_only, strict=True)]


def _texts(value: Sequence[str] | str, argument: str) -> list[str]:
    """``value`` as a list of texts; a non-str or an empty text is refused, naming ``argument`` and its index."""
    texts = as_list(value, argument) or []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{argument}[{i}] is {type(text).__name__}, not a str: {text!r}")
        if not text.strip():
            raise DataError(f"{argument}[{i}] is empty; every text needs some words to predict from")
        problem = None if text.isascii() else surrogate_problem(text)  # the tokenizer would raise on it
        if problem is not None:
            raise DataError(f"{argument}[{i}]: {problem}; give the whole character (or drop the half) and "
                            "predict again")
    return texts
