"""pack_bits / unpack_bits: dense little-endian packing at every width, and its size checks."""

from __future__ import annotations

import numpy as np
import pytest

from frugalml.compress.storage import pack_bits, unpack_bits
from frugalml.compress.storage.packing import packed_size, read_varints, write_varints


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17, 24, 32, 33, 64])
@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 1001])
def test_round_trip_at_every_width(bits, count):
    rng = np.random.default_rng(bits * 1000 + count)
    codes = rng.integers(0, 1 << min(bits, 63), count, dtype=np.uint64)
    if count:
        codes[0] = (1 << bits) - 1  # the largest code must survive too
    data = pack_bits(codes, bits)
    assert data.dtype == np.uint8 and data.size == packed_size(count, bits)
    assert np.array_equal(unpack_bits(data, bits, count).astype(np.uint64), codes)


def test_int4_goes_two_per_byte_low_nibble_first():
    assert pack_bits(np.array([1, 2, 3]), 4).tolist() == [0x21, 0x03]
    assert pack_bits(np.array([1, 0, 0, 0, 0, 0, 0, 0, 1]), 1).tolist() == [0x01, 0x01]


def test_codes_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="does not fit"):
        pack_bits(np.array([16]), 4)
    with pytest.raises(ValueError, match="negative"):
        pack_bits(np.array([-1]), 4)
    with pytest.raises(ValueError, match="exactly 3 codes"):
        unpack_bits(np.zeros(3, np.uint8), 5, 3)  # 3 codes of 5 bits are 2 bytes


def test_varints_round_trip_and_truncation_is_detected():
    values = [0, 1, 127, 128, 16383, 16384, 2**40]
    data = write_varints(values)
    assert read_varints(data, len(values)) == (values, len(data))
    with pytest.raises(ValueError, match="truncated"):
        read_varints(data[:-1], len(values))
