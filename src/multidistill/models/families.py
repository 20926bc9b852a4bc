"""Where each Hugging Face encoder family keeps what feature distillation reads, how its stock classification
head is laid out (the Hugging Face export) and which onnxruntime optimizer fuses its graph (`export --graph
fused`): one table keyed by `model_type`; and `QUIRKS`, what the rest of the package must know of a family's
config (position offsets, per-layer lists, stacks that cannot be cut).

Adding a family is one `EncoderFamily` entry in `FAMILIES` (peft keeps a table of the same kind): module names
are read from the family's `modeling_*.py` in transformers, and `tests/test_features.py` checks an entry against
the model's own `output_hidden_states` / `output_attentions` with a tiny config. Encoder families whose features
do not fit the table (no (T, T) score matrix, no stack of layers, inputs other than text) are listed in
`NO_FEATURES` with the reason, which is what a user who asks for their features is told.

Scores are captured the same way for every family: the input of the one softmax inside the ``attention``
module, in eager mode (`models/extract.py`). Computing Q K^T / sqrt(d) from the projection hooks gives the real
score only for BERT-style families (rotary families such as ModernBERT rotate Q and K inside the attention; MPNet
adds a relative-position bias; DeBERTa adds relative terms and scales by sqrt(d * (1 + position terms))); a
capturing function registered in transformers'
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
    (hidden -> hidden) -> ``activation`` -> ``out`` (hidden -> labels), or, with activation "identity", [CLS]
    vector -> ``out`` (no dense layer). Paths are attributes of the stock model; ``config`` holds config values the
    export writes so the head is this one (DeBERTa reads its activation from the config, XLM its summary's layout,
    MobileBERT whether its pooler has a dense layer)."""

    # "tanh", "gelu", "relu", "identity", or "config.<key>": the activation the config's <key> names, for a head
    # that applies the encoder's own activation (BigBird's, RoFormer's hidden_act), which the export cannot change
    activation: str
    dense: str | None
    out: str
    config: tuple[tuple[str, object], ...] = ()
    # the key of ``config`` that names the activation (DeBERTa's pooler_hidden_act): the export writes the value in
    # ``config`` (or a stock-layout head's own activation), `import-classifier` reads the classifier's own value
    activation_key: str | None = None
    # Other layouts the family's stock classifier takes under other config values, which `import-classifier` reads
    # and the export writes back for a head imported so (a model trained here is exported with ``config``):
    # ((key, value, head), ...), e.g. MobileBERT's default pooler (dense + tanh)
    variants: tuple[tuple[str, object, StockHead], ...] = ()

    def activation_in(self, config) -> str:
        """The activation this head applies under ``config``: the value of ``activation_key`` where the config sets
        one, else its own, or the one a ``config.<key>`` activation names."""
        named = getattr(config, self.activation_key, None) if self.activation_key else None
        if isinstance(named, str):
            return named
        if not self.activation.startswith("config."):
            return self.activation
        value = getattr(config, self.activation.removeprefix("config."), None)
        return value if isinstance(value, str) else repr(value)

    def under(self, config) -> StockHead:
        """The layout under ``config``: the first variant whose key has its value there, else this one."""
        return next((head for key, value, head in self.variants if getattr(config, key, None) == value), self)


_TANH_PROJ = StockHead("tanh", "classifier.dense", "classifier.out_proj")  # RoBERTa-style classification head
_HIDDEN_ACT_PROJ = StockHead("config.hidden_act", "classifier.dense", "classifier.out_proj")  # BigBird, RoFormer
# DeBERTa's ContextPooler (dense + the config's pooler_hidden_act) and a linear classifier.
_CONTEXT_POOLER = StockHead("gelu", "pooler.dense", "classifier", config=(("pooler_hidden_act", "gelu"),),
                            activation_key="pooler_hidden_act")


def _pooler_head(base: str) -> StockHead:
    """BERT's layout: the base model's pooler (dense + tanh on [CLS]) and a linear classifier."""
    return StockHead("tanh", f"{base}.pooler.dense", "classifier")


# XLM / FlauBERT: a sequence summary of the first token projected straight to the labels, without activation.
_FIRST_TOKEN_SUMMARY = StockHead("identity", None, "sequence_summary.summary", config=(
    ("summary_type", "first"), ("summary_use_proj", True), ("summary_proj_to_labels", True),
    ("summary_activation", None)))
# The stock heads of the families built in FAMILIES' generators (Llama-style encoders, XLM and FlauBERT): EuroBERT's
# pools [CLS] ("bos") into dense + GELU + classifier, Ultrabert's ("cls") into an identity and a classifier.
_GENERATED_STOCK_HEADS: dict[str, StockHead] = {
    "nomic_bert": _pooler_head("nomic_bert"), "gte": _pooler_head("gte"), "jina_embeddings_v3": _TANH_PROJ,
    "eurobert": StockHead("gelu", "dense", "classifier", config=(("classifier_pooling", "bos"),)),
    "esmc": _TANH_PROJ,
    "ultrabert": StockHead("identity", None, "classifier", config=(("classifier_pooling", "cls"),)),
    "xlm": _FIRST_TOKEN_SUMMARY, "flaubert": _FIRST_TOKEN_SUMMARY,
}


@dataclass(frozen=True)
class ConfigNeed:
    """A config value without which a family's features cannot be read (`family_of` refuses the config)."""

    key: str
    values: tuple[object, ...] | None  # the values that work; None: any value that is set (not None)
    why: str  # why, and what to do


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
    fused_qkv: str | None = None  # one projection that gives Q, K and V, laid out as ``fused_layout`` says
    fused_layout: str = "qkv"  # "qkv": [Q | K | V] along the last axis; "per_head": [q | k | v] head after head
    # (feature, parameter of one layer) the attention adds to a projection's output (DeBERTa's q_bias / v_bias,
    # which its bias-free in_proj lacks): the feature is the sum, the vector the scores are computed from.
    added_bias: tuple[tuple[str, str], ...] = ()
    hidden_size_key: str = "hidden_size"
    num_layers_key: str = "num_hidden_layers"
    num_heads_key: str = "num_attention_heads"
    # Q/K/V widths (`model_dims`): A heads of head size config[head_size_key] where the config sets it, else
    # config[attention_size_key or hidden_size_key] // A; keys and values have config[kv_heads_key] heads where set.
    head_size_key: str | None = None
    attention_size_key: str | None = None
    kv_heads_key: str | None = None
    score: str = "Q K^T / sqrt(d) + mask"  # what the captured pre-softmax score is (docs/features.md)
    stock_head: StockHead | None = None  # None: its stock classifier cannot express our linear head exactly
    ort_fusion: str | None = None  # onnxruntime transformer-optimizer model type for `export --graph fused`
    needs: tuple[ConfigNeed, ...] = ()  # config values without which its features cannot be read

    def projections(self) -> dict[str, str]:
        """Feature name -> projection module of one layer (a fused one appears under all three names)."""
        if self.fused_qkv is not None:
            return dict.fromkeys(("queries", "keys", "values"), self.fused_qkv)
        return {"queries": self.query, "keys": self.key, "values": self.value}


_ROTARY = "rotary(Q) rotary(K)^T / sqrt(d) + mask"
_GROUPED_QUERY = ("eurobert", "esmc", "ultrabert")  # k_proj and v_proj give num_key_value_heads heads
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
                      value="attention.self.value_proj", head_size_key="attention_head_size",
                      score="Q K^T / sqrt(d * (1 + len(pos_att_type))) + c2p + p2c relative terms; masked rows and "
                            "columns",
                      stock_head=_CONTEXT_POOLER),
        # Rotary embeddings are applied to Q and K inside the attention, after the Wqkv projection. Its stock head
        # LayerNorms the dense output, which no choice of weights makes the identity: no stock_head.
        EncoderFamily("modernbert", layers="layers", attention="attn", fused_qkv="attn.Wqkv",
                      score="rotary(Q) rotary(K)^T / sqrt(d) + mask; sliding-window layers also mask keys beyond "
                            "the window"),
        # DeBERTa v1: one bias-free in_proj whose output is, head after head, [q | k | v]; the attention adds q_bias
        # and v_bias. Scores as DeBERTa-v2's (its relative terms are not bucketed); its stock classifier too.
        EncoderFamily("deberta", layers="encoder.layer", attention="attention.self",
                      fused_qkv="attention.self.in_proj", fused_layout="per_head",
                      added_bias=(("queries", "attention.self.q_bias"), ("values", "attention.self.v_bias")),
                      score="Q K^T / sqrt(d * (1 + len(pos_att_type))) + c2p + p2c relative terms; masked rows and "
                            "columns",
                      stock_head=_CONTEXT_POOLER),
        # BERT's modules under other names: ERNIE (task-type embeddings), RoBERTa's pretraining family (Data2Vec,
        # X-MOD with its language adapters after attention), BERT-generation (no segment embeddings), LayoutLM
        # (2-D position embeddings of boxes, zero when none are given), RoCBert (pronunciation and glyph
        # embeddings, absent from text batches), Splinter, RemBERT and MobileBERT (embeddings and attention
        # narrower than the hidden states: MobileBERT's Q/K/V are true_hidden_size wide, read from bottlenecks).
        # Stock heads: BERT's pooler + classifier, or RoBERTa's classification head (Data2Vec, X-MOD); BERT-generation
        # and Splinter have no sequence classifier; MobileBERT's pooler passes [CLS] through unchanged without
        # classifier_activation.
        EncoderFamily("ernie", **_BERT_LIKE, stock_head=_pooler_head("ernie")),
        EncoderFamily("data2vec-text", **_BERT_LIKE, stock_head=_TANH_PROJ, ort_fusion="bert"),
        EncoderFamily("xmod", **_BERT_LIKE, stock_head=_TANH_PROJ, ort_fusion="bert"),  # QUIRKS: default_language
        EncoderFamily("bert-generation", **_BERT_LIKE),
        EncoderFamily("layoutlm", **_BERT_LIKE, stock_head=_pooler_head("layoutlm")),
        EncoderFamily("roc_bert", **_BERT_LIKE, stock_head=_pooler_head("roc_bert"), ort_fusion="bert"),
        EncoderFamily("splinter", **_BERT_LIKE),
        EncoderFamily("rembert", **_BERT_LIKE, stock_head=_pooler_head("rembert"), ort_fusion="bert"),
        EncoderFamily("mobilebert", **_BERT_LIKE, attention_size_key="true_hidden_size", stock_head=StockHead(
            "identity", None, "classifier", config=(("classifier_activation", False),), variants=(
                # transformers' default: the pooler's dense layer and tanh (import-classifier reads it)
                ("classifier_activation", True, StockHead("tanh", "mobilebert.pooler.dense", "classifier")),))),
        # LUKE with words only (text batches carry no entities) is BERT-like; entity tokens would add rows.
        EncoderFamily("luke", **_BERT_LIKE, stock_head=_pooler_head("luke")),
        # I-BERT's quantised mode replaces softmax by an integer approximation; the float mode (quant_mode false)
        # is RoBERTa's attention. Its projections return (output, scale) in either mode (extract.py keeps output).
        EncoderFamily("ibert", **_BERT_LIKE, needs=(ConfigNeed(
            "quant_mode", (False,), "in quant_mode I-BERT's attention computes an integer approximation of "
            "softmax, never the float scores; use the checkpoint with quant_mode false (the float weights)"),),
                      stock_head=_TANH_PROJ, ort_fusion="bert"),
        # Pre-LayerNorm stacks: each layer normalises before its attention, so Q/K/V are projections of the
        # normalised hidden state (the hidden states are the residual stream, as the models give them).
        EncoderFamily("roberta-prelayernorm", **_BERT_LIKE, stock_head=_TANH_PROJ, ort_fusion="bert"),
        EncoderFamily("xlm-roberta-xl", **_BERT_LIKE, stock_head=_TANH_PROJ, ort_fusion="bert"),
        EncoderFamily("megatron-bert", **_BERT_LIKE, stock_head=_pooler_head("bert")),
        # ESM(-2) rotates Q and K inside the attention when position_embedding_type is "rotary" (ESM-2's).
        EncoderFamily("esm", **_BERT_LIKE, score="Q K^T / sqrt(d) + mask; rotary(Q) rotary(K)^T / sqrt(d) + mask "
                                                "with rotary positions (ESM-2)", stock_head=_TANH_PROJ),
        EncoderFamily("roformer", **_BERT_LIKE, score="rotary(Q) rotary(K)^T / sqrt(d) + mask",
                      stock_head=_HIDDEN_ACT_PROJ),
        # BigBird's block-sparse attention never forms the (T, T) scores, pads the batch to whole blocks (its
        # hidden states then hold more tokens than the batch) and swaps its attention modules for full ones on
        # inputs too short for blocks, mid-forward.
        EncoderFamily("big_bird", **_BERT_LIKE, needs=(ConfigNeed(
            "attention_type", ("original_full",), "BigBird's block_sparse attention computes no (T, T) score "
            "matrix and pads the batch to whole blocks; set attention_type to \"original_full\" in the "
            "checkpoint's config.json (the weights are the same)"),), stock_head=_HIDDEN_ACT_PROJ,
                      ort_fusion="bert"),
        # Llama-style bidirectional encoders: rotary Q and K (ESM C also normalises them first); Ultrabert's
        # sliding-window layers mask keys beyond the window as ModernBERT's do. Under grouped-query attention
        # (num_key_value_heads < heads) keys and values are narrower than queries.
        *(EncoderFamily(model_type, layers="layers", attention="self_attn", query="self_attn.q_proj",
                        key="self_attn.k_proj", value="self_attn.v_proj", score=score, head_size_key="head_dim",
                        kv_heads_key="num_key_value_heads" if model_type in _GROUPED_QUERY else None,
                        stock_head=_GENERATED_STOCK_HEADS.get(model_type))
          for model_type, score in (
              ("nomic_bert", _ROTARY), ("gte", _ROTARY), ("jina_embeddings_v3", _ROTARY), ("eurobert", _ROTARY),
              ("esmc", "rotary(norm(Q)) rotary(norm(K))^T / sqrt(d) + mask"),
              ("ultrabert", _ROTARY + "; sliding-window layers also mask keys beyond the window"))),
        # XLM and FlauBERT keep each layer's parts in parallel lists (attentions, ffns, layer norms): a layer of
        # `layers` is the attention module itself. Language embeddings are added only when lang ids are given,
        # which text batches do not carry.
        *(EncoderFamily(model_type, layers="attentions", attention="", query="q_lin", key="k_lin", value="v_lin",
                        hidden_size_key="emb_dim", num_layers_key="n_layers", num_heads_key="n_heads", needs=needs,
                        stock_head=_GENERATED_STOCK_HEADS.get(model_type))
          for model_type, needs in (("xlm", ()), ("flaubert", (ConfigNeed(
              "layerdrop", (0, 0.0), "FlauBERT skips random layers while it trains (layerdrop), so a training "
              "student would give fewer hidden states and scores than it has layers; set layerdrop to 0 in the "
              "checkpoint's config.json (an evaluating teacher never drops layers, so it loses nothing)"),)))),
    )
}


@dataclass(frozen=True)
class ConfigQuirks:
    """What the rest of the package must know of a family's config, feature distillation or not (every family
    that has a quirk: one without an entry has none)."""

    position_offset: bool = False  # position ids start after the padding index (RoBERTa-style): pad + 1 fewer
    per_layer_keys: tuple[str, ...] = ()  # config lists with one entry per layer: they shrink with a cut stack
    # module lists that hold, beside the layer list, one part of each layer (XLM's ffns and layer norms beside its
    # attentions): a cut stack keeps the same entries of each
    parallel_layer_lists: tuple[str, ...] = ()
    no_cut: str | None = None  # why a student cannot keep some of this family's layers, and what to do instead
    needs: tuple[ConfigNeed, ...] = ()  # config values without which it cannot run on text batches at all
    onnx_needs: tuple[ConfigNeed, ...] = ()  # config values without which a traced graph is not the model


_ROBERTA_POSITIONS = ConfigQuirks(position_offset=True)
QUIRKS: dict[str, ConfigQuirks] = {
    # Traced on short rows, block-sparse BigBird switches to full attention for the trace: the graph would then
    # attend fully on long inputs too, and a parity check on short rows could not see it.
    "big_bird": ConfigQuirks(onnx_needs=(ConfigNeed(
        "attention_type", ("original_full",), "a block_sparse BigBird is traced on short rows, where it switches to "
        "full attention, so the graph would differ from the model on long inputs; train the student with "
        "attention_type original_full (model.backbone_config), or serve it with PyTorch"),)),
    "xmod": ConfigQuirks(position_offset=True, needs=(ConfigNeed(
        "default_language", None, "X-MOD routes every token through a per-language adapter, and text batches carry "
        "no lang_ids; set default_language in the checkpoint's config.json to one of its config.languages"),)),
    **dict.fromkeys(("roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "roberta-prelayernorm",
                     "ibert", "xlm-roberta-xl", "luke"), _ROBERTA_POSITIONS),
    "esm": ConfigQuirks(position_offset=True, no_cut="ESM's contact-prediction head takes every layer's attention "
                                                     "maps as its inputs, so it does not fit a stack with fewer "
                                                     "layers; build a smaller student with model.backbone_config "
                                                     "(e.g. num_hidden_layers) instead"),
    **dict.fromkeys(("xlm", "flaubert"), ConfigQuirks(parallel_layer_lists=("layer_norm1", "ffns", "layer_norm2"))),
    "longformer": ConfigQuirks(position_offset=True, per_layer_keys=("attention_window",)),
    "modernbert": ConfigQuirks(per_layer_keys=("layer_types",)),
    "albert": ConfigQuirks(no_cut="ALBERT shares one layer's weights across all its layers, so there is no stack of "
                                  "distinct layers to keep some of; build a smaller student with model.backbone_config "
                                  "(e.g. num_hidden_layers) instead"),
    "funnel": ConfigQuirks(no_cut="Funnel groups its layers in blocks (block_sizes) with pooling between them; build a "
                                  "smaller student with model.backbone_config (block_sizes) instead"),
}


# Encoder families whose features the table cannot describe, and why: `family_of` says so instead of asking for an
# entry. (Models outside any list get the request to add one.)
NO_FEATURES: dict[str, str] = {
    "albert": "ALBERT runs one shared layer's weights num_hidden_layers times, so there is no stack of layer modules "
              "to read",
    "funnel": "Funnel pools the sequence between its blocks, so later layers see fewer tokens than the batch has",
    "longformer": "Longformer scores each token against a band of neighbouring keys (and a few global ones), never "
                  "a (T, T) score matrix",
    "convbert": "ConvBERT's attention mixes self-attention heads (num_attention_heads / head_ratio of them) with "
                "span-based convolution heads, so its scores have fewer heads than its config says and it "
                "softmaxes twice",
    "squeezebert": "SqueezeBERT computes Q/K/V with grouped 1-D convolutions over (batch, channels, tokens), not "
                   "(batch, tokens, width) projections",
    "canine": "CANINE downsamples its characters into a shorter sequence for its deep stack, so its layers see "
              "other lengths than the batch",
    "fnet": "FNet mixes tokens with a Fourier transform: it has no attention",
    "nystromformer": "Nystromformer approximates attention through landmark matrices (three softmaxes), never the "
                     "(T, T) scores",
    "yoso": "YOSO approximates attention by hashing (LSH sampling), with no softmax scores",
    "mra": "MRA approximates attention with multi-resolution block scores, never the full (T, T) softmax",
    "reformer": "Reformer attends within hashed (LSH) buckets and local chunks, never over all (T, T) pairs",
    "tapas": "TAPAS encodes tables: its token_type_ids are 7 per token (segment, column, row, rank ...), which text "
             "batches do not have",
}


def quirks_of(config: PretrainedConfig) -> ConfigQuirks:
    """The config quirks of ``config.model_type`` (none for most families)."""
    return QUIRKS.get(getattr(config, "model_type", None), ConfigQuirks())


def family_of(config: PretrainedConfig) -> EncoderFamily:
    """The table entry for ``config.model_type``; a ConfigError that says why for a family listed in NO_FEATURES or
    a config without a value the family needs (`EncoderFamily.needs`), and what to add for any other family."""
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type)
    if model_type in NO_FEATURES:
        raise ConfigError(f"feature distillation cannot read a '{model_type}' encoder: {NO_FEATURES[model_type]}; "
                          "choose an objective without feature losses, or an encoder of another family")
    if family is None:
        raise ConfigError(
            f"feature distillation does not know the encoder family '{model_type}' (known: "
            f"{', '.join(sorted(FAMILIES))}); add an EncoderFamily entry for '{model_type}' to FAMILIES in "
            "multidistill/models/families.py (where its layers are, its Q/K/V projection modules and its size keys "
            "in the config) and a tiny config to tests/test_features.py"
        )
    problem = unmet_need(config, (*quirks_of(config).needs, *family.needs), "its features need")
    if problem:
        raise ConfigError(f"feature distillation cannot read this '{model_type}' encoder: {problem}")
    return family


def unmet_need(config: PretrainedConfig, needs: tuple[ConfigNeed, ...], who: str = "it needs") -> str | None:
    """What the first of ``needs`` that ``config`` does not meet says (key, value, what ``who`` needs, why); None."""
    for need in needs:
        value = getattr(config, need.key, None)
        if value is None if need.values is None else value not in need.values:
            wanted = "a value" if need.values is None else " or ".join(repr(v) for v in need.values)
            return f"its config's {need.key} is {value!r}, and {who} {wanted}: {need.why}"
    return None


def _config_int(config: PretrainedConfig, key: str | None) -> int | None:
    """``config.<key>`` as an int; None for no key or a value the config does not set."""
    value = getattr(config, key, None) if key is not None else None
    return None if value is None else int(value)


def model_dims(config: PretrainedConfig) -> ModelDims:
    """Hidden size, layer count, attention heads and Q/K/V widths of a Hugging Face encoder, read through the family
    table (the widths as the family's attention computes them: `EncoderFamily.head_size_key` and the keys after)."""
    family = family_of(config)
    hidden = int(getattr(config, family.hidden_size_key))
    heads = int(getattr(config, family.num_heads_key))
    head_size = _config_int(config, family.head_size_key) or \
        (_config_int(config, family.attention_size_key) or hidden) // max(heads, 1)
    kv_width = (_config_int(config, family.kv_heads_key) or heads) * head_size
    return ModelDims(hidden_size=hidden, num_layers=int(getattr(config, family.num_layers_key)),
                     num_attention_heads=heads, query_width=heads * head_size, key_width=kv_width,
                     value_width=kv_width)
