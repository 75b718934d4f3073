"""Named-tensor batches and the task metrics, on hand-made numbers."""

from __future__ import annotations

import pytest
import torch

from frugalml.data.features import Features
from frugalml.measure.task import TASKS, cosine, recall_at_k


def _features(n: int = 5) -> Features:
    ids = torch.arange(n * 3).view(n, 3) + 3000  # beyond fp16's exact integers
    return Features({"attention_mask": torch.ones(n, 3, dtype=torch.long), "input_ids": ids,
                     "weights": torch.rand(n, 3)})


def test_features_keep_integer_inputs_exact_under_a_float_cast():
    x = _features()
    assert x.names == ["input_ids", "attention_mask", "weights"]  # Hugging Face order first
    half = x.to(torch.float16)
    assert half["input_ids"].dtype == torch.int64 and torch.equal(half["input_ids"], x["input_ids"])
    assert half["attention_mask"].dtype == torch.int64 and half["weights"].dtype == torch.float16


def test_features_index_repeat_and_concatenate_like_a_batch():
    x = _features(5)
    assert len(x) == 5 and x.shape == (5, 3) and x.dim() == 2
    assert torch.equal(x[1:3]["input_ids"], x["input_ids"][1:3])
    assert torch.equal(x[torch.tensor([4, 0])]["input_ids"], x["input_ids"][[4, 0]])
    assert len(x.repeat_rows(12)) == 12 and torch.equal(x.repeat_rows(7)["input_ids"][5], x["input_ids"][0])
    assert len(Features.cat([x, x[:2]])) == 7
    with pytest.raises(ValueError, match="batch size"):
        Features({"a": torch.zeros(2), "b": torch.zeros(3)})


def test_embedding_metrics_on_a_hand_made_case():
    ref = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    pred = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    assert cosine(pred, ref).tolist() == pytest.approx([1.0, 0.0, 1.0])
    s = TASKS["embedding"].scores(pred, ref, 0)
    assert s["cosine"] == pytest.approx(2 / 3) and s["cosine_min"] == pytest.approx(0.0)
    # 4 points on a line: under `ref` the neighbour of 0 is 1, of 3 is 2; `pred` swaps 2 and 3's places
    ref4 = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.1, 0.9], [0.0, 1.0]])
    assert recall_at_k(ref4, ref4, k=1) == pytest.approx(1.0)
    pred4 = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    # neighbours under ref: 0->1, 1->0, 2->3, 3->2; under pred: 0->1, 1->0, 2->1, 3->2 (3 of 4 kept)
    assert recall_at_k(pred4, ref4, k=1) == pytest.approx(0.75)
    assert recall_at_k(pred4[:2], ref4[:2], k=10) is None  # too few rows for k neighbours


def test_regression_metrics_and_losses():
    y = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    s = TASKS["regression"].scores(y + 0.5, y, 0)
    assert s["mse"] == pytest.approx(0.25) and s["r2"] == pytest.approx(1 - 0.25 / 1.25)
    assert float(TASKS["embedding"].loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))) == pytest.approx(1.0)
    assert float(TASKS["regression"].loss(y + 1, y)) == pytest.approx(1.0)


def test_image_data_as_a_reference_regression_task():
    import torch.nn as nn

    from frugalml.data import DataConfig, load_data
    from frugalml.measure import MeasureConfig, measure
    from frugalml.measure.task import bind_reference

    data = load_data(DataConfig(name="synthetic", synthetic_samples=64, task="regression"))
    assert data.task == "regression" and data.y_test.shape == (len(data.x_test), 0) and not data.has_targets
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    assert bind_reference(data, model, "stage reference") and data.num_classes == 3
    cfg = MeasureConfig(batch_sizes=[2], warmup_iters=0, warmup_seconds=0, iters=1, min_seconds=0, threads=1,
                        roofline=False, references=[])
    m = measure(model, data, cfg)
    assert m["quality_metric"] == "r2" and m["quality"] == pytest.approx(1.0) and m["mse"] == pytest.approx(0.0)
    assert m["accuracy"] is None and m["task"] == "regression"


def test_trimming_cuts_only_trailing_columns_no_row_attends_to():
    ids = torch.arange(12).reshape(2, 6)
    right = Features({"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])})
    assert right.trimmed()["input_ids"].shape == (2, 3)
    assert torch.equal(right.trimmed()["attention_mask"], torch.tensor([[1, 1, 1], [1, 1, 0]]))
    left = Features({"input_ids": ids, "attention_mask": torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]])})
    assert left.trimmed()["input_ids"].shape == (2, 6)  # left padding: every token kept
