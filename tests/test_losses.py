"""Golden tests: every registered loss against numbers computed by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from multidistill.errors import ConfigError
from multidistill.losses import LOSSES, build_loss

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_every_registered_loss_has_a_golden_test():
    # The feature losses' golden tests are in test_feature_losses.py, the domain-branch ones in test_domain_losses.py,
    # soft_bce's (and the multilabel hard loss's) in test_multilabel.py.
    assert set(LOSSES) == {"hard", "soft_ce", "soft_kl", "soft_bce", "logit_mse", "score_mse", "hidden_mse",
                           "cosine_hidden", "attention_mse", "attention_kl", "relation_kl", "domain_adversarial",
                           "transferable_mse"}


def test_soft_ce_against_teacher_probabilities():
    # Student logits [0, ln 3] -> p_S = [1/4, 3/4]. Teacher q = [1/2, 1/2].
    # CE = -(1/2 ln 1/4 + 1/2 ln 3/4) = 1/2 (ln 4 + ln 4 - ln 3) = 2 ln 2 - ln3/2 = 0.836988.
    loss = build_loss("soft_ce")
    got = loss(torch.tensor([[0.0, LN3]]), torch.tensor([[0.5, 0.5]]))
    assert got.item() == pytest.approx(2 * LN2 - LN3 / 2, abs=1e-6)


def test_soft_ce_temperature_softens_both_sides_and_scales_by_t_squared():
    # T = 2. Student logits [0, 2 ln 3] / 2 = [0, ln 3] -> p = [1/4, 3/4].
    # Teacher probs [1/5, 4/5]: softmax(log p / 2) = [1, 2] / 3, since sqrt(1/5) : sqrt(4/5) = 1 : 2.
    # CE = -(1/3 ln 1/4 + 2/3 ln 3/4) = ln 4 - 2/3 ln 3 = 0.653886; x T^2 = 2.615544.
    loss = build_loss("soft_ce", temperature=2.0)
    got = loss(torch.tensor([[0.0, 2 * LN3]]), torch.tensor([[0.2, 0.8]]))
    assert got.item() == pytest.approx(4 * (2 * LN2 - 2 / 3 * LN3), abs=1e-5)


def test_soft_kl_is_soft_ce_minus_teacher_entropy_times_t_squared():
    # T = 2, same numbers as above: q = [1/3, 2/3], H(q) = ln 3 - 2/3 ln 2 = 0.636514.
    # KL = CE - H = (2 ln 2 - 2/3 ln 3) - (ln 3 - 2/3 ln 2) = 8/3 ln 2 - 5/3 ln 3 = 0.017372; x 4 = 0.069489.
    loss = build_loss("soft_kl", temperature=2.0)
    got = loss(torch.tensor([[0.0, 2 * LN3]]), torch.tensor([[0.2, 0.8]]))
    assert got.item() == pytest.approx(4 * (8 / 3 * LN2 - 5 / 3 * LN3), abs=1e-5)


def test_soft_kl_from_logits_equals_from_probabilities_and_is_zero_at_the_target():
    teacher_logits = torch.tensor([[1.0, -2.0, 0.5]])
    probs = torch.softmax(teacher_logits, -1)
    from_logits = build_loss("soft_kl", temperature=3.0, teacher_is_probs=False)
    from_probs = build_loss("soft_kl", temperature=3.0)
    student = torch.tensor([[0.3, 0.1, -0.4]])
    assert from_logits(student, teacher_logits).item() == pytest.approx(from_probs(student, probs).item(), abs=1e-6)
    assert from_logits(teacher_logits, teacher_logits).item() == pytest.approx(0.0, abs=1e-6)


def test_logit_mse_and_score_mse():
    # ((1-0)^2 + (2-4)^2) / 2 = 2.5 ; ((0-0)^2 + (-1-1)^2) / 2 = 2.
    got = build_loss("logit_mse")(torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[0.0, 4.0], [0.0, 1.0]]))
    assert got.tolist() == [2.5, 2.0]
    # (3.5 - 4)^2 = 0.25 ; (1 - 1)^2 = 0 ; works for (N, 1) student scores against (N,) teacher scores.
    got = build_loss("score_mse")(torch.tensor([[3.5], [1.0]]), torch.tensor([4.0, 1.0]))
    assert got.tolist() == [0.25, 0.0]


def test_per_example_losses_support_per_example_weights():
    # Losses return one value per example, so weights apply before the mean: (1*2.5 + 0*2) / 2 = 1.25.
    student, teacher = torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[0.0, 4.0], [0.0, 1.0]])
    per_example = build_loss("logit_mse")(student, teacher)
    assert (per_example * torch.tensor([1.0, 0.0])).mean().item() == 1.25


def test_unknown_loss_and_bad_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="unknown loss 'soft'"):
        build_loss("soft")
    with pytest.raises(ConfigError, match="soft_kl"):
        build_loss("soft_kl", temprature=2.0)
