"""Rule-based data augmentation of Tang et al. 2019 (arXiv 1903.12136), as used by MKD (arXiv 1911.03588).

A student distilled from a teacher learns more from more inputs, and the teacher can label any input.
`augment_examples` therefore adds perturbed copies of the training examples *without* labels; the
distillation loss later fills them in with the teacher's outputs. Per text, following Tang et al.:

1. Split into words on whitespace (GLUE texts are pre-tokenised, so punctuation is already separate).
2. For every word draw ``u ~ U[0, 1)``: ``u < p_mask`` replaces it by the mask token;
   ``p_mask <= u < p_mask + p_swap`` replaces it by a word drawn from the training texts' unigram distribution,
   restricted to words with the same part-of-speech tag when a tagger is available (the two rules are
   mutually exclusive, as in the paper).
3. With probability ``p_ngram`` keep only a random n-gram of the result, ``n ~ U{1..max_ngram}`` (capped at
   the text's length).

Pair examples perturb text A, text B or both, chosen uniformly per variant. Variants equal to their
input row or to an earlier variant are dropped. The variants of an example depend only on
``(config.seed, example id)`` and the vocabulary, never on row order or the process.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import warnings
from collections import Counter
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from multidistill.data.tasks import Task
from multidistill.errors import ConfigError
from multidistill.limits import MAX_SEED
from multidistill.utils.progress import progress_bar

Tagger = Callable[[list[str]], list[str]]
"""Maps a sentence's words to one part-of-speech tag per word."""

POS_INSTALL_HINT = "pip install 'multidistill[pos]' && python -m nltk.downloader averaged_perceptron_tagger_eng"
"""Installs the POS tagger `pos_tagger: auto|nltk` uses: nltk (the `pos` extra) and its tagger data."""
_PROBE = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "."]
_PROGRESS_MIN_ROWS = 5000  # below this the bar is noise
VARIANT_MARK = "~aug"
"""A variant's id is its source row's id, this mark and the variant's number (``"17~aug3"``)."""


class AugmentConfig(BaseModel):
    """Settings of the Tang et al. augmentation (the ``augment:`` section of a recipe config)."""

    model_config = ConfigDict(extra="forbid")

    p_mask: float = Field(0.1, ge=0.0, le=1.0, description="Probability of replacing a word by the mask token.")
    p_swap: float = Field(0.1, ge=0.0, le=1.0, description="Probability of replacing a word by a random word of "
                          "the same part of speech (any training word without a tagger); exclusive with masking, "
                          "so p_mask + p_swap must be <= 1.")
    p_ngram: float = Field(0.25, ge=0.0, le=1.0, description="Probability of then keeping only a random n-gram.")
    max_ngram: int = Field(5, ge=1, description="Largest n of the n-gram rule (n is uniform in 1..max_ngram); "
                           "only with p_ngram above 0.")
    n_iter: int = Field(20, ge=0, description="Variants tried per single-text example.")
    n_iter_pair: int = Field(10, ge=0, description="Variants tried per text-pair example.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed; an example's variants depend only on it and "
                      "the example's id.")
    pos_tagger: Literal["auto", "none", "nltk"] = Field(
        "auto", description="Part-of-speech tagger for swaps: nltk (error if unavailable), none (swap with any "
        "training word), or auto (nltk if installed with its tagger data, else none); nltk only with p_swap above 0.")
    max_examples: int | None = Field(None, ge=1, description="Cap on the augmented rows per task (a seeded random "
                                     "subset of them); None keeps all.")

    @model_validator(mode="after")
    def _check(self) -> AugmentConfig:
        if self.p_mask + self.p_swap > 1.0 + 1e-9:
            raise ValueError(f"p_mask + p_swap must be <= 1 (the two rules are exclusive per word), got "
                             f"{self.p_mask} + {self.p_swap}")
        # A set that can hold no variant is the training rows under another name: say so instead.
        if self.n_iter == 0 and self.n_iter_pair == 0:
            raise ValueError("n_iter and n_iter_pair are both 0, so no variant is tried; raise one, or drop augment "
                             "(null) to distil on the training rows")
        if self.p_mask == self.p_swap == self.p_ngram == 0:
            raise ValueError("p_mask, p_swap and p_ngram are all 0, so every variant is its source row; raise one, "
                             "or drop augment (null) to distil on the training rows")
        # A setting of a rule that never fires would be ignored. By value, not by "was it set" (a default value is
        # not "given"; recorded configs write every field out), as TrainConfig's temperature_tau.
        defaults = type(self).model_fields
        if self.p_ngram == 0 and self.max_ngram != defaults["max_ngram"].default:
            raise ValueError(f"max_ngram applies to the n-gram rule, and p_ngram is 0 (it never keeps an n-gram): "
                             f"drop max_ngram ({self.max_ngram}), or raise p_ngram")
        # 'none' asks for no tagger (the demo's default, and what docs/augmentation.md suggests pinning): harmless.
        if self.p_swap == 0 and self.pos_tagger == "nltk":
            raise ValueError("pos_tagger picks the words of the swap rule, and p_swap is 0 (no word is swapped): "
                             "drop pos_tagger (nltk), or raise p_swap")
        return self


# ------------------------------------------------------------------------------------------------- taggers


def load_pos_tagger(kind: Literal["auto", "none", "nltk"]) -> Tagger | None:
    """The part-of-speech tagger for ``config.pos_tagger``: None for ``"none"``, nltk's ``pos_tag`` for
    ``"nltk"`` (raises `ConfigError` if nltk or its tagger data are missing), and for ``"auto"`` nltk's when
    it is installed and tags a probe sentence, else None (swaps then draw from the whole vocabulary).

    When ``"auto"`` falls back, a warning on stderr says so, once per process (see `pos_tagger_fallback`)."""
    return _choose_tagger(kind)[0]


def pos_tagger_fallback(kind: Literal["auto", "none", "nltk"]) -> str | None:
    """A note saying why ``pos_tagger: auto`` swaps with any training word instead of same-POS words, and how
    to install the tagger; None when a tagger is used or none was asked for."""
    reason = _choose_tagger(kind)[1]
    return pos_fallback_note(reason) if reason else None


def pos_fallback_note(reason: str) -> str:
    """The user-facing sentence for an ``auto`` fallback (warning, stage record and recipe summary)."""
    return (f"augment.pos_tagger is 'auto' but {reason}, so word swaps drew from any training word instead of "
            f"words of the same part of speech; install the tagger with `{POS_INSTALL_HINT}`, or set "
            "augment.pos_tagger: none to choose this explicitly")


@cache
def _choose_tagger(kind: Literal["auto", "none", "nltk"]) -> tuple[Tagger | None, str | None]:
    """(the tagger, why auto fell back); cached, so the fallback is detected and warned about once."""
    if kind == "none":
        return None, None
    if kind not in ("auto", "nltk"):
        raise ConfigError(f"augment.pos_tagger must be auto, none or nltk, got {kind!r}")
    try:
        import nltk  # optional dependency (the `pos` extra): only needed for POS-guided swaps
    except ImportError as e:
        if kind == "auto":
            return _fallback("nltk is not installed")
        raise ConfigError(f"augment.pos_tagger is 'nltk' but nltk is not installed; run: {POS_INSTALL_HINT} "
                          "(or set augment.pos_tagger: none)") from e

    def tag(words: list[str]) -> list[str]:
        return [t for _, t in nltk.pos_tag(words)] if words else []

    try:
        tags = tag(list(_PROBE))
    except LookupError as e:  # nltk raises LookupError when the tagger's data are not downloaded
        if kind == "auto":
            return _fallback("nltk's tagger data are not downloaded")
        raise ConfigError(f"augment.pos_tagger is 'nltk' but nltk's tagger data are missing; run: "
                          f"{POS_INSTALL_HINT} (or set augment.pos_tagger: none)") from e
    if len(tags) != len(_PROBE):
        if kind == "auto":
            return _fallback("nltk.pos_tag returned a wrong number of tags")
        raise ConfigError("augment.pos_tagger is 'nltk' but nltk.pos_tag returned a wrong number of tags")
    return tag, None


def _fallback(reason: str) -> tuple[None, str]:
    # Said out loud: otherwise the choice is visible only inside transfer/stage.json.
    warnings.warn(pos_fallback_note(reason), UserWarning, stacklevel=4)
    return None, reason


# ------------------------------------------------------------------------------------------ word sampling


@dataclass(frozen=True)
class _Pool:
    """Words with their training counts; sampling by count follows the unigram distribution (Tang et al.)."""

    words: list[str]
    cumulative: list[int]

    @classmethod
    def from_counts(cls, counts: Counter[str]) -> _Pool:
        words = sorted(counts)  # sorted, so the pool does not depend on the order texts were seen
        return cls(words, list(itertools.accumulate(counts[w] for w in words)))

    def pick(self, u: float) -> str:
        """The word at quantile ``u`` in [0, 1) of the unigram distribution."""
        # bisect on a list: far faster than numpy for one scalar at a time.
        i = bisect.bisect_right(self.cumulative, u * self.cumulative[-1])
        return self.words[min(i, len(self.words) - 1)]


class _Text:
    """One text of an example, split once, with its tags (when a tagger is used)."""

    __slots__ = ("text", "words", "tags")

    def __init__(self, text: str | None, tagger: Tagger | None) -> None:
        self.text = text
        self.words = text.split() if text else []
        # Whole sentences are tagged (once): a word's tag depends on its context.
        self.tags: list[str] | None = _tags(tagger, self.words) if tagger is not None and self.words else None


class _Vocabulary:
    """The task's training words, overall and (with a tagger) per part-of-speech tag."""

    def __init__(self, texts: Iterable[_Text]) -> None:
        overall: Counter[str] = Counter()
        by_tag: dict[str, Counter[str]] = {}
        for text in texts:
            overall.update(text.words)
            if text.tags is not None:
                for word, tag in zip(text.words, text.tags, strict=True):
                    by_tag.setdefault(tag, Counter())[word] += 1
        self.all = _Pool.from_counts(overall) if overall else None
        self.by_tag = {tag: _Pool.from_counts(c) for tag, c in by_tag.items()}

    def pool(self, tag: str | None) -> _Pool | None:
        if tag is not None and tag in self.by_tag:
            return self.by_tag[tag]
        return self.all


def _tags(tagger: Tagger, words: list[str]) -> list[str]:
    tags = list(tagger(words))
    if len(tags) != len(words):
        raise ValueError(f"the POS tagger returned {len(tags)} tags for {len(words)} words")
    return [str(t) for t in tags]


# ------------------------------------------------------------------------------------------------ the rules


def _rng_for(seed: int, example_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, id): a stable digest, unlike Python's salted ``hash()``."""
    digest = hashlib.blake2b(f"{seed}\x00{example_id}".encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _perturb(text: _Text, rng: np.random.Generator, config: AugmentConfig, mask_token: str,
             vocab: _Vocabulary) -> str | None:
    """One application of the masking/swapping and n-gram rules; the original string when nothing changed."""
    words = text.words
    n = len(words)
    if n == 0:
        return text.text
    # Draw every random number up front so the stream's use does not depend on which rule fired.
    rule = rng.random(n).tolist()  # Python floats: indexing numpy arrays per word is slow
    pick = rng.random(n).tolist()
    either = config.p_mask + config.p_swap
    new = list(words)
    for i, u in enumerate(rule):
        if u >= either:
            continue
        if u < config.p_mask:
            new[i] = mask_token
        else:
            pool = vocab.pool(text.tags[i] if text.tags is not None else None)
            if pool is not None:
                new[i] = pool.pick(pick[i])
    if rng.random() < config.p_ngram:
        size = min(int(rng.integers(1, config.max_ngram + 1)), n)
        start = int(rng.integers(0, n - size + 1))
        new = new[start:start + size]
    # Keep the exact original string when the words are unchanged, so "no change" is detected as a duplicate.
    return text.text if new == words else " ".join(new)


def _variants(a: _Text, b: _Text | None, rng: np.random.Generator, config: AugmentConfig, mask_token: str,
              vocab: _Vocabulary, seen: set[tuple[Any, Any]]) -> list[tuple[str | None, str | None]]:
    """Up to n_iter new (text_a, text_b) variants of one example; ``seen`` is updated with them."""
    wanted = config.n_iter if b is None else config.n_iter_pair
    out: list[tuple[str | None, str | None]] = []
    # Bounded tries: a short text may not have wanted distinct variants.
    for _ in range(2 * wanted):
        if len(out) >= wanted:
            break
        if b is None:
            key = (_perturb(a, rng, config, mask_token, vocab), None)
        else:
            which = int(rng.integers(0, 3))  # 0: text A only, 1: text B only, 2: both
            new_a = _perturb(a, rng, config, mask_token, vocab) if which != 1 else a.text
            new_b = _perturb(b, rng, config, mask_token, vocab) if which != 0 else b.text
            key = (new_a, new_b)
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


# ------------------------------------------------------------------------------------------------ entry point


def augment_examples(examples: datasets.Dataset, task: Task, config: AugmentConfig, *, mask_token: str,
                     tagger: Tagger | None = None) -> datasets.Dataset:
    """Return ``examples`` followed by unlabelled variants made with the Tang et al. rules.

    ``examples`` is a task's training split as `read_split` returns it (columns ``id, text_a, text_b,
    label, domain``); its texts are also the vocabulary that swaps draw from. The result has the same
    features: first every input row unchanged, then, per input row in input order, its variants with id
    ``f"{id}~aug{j}"``, label -1 (classification) or NaN (regression), and every other column (``domain``,
    and ``text_b`` of a single-text task) copied from the original. No two rows added share
    ``(text_a, text_b)`` with each other or with an input row.

    ``tagger`` maps a sentence's words to their POS tags and overrides ``config.pos_tagger``; when None the
    tagger is `load_pos_tagger(config.pos_tagger)`. With ``config.p_swap`` 0 no text is tagged (the tags only pick
    swapped words; the variants are the same). ``mask_token`` is the mask token written for a masked
    word (e.g. ``"[MASK]"``): the recipes write the first teacher tokenizer's, which every teacher's and student's
    tokenizer must read as its own (`recipes.preflight.check_mask_tokens`). The variants of an example depend
    only on ``config.seed``, the example's id and the vocabulary; with ``config.max_examples`` a seeded random
    subset of the added rows is kept.
    """
    if config.p_swap == 0:
        tagger = None  # no word is swapped: tags would choose nothing (and `auto` would look for nltk for nothing)
    elif tagger is None:
        tagger = load_pos_tagger(config.pos_tagger)
    columns = examples.to_dict()
    n_rows = len(examples)
    ids = [str(i) for i in columns["id"]]
    texts_a: list[str | None] = columns["text_a"]
    texts_b: list[str | None] = columns["text_b"]

    progress = n_rows >= _PROGRESS_MIN_ROWS
    # Split (and tag) every text once; the same words feed the vocabulary and the rules.
    rows = [(_Text(a, tagger), _Text(b, tagger) if task.pair else None)
            for a, b in progress_bar(zip(texts_a, texts_b, strict=True), total=n_rows, desc=f"reading {task.name}",
                             disable=not progress or tagger is None, leave=False)]
    vocab = _Vocabulary(text for row in rows for text in row if text is not None)

    # Every original pair counts as seen, so no variant repeats an input row.
    seen: set[tuple[Any, Any]] = {(a, b if task.pair else None) for a, b in zip(texts_a, texts_b, strict=True)}
    # Examples are processed in id order, so which example keeps a variant two of them produce does not
    # depend on the input's row order.
    order = sorted(range(n_rows), key=lambda i: (ids[i], texts_a[i] or "", texts_b[i] or ""))
    made: list[list[tuple[str | None, str | None]]] = [[] for _ in range(n_rows)]
    for i in progress_bar(order, desc=f"augmenting {task.name}", disable=not progress):
        a, b = rows[i]
        made[i] = _variants(a, b, _rng_for(config.seed, ids[i]), config, mask_token, vocab, seen)

    keep = _subset(made, order, config)
    no_label: float | int = math.nan if task.type == "regression" else -1
    names = examples.column_names
    new: dict[str, list[Any]] = {name: [] for name in names}
    for i in range(n_rows):
        for j, (text_a, text_b) in enumerate(made[i]):
            if keep is not None and (i, j) not in keep:
                continue
            for name in names:
                new[name].append(columns[name][i])  # domain and any extra column: copied
            new["id"][-1] = f"{ids[i]}{VARIANT_MARK}{j}"
            new["text_a"][-1] = text_a
            if task.pair:
                new["text_b"][-1] = text_b
            new["label"][-1] = no_label
    if not new["id"]:
        return examples
    table = pa.Table.from_pydict(new, schema=examples.features.arrow_schema)
    added = datasets.Dataset(table, info=datasets.DatasetInfo(features=examples.features))
    return datasets.concatenate_datasets([examples, added])


def variant_source(example_id: str, originals: Container[str]) -> str:
    """The id of the training row a transfer-set row came from: itself when it is one of ``originals`` (the
    input rows' ids), else the id before its last `VARIANT_MARK`. `ValueError` for an id that is neither."""
    if example_id in originals:
        return example_id
    source, mark, number = example_id.rpartition(VARIANT_MARK)
    if not mark or not number.isdigit() or source not in originals:
        raise ValueError(f"row '{example_id}' is neither a training row nor a variant of one")
    return source


def _subset(made: list[list[Any]], order: list[int], config: AugmentConfig) -> set[tuple[int, int]] | None:
    """The (row, variant) pairs to keep under ``config.max_examples``, or None to keep all."""
    slots = [(i, j) for i in order for j in range(len(made[i]))]  # id order: independent of row order
    if config.max_examples is None or len(slots) <= config.max_examples:
        return None
    rng = _rng_for(config.seed, "\x00max_examples")
    chosen = rng.choice(len(slots), size=config.max_examples, replace=False)
    return {slots[k] for k in chosen}
