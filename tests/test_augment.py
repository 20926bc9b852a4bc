"""Tests for `multidistill.data.augment`: the Tang et al. rules, reproducibility, dedupe and the tagger option."""

from __future__ import annotations

import importlib.util
import math
import random
from collections import Counter
from pathlib import Path

import datasets
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from multidistill.data.augment import AugmentConfig, augment_examples, load_pos_tagger
from multidistill.data.convert import features_for
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError

MASK = "[MASK]"
SINGLE = Task(name="toy", labels=["0", "1"])
PAIR = Task(name="toy_pair", labels=["0", "1"], pair=True)
REGRESSION = Task(name="toy_reg", type="regression", pair=True)
WORDS = ["the", "a", "movie", "film", "was", "is", "very", "plot", "actor", "and", "it", "this", "good", "great",
         "bad", "awful", "fine", "dull", "boring", "fun", "love", "hate", "best", "worst"]


def make_ds(task: Task, texts: list, labels: list | None = None, ids: list[str] | None = None,
            domain: str = "") -> datasets.Dataset:
    """A dataset with the reader's schema; ``texts`` holds strings (single) or (a, b) tuples (pair)."""
    n = len(texts)
    text_a = [t[0] if task.pair else t for t in texts]
    text_b = [t[1] for t in texts] if task.pair else [""] * n
    if labels is None:
        labels = [float(i % 5) for i in range(n)] if task.type == "regression" else [i % 2 for i in range(n)]
    return datasets.Dataset.from_dict(
        {"id": ids or [str(i) for i in range(n)], "text_a": text_a, "text_b": text_b, "label": labels,
         "domain": [domain] * n},
        features=features_for(task))


def config(**kw) -> AugmentConfig:
    kw.setdefault("pos_tagger", "none")  # tests must not depend on whether nltk happens to be installed
    return AugmentConfig(**kw)


def sentences(n: int, seed: int = 0, pair: bool = False) -> list:
    rng = random.Random(seed)

    def one() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))

    return [(one(), one()) if pair else one() for _ in range(n)]


def variants_by_origin(ds: datasets.Dataset) -> dict[str, list[tuple[str, str, str]]]:
    """Origin id -> its variants as (id, text_a, text_b), in output order."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for row_id, text_a, text_b in zip(col(ds, "id"), col(ds, "text_a"), col(ds, "text_b"), strict=True):
        if "~aug" in row_id:
            out.setdefault(row_id.split("~aug")[0], []).append((row_id, text_a, text_b))
    return out


def col(ds: datasets.Dataset, name: str) -> list:
    """A column as a plain list (``ds[name]`` is a lazy Column in recent `datasets`)."""
    return list(ds[name])


def added(ds: datasets.Dataset, n_orig: int) -> datasets.Dataset:
    return ds.select(list(range(n_orig, len(ds))))  # a list: select(range) rejects an empty tail


def is_masked_ngram(out: list[str], orig: list[str]) -> bool:
    """Whether ``out`` is a contiguous n-gram of ``orig`` with some words masked."""
    return any(all(o in (orig[start + k], MASK) for k, o in enumerate(out))
               for start in range(len(orig) - len(out) + 1))


# ------------------------------------------------------------------------------------------- reproducibility


def test_same_seed_same_result_and_different_seed_differs() -> None:
    ds = make_ds(SINGLE, sentences(30))
    first = augment_examples(ds, SINGLE, config(seed=3), mask_token=MASK)
    again = augment_examples(ds, SINGLE, config(seed=3), mask_token=MASK)
    other = augment_examples(ds, SINGLE, config(seed=4), mask_token=MASK)
    assert first.to_dict() == again.to_dict()
    assert first.to_dict() != other.to_dict()
    assert len(first) > len(ds)


def test_golden_output_is_stable_across_processes() -> None:
    # Pinned values: they change only if the seeding (hashlib, not the salted hash()) or the rules change.
    ds = make_ds(SINGLE, ["the movie was very good and fun"], ids=["ex1"])
    out = augment_examples(ds, SINGLE, config(seed=0, n_iter=3, p_mask=0.3, p_swap=0.3), mask_token=MASK)
    assert col(added(out, 1), "text_a") == GOLDEN


GOLDEN = ["the [MASK] was good [MASK] and fun", "was", "[MASK] [MASK] [MASK] movie good movie [MASK]"]


def test_row_order_does_not_change_variants() -> None:
    # Short texts from a small vocabulary, so examples often produce the same variant (dedupe matters).
    texts = [" ".join(random.Random(i).choices(WORDS[:4], k=3)) for i in range(60)]
    ds = make_ds(SINGLE, texts)
    cfg = config(seed=1, n_iter=8, p_mask=0.3, p_swap=0.3)
    forward = augment_examples(ds, SINGLE, cfg, mask_token=MASK)
    permutation = list(range(len(ds)))
    random.Random(5).shuffle(permutation)
    shuffled = augment_examples(ds.select(permutation), SINGLE, cfg, mask_token=MASK)
    assert variants_by_origin(forward) == variants_by_origin(shuffled)
    # Added rows follow the input's row order.
    origins = [row_id.split("~aug")[0] for row_id in added(shuffled, len(ds))["id"]]
    position = {str(p): k for k, p in enumerate(permutation)}
    assert origins == sorted(origins, key=position.__getitem__)


# ---------------------------------------------------------------------------------------------------- rules


LONG = [f"w{i}" for i in range(2000)]


def test_masking_rate() -> None:
    ds = make_ds(SINGLE, [" ".join(LONG)])
    out = added(augment_examples(ds, SINGLE, config(p_mask=0.3, p_swap=0, p_ngram=0, n_iter=5), mask_token=MASK), 1)
    assert len(out) == 5
    masked = 0
    for text in col(out, "text_a"):
        words = text.split()
        assert len(words) == len(LONG)
        assert all(w in (o, MASK) for w, o in zip(words, LONG, strict=True))
        masked += words.count(MASK)
    assert masked / (5 * len(LONG)) == pytest.approx(0.3, abs=0.03)


def test_swap_rate_and_swapped_words_come_from_the_vocabulary() -> None:
    other = [" ".join(f"x{i}" for i in range(k, k + 10)) for k in range(0, 1000, 10)]
    ds = make_ds(SINGLE, [" ".join(LONG), *other])
    vocab = set(LONG) | {w for text in other for w in text.split()}
    out = augment_examples(ds, SINGLE, config(p_mask=0, p_swap=0.3, p_ngram=0, n_iter=5), mask_token=MASK)
    long_variants = [text for row_id, text, _ in variants_by_origin(out)["0"]]
    assert len(long_variants) == 5
    swapped = 0
    for text in long_variants:
        words = text.split()
        assert len(words) == len(LONG) and set(words) <= vocab and MASK not in words
        swapped += sum(w != o for w, o in zip(words, LONG, strict=True))
    # A swap may draw the same word back (probability ~1/3000 here), so the change rate is ~p_swap.
    assert swapped / (5 * len(LONG)) == pytest.approx(0.3, abs=0.03)


def test_mask_and_swap_are_exclusive_and_add_up() -> None:
    ds = make_ds(SINGLE, [" ".join(LONG)])
    out = added(augment_examples(ds, SINGLE, config(p_mask=0.5, p_swap=0.5, p_ngram=0, n_iter=2), mask_token=MASK),
                1)
    for text in col(out, "text_a"):
        words = text.split()
        # Every word is masked or swapped; swaps are rarely the same word.
        assert sum(w == o for w, o in zip(words, LONG, strict=True)) < 10
        assert words.count(MASK) / len(words) == pytest.approx(0.5, abs=0.05)


def test_ngram_rule_keeps_contiguous_ngrams_of_the_original() -> None:
    texts = sentences(40) + ["one two"]
    ds = make_ds(SINGLE, texts)
    out = augment_examples(ds, SINGLE, config(p_mask=0, p_swap=0, p_ngram=1.0, max_ngram=4, n_iter=10),
                           mask_token=MASK)
    by_id = dict(zip(col(ds, "id"), texts, strict=True))
    lengths = Counter()
    for origin, variants in variants_by_origin(out).items():
        orig = by_id[origin].split()
        for _, text, _ in variants:
            words = text.split()
            assert 1 <= len(words) <= min(4, len(orig))
            assert " ".join(words) in " ".join(orig) and is_masked_ngram(words, orig)
            lengths[len(words)] += 1
    assert set(lengths) == {1, 2, 3, 4}
    # "one two": its n-grams other than itself are "one" and "two".
    assert sorted(text for _, text, _ in variants_by_origin(out)[str(len(texts) - 1)]) == ["one", "two"]


def test_ngram_rule_applies_after_masking() -> None:
    texts = sentences(40)
    ds = make_ds(SINGLE, texts)
    out = augment_examples(ds, SINGLE, config(p_mask=0.5, p_swap=0, p_ngram=1.0, max_ngram=5, n_iter=10),
                           mask_token=MASK)
    by_id = dict(zip(col(ds, "id"), texts, strict=True))
    n_masked = 0
    for origin, variants in variants_by_origin(out).items():
        for _, text, _ in variants:
            words = text.split()
            assert 1 <= len(words) <= 5 and is_masked_ngram(words, by_id[origin].split())
            n_masked += MASK in words
    assert n_masked > 0


def test_pair_variants_change_a_b_or_both() -> None:
    texts = sentences(30, pair=True)
    ds = make_ds(PAIR, texts)
    out = augment_examples(ds, PAIR, config(n_iter_pair=10), mask_token=MASK)
    by_id = dict(zip(col(ds, "id"), texts, strict=True))
    kinds = Counter()
    for origin, variants in variants_by_origin(out).items():
        assert len(variants) <= 10
        a, b = by_id[origin]
        for _, new_a, new_b in variants:
            kinds[(new_a != a, new_b != b)] += 1
    assert kinds[(True, False)] > 0 and kinds[(False, True)] > 0 and kinds[(True, True)] > 0
    assert kinds[(False, False)] == 0
    # Default rates: 20 single-text variants, 10 per pair.
    assert sum(kinds.values()) > 0.9 * 10 * len(texts)


def test_default_counts_single() -> None:
    ds = make_ds(SINGLE, sentences(20))
    out = augment_examples(ds, SINGLE, config(), mask_token=MASK)
    counts = [len(v) for v in variants_by_origin(out).values()]
    assert max(counts) == 20 and sum(counts) > 0.9 * 20 * len(ds)


# ----------------------------------------------------------------------------------------- dedupe and rows


def test_no_duplicates_and_originals_kept_once() -> None:
    texts = ["a b", "b a", "a", "a b c", "c", "b"]
    ds = make_ds(SINGLE, texts)
    out = augment_examples(ds, SINGLE, config(n_iter=30, p_mask=0.4, p_swap=0.4, p_ngram=0.5), mask_token=MASK)
    pairs = list(zip(col(out, "text_a"), col(out, "text_b"), strict=True))
    assert len(pairs) == len(set(pairs))
    assert out.select(range(len(ds))).to_dict() == ds.to_dict()
    # Short texts cannot yield 30 distinct variants; the tries are bounded.
    assert len(out) - len(ds) < 30 * len(ds)


def test_example_without_new_variants_gets_none() -> None:
    ds = make_ds(SINGLE, ["word", "", "   "])
    out = augment_examples(ds, SINGLE, config(p_mask=0, p_swap=0, p_ngram=1.0), mask_token=MASK)
    assert out.to_dict() == ds.to_dict()


def test_pair_dedupe() -> None:
    ds = make_ds(PAIR, [("a b", "c d"), ("a b", "c"), ("a", "c d")])
    out = augment_examples(ds, PAIR, config(n_iter_pair=20, p_mask=0.3, p_swap=0.3, p_ngram=0.5), mask_token=MASK)
    pairs = list(zip(col(out, "text_a"), col(out, "text_b"), strict=True))
    assert len(pairs) == len(set(pairs))


def test_labels_ids_domain_and_features() -> None:
    ds = make_ds(SINGLE, sentences(10), ids=[f"row{i}" for i in range(10)], domain="books")
    out = augment_examples(ds, SINGLE, config(), mask_token=MASK)
    assert out.features == ds.features and out.column_names == ds.column_names
    assert col(out, "label")[:10] == col(ds, "label")
    new = added(out, 10)
    assert set(col(new, "label")) == {-1}
    assert set(col(new, "domain")) == {"books"} and set(col(new, "text_b")) == {""}
    assert len(set(col(out, "id"))) == len(out)
    origins = set(col(ds, "id"))
    assert all(i.split("~aug")[0] in origins and i.rsplit("~aug", 1)[1].isdigit() for i in col(new, "id"))


def test_regression_labels_become_nan() -> None:
    ds = make_ds(REGRESSION, sentences(8, pair=True), labels=[0.5 * i for i in range(8)])
    out = augment_examples(ds, REGRESSION, config(), mask_token=MASK)
    assert out.features["label"] == datasets.Value("float32")
    assert col(out, "label")[:8] == col(ds, "label")
    new_labels = col(added(out, 8), "label")
    assert new_labels and all(math.isnan(y) for y in new_labels)


def test_max_examples_caps_added_rows_with_a_seeded_subset() -> None:
    ds = make_ds(SINGLE, sentences(20))
    full = augment_examples(ds, SINGLE, config(), mask_token=MASK)
    capped = augment_examples(ds, SINGLE, config(max_examples=50), mask_token=MASK)
    assert len(capped) == len(ds) + 50
    full_rows = set(zip(col(full, "id"), col(full, "text_a"), strict=True))
    assert set(zip(col(capped, "id"), col(capped, "text_a"), strict=True)) <= full_rows
    again = augment_examples(ds.select(range(19, -1, -1)), SINGLE, config(max_examples=50), mask_token=MASK)
    assert variants_by_origin(again) == variants_by_origin(capped)
    other = augment_examples(ds, SINGLE, config(max_examples=50, seed=1), mask_token=MASK)
    assert set(col(added(other, 20), "text_a")) != set(col(added(capped, 20), "text_a"))


def test_empty_input() -> None:
    ds = make_ds(SINGLE, [])
    out = augment_examples(ds, SINGLE, config(), mask_token=MASK)
    assert len(out) == 0 and out.features == ds.features


# --------------------------------------------------------------------------------------------- POS tagger


def parity_tagger(calls: list[list[str]]):
    def tag(words: list[str]) -> list[str]:
        calls.append(list(words))
        return ["EVEN" if len(w) % 2 == 0 else "ODD" for w in words]
    return tag


def test_fake_tagger_swaps_within_the_same_tag() -> None:
    texts = sentences(50)
    ds = make_ds(SINGLE, texts)
    calls: list[list[str]] = []
    out = augment_examples(ds, SINGLE, config(p_mask=0, p_swap=0.5, p_ngram=0), mask_token=MASK,
                           tagger=parity_tagger(calls))
    by_id = dict(zip(col(ds, "id"), texts, strict=True))
    changed = 0
    for origin, variants in variants_by_origin(out).items():
        orig = by_id[origin].split()
        for _, text, _ in variants:
            words = text.split()
            for w, o in zip(words, orig, strict=True):
                assert len(w) % 2 == len(o) % 2
                changed += w != o
    assert changed > 100
    # Whole sentences are tagged, each once.
    assert sorted(" ".join(c) for c in calls) == sorted(texts)


def test_tagger_with_wrong_length_is_an_error() -> None:
    ds = make_ds(SINGLE, ["a b c"])
    with pytest.raises(ValueError, match="tags for 3 words"):
        augment_examples(ds, SINGLE, config(), mask_token=MASK, tagger=lambda words: ["X"])


def test_load_pos_tagger() -> None:
    assert load_pos_tagger("none") is None
    auto = load_pos_tagger("auto")
    if importlib.util.find_spec("nltk") is None:
        assert auto is None
        with pytest.raises(ConfigError, match=r"augment\.pos_tagger.*pip install 'multidistill\[pos\]'.*"
                                              r"averaged_perceptron_tagger"):
            load_pos_tagger("nltk")
    elif auto is not None:
        assert len(auto(["The", "dog", "runs"])) == 3


def test_auto_without_a_tagger_says_so_once_and_names_the_extra(monkeypatch, recwarn) -> None:
    import sys

    from multidistill.data import augment

    monkeypatch.setitem(sys.modules, "nltk", None)  # `import nltk` now fails, whether or not it is installed
    augment._choose_tagger.cache_clear()
    try:
        assert load_pos_tagger("auto") is None
        assert load_pos_tagger("auto") is None
        augment_examples(make_ds(SINGLE, sentences(4)), SINGLE, config(pos_tagger="auto"), mask_token=MASK)
        said = [str(w.message) for w in recwarn if "pos_tagger" in str(w.message)]
        assert len(said) == 1
        assert "nltk is not installed" in said[0] and "pip install 'multidistill[pos]'" in said[0]
        assert augment.pos_tagger_fallback("auto") == said[0]
        assert augment.pos_tagger_fallback("none") is None
    finally:
        augment._choose_tagger.cache_clear()  # later tests see the real environment again
    # The extra the note names exists and installs the tagger the code imports.
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '\npos = ["nltk>=3.9"]\n' in pyproject


# ------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("bad", [{"p_mask": 1.5}, {"p_swap": -0.1}, {"p_ngram": 2}, {"max_ngram": 0},
                                 {"n_iter": -1}, {"max_examples": 0}, {"pos_tagger": "spacy"},
                                 {"p_mask": 0.6, "p_swap": 0.6}, {"unknown": 1}])
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValidationError):
        AugmentConfig(**bad)


def test_config_defaults_match_the_paper() -> None:
    cfg = AugmentConfig()
    assert (cfg.p_mask, cfg.p_swap, cfg.p_ngram, cfg.max_ngram, cfg.n_iter, cfg.n_iter_pair) == (
        0.1, 0.1, 0.25, 5, 20, 10)
    assert all(field.description for field in AugmentConfig.model_fields.values())


# ----------------------------------------------------------------------------------------------- property


TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "\t\n ", "\u3000", MASK]),
                 st.lists(st.sampled_from(["a", "b", "ü", "日本", "\u200b", " "]), max_size=8).map("".join))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.tuples(TEXT, TEXT), max_size=6), pair=st.booleans(), seed=st.integers(0, 2**32 - 1),
       p=st.floats(0, 0.5), ngram=st.floats(0, 1))
def test_random_unicode_texts_never_raise(texts, pair, seed, p, ngram) -> None:
    assume(p > 0 or ngram > 0)  # all three rules off is refused with the config
    task = PAIR if pair else SINGLE
    ds = make_ds(task, texts if pair else [a for a, _ in texts])
    cfg = config(seed=seed, p_mask=p, p_swap=p, p_ngram=ngram, n_iter=3, n_iter_pair=3)
    out = augment_examples(ds, task, cfg, mask_token=MASK)
    assert out.select(range(len(ds))).to_dict() == ds.to_dict()
    assert len(set(col(out, "id"))) == len(out)
    new = added(out, len(ds))
    pairs = list(zip(col(out, "text_a"), col(out, "text_b"), strict=True))
    assert len(set(pairs[len(ds):])) == len(new) and not set(pairs[len(ds):]) & set(pairs[:len(ds)])


def test_variant_source_maps_a_variant_to_its_training_row():
    from multidistill.data.augment import variant_source

    originals = {"books:7", "a~aug1"}  # an original id may itself hold the mark: it is its own source
    assert variant_source("books:7", originals) == "books:7"
    assert variant_source("books:7~aug12", originals) == "books:7"
    assert variant_source("a~aug1", originals) == "a~aug1"
    assert variant_source("a~aug1~aug0", originals) == "a~aug1"
    for bad in ("books:8~aug1", "books:7~augx", "books:7"[:-1], "books:7~aug"):
        with pytest.raises(ValueError, match="neither a training row nor a variant"):
            variant_source(bad, originals)


@given(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=8, unique=True),
       st.integers(min_value=0, max_value=50))
@settings(max_examples=60, deadline=None)
def test_every_variant_id_leads_back_to_its_row(ids, number):
    from multidistill.data.augment import VARIANT_MARK, variant_source

    assume(all(VARIANT_MARK not in example for example in ids))  # else a variant's id could be an original's
    originals = set(ids)
    for example in ids:
        assert variant_source(f"{example}{VARIANT_MARK}{number}", originals) == example


def test_the_augmentation_seed_takes_the_range_of_every_other_seed() -> None:
    from pydantic import ValidationError

    assert AugmentConfig(seed=2**32 - 1).seed == 2**32 - 1
    for bad in (-1, 2**32):
        with pytest.raises(ValidationError):
            AugmentConfig(seed=bad)


def test_an_augmentation_that_can_make_no_variant_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="n_iter and n_iter_pair are both 0"):
        AugmentConfig(n_iter=0, n_iter_pair=0)
    with pytest.raises(ValidationError, match="p_mask, p_swap and p_ngram are all 0"):
        AugmentConfig(p_mask=0, p_swap=0, p_ngram=0)
    assert AugmentConfig(n_iter=0, n_iter_pair=2).n_iter_pair == 2  # pair tasks only: fine


@pytest.mark.parametrize(("given", "named"), [({"p_ngram": 0, "max_ngram": 3}, "max_ngram applies to the n-gram rule"),
                                              ({"p_swap": 0, "pos_tagger": "nltk"}, "pos_tagger picks the words")])
def test_a_setting_of_a_rule_that_never_fires_is_refused(given, named) -> None:
    """max_ngram does nothing with p_ngram 0, pos_tagger nothing with p_swap 0: refused, as TrainConfig refuses a
    temperature_tau without temperature sampling; at its default (a recorded config writes every field) it passes."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=f"{named}.*drop .*, or raise p_"):
        AugmentConfig(**given)
    off = {key: value for key, value in given.items() if key.startswith("p_")}
    recorded = AugmentConfig(**off).model_dump()  # every field written out, the rule's own at its default
    assert AugmentConfig.model_validate(recorded).model_dump() == recorded


def test_swaps_off_with_no_tagger_pinned_loads() -> None:
    """pos_tagger: none asks for no tagger, which is what no swaps need: the demo's default, and what
    docs/augmentation.md suggests pinning, so turning swaps off must not be refused."""
    assert AugmentConfig(p_swap=0, pos_tagger="none").pos_tagger == "none"
    from multidistill.recipes.demo import load_demo_config

    assert load_demo_config(overrides=["augment.p_swap=0"]).augment.p_swap == 0


def test_a_recipe_names_the_augment_section_of_a_rule_that_never_fires() -> None:
    from multidistill.recipes.config import load_recipe

    path = Path(__file__).resolve().parents[1] / "configs" / "mkd_bilstm.yaml"
    with pytest.raises(ConfigError, match=r"key 'augment'.*max_ngram applies .* \(from --set\)"):
        load_recipe(path, ["augment.p_ngram=0", "augment.max_ngram=3"])
    # The shipped config writes max_ngram: 5 out, the default: turning the rule off alone passes.
    assert load_recipe(path, ["augment.p_ngram=0"]).augment.p_ngram == 0


def test_without_swaps_no_text_is_tagged() -> None:
    calls: list[list[str]] = []
    ds = make_ds(SINGLE, sentences(20))
    cfg = config(p_mask=0.3, p_swap=0, p_ngram=0.5, n_iter=3)
    out = augment_examples(ds, SINGLE, cfg, mask_token=MASK, tagger=parity_tagger(calls))
    assert calls == []  # the tags would choose nothing
    assert out.to_dict() == augment_examples(ds, SINGLE, cfg, mask_token=MASK).to_dict()
