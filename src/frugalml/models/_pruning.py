"""What Torch-Pruning must be told to prune a zoo model into a valid smaller one.

Usage with plain Torch-Pruning (frugalml's structured pruning, compress/prune/_tp_pruner.py, does
this with its own recurrent-layer pruner on top):
    hints = pruning_hints(model)
    pruner = tp.pruner.MetaPruner(model, x, ..., ignored_layers=[classifier, *hints["ignored_layers"]],
                                  num_heads=hints["num_heads"])
    pruner.step()
    sync_after_pruning(model, pruner.num_heads)

A module can declare its own constraints with a `pruning_ignored_layers() -> list[nn.Module]` method
(layers whose *output* channels must keep their count), its attention with `pruning_num_heads() ->
{query/key/value Linear: heads}`, and fix its plain-int attributes after pruning in
`sync_after_pruning()`; user models may do the same (frugalml.hf.HFEncoder does, for Hugging Face
BERT-style attention).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from frugalml.models.transformer import attention_heads, sync_attention_heads


def pruning_hints(model: nn.Module) -> dict[str, Any]:
    """`{"ignored_layers": [modules], "num_heads": {qkv Linear: heads}}` for Torch-Pruning."""
    ignored: list[nn.Module] = []
    for m in model.modules():
        declared = getattr(m, "pruning_ignored_layers", None)
        if callable(declared):
            ignored += declared()
        # plain torch-pruning 1.6 has no RNN/GRU pruner and its LSTM pruner corrupts weight_hh, so
        # recurrent layers are listed here; frugalml's structured pruning takes the unidirectional,
        # unprojected ones back off this list and prunes their hidden units (compress/prune/_tp_rnn.py)
        if isinstance(m, nn.RNNBase):
            ignored.append(m)
    heads = attention_heads(model)
    for m in model.modules():
        declared = getattr(m, "pruning_num_heads", None)
        if callable(declared):
            heads.update(declared())
    return {"ignored_layers": ignored, "num_heads": heads}


def sync_after_pruning(model: nn.Module, num_heads: dict[nn.Module, int] | None = None) -> None:
    """Update the plain-int attributes that forward reads (attention heads) to the pruned shapes."""
    sync_attention_heads(model, num_heads)
    for m in model.modules():
        sync = getattr(m, "sync_after_pruning", None)
        if callable(sync):
            sync()
