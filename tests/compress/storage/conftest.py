import pytest
import torch

_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits_of(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns as integers, so NaN == NaN and -0.0 != 0.0 when compared."""
    return t.contiguous().view(_INT[t.element_size()])


@pytest.fixture
def same_bits():
    def check(a: torch.Tensor, b: torch.Tensor) -> None:
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(bits_of(a), bits_of(b))

    return check
