"""Where each Hugging Face encoder family keeps what feature distillation reads, how its stock classification
head is laid out (the Hugging Face export) and which onnxruntime optimizer fuses its graph (`export --graph
fused`): one table keyed by `model_type`; and `QUIRKS`, what the rest of the package must know of a family's
config (position offsets, per-layer lists, stacks that cannot be cut).

Adding a family is one `EncoderFamily` entry in `FAMILIES` (peft keeps a table of the same kind): module names
are read from the family's `modeling_*.py` in transformers, and `tests/test_features.py` checks an entry against
the model's own `output_hidden_states` / `output_attentions` with a tiny config.

Scores are captured the same way for every family: the input of the one softmax inside the ``attention``
module, in eager mode (`models/extract.py`). Computing Q K^T / sqrt(d) from the projection hooks gives the real
score only for BERT-style families (ModernBERT rotates Q and K inside the attention; DeBERTa adds relative terms
and scales by sqrt(d * (1 + position terms))); a capturing function registered in transformers'
AttentionInterface would miss DeBERTa-v2, which does not dispatch through it, and it would need a global
registration plus a matching mask function. ``score`` records what the captured value is, per family.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from multidistill.errors import ConfigError
from multidistill.models.features import ModelDims


@dataclass(frozen=True)
class StockHead:
    """How a family's stock `AutoModelForSequenceClassification` head is laid out: [CLS] vector -> ``dense``
    (hidden -> hidden) -> ``activation`` -> ``out`` (hidden -> labels). Paths are attributes of the stock model;
    ``config`` holds config values the export writes so the head is this one (DeBERTa reads its activation from
    the config)."""

    activation: str  # "tanh", "gelu" or "relu"
    dense: str
    out: str
    config: tuple[tuple[str, object], ...] = ()


_TANH_PROJ = StockHead("tanh", "classifier.dense", "classifier.out_proj")  # RoBERTa-style classification head


@dataclass(frozen=True)
class EncoderFamily:
    """How to find one family's layers, projections and sizes.

    Module names are dotted paths: ``layers`` from the base model (``model.base_model``), the others from one
    layer of that list.
    """

    model_type: str
    layers: str
    attention: str  # the module whose forward computes the scores and softmaxes them (in eager mode)
    query: str | None = None
    key: str | None = None
    value: str | None = None
    fused_qkv: str | None = None  # one projection whose output is [Q | K | V] along the last axis
    hidden_size_key: str = "hidden_size"
    num_layers_key: str = "num_hidden_layers"
    num_heads_key: str = "num_attention_heads"
    score: str = "Q K^T / sqrt(d) + mask"  # what the captured pre-softmax score is (docs/features.md)
    stock_head: StockHead | None = None  # None: its stock classifier cannot express our linear head exactly
    ort_fusion: str | None = None  # onnxruntime transformer-optimizer model type for `export --graph fused`

    def projections(self) -> dict[str, str]:
        """Feature name -> projection module of one layer (a fused one appears under all three names)."""
        if self.fused_qkv is not None:
            return dict.fromkeys(("queries", "keys", "values"), self.fused_qkv)
        return {"queries": self.query, "keys": self.key, "values": self.value}


_BERT_LIKE = {"layers": "encoder.layer", "attention": "attention.self", "query": "attention.self.query",
              "key": "attention.self.key", "value": "attention.self.value"}

FAMILIES: dict[str, EncoderFamily] = {
    family.model_type: family
    for family in (
        # MiniLM checkpoints are `bert`; BERT's stock classifier reads the pooler (dense + tanh).
        EncoderFamily("bert", **_BERT_LIKE, stock_head=StockHead("tanh", "bert.pooler.dense", "classifier"),
                      ort_fusion="bert"),
        EncoderFamily("roberta", **_BERT_LIKE, stock_head=_TANH_PROJ, ort_fusion="bert"),
        # RoBERTa's modules under another name
        EncoderFamily("xlm-roberta", **_BERT_LIKE, stock_head=_TANH_PROJ, ort_fusion="bert"),
        EncoderFamily("camembert", **_BERT_LIKE, stock_head=_TANH_PROJ, ort_fusion="bert"),
        # MPNet adds a relative-position bias (shared by the layers) to the scores.
        EncoderFamily("mpnet", layers="encoder.layer", attention="attention.attn", query="attention.attn.q",
                      key="attention.attn.k", value="attention.attn.v",
                      score="Q K^T / sqrt(d) + relative position bias + mask", stock_head=_TANH_PROJ),
        # hidden_states[0] is after the embedding projection, if any
        EncoderFamily("electra", **_BERT_LIKE,
                      stock_head=StockHead("gelu", "classifier.dense", "classifier.out_proj"), ort_fusion="bert"),
        EncoderFamily("distilbert", layers="transformer.layer", attention="attention", query="attention.q_lin",
                      key="attention.k_lin", value="attention.v_lin", hidden_size_key="dim",
                      num_layers_key="n_layers", num_heads_key="n_heads",
                      stock_head=StockHead("relu", "pre_classifier", "classifier"), ort_fusion="bert"),
        # DeBERTa-v2/v3 never dispatches to SDPA; its score adds the disentangled relative-position terms. Its
        # stock classifier is a ContextPooler (dense + the config's pooler_hidden_act) and a linear layer.
        EncoderFamily("deberta-v2", layers="encoder.layer", attention="attention.self",
                      query="attention.self.query_proj", key="attention.self.key_proj",
                      value="attention.self.value_proj",
                      score="Q K^T / sqrt(d * (1 + len(pos_att_type))) + c2p + p2c relative terms; masked rows and "
                            "columns",
                      stock_head=StockHead("gelu", "pooler.dense", "classifier",
                                           config=(("pooler_hidden_act", "gelu"),))),
        # Rotary embeddings are applied to Q and K inside the attention, after the Wqkv projection. Its stock head
        # LayerNorms the dense output, which no choice of weights makes the identity: no stock_head.
        EncoderFamily("modernbert", layers="layers", attention="attn", fused_qkv="attn.Wqkv",
                      score="rotary(Q) rotary(K)^T / sqrt(d) + mask; sliding-window layers also mask keys beyond "
                            "the window"),
    )
}


@dataclass(frozen=True)
class ConfigQuirks:
    """What the rest of the package must know of a family's config, feature distillation or not (every family
    that has a quirk: one without an entry has none)."""

    position_offset: bool = False  # position ids start after the padding index (RoBERTa-style): pad + 1 fewer
    per_layer_keys: tuple[str, ...] = ()  # config lists with one entry per layer: they shrink with a cut stack
    no_cut: str | None = None  # why a student cannot keep some of this family's layers, and what to do instead


_ROBERTA_POSITIONS = ConfigQuirks(position_offset=True)
QUIRKS: dict[str, ConfigQuirks] = {
    **dict.fromkeys(("roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "xmod", "roberta-prelayernorm",
                     "ibert", "esm"), _ROBERTA_POSITIONS),
    "longformer": ConfigQuirks(position_offset=True, per_layer_keys=("attention_window",)),
    "modernbert": ConfigQuirks(per_layer_keys=("layer_types",)),
    "albert": ConfigQuirks(no_cut="ALBERT shares one layer's weights across all its layers, so there is no stack of "
                                  "distinct layers to keep some of; build a smaller student with model.backbone_config "
                                  "(e.g. num_hidden_layers) instead"),
    "funnel": ConfigQuirks(no_cut="Funnel groups its layers in blocks (block_sizes) with pooling between them; build a "
                                  "smaller student with model.backbone_config (block_sizes) instead"),
}


def quirks_of(config: PretrainedConfig) -> ConfigQuirks:
    """The config quirks of ``config.model_type`` (none for most families)."""
    return QUIRKS.get(getattr(config, "model_type", None), ConfigQuirks())


def family_of(config: PretrainedConfig) -> EncoderFamily:
    """The table entry for ``config.model_type``, or a ConfigError that says what to add."""
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type)
    if family is None:
        raise ConfigError(
            f"feature distillation does not know the encoder family '{model_type}' (known: "
            f"{', '.join(sorted(FAMILIES))}); add an EncoderFamily entry for '{model_type}' to FAMILIES in "
            "multidistill/models/families.py (where its layers are, its Q/K/V projection modules and its size keys "
            "in the config) and a tiny config to tests/test_features.py"
        )
    return family


def model_dims(config: PretrainedConfig) -> ModelDims:
    """Hidden size, layer count and attention heads of a Hugging Face encoder, read through the family table."""
    family = family_of(config)
    return ModelDims(hidden_size=int(getattr(config, family.hidden_size_key)),
                     num_layers=int(getattr(config, family.num_layers_key)),
                     num_attention_heads=int(getattr(config, family.num_heads_key)))
