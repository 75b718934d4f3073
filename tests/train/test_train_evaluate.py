"""Batched accuracy and logits; module modes are restored afterwards."""

from __future__ import annotations

import pytest
import torch
from train_helpers import make_model

from frugalml.errors import DataError
from frugalml.train import evaluate, predict_logits


def test_batched_logits_match_a_single_forward():
    model = make_model(dropout=0.5, norm=True)
    x = torch.randn(50, 1, 8, 8)
    logits = predict_logits(model, x, batch_size=16)
    model.eval()
    assert torch.allclose(logits, model(x), atol=1e-6)  # eval mode: dropout off, BN running stats


def test_accuracy_counts_correct_predictions():
    model = make_model()
    x = torch.randn(30, 1, 8, 8)
    pred = predict_logits(model, x).argmax(1)
    y = pred.clone()
    y[:10] = (y[:10] + 1) % 4
    assert evaluate(model, x, y, batch_size=7) == pytest.approx(20 / 30)


def test_modes_are_restored():
    model = make_model(dropout=0.5, norm=True)
    model.train()
    model[1].eval()  # a frozen BatchNorm stays frozen
    evaluate(model, torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    assert model.training and model[0].training and not model[1].training
    assert not torch.is_inference_mode_enabled()


def test_empty_split_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        evaluate(make_model(), torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
