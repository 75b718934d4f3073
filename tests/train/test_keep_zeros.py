"""Pruned models keep their zeros through every later fine-tuning (KeepZeros)."""

from __future__ import annotations

import torch

from frugalml.compress.prune import UnstructuredPrune, prune
from frugalml.data import load_data
from frugalml.models import build_model
from frugalml.train import KeepZeros, TrainConfig, Trainer


def test_fine_tuning_a_mask_pruned_model_keeps_its_zeros():
    data = load_data("synthetic")
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[32])
    sparse = prune(model, UnstructuredPrune(ratio=0.8), data)
    assert sparse.frugal_sparse
    zeros = {n: p == 0 for n, p in sparse.named_parameters() if p.dim() >= 2}
    trainer = Trainer(sparse, data, TrainConfig(epochs=1, batch_size=64, lr=0.1), progress=False)
    assert any(isinstance(c, KeepZeros) for c in trainer.callbacks)
    trainer.fit()
    for n, p in sparse.named_parameters():
        if p.dim() >= 2:
            assert torch.equal(p == 0, zeros[n]), n


def test_without_the_mark_zeros_may_regrow():
    data = load_data("synthetic")
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[32])
    sparse = prune(model, UnstructuredPrune(ratio=0.8), data)
    sparse.frugal_sparse = False
    before = sum(int((p == 0).sum()) for p in sparse.parameters() if p.dim() >= 2)
    Trainer(sparse, data, TrainConfig(epochs=1, batch_size=64, lr=0.1), progress=False).fit()
    assert sum(int((p == 0).sum()) for p in sparse.parameters() if p.dim() >= 2) < before
