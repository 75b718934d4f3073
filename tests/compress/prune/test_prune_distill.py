"""Fine-tuning after pruning can distil from the unpruned model through the Trainer's loss_terms."""

import copy

import pytest
import torch
import torch.nn as nn

from frugalml.compress.distill.losses import DistillFrom
from frugalml.compress.prune import UnstructuredPrune, prune_with_metrics


def test_distill_term_is_zero_for_identical_outputs_and_positive_otherwise():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    term = DistillFrom(copy.deepcopy(teacher), weight=0.5, temperature=2.0)
    x = torch.randn(8, 1, 4, 4)
    assert term(teacher, x, None, teacher(x)).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(8, 3)
    loss = term(teacher, x, None, other)
    assert loss.item() > 0 and loss.requires_grad is False  # no grad to the constant logits here
    assert not any(p.requires_grad for p in term.teacher.parameters())


def test_distill_term_moves_its_teacher_to_the_batches_device():
    """The Trainer moves the student and the batches (to CUDA under NCCL), not the loss terms: the
    teacher must follow, or the first batch fails with a device mismatch. `meta` stands in for a GPU."""
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    term = DistillFrom(copy.deepcopy(teacher), weight=0.5, temperature=2.0)
    x = torch.randn(8, 1, 4, 4, device="meta")
    loss = term(teacher, x, None, torch.randn(8, 3, device="meta"))
    assert loss.device.type == "meta"
    assert all(p.device.type == "meta" for p in term.teacher.parameters())
    assert all(p.device.type == "cpu" for p in teacher.parameters())  # the term's copy moved, not the caller's


def test_unstructured_finetune_with_distillation_uses_the_unpruned_teacher(data, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, data.num_classes))
    calls = []
    original = DistillFrom.__call__

    def spy(self, m, x, y, logits):
        calls.append(sum(int((p == 0).sum()) for p in self.teacher.parameters()))
        return original(self, m, x, y, logits)

    monkeypatch.setattr(DistillFrom, "__call__", spy)
    cfg = UnstructuredPrune(ratio=0.8, finetune={"epochs": 1, "lr": 0.01, "distill": 1.0})
    pruned, metrics = prune_with_metrics(model, cfg, data)
    assert calls and all(c == 0 for c in calls)  # the teacher is dense: the model before pruning
    assert metrics["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert all((p != 0).all() for p in model.parameters() if p.dim() > 1)  # the input model is untouched
