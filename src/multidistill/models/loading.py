"""Load any saved multidistill model folder, whatever its kind (Transformer + heads, or BiLSTM)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from multidistill.errors import ModelError
from multidistill.models.bilstm import BiLSTMModel
from multidistill.models.multitask import MODEL_CONFIG_FILE, MultiTaskModel, read_model_config
from multidistill.utils.quiet import quietened

# The "kind" written in multidistill_model.json -> the class that loads it.
MODEL_KINDS: dict[str, type[nn.Module]] = {
    "multitask": MultiTaskModel,
    "bilstm": BiLSTMModel,
}


def load_model(directory: str | Path, *, trust_remote_code: bool = False,
               progress: bool = True) -> MultiTaskModel | BiLSTMModel:
    """The model saved in ``directory``, as the class its config's ``kind`` names, in eval mode (as Hugging Face's
    `from_pretrained`; training calls `.train()` itself); never unpickles.

    Call it as ``model(task, input_ids=..., attention_mask=..., token_type_ids=...)``: it returns a
    `MultiTaskOutput` (``logits`` of that task's head, ``pooled``, and the encoder's features when asked), and
    ``model.tasks[task].labels`` names the logits' columns. ``progress`` False: no bars or library notes
    (transformers' "Loading weights")."""
    with quietened(progress):  # only the quiet switch: its errors are read errors, never OutputError
        directory = Path(directory)
        kind = read_model_config(directory).get("kind", "multitask")
        model_cls = MODEL_KINDS.get(kind)
        if model_cls is None:
            raise ModelError(f"{directory / MODEL_CONFIG_FILE}: unknown model kind {kind!r} "
                             f"(known: {', '.join(MODEL_KINDS)})")
        return model_cls.from_pretrained(directory, trust_remote_code=trust_remote_code).eval()


def saved_data_root(directory: str | Path) -> str | None:
    """The data root the model in ``directory`` was trained with, when it is recorded and still exists (a
    command's default for --data-root; `multidistill.data.roots` has the whole order)."""
    from multidistill.data.roots import existing_data_root

    return existing_data_root(read_model_config(Path(directory)).get("data_root"))
