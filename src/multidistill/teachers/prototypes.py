"""Meta-KD's per-example weights: prototype scores t_i (stage 0) and domain-expertise weights lambda_i.

Both are pure functions of tensors: the stage that computes them (a frozen encoder over the training rows, a
store column) calls them, the losses never do; the loop only sees them as per-example ``weights``. They live
beside the teacher signals because they are one: computed once per training example, before training, from
frozen models, and stored and fingerprinted like the teachers' logits.

* `encoder_embeddings`: E(x) of a batch from a frozen encoder, `content_embedding` (from `models/domain_branch.py`,
  whose h_mean(x) is the same vector) of its last layer: the mean over the real tokens after the first one.
* `prototype_centroids` / `scores_from_centroids` / `prototype_scores`:
  t_i = 1/2 cos(E_i, own centroid) + 1/2 cos(E_i, mean of the other domains' centroids), with centroids per
  domain (``mode="domain"``, the authors' first code) or per (domain, class) (``mode="class"``, the default:
  a later port by the same group and its docs), where "other domains' centroids" are those of the same class.
* `expertise_weights`: lambda_i = (1 + t_i) / (1 + exp((1 - p_T(y_i | x_i))^2)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from multidistill.errors import ConfigError
from multidistill.models.domain_branch import content_embedding
from multidistill.models.extract import encode_with_features

PrototypeMode = Literal["domain", "class"]
PROTOTYPE_MODES = ("domain", "class")
__all__ = ["PROTOTYPE_MODES", "Centroids", "content_embedding", "encoder_embeddings", "expertise_weights",
           "prototype_centroids", "prototype_scores", "scores_from_centroids"]


@torch.no_grad()
def encoder_embeddings(encoder: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H) float32 E(x) of one batch from a frozen Hugging Face ``encoder`` (any family in the family table):
    `content_embedding` of its last layer. The caller puts the encoder in eval mode (no dropout)."""
    output, _ = encode_with_features(encoder, input_ids, attention_mask, token_type_ids, want=())
    return content_embedding(output.last_hidden_state, attention_mask).float()


@dataclass(frozen=True)
class Centroids:
    """Prototype centroids: (K, d) per domain, or (K, C, d) per (domain, class); float64.

    ``domains`` are the domain ids that have rows (only they take part: each one's "other domains" are the
    other present ones); ``classes`` the class ids that have rows (class mode; every present domain has rows of
    each); ``mode`` is how they were grouped.
    """

    vectors: torch.Tensor
    domains: tuple[int, ...]
    mode: PrototypeMode
    classes: tuple[int, ...] = ()


def _name(names: Sequence[str] | None, index: int, kind: str) -> str:
    if names is not None and 0 <= index < len(names):
        return f"{kind} '{names[index]}' (id {index})"
    return f"{kind} id {index}"


def _check_inputs(embeddings: torch.Tensor, domain_ids: torch.Tensor, labels: torch.Tensor | None,
                  mode: str) -> None:
    if mode not in PROTOTYPE_MODES:
        raise ConfigError(f"prototype mode {mode!r} is not one of {list(PROTOTYPE_MODES)}")
    if embeddings.dim() != 2 or domain_ids.shape != embeddings.shape[:1]:
        raise ValueError(f"embeddings must be (N, d) and domain ids (N,); got {tuple(embeddings.shape)} and "
                         f"{tuple(domain_ids.shape)}")
    if domain_ids.dtype.is_floating_point or (domain_ids.numel() and int(domain_ids.min()) < 0):
        raise ValueError("domain ids must be non-negative integers (indices into Task.domains)")
    if mode == "class":
        if labels is None:
            raise ConfigError("prototype mode 'class' groups rows by (domain, class) and needs the labels; pass "
                              "them, or use mode 'domain'")
        if labels.dtype.is_floating_point:
            raise ConfigError("prototype mode 'class' needs class labels, and a regression task has scores; use "
                              "mode 'domain' for it")
        if labels.shape != domain_ids.shape:
            raise ValueError(f"labels must be (N,) like the domain ids; got {tuple(labels.shape)}")
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError("labels must be class indices (non-negative integers)")


def prototype_centroids(embeddings: torch.Tensor, domain_ids: torch.Tensor, labels: torch.Tensor | None = None,
                        mode: PrototypeMode = "class", *, domain_names: Sequence[str] | None = None,
                        class_names: Sequence[str] | None = None) -> Centroids:
    """Mean embedding per domain (``mode="domain"``) or per (domain, class) (``mode="class"``).

    Refused (ConfigError): fewer than two domains with rows (no "other" domains to compare with); in class mode,
    a (domain, class) with no rows while that class has rows elsewhere (its example could not be compared with
    that domain's class centroid; use mode "domain"). ``domain_names`` / ``class_names`` name them in errors.
    """
    _check_inputs(embeddings, domain_ids, labels, mode)
    values = embeddings.detach().to(torch.float64)
    domains = tuple(sorted({int(d) for d in domain_ids.tolist()}))
    if len(domains) < 2:
        found = ", ".join(_name(domain_names, d, "domain") for d in domains) or "no rows at all"
        raise ConfigError(f"prototype scores compare each example with the OTHER domains' centroids, so they need "
                          f"rows of at least two domains; got {found}")
    size = max(domains) + 1
    if mode == "domain":
        vectors = torch.zeros(size, values.shape[1], dtype=torch.float64)
        vectors.index_add_(0, domain_ids.long(), values)
        counts = torch.bincount(domain_ids.long(), minlength=size).to(torch.float64)
        return Centroids(vectors / counts.clamp_min(1.0)[:, None], domains, "domain")
    labels = labels.long()
    classes = int(labels.max()) + 1
    flat = domain_ids.long() * classes + labels
    sums = torch.zeros(size * classes, values.shape[1], dtype=torch.float64).index_add_(0, flat, values)
    counts = torch.bincount(flat, minlength=size * classes).view(size, classes)
    present_classes = tuple(sorted({int(y) for y in labels.tolist()}))
    for label in present_classes:
        for domain in domains:
            if counts[domain, label] == 0:
                raise ConfigError(f"prototype mode 'class': {_name(domain_names, domain, 'domain')} has no rows of "
                                  f"{_name(class_names, label, 'class')}, which other domains have, so their "
                                  "examples cannot be compared with its class centroid; use mode 'domain' (one "
                                  "centroid per domain) or give that domain rows of every class")
    vectors = sums.view(size, classes, -1) / counts.clamp_min(1).to(torch.float64)[..., None]
    return Centroids(vectors, domains, "class", present_classes)


def scores_from_centroids(embeddings: torch.Tensor, domain_ids: torch.Tensor, centroids: Centroids,
                          labels: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) float32 t_i = 1/2 cos(E_i, own centroid) + 1/2 cos(E_i, mean of the other domains' centroids)."""
    _check_inputs(embeddings, domain_ids, labels, centroids.mode)
    unknown = sorted({int(d) for d in domain_ids.tolist()} - set(centroids.domains))
    if unknown:
        raise ConfigError(f"domain ids {unknown} have no centroid (the centroids were made from domains "
                          f"{list(centroids.domains)})")
    values = embeddings.detach().to(torch.float64)
    present = torch.zeros(centroids.vectors.shape[0], dtype=torch.bool)
    present[list(centroids.domains)] = True
    # Sum over the present domains, minus the own one: the mean of the K - 1 others for every row at once.
    total = centroids.vectors[present].sum(0)
    others = len(centroids.domains) - 1
    ids = domain_ids.long()
    if centroids.mode == "domain":
        own = centroids.vectors[ids]
        other_mean = (total[None] - own) / others
    else:
        classes = labels.long()
        unseen = sorted({int(y) for y in classes.tolist()} - set(centroids.classes))
        if unseen:
            raise ConfigError(f"classes {unseen} have no centroid (the centroids were made from classes "
                              f"{list(centroids.classes)})")
        own = centroids.vectors[ids, classes]
        other_mean = (total[classes] - own) / others
    scores = 0.5 * F.cosine_similarity(values, own, dim=-1) + 0.5 * F.cosine_similarity(values, other_mean, dim=-1)
    return scores.to(torch.float32)


def prototype_scores(embeddings: torch.Tensor, domain_ids: torch.Tensor, labels: torch.Tensor | None = None,
                     mode: PrototypeMode = "class", *, domain_names: Sequence[str] | None = None,
                     class_names: Sequence[str] | None = None) -> torch.Tensor:
    """(N,) prototype scores of ``embeddings`` (N, d) against centroids made from the same rows.

    ``domain_ids`` (N,) index ``Task.domains``; ``labels`` (N,) class indices, needed by ``mode="class"`` (the
    default). Errors as `prototype_centroids`.
    """
    centroids = prototype_centroids(embeddings, domain_ids, labels, mode, domain_names=domain_names,
                                    class_names=class_names)
    return scores_from_centroids(embeddings, domain_ids, centroids, labels)


def expertise_weights(prototype_scores: torch.Tensor, teacher_probs: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    """(N,) lambda_i = (1 + t_i) / (1 + exp((1 - p_T(y_i | x_i))^2)), Meta-KD's domain-expertise weight.

    ``teacher_probs`` (N, C) are the (meta-)teacher's class probabilities (a softmax, not logits), ``labels``
    (N,) the gold classes: p_T(y_i | x_i) = teacher_probs[i, labels[i]]. The weight grows with the prototype
    score and with the teacher's confidence in the gold class, from (1 + t) / (1 + e) at p = 0 to (1 + t) / 2 at
    p = 1. A regression task is refused: its teacher gives a score, not a probability of the gold label.
    """
    if labels.dtype.is_floating_point or teacher_probs.dim() != 2 or teacher_probs.shape[1] < 2:
        raise ConfigError("domain-expertise weights need the teacher's probability of the gold class, "
                          "p_T(y_i | x_i); a regression task has a score instead, so it has no such weight: "
                          "train it without expertise weights")
    if teacher_probs.shape[0] != labels.shape[0] or prototype_scores.shape != labels.shape:
        raise ValueError(f"need (N,) prototype scores, (N, C) probabilities and (N,) labels; got "
                         f"{tuple(prototype_scores.shape)}, {tuple(teacher_probs.shape)}, {tuple(labels.shape)}")
    probs = teacher_probs.detach().to(torch.float64)
    if probs.numel() and (probs.min() < 0 or probs.max() > 1 or not torch.allclose(probs.sum(1), torch.ones(
            len(probs), dtype=torch.float64), atol=1e-3)):
        raise ConfigError("teacher_probs must be probabilities (each row a softmax summing to 1), not logits")
    gold = probs.gather(1, labels.long()[:, None]).squeeze(1)
    weights = (1 + prototype_scores.to(torch.float64)) / (1 + torch.exp((1 - gold) ** 2))
    return weights.to(torch.float32)
