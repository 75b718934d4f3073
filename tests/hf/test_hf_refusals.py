"""What the embedding task cannot do yet says so in one line instead of training on the wrong loss."""

from __future__ import annotations

import pytest

from frugalml.compress.quantize import QuantizeStage, quantize
from frugalml.errors import ConfigError, FrugalError
from frugalml.measure import MeasureConfig

FAST = MeasureConfig(batch_sizes=[4], warmup_iters=1, warmup_seconds=0, iters=2, min_seconds=0, threads=1,
                     references=[])


def test_codebook_centroid_fine_tuning_refuses_unlabelled_embeddings(encoder, bound):
    stage = QuantizeStage(mode="codebook", bits=4, qat={"epochs": 1, "lr": 0.01}, references=[])
    # one line (through the backend loop, which names the backend that refused)
    with pytest.raises(FrugalError, match="cross-entropy on class labels, and this data's task is 'embedding'"):
        quantize(encoder, stage, bound, measure=FAST)


def test_qat_refuses_unlabelled_embeddings(encoder, bound):
    stage = QuantizeStage(mode="qat", backend="pt2e", qat={"epochs": 1}, references=[])
    with pytest.raises(FrugalError, match="quantization-aware training.*task is 'embedding'"):
        quantize(encoder, stage, bound, measure=FAST)


def test_optimize_refuses_a_reference_based_task(text_data):
    from frugalml.optimize.run import _check_task

    with pytest.raises(ConfigError, match="judged against a reference model's outputs"):
        _check_task(text_data)
