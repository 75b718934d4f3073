"""Recurrent sequence classifiers reading an image row by row: (N, C, H, W) -> H steps of C*W features."""

from __future__ import annotations

import torch
import torch.nn as nn

from frugalml.models._activations import make_activation
from frugalml.models._layers import choice, probability, require
from frugalml.models._registry import register_model

_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RowSequenceClassifier(nn.Module):
    def __init__(
        self,
        cell: str,
        input_shape: tuple[int, int, int],
        num_classes: int,
        activation: str,
        hidden: int,
        layers: int,
        bidirectional: bool,
        readout: str,
        dropout: float,
    ) -> None:
        super().__init__()
        c, _, w = input_shape
        self.readout = readout
        self.rnn = _CELLS[cell](
            c * w, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        features = hidden * (2 if bidirectional else 1)
        self.head = nn.Sequential(
            nn.Linear(features, hidden), make_activation(activation), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        seq = x.permute(0, 2, 1, 3).reshape(n, h, c * w)  # rows are time steps
        out = self.rnn(seq)[0]  # (N, H, dirs*hidden)
        if self.readout == "mean":
            feats = out.mean(dim=1)
        elif self.rnn.bidirectional:
            # the forward direction has read every row at the last step, the backward one at the first
            k = self.rnn.hidden_size
            feats = torch.cat([out[:, -1, :k], out[:, 0, k:]], dim=1)
        else:
            feats = out[:, -1]
        return self.head(feats)


def _build(cell: str, input_shape, num_classes, activation, hidden, layers, bidirectional, readout, dropout):
    require(isinstance(hidden, int) and hidden > 0, cell, f"hidden must be a positive int, got {hidden!r}")
    require(isinstance(layers, int) and layers > 0, cell, f"layers must be a positive int, got {layers!r}")
    choice(cell, "readout", readout, ("last", "mean"))
    dropout = probability(cell, "dropout", dropout)
    return RowSequenceClassifier(
        cell, input_shape, num_classes, activation, hidden, layers, bool(bidirectional), readout, dropout
    )


def _register(cell: str, doc: str):  # noqa: ANN202
    """One registered factory per cell type, all with the same explicit options."""

    def factory(
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        activation: str = "relu",
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        readout: str = "last",
        dropout: float = 0.0,
    ) -> nn.Module:
        return _build(cell, input_shape, num_classes, activation, hidden, layers, bidirectional, readout, dropout)

    factory.__name__ = factory.__qualname__ = cell
    factory.__doc__ = doc
    return register_model(cell)(factory)


rnn = _register("rnn", "Elman RNN (tanh cell); `activation` is used in the classifier head.")
lstm = _register("lstm", "LSTM over image rows; `activation` is used in the classifier head.")
gru = _register("gru", "GRU over image rows; `activation` is used in the classifier head.")
