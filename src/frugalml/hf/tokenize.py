"""Tokenizing text offline with an `hf:` source's tokenizer files (tokenizer.json / vocab.txt)."""

from __future__ import annotations

from typing import Any

import torch

from frugalml.data.features import Features
from frugalml.errors import ConfigError
from frugalml.hf.source import require_transformers, resolve

BATCH = 512  # texts per tokenizer call: bounded memory for large corpora


def load_tokenizer(source: str) -> Any:
    """The tokenizer of `hf:DIR` / `hf:package`, from local files only (no network, no remote code)."""
    require_transformers("a text dataset's tokenizer")
    from transformers import AutoTokenizer

    folder = resolve(source if source.startswith("hf:") else f"hf:{source}")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"data.tokenizer: {folder} has no usable tokenizer ({str(e).splitlines()[0][:160]})") from None


def encode(tokenizer: Any, texts: list[str], max_length: int) -> Features:
    """`Features(input_ids, attention_mask)`, int64 (len(texts), max_length): truncated and padded."""
    ids, mask = [], []
    tokenizer.padding_side = "right"  # padding at the end: Features.trimmed() cuts trailing columns
    for i in range(0, max(len(texts), 1), BATCH):
        enc = tokenizer(texts[i : i + BATCH] or [""], padding="max_length", truncation=True,
                        max_length=max_length, return_tensors="pt")
        ids.append(enc["input_ids"][: len(texts[i : i + BATCH])])
        mask.append(enc["attention_mask"][: len(texts[i : i + BATCH])])
    return Features({"input_ids": torch.cat(ids).long(), "attention_mask": torch.cat(mask).long()})
