"""`BiLSTMModel`: the small BiLSTM student of MKD (Liu et al. 2019, arXiv 1911.03588).

Word embeddings -> one shared bidirectional LSTM -> attention pooling -> an MLP head per task. Pair tasks
encode their two texts separately with the same LSTM (siamese) and classify [u; v; |u - v|; u * v].
It is called exactly like `MultiTaskModel`, so training, evaluation and losses need no changes, and it is
saved the same way (safetensors + JSON + tokenizer), minus the Hugging Face ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_model
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError, UnknownTaskError
from multidistill.models.extract import Wanted, check_wanted, with_features
from multidistill.models.features import EncoderFeatures, ModelDims
from multidistill.models.multitask import (
    FORMAT_VERSION,
    MODEL_CONFIG_FILE,
    WEIGHTS_FILE,
    MultiTaskOutput,
    SavedModel,
    build_and_load,
    output_with_features,
    read_model_config,
)
from multidistill.models.specs import BiLSTMSpec

KIND = "bilstm"
# The features a BiLSTM can give to feature distillation (`BiLSTMModel.features`).
BILSTM_FEATURES = ("logits", "pooled", "hidden_states")
# Fixed seed for the random parts of embedding initialisation, so a run is reproducible from its config.
_INIT_SEED = 0
# The tokenizer's special tokens other than padding: a pad token that is also one of them (Llama-style tokenizers
# pad with their end-of-sequence token) is a real input, so its embedding row must train (`padding_row`).
_OTHER_SPECIAL_TOKENS = ("cls", "sep", "bos", "eos", "unk", "mask")
# `padding_idx` default of the constructor: the pad id, unless it is the separator (`BiLSTMModel.__init__`).
_FROM_PAD_ID = "from_pad_id"


class BiLSTMModel(SavedModel):
    """BiLSTM encoder shared by all tasks, with one MLP head per task in ``heads``.

    Same calling interface as `MultiTaskModel`: ``model(task, input_ids, attention_mask, token_type_ids)``
    returns a `MultiTaskOutput`.
    """

    def __init__(self, spec: BiLSTMSpec, tasks: list[Task], *, vocab_size: int, pad_token_id: int | None,
                 sep_token_id: int | None, max_length: int | None = None,
                 padding_idx: int | None | str = _FROM_PAD_ID) -> None:
        """``pad_token_id`` is the tokenizer's pad token (None when it has none); ``padding_idx`` the embedding row
        kept at zero and never trained (`nn.Embedding`'s), None for none. It defaults to ``pad_token_id`` unless
        that is None or the separator, as `from_pretrained` reads a folder saved before ``padding_idx`` was
        recorded; `from_tokenizer` passes `padding_row`, which checks every special token.

        Padding itself never reaches the LSTM (`_encode` packs or masks it away), so the pad id is only a
        fill value and ``padding_idx`` only keeps a row that no input uses at zero.
        """
        super().__init__()
        if padding_idx == _FROM_PAD_ID:
            padding_idx = pad_token_id if pad_token_id != sep_token_id else None
        if padding_idx is not None and not 0 <= padding_idx < vocab_size:
            raise ValueError(f"padding_idx {padding_idx} is not a token id of the vocabulary of {vocab_size}")
        self.spec = spec
        self.max_length = max_length  # the truncation length used in training; the default for inference
        self.vocab_size = vocab_size
        self.pad_token_id = pad_token_id
        self.sep_token_id = sep_token_id
        self.tasks = {task.name: task for task in tasks}
        self.embeddings = nn.Embedding(vocab_size, spec.embedding_dim, padding_idx=padding_idx)
        # nn.LSTM applies dropout only between layers and warns when asked for it with one layer.
        self.lstm = nn.LSTM(spec.embedding_dim, spec.hidden_size, num_layers=spec.num_layers, batch_first=True,
                            bidirectional=True, dropout=spec.dropout if spec.num_layers > 1 else 0.0)
        encoded = 2 * spec.hidden_size
        # Attention pooling: score_t = w^T tanh(W h_t).
        self.attention_proj = nn.Linear(encoded, encoded)
        self.attention_vector = nn.Linear(encoded, 1, bias=False)
        self.dropout = nn.Dropout(spec.dropout)
        # Text tasks (unlabelled corpora) get no head: only feature losses read them.
        self.heads = nn.ModuleDict({task.name: self._build_head(task) for task in tasks if task.has_head})
        # Packed sequences are the fast path; ONNX export cannot trace them, so it runs `_lstm_unpacked`
        # (same numbers) instead: automatically inside `torch.onnx.export`, or when this is set to False.
        self.pack_sequences = True

    def _build_head(self, task: Task) -> nn.Module:
        features = (8 if task.pair else 2) * self.spec.hidden_size
        return nn.Sequential(nn.Linear(features, self.spec.mlp_hidden), nn.ReLU(), nn.Dropout(self.spec.dropout),
                             nn.Linear(self.spec.mlp_hidden, task.num_labels))

    @classmethod
    def from_tokenizer(cls, spec: BiLSTMSpec, tasks: list[Task], tokenizer, *, max_length: int | None = None,
                       teacher_embeddings: torch.Tensor | None = None) -> BiLSTMModel:
        """A fresh model sized for ``tokenizer``'s vocabulary; word embeddings come from
        ``teacher_embeddings`` (the teacher's (V, H) input-embedding matrix) when given and
        ``spec.init_embeddings`` is on.

        The vocabulary covers every id the tokenizer can emit (``len(tokenizer)``, or more when a
        vocabulary file skips ids). A teacher matrix with at least that many rows sets the size
        instead, as teachers often pad their embedding matrix (e.g. to a multiple of 8). The padding
        row (zero, never trained) is `padding_row`'s: none when the pad token is also the separator or
        another special token, or when the tokenizer has no pad token.
        """
        use_teacher = teacher_embeddings is not None and spec.init_embeddings
        vocab_size = max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)
        if use_teacher and teacher_embeddings.dim() == 2 and teacher_embeddings.shape[0] >= vocab_size:
            vocab_size = teacher_embeddings.shape[0]
        model = cls(spec, tasks, vocab_size=vocab_size, pad_token_id=tokenizer.pad_token_id,
                    sep_token_id=tokenizer.sep_token_id, max_length=max_length, padding_idx=padding_row(tokenizer))
        if use_teacher:
            model.init_embeddings_from(teacher_embeddings)
        return model

    @property
    def max_seq_length(self) -> int | None:
        """No position embeddings, so no length limit."""
        return None

    def check_max_length(self, length: int, setting: str) -> None:
        """Any truncation length is fine for an LSTM (kept for interface parity with `MultiTaskModel`)."""

    def head_type(self, task: str) -> nn.Module:
        if task in self.tasks and not self.tasks[task].has_head:
            raise ConfigError(f"task '{task}' is a text task (unlabelled text): it has no head and no logits; "
                              "only feature losses can train on it")
        if task not in self.heads:
            raise UnknownTaskError(f"the model has no head for task '{task}'; it has: {', '.join(self.heads)}")
        return self.heads[task]

    # --- embeddings ---------------------------------------------------------------------------

    @torch.no_grad()
    def init_embeddings_from(self, teacher_embeddings: torch.Tensor) -> None:
        """Initialise the word embeddings from a teacher's (V, H_t) word-embedding matrix.

        Equal sizes: copied. Otherwise the centred teacher matrix is projected on its top principal
        components (rescaled to the teacher's mean row norm). Either way the result is then multiplied by one
        factor that gives its entries unit spread (`_unit_scale`: LSTMs need larger inputs). When H_t is smaller
        than ``embedding_dim`` there are only H_t components; the remaining columns get small random
        values (1% of the projected part's spread, fixed seed) so they are not dead at the start.
        The padding row (``embeddings.padding_idx``, if any) is left out of the statistics and stays zero.
        """
        if teacher_embeddings.dim() != 2:
            raise ModelError(f"teacher embeddings must be a (vocab, hidden) matrix, got shape "
                             f"{tuple(teacher_embeddings.shape)}")
        vocab, teacher_dim = teacher_embeddings.shape
        if vocab != self.vocab_size:
            raise ModelError(f"teacher embeddings have {vocab} rows but the student vocabulary has "
                             f"{self.vocab_size} tokens; use the teacher's tokenizer")
        target = self.embeddings.weight
        teacher = teacher_embeddings.detach().to(device="cpu", dtype=torch.float32)
        dim = self.spec.embedding_dim
        same = teacher_dim == dim
        padding = self.embeddings.padding_idx
        weights = teacher.clone() if same else _pca_project(teacher, dim, exclude_row=padding)
        weights = _unit_scale(weights, exclude_row=padding)
        if padding is not None:
            weights[padding] = 0.0
        target.copy_(weights.to(dtype=target.dtype, device=target.device))

    # --- forward ------------------------------------------------------------------------------

    def _segment_b(self, input_ids: torch.Tensor, mask: torch.Tensor,
                   token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """Which tokens belong to the second text: token types where a row has any, else after the first SEP."""
        if self.sep_token_id is not None:
            # Only real tokens: a tokenizer that pads with its separator (Llama-style) may pad on the left.
            is_sep = ((input_ids == self.sep_token_id) & mask).long()
            # Count of separators strictly before each token; covers `[CLS] a [SEP] b [SEP]` and
            # RoBERTa's `<s> a </s></s> b </s>` (whose second `</s>` opens segment B).
            after_sep = (is_sep.cumsum(1) - is_sep) > 0
        else:
            after_sep = torch.zeros_like(mask)
        if token_type_ids is None:
            return after_sep & mask
        typed = token_type_ids.bool() & mask
        has_types = typed.any(1, keepdim=True)
        # Boolean algebra rather than torch.where: ONNX Runtime has no Where kernel for bool tensors.
        return ((typed & has_types) | (after_sep & ~has_types)) & mask

    def _encode(self, input_ids: torch.Tensor, in_segment: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the LSTM over the tokens marked by ``in_segment`` (B, T) only.

        Returns the pooled vector (B, 2H), plus the LSTM outputs (B, T, 2H) and attention weights (B, T)
        placed back at the tokens' input positions (zero elsewhere).
        """
        width = input_ids.shape[1]
        positions = torch.arange(width, device=input_ids.device)
        lengths = in_segment.sum(1)
        empty = lengths == 0
        # Sorting on "not in segment" (ties broken by position: the keys are unique, so any sort is stable and
        # the ONNX exporter's TopK gives the same order) moves the segment's tokens to the front, in order;
        # packing then reads exactly them, so padding and the other segment never reach the LSTM.
        order = torch.argsort((~in_segment).long() * width + positions[None, :], dim=1)
        ids = input_ids.gather(1, order)
        # Packing needs length >= 1: an empty segment (e.g. text_b truncated away) is read as one
        # token whose input is zero (set below: the fill id need not have a zero row).
        lengths = lengths.clamp(min=1)
        valid = positions[None, :] < lengths[:, None]
        ids = ids.masked_fill(~valid | (empty[:, None] & (positions[None, :] == 0)), self._fill_id)
        embedded = self.dropout(self.embeddings(ids)) * (~empty).to(self.embeddings.weight.dtype)[:, None, None]
        if self.pack_sequences and not torch.onnx.is_in_onnx_export():
            packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
            outputs, _ = self.lstm(packed)
            outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=width)
        else:
            outputs = self._lstm_unpacked(embedded, lengths, valid)
        scores = self.attention_vector(torch.tanh(self.attention_proj(outputs))).squeeze(-1)
        weights = torch.softmax(scores.float().masked_fill(~valid, float("-inf")), dim=1).to(outputs.dtype)
        pooled = (weights.unsqueeze(-1) * outputs).sum(1)
        # Undo the sort so per-token outputs line up with input_ids (order is a permutation).
        keep = in_segment.to(outputs.dtype)
        outputs = torch.zeros_like(outputs).scatter(1, order.unsqueeze(-1).expand_as(outputs), outputs)
        weights = torch.zeros_like(weights).scatter(1, order, weights)
        return pooled, outputs * keep.unsqueeze(-1), weights * keep

    @property
    def _fill_id(self) -> int:
        """The id written where nothing is read (positions past a segment's length): the padding row when there is
        one, else the pad token, else 0. Any id would do."""
        if self.embeddings.padding_idx is not None:
            return self.embeddings.padding_idx
        return self.pad_token_id if self.pad_token_id is not None else 0

    def _lstm_unpacked(self, embedded: torch.Tensor, lengths: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """What the packed bidirectional LSTM computes over rows of ``lengths`` valid leading positions, without
        packing (so it traces into an ONNX graph with dynamic batch and sequence sizes).

        The forward direction runs over the padded rows as they are: trailing padding cannot reach earlier
        positions. The backward direction reverses each row within its own length (a gather; positions past the
        length stay put, so the permutation is its own inverse), runs the reverse-direction weights forwards and
        reverses back. Layers are stacked the same way, with nn.LSTM's inter-layer dropout; positions past a
        row's length are zero, as `pad_packed_sequence` leaves them.
        """
        lstm = self.lstm
        positions = torch.arange(embedded.shape[1], device=embedded.device)
        reverse = torch.where(valid, lengths[:, None] - 1 - positions[None, :], positions[None, :]).unsqueeze(-1)
        hidden = embedded
        for layer in range(lstm.num_layers):
            if layer > 0:
                hidden = F.dropout(hidden, lstm.dropout, self.training)
            forwards = self._lstm_direction(hidden, layer, "")
            flipped = hidden.gather(1, reverse.expand(-1, -1, hidden.shape[-1]))
            backwards = self._lstm_direction(flipped, layer, "_reverse")
            backwards = backwards.gather(1, reverse.expand(-1, -1, backwards.shape[-1]))
            hidden = torch.cat([forwards, backwards], dim=-1)
        return hidden * valid.unsqueeze(-1).to(hidden.dtype)

    def _lstm_direction(self, inputs: torch.Tensor, layer: int, suffix: str) -> torch.Tensor:
        """One direction of one layer of ``self.lstm`` run left to right over ``inputs`` (B, T, D), from zero state."""
        lstm = self.lstm
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        weights = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in names]
        state = inputs.new_zeros(1, inputs.shape[0], lstm.hidden_size)
        outputs, _, _ = torch.lstm(inputs, (state, state), weights, True, 1, 0.0, self.training, False, True)
        return outputs

    def encode_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor | None = None, *, pair: bool,
                        both_texts: bool = False) -> tuple:
        """The head input of a single-text (``pair=False``) or pair task, with the first text's LSTM outputs
        (both texts' with ``both_texts``, each at its own positions) and the attention-pooling weights of each
        encoded text. Shared by every head of that kind."""
        mask = attention_mask.bool()
        if not pair:
            u, hidden, weights_a = self._encode(input_ids, mask)
            return u, hidden, (weights_a,)
        segment_b = self._segment_b(input_ids, mask, token_type_ids)
        u, hidden, weights_a = self._encode(input_ids, mask & ~segment_b)
        v, hidden_b, weights_b = self._encode(input_ids, segment_b)
        # The segments are disjoint and each output is zero outside its own, so the sum places both.
        return self.pair_features(u, v), hidden + hidden_b if both_texts else hidden, (weights_a, weights_b)

    @staticmethod
    def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The head input of a pair task from its two texts' pooled vectors: [u; v; |u - v|; u * v]."""
        return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False, want: Wanted | None = None,
                domain_ids: torch.Tensor | None = None) -> MultiTaskOutput:
        """Logits of ``task``'s head. ``last_hidden_state`` holds the LSTM outputs of the (first) text at
        its input positions; ``hidden_states`` is just ``(last_hidden_state,)`` and ``attentions`` the
        attention-pooling weights (B, T) of each encoded text, not Transformer attention maps. With ``want``
        (feature names, see `features`) the output also carries ``features`` from the same forward. ``domain_ids``
        is accepted as the objective passes it to any student when its terms read the domain branch; a BiLSTM
        has none, and `features` refuses those names clearly."""
        head = self.head_type(task)
        if want:
            return output_with_features(self.features(task, input_ids, attention_mask, token_type_ids,
                                                       want=with_features(want, "logits", "pooled")))
        features, hidden, attentions = self.encode_features(input_ids, attention_mask, token_type_ids,
                                                            pair=self.tasks[task].pair)
        return MultiTaskOutput(
            logits=head(features), pooled=features, last_hidden_state=hidden,
            hidden_states=(hidden,) if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
        )

    # --- feature distillation ----------------------------------------------------------------

    def model_dims(self) -> ModelDims:
        """Sizes for feature losses: the LSTM output width (2 x ``hidden_size``), one layer (nn.LSTM exposes only
        its top layer's outputs), no attention heads, and hidden state 0 (the word embeddings) ``embedding_dim``
        wide."""
        return ModelDims(hidden_size=2 * self.spec.hidden_size, num_layers=1, num_attention_heads=0,
                         embedding_size=self.spec.embedding_dim)

    def features(self, task: str | None, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, *, want: Wanted) -> EncoderFeatures:
        """What a BiLSTM has: ``logits`` and ``pooled`` (as in `forward`) and ``hidden_states``, a 2-tuple of the
        word embeddings (B, T, embedding_dim; no dropout) and the LSTM outputs (B, T, 2 x hidden_size) of every
        text at its input positions, both zero at padding. It has no self-attention, so attention scores and
        Q/K/V are refused. ``task`` may be None (read as a single text) when logits are not wanted."""
        want = check_wanted(want, BILSTM_FEATURES, "the BiLSTM student (BiLSTMModel), which has no self-attention "
                            "and so no attention scores or queries/keys/values,")
        if "logits" in want and task is None:
            raise ConfigError("the 'logits' feature needs a task (whose head gives them); unlabelled text has none")
        head = self.head_type(task) if task is not None else None  # an unknown task is a clear error
        pair = task is not None and self.tasks[task].pair
        features = EncoderFeatures(attention_mask=attention_mask, dims=self.model_dims())
        if not want:
            return features
        pooled, hidden, _ = self.encode_features(input_ids, attention_mask, token_type_ids, pair=pair,
                                                 both_texts=True)
        if "hidden_states" in want:
            embedded = self.embeddings(input_ids) * attention_mask.unsqueeze(-1).to(hidden.dtype)
            features.hidden_states = (embedded, hidden)
        features.pooled = pooled if "pooled" in want else None
        features.logits = head(pooled) if "logits" in want else None
        return features

    # --- persistence -------------------------------------------------------------------------

    def _config_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "spec": self.spec.model_dump(),
            "vocab_size": self.vocab_size,
            "pad_token_id": self.pad_token_id,
            "sep_token_id": self.sep_token_id,
            "padding_idx": self.embeddings.padding_idx,
            "max_length": self.max_length,
            "tasks": [task.model_dump(mode="json") for task in self.tasks.values()],
            **self._saved_data_root(),
        }

    def write_to(self, folder: Path, tokenizer=None) -> None:
        """Write weights, config and tokenizer into an existing (temporary) folder."""
        folder = Path(folder)
        save_model(self, str(folder / WEIGHTS_FILE))
        (folder / MODEL_CONFIG_FILE).write_text(json.dumps(self._config_dict(), indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, trust_remote_code: bool = False) -> BiLSTMModel:
        """Load a folder written by `save_pretrained`; validates it first, never unpickles.

        ``trust_remote_code`` is accepted for interface parity; a BiLSTM folder holds no code.
        """
        directory = Path(directory)
        config = read_model_config(directory, kind=KIND)
        path = directory / MODEL_CONFIG_FILE
        try:
            spec = BiLSTMSpec.model_validate(config["spec"])
            tasks = [Task.model_validate(task) for task in config["tasks"]]
            settings = dict(vocab_size=int(config["vocab_size"]), pad_token_id=_optional_id(config["pad_token_id"]),
                            sep_token_id=config.get("sep_token_id"), max_length=config.get("max_length"))
            if "padding_idx" in config:  # else saved before it was recorded: the constructor's default, as then
                settings["padding_idx"] = _optional_id(config["padding_idx"])
            with torch.device("meta"):  # the constructor's own checks, before any memory is allocated
                cls(spec, tasks, **settings)
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise ModelError(f"{path}: invalid BiLSTM model config: {exc}") from exc
        model = build_and_load(lambda: cls(spec, tasks, **settings), directory / WEIGHTS_FILE)
        model._load_data_root(config)
        return model


def padding_row(tokenizer) -> int | None:
    """The embedding row to keep at zero for ``tokenizer``: its pad token's id, or None when it has no pad token
    or its pad token is also its separator, end-of-sequence or another special token (Llama-style tokenizers pad
    with eos), which the BiLSTM reads as input and must learn.

    Padding needs no row of its own: `BiLSTMModel._encode` never feeds padded positions to the LSTM, so without a
    pad token the fill id (0, what the collator pads with) is harmless, and no real token's row is frozen.
    """
    pad = tokenizer.pad_token_id
    if pad is None:
        return None
    others = {getattr(tokenizer, f"{name}_token_id", None) for name in _OTHER_SPECIAL_TOKENS}
    return None if pad in others else pad


def _optional_id(value) -> int | None:
    return None if value is None else int(value)


def _rows_except(matrix: torch.Tensor, row: int | None) -> torch.Tensor:
    """A boolean mask over ``matrix``'s rows that leaves out ``row`` (the padding row, when there is one)."""
    rows = torch.ones(matrix.shape[0], dtype=torch.bool)
    if row is not None and 0 <= row < matrix.shape[0]:
        rows[row] = False
    return rows


def _unit_scale(matrix: torch.Tensor, *, exclude_row: int | None = None) -> torch.Tensor:
    """``matrix`` times one factor that gives its entries (``exclude_row`` aside) unit standard deviation.

    A Transformer's word embeddings are small (entries of std ~0.06 in MiniLM) because a LayerNorm follows
    them; an LSTM reads them raw, and at that scale its gate pre-activations barely vary between words, so
    every sentence encodes alike. Unit scale is `nn.Embedding`'s own initialisation; one factor keeps the
    geometry (directions, relative norms).
    """
    rows = _rows_except(matrix, exclude_row)
    spread = float(matrix[rows].std()) if int(rows.sum()) * matrix.shape[1] > 1 else 0.0
    return matrix / spread if spread > 0 else matrix


def _pca_project(matrix: torch.Tensor, dim: int, *, exclude_row: int | None = None) -> torch.Tensor:
    """``matrix`` (V, H) projected on its top ``dim`` principal components, rescaled to its mean row norm.

    Statistics ignore ``exclude_row`` (the padding row). Missing components (H or V below ``dim``) are
    filled with small random values from a fixed seed.
    """
    rows = _rows_except(matrix, exclude_row)
    reference = matrix[rows]
    centred = matrix - reference.mean(0, keepdim=True)
    # Principal directions = eigenvectors of the (H, H) scatter matrix: exact and deterministic (unlike a
    # randomised low-rank PCA), and far cheaper than an SVD of the (V, H) matrix for real vocabularies.
    # Float64 keeps the squared condition number harmless.
    kept = centred[rows].double()
    eigenvalues, eigenvectors = torch.linalg.eigh(kept.T @ kept)
    count = min(dim, kept.shape[0], kept.shape[1])
    components = eigenvectors[:, eigenvalues.argsort(descending=True)[:count]]
    # An eigenvector's sign is arbitrary; make each one's largest entry positive so results are stable.
    signs = components.gather(0, components.abs().argmax(0, keepdim=True)).sign()
    components = components * torch.where(signs == 0, 1.0, signs)
    projected = (centred.double() @ components).to(matrix.dtype)
    if projected.shape[1] < dim:
        generator = torch.Generator().manual_seed(_INIT_SEED)
        scale = 0.01 * float(projected[rows].std()) if projected.numel() > 1 else 0.01
        extra = torch.randn(matrix.shape[0], dim - projected.shape[1], generator=generator) * max(scale, 1e-8)
        projected = torch.cat([projected, extra], dim=1)
    target_norm = reference.norm(dim=1).mean()
    current_norm = projected[rows].norm(dim=1).mean().clamp(min=1e-12)
    return projected * (target_norm / current_norm)
