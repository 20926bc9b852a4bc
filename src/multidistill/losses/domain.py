"""Meta-KD's domain-branch losses: `domain_adversarial` (meta-teacher) and `transferable_mse` (meta-distillation).

Both read the outputs of a model's domain branch (`models/domain_branch.py`) from `EncoderFeatures`
(``domain_logits``, ``transferable``) and return one value per example, so Meta-KD's t_i and lambda_i (per-example
``weights``) multiply each example's value before the objective's batch mean.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from multidistill.errors import ConfigError
from multidistill.losses.feature_base import FeatureLoss
from multidistill.losses.registry import register_loss
from multidistill.models.features import EncoderFeatures, ModelDims


def example_permutation(example_keys: Sequence[object], seed: int, salt: str = "") -> torch.Tensor:
    """(B,) long: position i's partner position, a random permutation that follows the examples, not positions.

    The examples are put in a canonical order (their keys, as strings; ties keep batch order), a permutation of
    that order is drawn from a generator seeded by ``seed``, ``salt`` and the sorted keys, and mapped back to batch
    positions. So the same examples in any order get the same example-to-example pairing, and a run is
    reproducible: nothing depends on global RNG state.
    """
    keys = [str(key) for key in example_keys]
    canonical = sorted(range(len(keys)), key=keys.__getitem__)
    digest = hashlib.blake2b(f"{seed}\x1f{salt}\x1f".encode() + "\x1e".join(sorted(keys)).encode(),
                             digest_size=8).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
    drawn = torch.randperm(len(keys), generator=generator)
    order = torch.tensor(canonical, dtype=torch.long)
    partner = torch.empty(len(keys), dtype=torch.long)
    # The j-th example in canonical order takes the (drawn[j])-th one's domain.
    partner[order] = order[drawn]
    return partner


@register_loss("domain_adversarial")
class DomainAdversarial(nn.Module):
    """CE(domain logits_i, d_pi(i)): the domain classifier is trained against a random permutation pi of the
    batch's domain ids, so the encoder is pushed towards features that do not give the domain away (Meta-KD's
    meta-teacher; weight gamma1 = 0.5 through the term's ``weight``).

    pi pairs examples, not positions (`example_permutation`, keyed by each example's (id, domain id)): the same
    examples in another order get the same targets, so the batch mean does not depend on the order. It is drawn
    from ``seed`` and the training progress (`set_progress`, called by the objective before every step), so it
    changes from step to step and a resumed run draws the same ones. Batches should mix domains: in a batch of
    one domain the permuted targets are the true ones. Parameters: ``seed`` (default 0).
    """

    inputs = ("student_features", "domain_ids", "example_ids")
    student_features = frozenset({"domain_logits"})

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, not {seed!r}")
        self.seed = seed
        self.progress = 0.0

    def set_progress(self, fraction: float) -> None:
        self.progress = float(fraction)

    def feature_request(self) -> dict[str, dict[str, tuple[int, ...]]]:
        return {"student": {"domain_logits": ()}, "teacher": {}}

    def targets(self, domain_ids: torch.Tensor, example_ids: Sequence[object]) -> torch.Tensor:
        """The permuted domain ids: example i's target is the domain of its partner."""
        if len(example_ids) != len(domain_ids):
            raise ValueError(f"{len(example_ids)} example ids for {len(domain_ids)} domain ids")
        keys = [f"{example}\x1f{int(domain)}" for example, domain in zip(example_ids, domain_ids.tolist(), strict=True)]
        partner = example_permutation(keys, self.seed, self.progress.hex())
        return domain_ids[partner.to(domain_ids.device)]

    def forward(self, student: EncoderFeatures, domain_ids: torch.Tensor,
                example_ids: Sequence[object]) -> torch.Tensor:
        logits = student.require("domain_logits", self.loss_name).float()
        domain_ids = torch.as_tensor(domain_ids, device=logits.device).long()
        if domain_ids.numel() and (int(domain_ids.min()) < 0 or int(domain_ids.max()) >= logits.shape[1]):
            raise ConfigError(f"loss '{self.loss_name}': domain ids {sorted(set(domain_ids.tolist()))} but the "
                              f"domain classifier has {logits.shape[1]} outputs; the model's "
                              "model.domain_branch.domains must be the task's domains")
        return F.cross_entropy(logits, self.targets(domain_ids, example_ids), reduction="none")


@register_loss("transferable_mse")
class TransferableMSE(FeatureLoss):
    """mean over teacher units of (W tau_S + b - tau_T)^2 per example: the student's transferable vector, projected
    to the teacher's width, against the teacher's (Meta-KD stage A's gamma2 term; gamma2 = 0.5 through the term's
    ``weight``). tau = W_c (e_k + h_mean(x)) + b_c from each model's domain branch, on the batch's domain ids.

    W, b: a learned `nn.Linear` (student width -> teacher width, from the models' configs), part of the objective
    and never of the exported student. Parameters: ``projection`` (default true; false needs equal widths).
    """

    student_features = frozenset({"transferable"})
    teacher_features = frozenset({"transferable"})

    def __init__(self, student_dims: ModelDims, teacher_dims: ModelDims, projection: bool = True) -> None:
        super().__init__(student_dims, teacher_dims)
        widths = (student_dims.hidden_size, teacher_dims.hidden_size)
        if not projection and widths[0] != widths[1]:
            raise self.config_error("projection", f"the student is {widths[0]} wide and the teacher {widths[1]}; "
                                    "a projection is needed to compare them: set projection: true")
        self.projection = nn.Linear(*widths) if projection else None

    def forward(self, student: EncoderFeatures, teacher: EncoderFeatures) -> torch.Tensor:
        student_tau = student.require("transferable", self.loss_name).float()
        teacher_tau = teacher.require("transferable", self.loss_name).float()
        if self.projection is not None:
            student_tau = self.projection(student_tau.to(self.projection.weight.dtype)).float()
        return (student_tau - teacher_tau).pow(2).mean(-1)
