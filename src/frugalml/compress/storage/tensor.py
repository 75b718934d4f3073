"""One tensor as a few byte streams plus a JSON layout; a state dict as one flat dict of such streams.

Every element is handled by its bit pattern, so decoding is bit-exact: NaN payloads, inf and
subnormals are ordinary values. All-bits-zero elements are not stored. For floating tensors -0.0 is
a zero too, and its positions are a second index (``negzero``), so masked negative weights
(``-w * 0``) keep their sign; add ``0.0`` to a tensor first if that sign does not matter to you.

The choice, per tensor, by total stream bytes after entropy coding (ties: the earlier):
- positions: ``dense`` (every element stored, no index), or the best sparse index (:mod:`.index`);
- values: ``raw`` bit patterns at the dtype's width (fp32 4 bytes, fp16/bf16 2, int8 1), or a
  ``palette``: the distinct values (at most 256) as a codebook plus one n-bit code per value, n the
  fewest bits that count them. A weight with a k-means codebook baked in, or an int8 tensor that holds
  int4 values, lands here without being told.

A float32 tensor whose every element survives a round trip through float16 (or else bfloat16) bit
for bit is encoded as that narrower type (layout ``"narrow"``) and widened on decoding: a model whose
float parameters were rounded to float16 on purpose (``quantize`` codebook ``half_floats``) stores
them in 2 bytes without a lossy step here. Tensors under :data:`SMALL` elements, which carry no layout,
are narrowed the same way and stored under ``<key>::float16`` / ``<key>::bfloat16``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from frugalml.compress.storage import index as _index
from frugalml.compress.storage.entropy import CODECS, decode_stream, encode_stream, stream_size
from frugalml.errors import ArtifactError

PALETTE_MAX = 256  # codes up to 8 bits: the ANS coder's alphabet limit
ENTROPY = {"auto": CODECS, "none": ("raw",), "zstd": ("raw", "zstd", "zstd-bytes"), "ans": ("raw", "ans")}
_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
Streams = dict[str, tuple[np.ndarray, int]]  # stream name -> (symbols, bits), before entropy coding


@dataclass
class EncodedTensor:
    """Stored streams (uint8 arrays, by name) and the JSON-able layout that decodes them."""

    streams: dict[str, np.ndarray]
    layout: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of all streams: entropy models and codebooks included, the JSON layout not."""
        return sum(int(s.size) for s in self.streams.values())


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


NARROW = {torch.float32: (torch.float16, torch.bfloat16)}  # checked in this order


def narrowed(t: torch.Tensor) -> torch.Tensor | None:
    """`t` as the first type of :data:`NARROW` that holds every element bit-exactly (-0.0 included), or
    None; never a tensor holding NaN."""
    if t.dtype not in NARROW or t.numel() == 0 or bool(torch.isnan(t).any()):
        return None  # NaN payloads: float16 conversion keeps or drops them depending on the kernel
    bits = t.view(_INT[t.element_size()])
    for dtype in NARROW[t.dtype]:
        small = t.to(dtype)
        if torch.equal(small.to(t.dtype).view(bits.dtype), bits):
            return small
    return None


def _values(values: np.ndarray, bits: int, codecs: tuple[str, ...]) -> tuple[dict, Streams, int]:
    """Raw bit patterns or a palette, whichever is smaller; returns spec, streams and ranking size."""
    raw: Streams = {"values": (values, bits)}
    best = {"kind": "raw"}, raw, stream_size(values, bits, codecs)
    if values.size and np.unique(values[:4096]).size <= PALETTE_MAX:  # cheap look before a full sort
        book, codes = np.unique(values, return_inverse=True)
        if book.size <= PALETTE_MAX:
            code_bits = max(1, (book.size - 1).bit_length())
            streams = {"values": (codes.astype(np.uint8), code_bits), "codebook": (book, bits)}
            size = sum(stream_size(s, b, codecs) for s, b in streams.values())
            if size < best[2]:
                best = {"kind": "palette", "size": int(book.size)}, streams, size
    return best


def _prefixed(prefix: str, streams: Mapping[str, tuple[np.ndarray, int]]) -> Streams:
    return {prefix + suffix: v for suffix, v in streams.items()}


def _sparse(bits_of: np.ndarray, shape: tuple[int, ...], stored: np.ndarray, negzero: np.ndarray | None,
            bits: int, codecs: tuple[str, ...], choices: list[dict] | None) -> tuple[dict, Streams, int]:  # fmt: skip
    positions = np.flatnonzero(stored)
    index_spec, index_streams = _index.encode_index(positions, shape, choices, codecs)
    values_spec, streams, _ = _values(bits_of[positions], bits, codecs)
    streams.update(_prefixed("index", index_streams))
    spec = {"stored": int(positions.size), "index": index_spec, "values": values_spec}
    if negzero is not None and negzero.any():
        where = np.flatnonzero(negzero)
        neg_spec, neg_streams = _index.encode_index(where, shape, None, codecs)
        spec["negzero"] = {"count": int(where.size), "index": neg_spec}
        streams.update(_prefixed("negzero", neg_streams))
    size = sum(stream_size(s, b, codecs) for s, b in streams.values())
    return spec, streams, size


def encode_tensor(
    t: torch.Tensor, *, entropy: str = "auto", index: list[dict] | None = None
) -> EncodedTensor:
    """Encode `t` losslessly into the smallest layout found (see the module docstring).

    entropy: codecs to try per stream: ``auto`` (all), ``none`` (raw packing only), ``zstd`` or ``ans``.
    index: restrict the layouts tried, e.g. ``[{"kind": "dense"}]`` or ``[{"kind": "delta", "bits": 5}]``
    (specs as :func:`frugalml.compress.storage.index.candidates` lists them); default: all.
    """
    if t.is_quantized:
        raise TypeError(f"cannot encode a {t.dtype} tensor; store its int_repr() and scales as plain tensors")
    if t.layout != torch.strided or t.element_size() not in _INT:
        raise TypeError(f"cannot encode a {t.layout} tensor of {t.dtype}; only dense 1/2/4/8-byte elements")
    if entropy not in ENTROPY:
        raise ValueError(f"entropy={entropy!r}; choose one of {', '.join(ENTROPY)}")
    codecs = ENTROPY[entropy]
    t = t.detach().cpu().contiguous()
    shape = tuple(t.shape)
    layout = {"shape": list(shape), "dtype": _name(t.dtype), "crc32": zlib.crc32(_bits(t))}
    small = narrowed(t)
    if small is not None:
        t, layout["narrow"] = small, _name(small.dtype)
    size = t.element_size()
    bits = 8 * size
    flat = _bits(t)
    options = []
    if index is None or any(c["kind"] == "dense" for c in index):
        values_spec, streams, total = _values(flat, bits, codecs)
        options.append(
            ({"stored": flat.size, "index": {"kind": "dense"}, "values": values_spec}, streams, total)
        )
    sparse_choices = [c for c in index or [] if c["kind"] != "dense"] or None
    if flat.size and (index is None or sparse_choices):
        negzero = (flat == 1 << (bits - 1)) if t.dtype.is_floating_point else None
        stored = (flat != 0) if negzero is None else (flat != 0) & ~negzero
        if index is not None or not stored.all():
            options.append(_sparse(flat, shape, stored, negzero, bits, codecs, sparse_choices))
    if not options:  # an empty tensor, forced to a sparse index: there is nothing to index
        options.append(({"stored": 0, "index": {"kind": "dense"}, "values": {"kind": "raw"}}, {}, 0))
    spec, streams, _ = min(options, key=lambda o: o[2])  # min keeps the first of equals
    layout.update(spec, streams={})
    out = EncodedTensor({}, layout)
    for name, (symbols, width) in streams.items():
        if symbols.size:  # a stream with no symbols is left out of both the layout and the file
            data, layout["streams"][name] = encode_stream(symbols, width, codecs)
            out.streams[name] = data
    return out


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


_WIDE = {_name(n): w for w, ns in NARROW.items() for n in ns}  # "float16" -> torch.float32


def _bits(t: torch.Tensor) -> np.ndarray:
    """The flat unsigned bit patterns of `t` (contiguous, on the CPU)."""
    size = t.element_size()
    return t.reshape(-1).view(_INT[size]).numpy().view(_UINT[size])


def _read(streams: Mapping[str, np.ndarray | torch.Tensor], layout: dict, name: str, bits: int) -> np.ndarray:
    spec = layout["streams"].get(name, {"codec": "raw", "bits": bits, "count": 0})
    if int(spec["bits"]) != bits:
        raise ValueError(f"stream {name!r} of {spec['bits']} bits, expected {bits}")
    data = streams.get(name)
    if data is None and int(spec["count"]):
        raise ValueError(f"stream {name!r} missing")
    if isinstance(data, torch.Tensor):
        data = data.cpu().numpy()
    return decode_stream(np.zeros(0, np.uint8) if data is None else data, spec)


def _positions(
    streams: Mapping, layout: dict, prefix: str, spec: dict, shape: tuple[int, ...], count: int
) -> np.ndarray:
    symbols = {s: _read(streams, layout, prefix + s, b) for s, b in _index.stream_bits(spec).items()}
    return _index.decode_index(spec, symbols, shape, count)


def _decode(streams: Mapping, layout: dict) -> torch.Tensor:
    shape, dtype = tuple(int(s) for s in layout["shape"]), _dtype(layout["dtype"])
    stored_as = dtype
    if "narrow" in layout:
        stored_as = _dtype(layout["narrow"])
        if stored_as not in NARROW.get(dtype, ()):
            raise ValueError(f"{layout['dtype']} cannot be stored as {layout['narrow']}")
    n, size = math.prod(shape), stored_as.itemsize
    bits, count = 8 * size, int(layout["stored"])
    values_spec = layout["values"]
    if values_spec["kind"] == "raw":
        values = _read(streams, layout, "values", bits)
    elif values_spec["kind"] == "palette":
        book_size = int(values_spec["size"])
        book = _read(streams, layout, "codebook", bits)
        codes = _read(streams, layout, "values", max(1, (book_size - 1).bit_length()))
        if book.size != book_size or (codes.size and int(codes.max()) >= book_size):
            raise ValueError(f"palette codes do not fit its {book.size} entries")
        values = book[codes]
    else:
        raise ValueError(f"unknown values kind {values_spec['kind']!r}")
    if values.size != count:
        raise ValueError(f"{values.size} values stored, layout says {count}")
    index_spec = layout["index"]
    if index_spec["kind"] == "dense":
        if count != n:
            raise ValueError(f"dense layout with {count} values for {n} elements")
        flat = values.astype(_UINT[size])
    else:
        flat = np.zeros(n, _UINT[size])
        flat[_positions(streams, layout, "index", index_spec, shape, count)] = values
        if "negzero" in layout:
            neg = layout["negzero"]
            where = _positions(streams, layout, "negzero", neg["index"], shape, int(neg["count"]))
            if np.any(flat[where]):
                raise ValueError("a -0.0 position also holds a stored value")
            flat[where] = _UINT[size](1 << (bits - 1))
    out = torch.from_numpy(flat.view(np.uint8 if size == 1 else f"<i{size}")).view(stored_as).reshape(shape)
    out = out.to(dtype)
    if zlib.crc32(_bits(out)) != int(layout["crc32"]):
        raise ValueError("checksum mismatch")
    return out


def decode_tensor(
    streams: Mapping[str, np.ndarray | torch.Tensor], layout: dict, *, name: str = "tensor", where: str = ""
) -> torch.Tensor:
    """Inverse of :func:`encode_tensor`, bit for bit. Corrupt input raises a one-line ArtifactError
    naming the tensor (`name`) and, if given, the file it came from (`where`)."""
    try:
        return _decode(streams, layout)
    except KeyError as e:
        reason = f"missing {e}"
    except (ValueError, TypeError, IndexError, OverflowError, AttributeError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise _corrupt(where, name, reason)


def _corrupt(where: str, name: str, reason: str) -> ArtifactError:
    return ArtifactError(f"{where + ': ' if where else ''}corrupt stored tensor {name!r} ({reason})")


SMALL = 256  # tensors with fewer elements are stored as they are: a layout entry would cost more


def encode_state(
    state: Mapping[str, torch.Tensor], *, min_elements: int = SMALL, **options
) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Encode a state dict for ONE safetensors file: uint8 tensors named ``<key>::<stream>``, plus the
    per-key layouts (JSON-able). Tensors under `min_elements` elements are kept as they are, under
    their own key and without a layout entry. `options` go to :func:`encode_tensor`. Tensors that
    share storage are encoded once each: dedupe aliases first (``artifact.dedupe_tensors``)."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    for key, value in state.items():
        if value.numel() < min_elements:
            value = value.detach().cpu().contiguous()
            small = narrowed(value)
            if small is None:
                tensors[key] = value
            else:
                tensors[f"{key}::{_name(small.dtype)}"] = small
            continue
        encoded = encode_tensor(value, **options)
        layout[key] = encoded.layout
        for stream, data in encoded.streams.items():
            tensors[f"{key}::{stream}"] = torch.from_numpy(data)
    return tensors, layout


def decode_state(
    tensors: Mapping[str, torch.Tensor], layout: Mapping[str, dict], *, where: str = ""
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode_state`; errors name `where` (e.g. the file) and the tensor."""
    out = {k: v for k, v in tensors.items() if "::" not in k}  # the small tensors, stored as they are
    for k, v in tensors.items():  # small float32 tensors stored narrower: <key>::float16
        key, _, suffix = k.rpartition("::")
        if key and suffix in _WIDE and key not in layout and "::" not in key:
            if key in out:
                raise _corrupt(where, key, f"stored twice: {key} and {k}")
            if _name(v.dtype) != suffix:
                raise _corrupt(where, key, f"stored as {_name(v.dtype)}, named {suffix}")
            out[key] = v.to(_WIDE[suffix])
    for key, spec in layout.items():
        names = spec.get("streams", {}) if isinstance(spec, dict) else {}
        streams = {n: tensors[f"{key}::{n}"] for n in names if f"{key}::{n}" in tensors}
        out[key] = decode_tensor(streams, spec, name=key, where=where)
    return out
