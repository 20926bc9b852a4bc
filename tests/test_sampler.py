"""Tests for `multidistill.data.sampler.MultiTaskBatchPlanner`: coverage, determinism and mixing ratios."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multidistill.data.sampler import MultiTaskBatchPlanner, PlannedBatch

STRATEGIES = ["proportional", "temperature", "round_robin"]

sizes_st = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 60), min_size=1, max_size=4)


def rows_by_task(plan: list[PlannedBatch]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for batch in plan:
        out.setdefault(batch.task, []).extend(int(i) for i in batch.indices)
    return out


def as_tuples(plan: list[PlannedBatch]) -> list[tuple[str, tuple[int, ...]]]:
    return [(b.task, tuple(int(i) for i in b.indices)) for b in plan]


def passes(plan: list[PlannedBatch], task: str, size: int, batch_size: int) -> list[list[int]]:
    """The task's rows grouped into consecutive passes of ceil(size / batch_size) batches."""
    batches = [list(map(int, b.indices)) for b in plan if b.task == task]
    per_pass = math.ceil(size / batch_size)
    return [sum(batches[i:i + per_pass], []) for i in range(0, len(batches), per_pass)]


# ---------------------------------------------------------------- proportional


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_st, batch_size=st.integers(1, 16), seed=st.integers(0, 2**16), epoch=st.integers(0, 50))
def test_proportional_covers_every_row_exactly_once(sizes, batch_size, seed, epoch) -> None:
    plan = MultiTaskBatchPlanner(sizes, batch_size, "proportional", seed=seed).epoch(epoch)
    rows = rows_by_task(plan)
    assert set(rows) == set(sizes)
    for task, n in sizes.items():
        assert sorted(rows[task]) == list(range(n)), task
    counts = Counter(b.task for b in plan)
    assert counts == {t: math.ceil(n / batch_size) for t, n in sizes.items()}


def test_proportional_batch_counts_are_in_proportion_to_sizes() -> None:
    sizes = {"big": 4000, "mid": 2000, "small": 1000}
    plan = MultiTaskBatchPlanner(sizes, 10, "proportional", seed=3).epoch(0)
    counts = Counter(b.task for b in plan)
    assert counts == {"big": 400, "mid": 200, "small": 100}
    # Ratio of batches equals ratio of sizes 4 : 2 : 1.
    assert counts["big"] / counts["small"] == 4 and counts["mid"] / counts["small"] == 2


def test_proportional_only_the_last_batch_of_a_task_is_short() -> None:
    plan = MultiTaskBatchPlanner({"a": 23, "b": 16}, 8, "proportional", seed=1).epoch(0)
    lengths = {t: sorted((len(b.indices) for b in plan if b.task == t), reverse=True) for t in ("a", "b")}
    assert lengths == {"a": [8, 8, 7], "b": [8, 8]}


def test_proportional_interleaves_tasks() -> None:
    # A shuffled mix, not all of one task followed by all of the other (which would give 1 switch).
    plan = MultiTaskBatchPlanner({"a": 500, "b": 500}, 10, "proportional", seed=0).epoch(0)
    switches = sum(x.task != y.task for x, y in zip(plan, plan[1:], strict=False))
    assert switches > 20


def test_rows_within_a_task_are_shuffled() -> None:
    plan = MultiTaskBatchPlanner({"a": 200}, 10, "proportional", seed=0).epoch(0)
    assert rows_by_task(plan)["a"] != list(range(200))


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_and_epoch_give_identical_plan(strategy: str) -> None:
    sizes = {"a": 97, "b": 41, "c": 13}
    first = MultiTaskBatchPlanner(sizes, 8, strategy, seed=5).epoch(3)
    again = MultiTaskBatchPlanner(dict(reversed(sizes.items())), 8, strategy, seed=5).epoch(3)
    assert as_tuples(first) == as_tuples(again)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_different_epoch_or_seed_gives_different_plan(strategy: str) -> None:
    sizes = {"a": 97, "b": 41, "c": 13}
    planner = MultiTaskBatchPlanner(sizes, 8, strategy, seed=5)
    base = as_tuples(planner.epoch(0))
    assert as_tuples(planner.epoch(1)) != base
    assert as_tuples(MultiTaskBatchPlanner(sizes, 8, strategy, seed=6).epoch(0)) != base


def test_different_epoch_reorders_tasks_for_proportional() -> None:
    planner = MultiTaskBatchPlanner({"a": 300, "b": 300}, 10, "proportional", seed=0)
    orders = {tuple(b.task for b in planner.epoch(e)) for e in range(3)}
    assert len(orders) == 3


# ---------------------------------------------------------------- temperature


def task_frequency(sizes: dict[str, int], tau: float, task: str, batch_size: int = 10) -> float:
    plan = MultiTaskBatchPlanner(sizes, batch_size, "temperature", tau=tau, seed=123).epoch(0)
    return Counter(b.task for b in plan)[task] / len(plan)


def test_temperature_tau_one_is_proportional() -> None:
    # 5000 draws with p(big) = 40000 / 50000 = 0.8; std = sqrt(0.8 * 0.2 / 5000) ~= 0.0057.
    sizes = {"big": 40000, "small": 10000}
    assert task_frequency(sizes, 1.0, "big") == pytest.approx(0.8, abs=0.03)


def test_small_tau_moves_toward_uniform() -> None:
    sizes = {"big": 40000, "small": 10000}
    # tau = 0.1: weights 40000^0.1 : 10000^0.1 = 4^0.1 : 1 ~= 1.1487 : 1 -> p(small) = 1 / 2.1487 ~= 0.4654
    freq_small = task_frequency(sizes, 0.1, "small")
    assert freq_small == pytest.approx(1 / (1 + 4 ** 0.1), abs=0.03)
    # tau = 0.5: 2 : 1 -> p(small) = 1/3; the smaller tau must up-sample the small task more.
    freq_half = task_frequency(sizes, 0.5, "small")
    assert freq_half == pytest.approx(1 / 3, abs=0.03)
    assert task_frequency(sizes, 1.0, "small") < freq_half < freq_small < 0.5


def test_temperature_plan_length_and_cycling_through_reshuffled_data() -> None:
    sizes = {"big": 400, "small": 30}
    planner = MultiTaskBatchPlanner(sizes, 10, "temperature", tau=0.1, seed=0)
    plan = planner.epoch(0)
    assert len(plan) == 40 + 3
    small_passes = passes(plan, "small", 30, 10)
    assert len(small_passes) > 2  # up-sampled: more than one pass over the small task
    for rows in small_passes[:-1]:  # every complete pass is a permutation of all rows
        assert sorted(rows) == list(range(30))
    assert len(set(map(tuple, small_passes[:-1]))) > 1  # reshuffled between passes


# ---------------------------------------------------------------- round robin


def test_round_robin_strictly_alternates_and_every_task_gets_max_batches() -> None:
    sizes = {"c": 7, "a": 50, "b": 23}
    plan = MultiTaskBatchPlanner(sizes, 5, "round_robin", seed=2).epoch(0)
    # max batches = ceil(50 / 5) = 10 per task, 3 tasks -> 30 batches in sorted order a, b, c, a, b, c...
    assert [b.task for b in plan] == ["a", "b", "c"] * 10
    assert Counter(b.task for b in plan) == {"a": 10, "b": 10, "c": 10}


def test_round_robin_small_tasks_cycle_full_passes() -> None:
    plan = MultiTaskBatchPlanner({"a": 50, "b": 12}, 5, "round_robin", seed=2).epoch(0)
    assert sorted(rows_by_task(plan)["a"]) == list(range(50))  # the largest task: exactly one pass
    b_passes = passes(plan, "b", 12, 5)  # 10 batches of b = 3 full passes (3 batches each) + 1 batch
    assert [sorted(rows) for rows in b_passes[:3]] == [list(range(12))] * 3
    assert len(b_passes[3]) == 5


# ---------------------------------------------------------------- every strategy


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=40, deadline=None)
@given(sizes=sizes_st, batch_size=st.integers(1, 16), seed=st.integers(0, 1000), epoch=st.integers(0, 20))
def test_len_matches_epoch_and_batches_are_valid(strategy, sizes, batch_size, seed, epoch) -> None:
    planner = MultiTaskBatchPlanner(sizes, batch_size, strategy, seed=seed)
    plan = planner.epoch(epoch)
    assert len(planner) == len(plan)
    for batch in plan:
        assert batch.task in sizes
        assert 1 <= len(batch.indices) <= batch_size
        assert len(set(batch.indices.tolist())) == len(batch.indices)  # no row twice within a batch
        assert batch.indices.min() >= 0 and batch.indices.max() < sizes[batch.task]


def test_len_formulas() -> None:
    sizes = {"a": 10, "b": 25, "c": 1}
    # batches per task at bs=4: ceil(10/4)=3, ceil(25/4)=7, ceil(1/4)=1
    assert len(MultiTaskBatchPlanner(sizes, 4, "proportional")) == 3 + 7 + 1
    assert len(MultiTaskBatchPlanner(sizes, 4, "temperature")) == 3 + 7 + 1
    assert len(MultiTaskBatchPlanner(sizes, 4, "round_robin")) == 3 * 7


def test_batch_size_larger_than_task_gives_one_full_batch() -> None:
    plan = MultiTaskBatchPlanner({"a": 3}, 100, "proportional").epoch(0)
    assert len(plan) == 1 and sorted(plan[0].indices.tolist()) == [0, 1, 2]


@pytest.mark.parametrize("sizes", [{"a": 10, "b": 0}, {"a": -1}, {}])
def test_task_without_examples_is_rejected(sizes: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least one example"):
        MultiTaskBatchPlanner(sizes, 4)


def test_indices_are_integer_arrays() -> None:
    plan = MultiTaskBatchPlanner({"a": 9}, 4, "proportional").epoch(0)
    assert all(isinstance(b.indices, np.ndarray) and np.issubdtype(b.indices.dtype, np.integer) for b in plan)


# ---------------------------------------------------------------- group by length


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_st, batch_size=st.integers(1, 8), group_size=st.integers(1, 4), seed=st.integers(0, 2**16),
       strategy=st.sampled_from(STRATEGIES))
def test_group_by_length_keeps_every_row_once_per_pass_and_the_plan_shape(sizes, batch_size, group_size, seed,
                                                                          strategy) -> None:
    rng = np.random.default_rng(seed)
    lengths = {t: rng.integers(1, 100, n) for t, n in sizes.items()}
    plain = MultiTaskBatchPlanner(sizes, batch_size, strategy, seed=seed).epoch(0)
    grouped = MultiTaskBatchPlanner(sizes, batch_size, strategy, seed=seed, lengths=lengths,
                                    group_size=group_size).epoch(0)
    assert [b.task for b in grouped] == [b.task for b in plain]  # mixing is unchanged
    assert [len(b.indices) for b in grouped] == [len(b.indices) for b in plain]
    for task, n in sizes.items():
        for rows in passes(list(grouped), task, n, batch_size):
            assert len(set(rows)) == len(rows) and set(rows) <= set(range(n))  # no row twice in a pass
            if len(rows) == n:
                assert sorted(rows) == list(range(n))


def test_group_by_length_batches_rows_of_similar_length_in_random_order() -> None:
    rng = np.random.default_rng(0)
    lengths = {"a": rng.integers(1, 128, 3200)}
    planner = MultiTaskBatchPlanner({"a": 3200}, 32, seed=1, lengths=lengths, group_size=100)
    plan = list(planner.epoch(0))
    padded = sum(len(b.indices) * lengths["a"][b.indices].max() for b in plan)
    random_padded = sum(len(b.indices) * lengths["a"][b.indices].max()
                        for b in MultiTaskBatchPlanner({"a": 3200}, 32, seed=1).epoch(0))
    # One mega-batch covers the pass: each batch spans ~1/100 of the length range.
    assert padded < 0.6 * random_padded
    assert all(np.ptp(lengths["a"][b.indices]) <= 3 for b in plan)
    maxima = [lengths["a"][b.indices].max() for b in plan]
    assert maxima != sorted(maxima, reverse=True)  # batch order is shuffled, not longest first
    assert as_tuples(planner.epoch(0)) == as_tuples(plan)  # a pure function of (seed, epoch): resumable
    assert as_tuples(planner.epoch(1)) != as_tuples(plan)


def test_group_by_length_needs_one_length_per_row() -> None:
    with pytest.raises(ValueError, match="one length per row"):
        MultiTaskBatchPlanner({"a": 3}, 2, lengths={"a": np.array([1, 2])})
