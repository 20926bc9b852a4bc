"""Stable fingerprints of files, specs and tokenizers, used to key caches and manifests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def hash_json(payload: Any) -> str:
    """sha256 of a JSON-serialisable value, independent of dict order."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def hash_path(path: str | Path) -> str:
    """Content hash of a file, or of every file below a folder (saved HF datasets)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def hash_tokenizer(tokenizer: Any, *, with_class: bool = True) -> str:
    """Fingerprint of a tokenizer's vocabulary and settings (fast tokenizers serialise fully).

    ``with_class`` False leaves a fast tokenizer's class out: its backend alone turns text into ids, so the same
    WordPiece saved as BertTokenizer and as DistilBertTokenizer (or loaded as TokenizersBackend) tokenises the same
    (`same_tokenization`). Stored fingerprints keep the class, so the stores and caches made before stay valid.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # Each call writes its truncation/padding settings into the backend; they are not part of identity.
        state.pop("truncation", None)
        state.pop("padding", None)
        body = json.dumps(state, sort_keys=True)
    else:
        body = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = {"special": tokenizer.all_special_tokens}
    if with_class or backend is None:  # a slow tokenizer's class is its algorithm
        extra["class"] = type(tokenizer).__name__
    # Which end a long text loses changes the ids; recorded only when not the default, so fingerprints made
    # before it was recorded stay valid.
    if getattr(tokenizer, "truncation_side", "right") != "right":
        extra["truncation_side"] = tokenizer.truncation_side
    return hashlib.sha256((body + json.dumps(extra, sort_keys=True)).encode()).hexdigest()


def same_tokenization(first: Any, second: Any) -> bool:
    """Whether two tokenizers turn every text into the same ids (their class aside where it plays no part)."""
    return hash_tokenizer(first, with_class=False) == hash_tokenizer(second, with_class=False)
