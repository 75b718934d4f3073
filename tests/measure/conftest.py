import pytest
import torch
import torch.nn as nn

from frugalml.data.bundle import DataBundle
from frugalml.measure import MeasureConfig, roofline


@pytest.fixture
def bundle() -> DataBundle:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)

    (xtr, ytr), (xva, yva), (xte, yte) = split(16), split(4), split(40)
    return DataBundle("tiny", xtr, ytr, xva, yva, xte, yte, num_classes=3, class_names=["a", "b", "c"])


@pytest.fixture
def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )


@pytest.fixture
def fast_cfg(fast_measure) -> MeasureConfig:
    return MeasureConfig(**fast_measure)


@pytest.fixture
def fake_gemm(monkeypatch, tmp_path) -> list:
    """Replace the peak-GEMM timing (about a second) by a recorder returning 100 GFLOP/s."""
    calls: list = []
    monkeypatch.setenv("FRUGALML_CACHE_DIR", str(tmp_path / "cache"))

    def fake(n: int, threads: int) -> float:
        calls.append((n, threads))
        return 100.0

    monkeypatch.setattr(roofline, "_time_gemm", fake)
    return calls
