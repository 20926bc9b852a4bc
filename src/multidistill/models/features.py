"""What an encoder exposes to feature-level distillation: one typed output that loss terms read by name.

`EncoderFeatures` is the contract between models (teachers run online, students in training) and the
feature losses (`hidden_mse`, `attention_mse`, `attention_kl`, `relation_kl`, `cosine_hidden`): a loss reads
the fields it declares and never imports a model class. Fields that the objective did not ask for are None.
Models fill it through `models/extract.py` (any Hugging Face encoder in `models/families.py`),
`MultiTaskModel.features` and `BiLSTMModel.features`; docs/features.md describes each family's features.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

FEATURE_NAMES = ("logits", "pooled", "hidden_states", "attention_scores", "queries", "keys", "values")
# Outputs of a Meta-KD domain branch (`models/domain_branch.py`); only a model configured with one gives them.
DOMAIN_FEATURES = ("transferable", "domain_logits")


@dataclass(frozen=True)
class ModelDims:
    """The sizes a feature loss is built from (read from the model's config, never from YAML numbers).

    A BiLSTM student has ``num_attention_heads`` 0 and ``num_layers`` 1 (its LSTM stack's output), and its hidden
    state 0 (the word embeddings) is ``embedding_size`` wide, not ``hidden_size``.

    ``query_width`` / ``key_width`` / ``value_width`` are the widths of the ``queries`` / ``keys`` / ``values``
    features (A * head size; keys and values num_key_value_heads * head size under grouped-query attention). None,
    the default, means ``hidden_size``; a width equal to ``hidden_size`` is stored as None, so sizes built with or
    without them compare equal and older callers (and stored records without them) keep working.
    """

    hidden_size: int
    num_layers: int
    num_attention_heads: int
    embedding_size: int | None = None  # width of hidden state 0 where it is not hidden_size
    query_width: int | None = None  # width of the queries where it is not hidden_size
    key_width: int | None = None  # width of the keys where it is not hidden_size
    value_width: int | None = None  # width of the values where it is not hidden_size

    def __post_init__(self) -> None:
        for name in ("query_width", "key_width", "value_width"):
            if getattr(self, name) == self.hidden_size:
                object.__setattr__(self, name, None)  # one spelling of "as wide as the hidden states"

    def width(self, layer: int) -> int:
        """The width of hidden state ``layer`` (0: the embedding output)."""
        return self.embedding_size if layer == 0 and self.embedding_size is not None else self.hidden_size

    def qkv_width(self, name: str) -> int:
        """The width of feature ``name`` ("queries", "keys" or "values"), all heads side by side."""
        width = {"queries": self.query_width, "keys": self.key_width, "values": self.value_width}[name]
        return self.hidden_size if width is None else width


@dataclass
class EncoderFeatures:
    """Features of one batch from one encoder.

    Shapes (B batch, T tokens, H hidden size, A attention heads, L layers):

    * ``attention_mask``: (B, T), 1 for real tokens, 0 for padding.
    * ``logits``: the task head's logits (B, C), where the model has heads.
    * ``pooled``: the pooled sentence vector (B, H).
    * ``hidden_states``: L + 1 tensors (B, T, H); index 0 is the embedding output, index l the output of layer l.
      (A BiLSTM gives 2: its word embeddings, (B, T, embedding size), and its LSTM output, (B, T, H).)
    * ``attention_scores``: L tensors (B, A, T, T): the scores *before* softmax, with the model's additive mask
      applied (masked keys hold a very negative finite value), so that their softmax over the last axis is the
      model's attention probabilities. They are what the model softmaxes, which is Q K^T / sqrt(head size) only
      for BERT-style families (DeBERTa adds relative-position terms and masks padded query rows too; MPNet adds a
      relative-position bias; rotary families such as ModernBERT rotate Q and K, and ModernBERT's and Ultrabert's
      local layers mask keys outside their window): docs/features.md.
    * ``queries`` / ``keys`` / ``values``: L tensors (B, T, A * head size), all heads side by side: the outputs of
      the Q/K/V projections (for rotary families before the rotation that their attention applies to Q and K;
      DeBERTa v1's with the q/v biases its attention adds). Keys and values are narrower than queries under
      grouped-query attention, and A * head size is not always H (MobileBERT's attention is narrower).
    * ``transferable``: (B, H) Meta-KD's tau = W_c (e_k + h_mean(x)) + b_c (no tanh), from the domain branch.
    * ``domain_logits``: (B, K) the domain branch's domain classifier on tanh(tau), K = the branch's domains.
    """

    attention_mask: torch.Tensor
    dims: ModelDims
    logits: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None
    queries: tuple[torch.Tensor, ...] | None = None
    keys: tuple[torch.Tensor, ...] | None = None
    values: tuple[torch.Tensor, ...] | None = None
    transferable: torch.Tensor | None = None
    domain_logits: torch.Tensor | None = None

    def to(self, device: torch.device) -> EncoderFeatures:
        """The same features on ``device`` (stored teacher features reach the training device with the batch)."""
        def move(value):
            if isinstance(value, torch.Tensor):
                return value.to(device, non_blocking=True)
            return tuple(move(v) for v in value) if isinstance(value, tuple) else value

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self) if f.name != "dims"})

    def float32(self) -> EncoderFeatures:
        """The same features with every bf16/fp16 tensor in float32 (what a loss term computes in); float32
        tensors, masks and ids are the same objects."""
        def widen(value):
            if isinstance(value, torch.Tensor):
                return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
            return tuple(widen(v) for v in value) if isinstance(value, tuple) else value

        return replace(self, **{f.name: widen(getattr(self, f.name)) for f in fields(self)
                                if f.name not in ("dims", "attention_mask")})

    def require(self, name: str, who: str) -> tuple[torch.Tensor, ...] | torch.Tensor:
        """The feature ``name``, or a clear error naming the loss (``who``) that needed it."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"{who} needs the '{name}' features, which this model's output does not carry")
        return value
