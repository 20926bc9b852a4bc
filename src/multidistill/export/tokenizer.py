"""The tokenizer an export saves: set up so that a user's own batching gives the model what training gave it.

Our code pads every batch itself (`data/collate.py` `encode_texts`): on the right, masked. A user of an export calls
``tokenizer(texts, padding=True, truncation=True)``, which follows the saved tokenizer's settings, so they are made
to agree: padding on the right (a stock classifier reads the first position, so left padding puts a pad token
there), a pad token where the tokenizer has none (transformers refuses ``padding=True`` without one; the mask hides
whichever token pads), and ``model_max_length`` at the length the model was trained with (a tokenizer that records
none truncates at about 1e30 tokens, past the encoder's positions).
"""

from __future__ import annotations

import copy


def for_export(tokenizer, max_length: int | None):
    """A copy of ``tokenizer`` with the settings above (``max_length``: the model's training length; None keeps
    the tokenizer's own)."""
    tokenizer = copy.deepcopy(tokenizer)
    settings: dict = {"padding_side": "right"}
    if max_length is not None:
        settings["model_max_length"] = max_length
    for key, value in settings.items():
        setattr(tokenizer, key, value)
        tokenizer.init_kwargs[key] = value
    if tokenizer.pad_token is None:
        stand_in = next((token for token in (tokenizer.eos_token, tokenizer.sep_token, tokenizer.unk_token,
                                             tokenizer.cls_token) if token is not None), None)
        if stand_in is not None:
            tokenizer.pad_token = stand_in
    return tokenizer
