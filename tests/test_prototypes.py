"""Golden tests of Meta-KD's per-example weights: prototype scores t_i and domain-expertise weights lambda_i.

Embeddings are hand-made 2-D vectors; every expected number is worked out in the comments.
t_i = 1/2 cos(E_i, own centroid) + 1/2 cos(E_i, mean of the other domains' centroids).
"""

from __future__ import annotations

import math

import pytest
import torch

from multidistill.errors import ConfigError
from multidistill.teachers.prototypes import (
    content_embedding,
    encoder_embeddings,
    expertise_weights,
    prototype_centroids,
    prototype_scores,
    scores_from_centroids,
)

R2, R5, R10 = math.sqrt(2), math.sqrt(5), math.sqrt(10)
COS_1_3 = 0.5 / math.sqrt(2.5)  # cos((0, 1), (1.5, 0.5)) = cos((1, 0), (0.5, 1.5)) = 0.5 / sqrt(2.5)


def test_domain_mode_golden():
    # Centroids: c0 = mean((1,0), (1,2)) = (1,1); c1 = mean((0,1), (0,3)) = (0,2); c2 = (2,0).
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 2.0], [0.0, 1.0], [0.0, 3.0], [2.0, 0.0]])
    domains = torch.tensor([0, 0, 1, 1, 2])
    expected = [
        # (1,0) in d0: own (1,1): 1/sqrt2; others mean((0,2), (2,0)) = (1,1): 1/sqrt2.
        0.5 / R2 + 0.5 / R2,
        # (1,2) in d0: own (1,1): 3/sqrt10; others (1,1): 3/sqrt10.
        3 / R10,
        # (0,1) in d1: own (0,2): 1; others mean((1,1), (2,0)) = (1.5, 0.5): 0.5/sqrt2.5.
        0.5 + 0.5 * COS_1_3,
        # (0,3): the same direction as (0,1).
        0.5 + 0.5 * COS_1_3,
        # (2,0) in d2: own (2,0): 1; others mean((1,1), (0,2)) = (0.5, 1.5): 0.5/sqrt2.5.
        0.5 + 0.5 * COS_1_3,
    ]
    scores = prototype_scores(embeddings, domains, mode="domain")
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, torch.tensor(expected), atol=1e-6, rtol=0)
    # Labels change nothing in domain mode.
    torch.testing.assert_close(prototype_scores(embeddings, domains, torch.tensor([0, 1, 0, 1, 0]), mode="domain"),
                               scores)


# Two domains, two classes: c(0,0) = mean((2,0), (0,2)) = (1,1); c(0,1) = (0,-1); c(1,0) = (1,0);
# c(1,1) = mean((-1,0), (-1,-2)) = (-1,-1).
CLASS_EMBEDDINGS = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, -2.0]])
CLASS_DOMAINS = torch.tensor([0, 0, 0, 1, 1, 1])
CLASS_LABELS = torch.tensor([0, 0, 1, 0, 1, 1])


def test_class_mode_is_the_default_and_compares_with_the_same_class_elsewhere():
    expected = [
        0.5 / R2 + 0.5 * 1.0,  # (2,0) d0 y0: own (1,1): 1/sqrt2; other domain's class 0 (1,0): 1
        0.5 / R2 + 0.5 * 0.0,  # (0,2) d0 y0: own (1,1): 1/sqrt2; (1,0): 0
        0.5 * 1.0 + 0.5 / R2,  # (0,-1) d0 y1: own (0,-1): 1; other's class 1 (-1,-1): 1/sqrt2
        0.5 * 1.0 + 0.5 / R2,  # (1,0) d1 y0: own (1,0): 1; other's class 0 (1,1): 1/sqrt2
        0.5 / R2 + 0.5 * 0.0,  # (-1,0) d1 y1: own (-1,-1): 1/sqrt2; other's class 1 (0,-1): 0
        0.5 * 3 / R10 + 0.5 * 2 / R5,  # (-1,-2) d1 y1: own (-1,-1): 3/sqrt10; (0,-1): 2/sqrt5
    ]
    scores = prototype_scores(CLASS_EMBEDDINGS, CLASS_DOMAINS, CLASS_LABELS)
    torch.testing.assert_close(scores, torch.tensor(expected), atol=1e-6, rtol=0)


def test_class_mode_averages_the_same_class_over_all_other_domains():
    # A third domain: c(2,0) = (0,4), c(2,1) = (2,-2).
    embeddings = torch.cat([CLASS_EMBEDDINGS, torch.tensor([[0.0, 4.0], [2.0, -2.0]])])
    domains = torch.cat([CLASS_DOMAINS, torch.tensor([2, 2])])
    labels = torch.cat([CLASS_LABELS, torch.tensor([0, 1])])
    scores = prototype_scores(embeddings, domains, labels)
    # (2,0) d0 y0: own (1,1): 1/sqrt2; others' class 0: mean((1,0), (0,4)) = (0.5, 2): 0.5/sqrt(4.25).
    assert scores[0].item() == pytest.approx(0.5 / R2 + 0.5 * 0.5 / math.sqrt(4.25), abs=1e-6)
    # (2,-2) d2 y1: own (2,-2): 1; others' class 1: mean((0,-1), (-1,-1)) = (-0.5,-1): (-1+2)/(sqrt8 sqrt1.25).
    assert scores[7].item() == pytest.approx(0.5 + 0.5 * 1.0 / (math.sqrt(8) * math.sqrt(1.25)), abs=1e-6)


def test_scores_follow_the_rows_whatever_their_order():
    order = torch.tensor([5, 2, 0, 4, 1, 3])
    shuffled = prototype_scores(CLASS_EMBEDDINGS[order], CLASS_DOMAINS[order], CLASS_LABELS[order])
    torch.testing.assert_close(shuffled, prototype_scores(CLASS_EMBEDDINGS, CLASS_DOMAINS, CLASS_LABELS)[order])


def test_centroids_of_some_rows_score_other_rows():
    centroids = prototype_centroids(CLASS_EMBEDDINGS, CLASS_DOMAINS, CLASS_LABELS)
    assert centroids.vectors.shape == (2, 2, 2) and centroids.domains == (0, 1)
    torch.testing.assert_close(centroids.vectors[1, 1], torch.tensor([-1.0, -1.0], dtype=torch.float64))
    # (3,3) in d0 y0: own (1,1): 1; d1's class 0 (1,0): 1/sqrt2.
    new = scores_from_centroids(torch.tensor([[3.0, 3.0]]), torch.tensor([0]), centroids, torch.tensor([0]))
    assert new.item() == pytest.approx(0.5 + 0.5 / R2, abs=1e-6)
    with pytest.raises(ConfigError, match=r"classes \[2\] have no centroid"):
        scores_from_centroids(torch.tensor([[3.0, 3.0]]), torch.tensor([0]), centroids, torch.tensor([2]))
    with pytest.raises(ConfigError, match=r"domain ids \[4\] have no centroid"):
        scores_from_centroids(torch.tensor([[3.0, 3.0]]), torch.tensor([4]), centroids, torch.tensor([0]))


def test_one_domain_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"at least two domains; got domain 'books' \(id 1\)"):
        prototype_scores(CLASS_EMBEDDINGS, torch.ones(6, dtype=torch.long), CLASS_LABELS,
                         domain_names=["dvd", "books"])
    with pytest.raises(ConfigError, match="at least two domains"):
        prototype_scores(CLASS_EMBEDDINGS, torch.zeros(6, dtype=torch.long), mode="domain")


def test_a_domain_without_rows_of_a_class_is_refused_naming_both():
    labels = torch.tensor([0, 0, 0, 0, 1, 1])  # domain 0 has no class-1 row
    with pytest.raises(ConfigError, match=r"domain 'dvd' \(id 0\) has no rows of class 'pos' \(id 1\).*mode 'domain'"):
        prototype_scores(CLASS_EMBEDDINGS, CLASS_DOMAINS, labels, domain_names=["dvd", "books"],
                         class_names=["neg", "pos"])
    # Per-domain centroids do not need every class in every domain.
    assert prototype_scores(CLASS_EMBEDDINGS, CLASS_DOMAINS, labels, mode="domain").shape == (6,)


def test_class_mode_needs_class_labels():
    with pytest.raises(ConfigError, match="needs the labels"):
        prototype_scores(CLASS_EMBEDDINGS, CLASS_DOMAINS)
    with pytest.raises(ConfigError, match="regression task"):
        prototype_scores(CLASS_EMBEDDINGS, CLASS_DOMAINS, torch.tensor([0.5, 1.0, 2.0, 0.1, 3.0, 4.0]))
    with pytest.raises(ConfigError, match="not one of"):
        prototype_scores(CLASS_EMBEDDINGS, CLASS_DOMAINS, CLASS_LABELS, mode="cluster")


def test_content_embedding_leaves_out_the_first_token_and_padding():
    hidden = torch.tensor([[[100.0, 100.0], [1.0, 2.0], [3.0, 4.0], [50.0, -50.0]],
                           [[100.0, 100.0], [5.0, 6.0], [9.0, 9.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    # Row 0: mean((1,2), (3,4)) = (2,3); row 1: (5,6) alone; [CLS] (100,100) and padding never count.
    torch.testing.assert_close(content_embedding(hidden, mask), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))
    torch.testing.assert_close(content_embedding(hidden, mask, skip_first_token=False),
                               torch.tensor([[104 / 3, 106 / 3], [52.5, 53.0]]))
    # A row that is only [CLS] gives the zero vector, not NaN.
    assert torch.equal(content_embedding(hidden[:1], torch.tensor([[1, 0, 0, 0]])), torch.zeros(1, 2))


def test_expertise_weight_golden():
    scores = torch.tensor([0.5, 0.0, 1.0, 0.0])
    probs = torch.tensor([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([1, 0, 0, 1])
    expected = [
        1.5 / (1 + math.exp(0.2 ** 2)),  # p = 0.8: 1.5 / (1 + e^0.04) = 1.5 / 2.0408108 = 0.734997
        1.0 / (1 + math.exp(0.5 ** 2)),  # p = 0.5: 1 / (1 + e^0.25) = 1 / 2.2840254 = 0.437823
        2.0 / (1 + math.exp(0.0)),       # p = 1, t = 1: 2 / 2 = 1
        1.0 / (1 + math.e),              # p = 0, t = 0: 1 / (1 + e) = 0.268941
    ]
    torch.testing.assert_close(expertise_weights(scores, probs, labels), torch.tensor(expected), atol=1e-6, rtol=0)


def test_expertise_weight_refuses_regression_and_logits():
    with pytest.raises(ConfigError, match="regression task"):
        expertise_weights(torch.zeros(2), torch.tensor([[0.3], [2.5]]), torch.tensor([0.3, 2.5]))
    with pytest.raises(ConfigError, match="not logits"):
        expertise_weights(torch.zeros(2), torch.tensor([[2.0, -1.0], [0.5, 0.5]]), torch.tensor([0, 1]))


def test_encoder_embeddings_run_the_frozen_encoder_once(tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(tiny_model_dir).eval()
    encoded = AutoTokenizer.from_pretrained(tiny_model_dir)(["a very boring plot", "fine"], ["it is fun", "x"],
                                                           padding=True, return_tensors="pt")
    got = encoder_embeddings(encoder, encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"])
    with torch.no_grad():
        last = encoder(**encoded).last_hidden_state
    assert got.shape == (2, 32) and not got.requires_grad
    torch.testing.assert_close(got, content_embedding(last, encoded["attention_mask"]))
