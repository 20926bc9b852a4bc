"""Golden tests of Meta-KD's domain-branch losses (`domain_adversarial`, `transferable_mse`) and of per-example
weights applied before the objective's batch mean.

Logits are chosen so that every value is a log of a small fraction: with two domains and logits (ln 3, 0) the
softmax is (3/4, 1/4), so CE against domain 0 is ln(4/3) and against domain 1 is ln 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from multidistill.config import LossTerm, ObjectiveConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError
from multidistill.losses import LOSSES, build_loss
from multidistill.losses.domain import example_permutation
from multidistill.models.features import EncoderFeatures, ModelDims
from multidistill.training.objective import WeightedObjective

LN3, LN4 = math.log(3.0), math.log(4.0)
STUDENT = ModelDims(hidden_size=2, num_layers=2, num_attention_heads=2)
TEACHER = ModelDims(hidden_size=3, num_layers=4, num_attention_heads=2)
SENT = Task(name="sent", labels=["neg", "pos"])


def domain_features(logits) -> EncoderFeatures:
    logits = torch.as_tensor(logits, dtype=torch.float32)
    return EncoderFeatures(attention_mask=torch.ones(len(logits), 3, dtype=torch.long), dims=STUDENT,
                           domain_logits=logits)


# Four examples, two per domain; each one's logits are confident (3/4) in its own domain.
OWN = [[LN3, 0.0], [LN3, 0.0], [0.0, LN3], [0.0, LN3]]
DOMAINS = torch.tensor([0, 0, 1, 1])
IDS = ["r7", "r2", "r9", "r4"]


def test_both_are_registered():
    assert {"domain_adversarial", "transferable_mse"} <= set(LOSSES)


def test_domain_adversarial_golden_against_the_permuted_domains():
    loss = build_loss("domain_adversarial", seed=1)
    targets = loss.targets(DOMAINS, IDS)
    assert sorted(targets.tolist()) == sorted(DOMAINS.tolist())  # a permutation: each domain keeps its count
    assert not torch.equal(targets, DOMAINS)  # this seed moves some example onto the other domain
    # Own domain kept: -ln(3/4) = ln(4/3); the other domain: -ln(1/4) = ln 4.
    expected = torch.tensor([LN4 - LN3 if t == d else LN4 for t, d in zip(targets, DOMAINS, strict=True)])
    values = loss(domain_features(OWN), DOMAINS, IDS)
    assert values.shape == (4,)
    torch.testing.assert_close(values, expected)
    # It differs from the unpermuted CE, which is ln(4/3) for every example here.
    unpermuted = torch.nn.functional.cross_entropy(torch.tensor(OWN), DOMAINS, reduction="none")
    torch.testing.assert_close(unpermuted, torch.full((4,), LN4 - LN3))
    assert values.mean() > unpermuted.mean() + 0.5


def test_the_permutation_pairs_examples_so_the_batch_order_does_not_matter():
    # "Invariant to the batch order" made precise: the batch is a set of examples, and the loss pairs each
    # example with a partner example (whose domain is its target). Reordering the rows must keep every pairing,
    # so each example keeps its value and the batch mean is unchanged. (A permutation drawn over positions
    # would pair other examples after a reordering and change the mean.)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 0.0], [0.0, 0.0, 2.0], [1.0, -2.0, 0.5]])
    domains = torch.tensor([0, 1, 1, 2, 0])
    ids = [11, 3, 25, 8, 14]
    loss = build_loss("domain_adversarial", seed=5)
    loss.set_progress(0.25)
    values = loss(domain_features(logits), domains, ids)
    for order in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [1, 2, 3, 4, 0]):
        shuffled = loss(domain_features(logits[order]), domains[order], [ids[i] for i in order])
        torch.testing.assert_close(shuffled, values[order])
        torch.testing.assert_close(shuffled.mean(), values.mean())
    # The contrast: targets drawn over positions (the same draw for any order) change the mean after a reordering.
    drawn = torch.randperm(5, generator=torch.Generator().manual_seed(0))

    def positional(rows: list[int]) -> float:
        return float(torch.nn.functional.cross_entropy(logits[rows], domains[rows][drawn]))
    assert any(positional(order) != pytest.approx(positional([0, 1, 2, 3, 4]))
               for order in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [1, 2, 3, 4, 0]))
    # The pairing itself: the partner of every example is the same example whatever the order.
    keys = [f"{i}\x1f{int(d)}" for i, d in zip(ids, domains, strict=True)]
    partner = example_permutation(keys, seed=5, salt="x")
    order = [3, 0, 4, 2, 1]
    moved = example_permutation([keys[i] for i in order], seed=5, salt="x")
    assert [ids[order[int(p)]] for p in moved] == [ids[int(partner[i])] for i in order]


def test_the_permutation_is_reproducible_and_changes_with_seed_and_step():
    keys = [str(i) for i in range(12)]
    assert torch.equal(example_permutation(keys, 1, "a"), example_permutation(keys, 1, "a"))
    assert sorted(example_permutation(keys, 1, "a").tolist()) == list(range(12))
    assert not torch.equal(example_permutation(keys, 1, "a"), example_permutation(keys, 2, "a"))
    assert not torch.equal(example_permutation(keys, 1, "a"), example_permutation(keys, 1, "b"))
    loss = build_loss("domain_adversarial")
    domains = torch.tensor([0, 1] * 6)
    drawn = set()
    for step in range(5):
        loss.set_progress(step / 5)
        drawn.add(tuple(loss.targets(domains, keys).tolist()))
    assert len(drawn) > 1  # a new permutation per training step
    torch.manual_seed(0)
    first = loss.targets(domains, keys)
    torch.manual_seed(1)
    assert torch.equal(loss.targets(domains, keys), first)  # the global RNG plays no part


def test_domain_adversarial_refuses_ids_beyond_the_classifier():
    loss = build_loss("domain_adversarial")
    with pytest.raises(ConfigError, match="domain classifier has 2 outputs"):
        loss(domain_features(OWN), torch.tensor([0, 1, 2, 0]), IDS)
    with pytest.raises(ConfigError, match="bad parameters"):
        build_loss("domain_adversarial", seed="x")


def transferable(width: int, values) -> EncoderFeatures:
    values = torch.as_tensor(values, dtype=torch.float32)
    dims = ModelDims(hidden_size=width, num_layers=2, num_attention_heads=2)
    return EncoderFeatures(attention_mask=torch.ones(len(values), 3, dtype=torch.long), dims=dims,
                           transferable=values)


def test_transferable_mse_golden_with_the_projection():
    loss = build_loss("transferable_mse", dims={"student": STUDENT, "teacher": TEACHER})
    assert loss.feature_request() == {"student": {"transferable": ()}, "teacher": {"transferable": ()}}
    with torch.no_grad():
        loss.projection.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        loss.projection.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    # W tau_S + b: (1,2) -> (1, 2, 4); (0,0) -> (0, 0, 1).
    # Against (1,2,3): (0, 0, 1)^2 -> 1/3.  Against (2,0,1): (-2, 0, 0)^2 -> 4/3.
    values = loss(transferable(2, [[1.0, 2.0], [0.0, 0.0]]), transferable(3, [[1.0, 2.0, 3.0], [2.0, 0.0, 1.0]]))
    torch.testing.assert_close(values, torch.tensor([1 / 3, 4 / 3]))


def test_transferable_mse_without_projection_and_its_refusals():
    same = ModelDims(hidden_size=2, num_layers=1, num_attention_heads=1)
    loss = build_loss("transferable_mse", dims={"student": same, "teacher": same}, projection=False)
    # (1,2) vs (0,0): (1 + 4)/2 = 2.5; (3,-1) vs (1,1): (4 + 4)/2 = 4.
    values = loss(transferable(2, [[1.0, 2.0], [3.0, -1.0]]), transferable(2, [[0.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(values, torch.tensor([2.5, 4.0]))
    with pytest.raises(ConfigError, match="key 'projection'"):
        build_loss("transferable_mse", dims={"student": STUDENT, "teacher": TEACHER}, projection=False)
    with pytest.raises(ConfigError, match="needs the student and teacher model's sizes"):
        build_loss("transferable_mse")
    with pytest.raises(ValueError, match="needs the 'transferable' features"):
        loss(EncoderFeatures(attention_mask=torch.ones(1, 1), dims=same), transferable(2, [[0.0, 0.0]]))


# --- through the objective: per-example weights before the batch mean ------------------------------------


@dataclass
class StubModel:
    """A model whose forward returns hand-made features and records what it was given."""

    features: EncoderFeatures
    calls: list

    def __call__(self, task, input_ids, attention_mask, token_type_ids=None, want=None, domain_ids=None):
        self.calls.append({"want": want, "domain_ids": domain_ids})
        return SimpleNamespace(logits=self.features.logits, features=self.features)


def _batch(size: int, **extra) -> dict:
    return {"task": "sent", "input_ids": torch.ones(size, 3, dtype=torch.long),
            "attention_mask": torch.ones(size, 3, dtype=torch.long), "ids": [f"e{i}" for i in range(size)], **extra}


def test_per_example_weights_multiply_each_example_before_the_mean():
    objective = WeightedObjective({"sent": SENT}, ObjectiveConfig(tasks={"sent": [LossTerm(loss="transferable_mse")]}),
                                  dims={"student": STUDENT, "teacher": STUDENT})
    with torch.no_grad():
        term = objective.terms["sent"][0]
        term.projection.weight.copy_(torch.eye(2))
        term.projection.bias.zero_()
    student = transferable(2, [[1.0, 0.0], [3.0, 3.0]])
    teacher = transferable(2, [[0.0, 0.0], [0.0, 0.0]])
    # Per example: (1 + 0)/2 = 0.5 and (9 + 9)/2 = 9.
    model = StubModel(student, [])

    def total(weights) -> float:
        batch = _batch(2, teacher_features=teacher, weights=torch.tensor(weights), domain_ids=torch.tensor([0, 1]))
        return float(objective(model, batch).loss.detach())

    # mean_i(w_i * l_i): [2, 0] keeps the first example's loss, [0, 2] the second's.
    assert total([2.0, 0.0]) == pytest.approx(0.5)
    assert total([0.0, 2.0]) == pytest.approx(9.0)
    assert total([1.0, 0.0]) == pytest.approx(0.25)  # (1 * 0.5 + 0 * 9) / 2
    # A batch-mean shortcut, mean(w) * mean(l), would give 1 * 4.75 for both [2, 0] and [0, 2].
    shortcut = (2.0 + 0.0) / 2 * (0.5 + 9.0) / 2
    assert total([2.0, 0.0]) != pytest.approx(shortcut) and total([0.0, 2.0]) != pytest.approx(shortcut)


def test_a_meta_teacher_objective_is_mean_of_t_times_ce_plus_gamma1_domain_ce():
    config = ObjectiveConfig(tasks={"sent": [LossTerm(loss="hard"),
                                             LossTerm(loss="domain_adversarial", weight=0.5, params={"seed": 1})]})
    objective = WeightedObjective({"sent": SENT}, config)
    assert objective.student_want == {"sent": {"domain_logits": ()}} and not objective.needs_teacher_features
    features = domain_features(OWN)
    features.logits = torch.tensor([[LN3, 0.0], [LN3, 0.0], [LN3, 0.0], [LN3, 0.0]])
    model = StubModel(features, [])
    weights = torch.tensor([1.0, 0.5, 0.0, 2.0])
    batch = _batch(4, labels=torch.tensor([0, 1, 0, 1]), domain_ids=DOMAINS, weights=weights)
    batch["ids"] = IDS
    out = objective(model, batch)
    assert torch.equal(model.calls[0]["domain_ids"], DOMAINS)  # the domain branch got the batch's domain ids
    # hard CE: label 0 -> ln(4/3), label 1 -> ln 4.
    hard = torch.tensor([LN4 - LN3, LN4, LN4 - LN3, LN4])
    targets = build_loss("domain_adversarial", seed=1).targets(DOMAINS, IDS)
    adversarial = torch.tensor([LN4 - LN3 if t == d else LN4 for t, d in zip(targets, DOMAINS, strict=True)])
    expected = (weights * (hard + 0.5 * adversarial)).mean()
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ConfigError, match="need domain ids"):
        objective(model, _batch(4, labels=torch.tensor([0, 1, 0, 1])))
