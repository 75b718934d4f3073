"""Index encodings: every kind round-trips on adversarial position sets, and the smallest is chosen."""

from __future__ import annotations

import numpy as np
import pytest

from frugalml.compress.storage.entropy import stream_size
from frugalml.compress.storage.index import _delta_entries, candidates, decode_index, encode_index

SHAPE = (24, 40)  # 960 elements
N = 960


def _patterns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "empty": np.zeros(0, np.int64),
        "all": np.arange(N),
        "first": np.array([0]),
        "last": np.array([N - 1]),
        "ends": np.array([0, N - 1]),  # one gap of 958 zeros: longer than any delta width
        "alternating": np.arange(0, N, 2),
        "stride_255": np.arange(0, N, 256),  # gaps of exactly M for 8 bits
        "stride_3": np.arange(3, N, 4),  # gaps of exactly M for 2 bits
        "stride_4": np.arange(4, N, 5),  # gaps of M + 1 for 2 bits
        "stride_8": np.arange(0, N, 8),  # gaps of 7: 2M + 1 for 2 bits
        "clustered": np.concatenate([np.arange(100, 130), np.arange(900, 960)]),
        "random_8pct": np.flatnonzero(rng.random(N) < 0.08),
        "one_row": np.arange(40, 80),  # CSR: every other row empty
    }


PATTERNS = _patterns()


@pytest.mark.parametrize("choice", candidates(SHAPE), ids=lambda c: f"{c['kind']}{c.get('bits', '')}")
@pytest.mark.parametrize("name", list(PATTERNS))
def test_every_encoding_round_trips(choice, name):
    positions = PATTERNS[name]
    spec, streams = encode_index(positions, SHAPE, [choice])
    assert spec == choice
    decoded = decode_index(spec, {k: s for k, (s, _) in streams.items()}, SHAPE, positions.size)
    assert np.array_equal(decoded, positions)


@pytest.mark.parametrize("shape", [(N,), (2, 3, 4, 40)])
def test_csr_of_one_and_many_dims(shape):
    positions = PATTERNS["random_8pct"]
    spec, streams = encode_index(positions, shape, [c for c in candidates(shape) if c["kind"] == "csr"])
    assert np.array_equal(
        decode_index(spec, {k: s for k, (s, _) in streams.items()}, shape, positions.size), positions
    )


def test_gaps_longer_than_the_width_use_padding_entries_without_values():
    # 2 bits: M = 3. Gaps 0, 3 (one padding + 0), 7 (two paddings + 1); trailing zeros are free
    assert _delta_entries(np.array([0, 4, 12]), 2).tolist() == [0, 3, 0, 3, 3, 1]


@pytest.mark.parametrize("name", ["random_8pct", "clustered", "alternating", "ends", "all"])
def test_the_chosen_encoding_is_the_smallest(name):
    positions = PATTERNS[name]

    def size(choice):
        return sum(stream_size(s, b) for s, b in encode_index(positions, SHAPE, [choice])[1].values())

    chosen, _ = encode_index(positions, SHAPE)
    assert size(chosen) == min(size(c) for c in candidates(SHAPE))


def test_delta_beats_the_bitmask_at_high_sparsity_without_entropy_coding():
    shape = (300, 784)
    positions = np.flatnonzero(np.random.default_rng(1).random(300 * 784) < 0.02)
    bitmask = stream_size(*encode_index(positions, shape, [{"kind": "bitmask"}])[1][""], codecs=("raw",))
    best, streams = encode_index(positions, shape, codecs=("raw",))
    assert best["kind"] == "delta"
    assert sum(stream_size(s, b, ("raw",)) for s, b in streams.values()) < bitmask / 2


CSR = {"kind": "csr", "rows": 24, "cols": 40}
BROKEN = {
    "mask_too_short": ({"kind": "bitmask"}, {"": np.ones(10, np.uint8)}, 10),
    "delta_past_the_end": ({"kind": "delta", "bits": 8}, {"": np.full(4, 254, np.uint8)}, 4),
    "delta_too_few_values": ({"kind": "delta", "bits": 4}, {"": np.array([1, 2], np.uint8)}, 3),
    "csr_column_too_large": (CSR, {".rows": np.ones(24), ".cols": np.full(24, 40)}, 24),
    "csr_repeated_column": (CSR, {".rows": np.r_[2, np.zeros(23)], ".cols": np.array([5, 5])}, 2),
    "csr_wrong_shape": ({**CSR, "rows": 10, "cols": 96}, {".rows": np.ones(10), ".cols": np.zeros(10)}, 10),
    "unknown_kind": ({"kind": "rle"}, {}, 0),
}


@pytest.mark.parametrize("spec, streams, count", list(BROKEN.values()), ids=list(BROKEN))
def test_inconsistent_indexes_raise(spec, streams, count):
    with pytest.raises(ValueError):
        decode_index(spec, streams, SHAPE, count)
