"""A Torch-Pruning layer pruner for nn.RNN / nn.GRU / nn.LSTM hidden units.

torch-pruning 1.6 has no RNN/GRU pruner and its LSTM pruner indexes `weight_hh` wrongly, so we
register this one through tp's documented extension point (`customized_pruners`). Removing hidden
unit j removes row j of every gate block in each layer's input/hidden matrices and biases, and
column j of the hidden matrices and of the next layer's input matrix. The same units are removed
from every stacked layer (nn.RNNBase has one `hidden_size`). Bidirectional layers and LSTM
projections are not handled: they stay unpruned (see `supported`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch_pruning as tp

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def supported(layer: nn.RNNBase) -> bool:
    return not layer.bidirectional and not getattr(layer, "proj_size", 0) and layer.mode in GATES


class RNNHiddenPruner(tp.pruner.BasePruningFunc):
    TARGET_MODULES = (nn.RNN, nn.GRU, nn.LSTM)

    def _select(self, layer: nn.RNNBase, name: str, keep: torch.Tensor, dim: int) -> None:
        w = getattr(layer, name)
        setattr(layer, name, self._prune_parameter_and_grad(w, keep.tolist(), dim))

    def prune_out_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        hidden = layer.hidden_size
        drop = set(int(i) for i in idxs)
        keep = torch.tensor([i for i in range(hidden) if i not in drop], dtype=torch.long)
        gates = torch.cat([keep + g * hidden for g in range(GATES[layer.mode])])
        for k in range(layer.num_layers):
            self._select(layer, f"weight_ih_l{k}", gates, 0)
            if k > 0:
                self._select(layer, f"weight_ih_l{k}", keep, 1)
            self._select(layer, f"weight_hh_l{k}", gates, 0)
            self._select(layer, f"weight_hh_l{k}", keep, 1)
            if layer.bias:
                self._select(layer, f"bias_ih_l{k}", gates, 0)
                self._select(layer, f"bias_hh_l{k}", gates, 0)
        layer.hidden_size = len(keep)
        layer._init_flat_weights()
        return layer

    def prune_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        drop = set(int(i) for i in idxs)
        keep = torch.tensor([i for i in range(layer.input_size) if i not in drop], dtype=torch.long)
        self._select(layer, "weight_ih_l0", keep, 1)
        layer.input_size = len(keep)
        layer._init_flat_weights()
        return layer

    def get_out_channels(self, layer: nn.RNNBase) -> int:
        return layer.hidden_size

    def get_in_channels(self, layer: nn.RNNBase) -> int:
        return layer.input_size
