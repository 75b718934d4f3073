"""Where the stored values of a sparse tensor sit: bitmask, relative (delta) indices, or CSR.

Each encoding turns the sorted flat positions of the stored values into one or two symbol streams;
:func:`encode_index` tries them all and keeps the one whose streams, entropy-coded, are smallest.

- ``bitmask``: one bit per element (what ``torch-sparse`` stores). Stream ``""``: n 1-bit symbols.
- ``delta`` with ``bits`` b in 2..8: per stored value, the number of zeros skipped since the previous
  one (Deep Compression's relative index). A gap of z zeros that does not fit takes z // M padding
  entries of M = 2**b - 1, each meaning "skip M zeros, no value", then z % M. Deep Compression pads
  with a filler zero *value*; a reserved symbol does the same job without storing that value.
  Trailing zeros cost nothing. Stream ``""``: the entries.
- ``csr``: the tensor as (shape[0], rest) rows. Streams ``".rows"``: stored values per row, and
  ``".cols"``: each value's column, at the fewest bits that hold them.
"""

from __future__ import annotations

import math

import numpy as np

from frugalml.compress.storage.entropy import CODECS, stream_size

Streams = dict[str, tuple[np.ndarray, int]]  # stream suffix -> (symbols, bits)
DELTA_BITS = range(2, 9)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _csr_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    rows = shape[0] if len(shape) >= 2 else 1
    return rows, _numel(shape) // rows if rows else 0


def candidates(shape: tuple[int, ...]) -> list[dict]:
    """Every index encoding :func:`encode_index` considers for a tensor of `shape`, in tie-break order."""
    rows, cols = _csr_shape(shape)
    return [{"kind": "bitmask"}, *({"kind": "delta", "bits": b} for b in DELTA_BITS),
            {"kind": "csr", "rows": rows, "cols": cols}]  # fmt: skip


def _delta_entries(positions: np.ndarray, bits: int) -> np.ndarray:
    pad = (1 << bits) - 1
    gaps = np.diff(positions, prepend=-1) - 1
    per_value = gaps // pad + 1  # padding entries, then the entry that carries the value
    entries = np.full(int(per_value.sum()), pad, np.uint8)
    entries[np.cumsum(per_value) - 1] = gaps % pad
    return entries


def _streams(positions: np.ndarray, n: int, spec: dict) -> Streams:
    kind = spec["kind"]
    if kind == "bitmask":
        mask = np.zeros(n, np.uint8)
        mask[positions] = 1
        return {"": (mask, 1)}
    if kind == "delta":
        return {"": (_delta_entries(positions, spec["bits"]), spec["bits"])}
    if kind == "csr":
        rows, cols = spec["rows"], spec["cols"]
        counts = np.bincount(positions // cols, minlength=rows)
        return {".rows": (counts, max(1, cols.bit_length())),
                ".cols": (positions % cols, max(1, (cols - 1).bit_length()))}  # fmt: skip
    raise ValueError(f"unknown index kind {kind!r}")


def encode_index(positions: np.ndarray, shape: tuple[int, ...], choices: list[dict] | None = None,
                 codecs: tuple[str, ...] = CODECS) -> tuple[dict, Streams]:  # fmt: skip
    """Encode sorted, distinct flat `positions` in a tensor of `shape` with the smallest of `choices`.

    Returns the index spec (``{"kind": ..., ...}``, JSON-able) and its symbol streams by suffix.
    """
    positions = np.asarray(positions, np.int64)
    n = _numel(shape)
    best = None
    for spec in choices or candidates(shape):
        streams = _streams(positions, n, spec)
        size = sum(stream_size(symbols, bits, codecs) for symbols, bits in streams.values())
        if best is None or size < best[0]:
            best = size, spec, streams
    return best[1], best[2]


def stream_bits(spec: dict) -> dict[str, int]:
    """The bit width of each stream an index spec owns, by suffix (so decoding can check the layout)."""
    kind = spec["kind"]
    if kind == "bitmask":
        return {"": 1}
    if kind == "delta":
        if int(spec["bits"]) not in DELTA_BITS:
            raise ValueError(f"delta index of {spec['bits']} bits")
        return {"": int(spec["bits"])}
    if kind == "csr":
        cols = int(spec["cols"])
        return {".rows": max(1, cols.bit_length()), ".cols": max(1, (cols - 1).bit_length())}
    raise ValueError(f"unknown index kind {kind!r}")


def decode_index(
    spec: dict, streams: dict[str, np.ndarray], shape: tuple[int, ...], count: int
) -> np.ndarray:
    """Inverse of :func:`encode_index`: the `count` flat positions; ValueError if they do not fit `shape`."""
    n = _numel(shape)
    kind = spec["kind"]
    if kind == "bitmask":
        mask = streams[""]
        if mask.size != n:
            raise ValueError(f"bitmask of {mask.size} bits for {n} elements")
        positions = np.flatnonzero(mask)
    elif kind == "delta":
        entries = streams[""].astype(np.int64)
        pad = (1 << int(spec["bits"])) - 1
        carries = entries != pad
        positions = (np.cumsum(np.where(carries, entries + 1, pad)) - 1)[carries]
    elif kind == "csr":
        rows, cols = int(spec["rows"]), int(spec["cols"])
        if (rows, cols) != _csr_shape(shape):
            raise ValueError(f"csr of {rows}x{cols} for shape {list(shape)}")
        counts, columns = streams[".rows"].astype(np.int64), streams[".cols"].astype(np.int64)
        if (
            counts.size != rows
            or int(counts.sum()) != columns.size
            or (columns.size and columns.max() >= cols)
        ):
            raise ValueError(f"csr row counts and columns do not fit {rows}x{cols}")
        positions = np.repeat(np.arange(rows, dtype=np.int64), counts) * cols + columns
        if np.any(np.diff(positions) <= 0):
            raise ValueError("csr columns not increasing within a row")
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    if positions.size != count or (count and (positions[-1] >= n or positions[0] < 0)):
        raise ValueError(f"index holds {positions.size} positions for {count} values in {n} elements")
    return positions
