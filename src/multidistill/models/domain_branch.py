"""Meta-KD's domain branch: a learned domain embedding added to the content vector, a transfer layer and a
domain classifier (arXiv 2012.01266; the authors' `domain_embedding`, `corrupt_dense`, `domain_classifier`).

    tau(x, k) = W_c (e_k + h_mean(x)) + b_c            the transferable vector ("transferable", no tanh)
    v         = tanh(tau)                               (dropout on v in training)
    domain logits = W_d v + b_d                         ("domain_logits")

h_mean(x) is `content_embedding` of the encoder's last layer (real tokens after the first; the same E(x) as the
prototype scores). The meta-teacher trains the domain logits against a random permutation of the batch's domain
ids (`domain_adversarial` loss); meta-distillation matches the student's tau against the teacher's
(`transferable_mse`). The branch is part of a saved `MultiTaskModel` (weights under ``domain_branch.``, spec in
its config) and is never exported: exports read only the encoder and the task heads.
"""

from __future__ import annotations

import torch
from torch import nn

from multidistill.errors import ConfigError
from multidistill.models.specs import DomainBranchSpec

# Where a MultiTaskModel keeps its branch: weights under this prefix serve training only (no export carries them).
BRANCH_PREFIX = "domain_branch."


def is_training_only(weight_name: str) -> bool:
    """Whether a model weight belongs to the domain branch, which exports drop (so parameter counts leave it out)."""
    return weight_name.startswith(BRANCH_PREFIX)


def content_embedding(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor, *,
                      skip_first_token: bool = True) -> torch.Tensor:
    """(B, H) mean of ``last_hidden_state`` (B, T, H) over each row's real tokens (``attention_mask`` 1).

    The first token ([CLS], <s>) is left out by default, as the authors do (their mean starts at position 1);
    it is a summary slot trained for the pooler, not a token of the text. [SEP] tokens are kept (the authors
    keep them too). Padding is left out, unlike the authors' code, whose mean over all 127 positions after [CLS]
    makes E(x) depend on the padded length; the method's description says real tokens. A row with no real
    token after the first gives the zero vector (whose cosine with anything is 0). The Meta-KD domain branch
    reads the same vector as h_mean(x), and the prototype scores as E(x) (`teachers/prototypes.py`).
    """
    mask = attention_mask.bool()
    if skip_first_token:
        mask = mask.clone()
        mask[:, 0] = False
    weights = mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class DomainBranch(nn.Module):
    """e_k (K x H embedding), W_c/b_c (H -> H) and W_d/b_d (H -> K) on an encoder H wide."""

    def __init__(self, spec: DomainBranchSpec, hidden_size: int) -> None:
        super().__init__()
        self.spec = spec
        self.embedding = nn.Embedding(len(spec.domains), hidden_size)
        self.transfer = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(hidden_size, len(spec.domains))

    @property
    def num_domains(self) -> int:
        return len(self.spec.domains)

    def check_domain_ids(self, domain_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """``domain_ids`` as a (B,) long tensor, or a clear error when they are missing or out of range."""
        if domain_ids is None:
            raise ConfigError("the domain branch's outputs (transferable, domain_logits) need the batch's domain "
                              "ids (batch['domain_ids']); they come with tasks that have domains (Task.domains)")
        domain_ids = torch.as_tensor(domain_ids)
        if domain_ids.shape != (batch_size,) or domain_ids.dtype.is_floating_point:
            raise ValueError(f"domain ids must be ({batch_size},) integers; got {tuple(domain_ids.shape)} "
                             f"{domain_ids.dtype}")
        outside = sorted({int(d) for d in domain_ids.tolist()} - set(range(self.num_domains)))
        if outside:
            raise ConfigError(f"domain ids {outside} are outside the domain branch's {self.num_domains} domains "
                              f"{self.spec.domains}; model.domain_branch.domains must be the task's domains")
        return domain_ids.long()

    def forward(self, content: torch.Tensor, domain_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(transferable (B, H), domain_logits (B, K)) from h_mean(x) ``content`` (B, H) and ``domain_ids`` (B,)."""
        domain_ids = self.check_domain_ids(domain_ids, content.shape[0]).to(content.device)
        transferable = self.transfer(self.embedding(domain_ids).to(content.dtype) + content)
        return transferable, self.classifier(self.dropout(torch.tanh(transferable)))
