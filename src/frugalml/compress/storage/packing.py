"""Dense bit packing of unsigned integer codes, and the varints used in stream headers.

Codes are packed little-endian within a byte: the first code sits in the lowest bits, so int4 codes
go two per byte (low nibble first) and 5-bit codes straddle bytes with no padding except at the end.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1 << 20  # codes per step of the generic path (a multiple of 8): bounds its temporaries to ~64 MB
_WORD = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def unsigned(bits: int) -> type[np.unsignedinteger]:
    """The smallest numpy unsigned dtype that holds `bits`-bit codes."""
    return next(_WORD[w] for w in (8, 16, 32, 64) if bits <= w)


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack `codes` (unsigned, each < 2**bits) into ``ceil(len * bits / 8)`` bytes."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bit width {bits} outside 1..64")
    codes = np.ascontiguousarray(codes).reshape(-1)
    if codes.size and codes.dtype.kind == "i" and int(codes.min()) < 0:
        raise ValueError(f"negative code {int(codes.min())}")
    if codes.size and int(codes.max()) >> bits:
        raise ValueError(f"code {int(codes.max())} does not fit in {bits} bits")
    if bits in _WORD:
        return codes.astype(_WORD[bits]).astype(f"<u{bits // 8}").view(np.uint8).copy()
    if 8 % bits == 0:  # 1, 2, 4 bits: whole codes per byte
        per = 8 // bits
        padded = np.zeros(-(-codes.size // per) * per, np.uint8)
        padded[: codes.size] = codes
        shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
        return np.bitwise_or.reduce(padded.reshape(-1, per) << shifts, axis=1).astype(np.uint8)
    out = []
    for start in range(0, codes.size, _CHUNK):  # whole chunks end on a byte boundary
        chunk = codes[start : start + _CHUNK].astype(np.uint64)
        bitplane = np.empty((chunk.size, bits), np.uint8)
        for j in range(bits):
            bitplane[:, j] = (chunk >> np.uint64(j)) & np.uint64(1)
        out.append(np.packbits(bitplane.reshape(-1), bitorder="little"))
    return np.concatenate(out) if out else np.zeros(0, np.uint8)


def unpack_bits(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`; raises ValueError unless `data` holds exactly `count` codes."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bit width {bits} outside 1..64")
    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    if data.size != packed_size(count, bits):
        raise ValueError(f"{data.size} bytes cannot hold exactly {count} codes of {bits} bits")
    if bits in _WORD:
        return data.view(f"<u{bits // 8}").astype(_WORD[bits])
    if 8 % bits == 0:
        per = 8 // bits
        shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
        codes = (data[:, None] >> shifts) & np.uint8((1 << bits) - 1)
        return codes.reshape(-1)[:count].copy()
    out = np.zeros(count, np.uint64)
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        chunk = data[start * bits // 8 : packed_size(start + n, bits)]
        bitplane = np.unpackbits(chunk, count=n * bits, bitorder="little").reshape(n, bits)
        for j in range(bits):
            out[start : start + n] |= bitplane[:, j].astype(np.uint64) << np.uint64(j)
    return out.astype(unsigned(bits))


def write_varints(values: list[int] | np.ndarray) -> bytes:
    """LEB128: 7 bits per byte, high bit set on every byte but a number's last."""
    out = bytearray()
    for v in (int(x) for x in values):
        if v < 0:
            raise ValueError(f"varint of negative {v}")
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def read_varints(data: bytes | np.ndarray, count: int, offset: int = 0) -> tuple[list[int], int]:
    """Read `count` varints from `data` at `offset`; returns them and the offset after the last."""
    data = bytes(data)
    values = []
    for _ in range(count):
        v = shift = 0
        while True:
            if offset >= len(data) or shift > 63:
                raise ValueError("truncated varint")
            byte = data[offset]
            offset += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        values.append(v)
    return values, offset
