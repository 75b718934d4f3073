"""Compact, lossless tensor storage that composes pruning, weight sharing and entropy coding.

Deep Compression (Han et al. 2016) stores a pruned, weight-shared MLP 40x smaller than fp32. The
``torch-sparse`` bitmask (1 bit per element + fp32 values) caps that at 32x; this package removes the
cap. Per tensor it picks, by encoded size:

- where the stored values sit: ``dense`` (no index), ``bitmask``, ``delta`` (relative indices of 2..8
  bits, padding entries for longer gaps) or ``csr`` (:mod:`.index`);
- how values are stored: raw at the dtype's width (fp32, fp16/bf16, int8...) or a ``palette``:
  codebook + densely packed n-bit codes, n = 1..8 (:mod:`.tensor`), which is how a codebook-shared
  weight or an int8 tensor holding int4 values is stored;
- per stream, ``raw`` packing, ``zstd`` (packed or one byte per symbol) or an ``ans`` coder
  (``constriction``) whose symbol frequencies travel in the stream and count in its size (:mod:`.entropy`).

Decoding is bit-exact (NaN payloads, inf, -0.0 included) and checked against a CRC32 of the tensor;
corrupt input raises a one-line :class:`frugalml.errors.ArtifactError` naming the tensor.

API::

    encode_tensor(t, *, entropy="auto", index=None) -> EncodedTensor   # .streams {name: uint8 array},
                                                                        # .layout (JSON-able), .nbytes
    decode_tensor(streams, layout, *, name="tensor", where="") -> torch.Tensor
    encode_state(state_dict, **encode_tensor_options) -> (tensors {"<key>::<stream>": uint8 tensor},
                                                          layout {key: tensor layout})
    decode_state(tensors, layout, *, where="") -> state_dict
    pack_bits(codes, bits) -> uint8 array;  unpack_bits(data, bits, count) -> codes
    kmeans_codebook(weight, bits, mask=None) -> (codebook [2**bits], assignments int32 [weight.shape])
    CodebookWeight(assignments, mask, codebook)   # parametrization: weight = where(mask, codebook[a], 0)
    apply_codebooks(model, bits | {module: bits}) -> model   # k-means + parametrize; train as usual
    bake_codebooks(model) -> model                           # back to plain weights

An artifact writes ``encode_state``'s tensors into ONE safetensors file and its layout into
``model.json``; a pruned (+ int8) model then stores only its nonzero values plus a few bits of index
each. Quantized tensors (``torch.qint8``) are not taken directly: store ``int_repr()`` (and the scales)
as plain tensors, as ``compress.quantize.torch_ao`` already does.

Lossless means bit patterns: the sign of a zero is kept (masked negative weights are often -0.0, and
then cost a second index); add ``0.0`` to a weight first if that sign does not matter.
"""

from frugalml.compress.storage.codebook import (
    CodebookWeight,
    apply_codebooks,
    bake_codebooks,
    kmeans_codebook,
)
from frugalml.compress.storage.entropy import CODECS, decode_stream, encode_stream
from frugalml.compress.storage.packing import pack_bits, unpack_bits
from frugalml.compress.storage.tensor import (
    EncodedTensor,
    decode_state,
    decode_tensor,
    encode_state,
    encode_tensor,
)

__all__ = [
    "CODECS",
    "CodebookWeight",
    "EncodedTensor",
    "apply_codebooks",
    "bake_codebooks",
    "decode_state",
    "decode_stream",
    "decode_tensor",
    "encode_state",
    "encode_stream",
    "encode_tensor",
    "kmeans_codebook",
    "pack_bits",
    "unpack_bits",
]
