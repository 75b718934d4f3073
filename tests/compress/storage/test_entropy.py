"""Stream codecs: every codec round-trips, the smallest is kept, ANS shrinks skewed streams."""

from __future__ import annotations

import numpy as np
import pytest

from frugalml.compress.storage.entropy import CODECS, decode_stream, encode_stream

RNG = np.random.default_rng(0)
SKEWED = np.minimum(RNG.geometric(0.35, 20_000) - 1, 31).astype(np.uint8)  # 5-bit codes, entropy ~2.6 bits


def _entropy_bits(symbols: np.ndarray) -> float:
    p = np.bincount(symbols) / symbols.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() * symbols.size)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "symbols",
    [
        SKEWED,
        np.zeros(0, np.uint8),
        np.array([3], np.uint8),
        np.full(500, 31, np.uint8),
        RNG.integers(0, 32, 999),
    ],
    ids=["skewed", "empty", "one", "constant", "uniform"],
)
def test_each_codec_round_trips(codec, symbols):
    data, spec = encode_stream(symbols, 5, codecs=(codec,))
    assert spec == {"codec": codec if symbols.size else "raw", "bits": 5, "count": symbols.size}
    assert np.array_equal(decode_stream(data, spec), symbols)


def test_ans_codes_a_skewed_stream_near_its_entropy_model_included():
    raw, _ = encode_stream(SKEWED, 5, codecs=("raw",))
    ans, spec = encode_stream(SKEWED, 5, codecs=("ans",))
    assert spec["codec"] == "ans"
    bound = _entropy_bits(SKEWED) / 8
    assert bound < ans.size < 1.01 * bound + 80  # the frequency table is in the stream, a few dozen bytes
    assert ans.size < 0.6 * raw.size


def test_the_smallest_codec_is_kept():
    sizes = {c: encode_stream(SKEWED, 5, codecs=(c,))[0].size for c in CODECS}
    data, spec = encode_stream(SKEWED, 5)
    assert data.size == min(sizes.values()) and sizes[spec["codec"]] == data.size
    uniform = RNG.integers(0, 1 << 32, 1000, dtype=np.uint64)  # incompressible: no codec beats raw
    assert encode_stream(uniform, 32)[1]["codec"] == "raw"


def test_wide_symbols_skip_ans():
    wide = RNG.integers(0, 3, 5000).astype(np.uint16) * 1000
    data, spec = encode_stream(wide, 12)
    assert spec["codec"] == "zstd" and np.array_equal(decode_stream(data, spec), wide)


@pytest.mark.parametrize("codec", ["ans", "zstd", "zstd-bytes", "raw"])
def test_corrupt_streams_raise_value_error(codec):
    data, spec = encode_stream(SKEWED, 5, codecs=(codec,))
    with pytest.raises(ValueError):
        decode_stream(data[:-3], spec)  # truncated
    with pytest.raises(ValueError):  # (the tensor's CRC32 catches what a stream alone cannot)
        decode_stream(data, {**spec, "count": spec["count"] // 2})
    with pytest.raises(ValueError):
        decode_stream(data, {**spec, "codec": "lzma"})
