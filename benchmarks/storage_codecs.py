"""Bytes per nonzero of each index encoding and code codec, and the total ratio vs dense fp32, for a
LeNet-300-100-shaped weight set pruned by magnitude to 8% nonzeros (Deep Compression's MLP case).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/storage_codecs.py [--seed 0]

The weights are random Gaussians (He scale), not a trained model: a trained, pruned layer has more
structure (whole dead input pixels, clustered values), so these numbers are a floor for what entropy
coding finds. Biases stay dense fp32.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

from frugalml.compress.storage import (
    apply_codebooks,
    bake_codebooks,
    encode_state,
    encode_stream,
    kmeans_codebook,
)
from frugalml.compress.storage.entropy import CODECS
from frugalml.compress.storage.index import _streams, candidates

SHAPES = [(300, 784), (100, 300), (10, 100)]  # nn.Linear weights: (out, in)
KEEP = 0.08


def _model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(*(nn.Linear(i, o) for o, i in SHAPES))
    with torch.no_grad():
        for layer in model:
            w = torch.randn_like(layer.weight) * (2 / layer.in_features) ** 0.5
            threshold = w.abs().flatten().kthvalue(int(w.numel() * (1 - KEEP))).values
            layer.weight.copy_(torch.where(w.abs() > threshold, w, 0.0))  # +0.0: no -0.0 to index
    return model


def _bytes(streams: dict, codecs: tuple[str, ...]) -> int:
    return sum(encode_stream(symbols, bits, codecs)[0].size for symbols, bits in streams.values())


def index_table(weights: list[torch.Tensor]) -> None:
    nonzero = sum(int((w != 0).sum()) for w in weights)
    print(f"index bytes per nonzero ({nonzero} nonzeros of {sum(w.numel() for w in weights)}):")
    print(f"  {'encoding':12} {'raw':>7} {'zstd':>7} {'ans':>7} {'best':>7}")
    for spec in candidates(SHAPES[0]):
        row = []
        for codecs in (("raw",), ("raw", "zstd", "zstd-bytes"), ("raw", "ans"), CODECS):
            total = 0
            for w in weights:
                shape = tuple(w.shape)
                layer_spec = {**spec, "rows": shape[0], "cols": shape[1]} if spec["kind"] == "csr" else spec
                positions = np.flatnonzero(w.numpy())
                total += _bytes(_streams(positions, w.numel(), layer_spec), codecs)
            row.append(total / nonzero)
        name = spec["kind"] + (f"({spec['bits']})" if "bits" in spec else "")
        print(f"  {name:12} " + " ".join(f"{v:7.3f}" for v in row))
    print(f"  (entropy bound for i.i.d. positions at {KEEP:.0%}: "
          f"{-(KEEP * np.log2(KEEP) + (1 - KEEP) * np.log2(1 - KEEP)) / KEEP / 8:.3f})")  # fmt: skip


def code_table(weights: list[torch.Tensor]) -> None:
    nonzero = sum(int((w != 0).sum()) for w in weights)
    print("codebook code bytes per nonzero (codebooks not included):")
    print(f"  {'bits':4} {'raw':>7} {'zstd':>7} {'zstd-b':>7} {'ans':>7}   rel. error")
    for bits in (4, 5, 6, 8):
        sizes, err, norm = dict.fromkeys(CODECS, 0), 0.0, 0.0
        for w in weights:
            mask = w != 0
            codebook, assignments = kmeans_codebook(w, bits, mask)
            codes = assignments[mask].numpy().astype(np.uint8)
            for codec in CODECS:
                sizes[codec] += encode_stream(codes, bits, (codec,))[0].size
            err += float((torch.where(mask, codebook[assignments], 0.0) - w).square().sum())
            norm += float(w.square().sum())
        cells = " ".join(f"{sizes[c] / nonzero:7.3f}" for c in CODECS)
        print(f"  {bits:<4} {cells}   {(err / norm) ** 0.5:.4f}")


def totals(seed: int) -> None:
    dense = sum(p.numel() * 4 for p in _model(seed).state_dict().values())
    print(f"total vs dense fp32 ({dense} bytes: weights + biases):")
    sparse_fp32 = _model(seed).state_dict()
    tensors, layout = encode_state(sparse_fp32)
    stream_bytes = sum(t.numel() for t in tensors.values())
    bitmask = sum((p.numel() + 7) // 8 + int((p != 0).sum()) * 4 for p in sparse_fp32.values())
    print(f"  {'pruned, fp32 values (torch-sparse bitmask)':46} {bitmask:8} B  {dense / bitmask:5.1f}x")
    print(f"  {'pruned, fp32 values (this package)':46} {stream_bytes:8} B  {dense / stream_bytes:5.1f}x")
    for bits in (5, 6):
        model = bake_codebooks(apply_codebooks(_model(seed), bits))
        tensors, layout = encode_state(model.state_dict())
        stream_bytes = sum(t.numel() for t in tensors.values())
        layout_json = len(json.dumps(layout, separators=(",", ":")))
        with tempfile.TemporaryDirectory() as tmp:
            save_file(tensors, Path(tmp) / "m.safetensors")
            file_bytes = (Path(tmp) / "m.safetensors").stat().st_size
        print(
            f"  {f'pruned + {bits}-bit codebook: streams':46} {stream_bytes:8} B  {dense / stream_bytes:5.1f}x"
        )
        print(f"  {'  + compact JSON layout':46} {stream_bytes + layout_json:8} B  "
              f"{dense / (stream_bytes + layout_json):5.1f}x")  # fmt: skip
        print(f"  {'  safetensors file (its header) + layout':46} {file_bytes + layout_json:8} B  "
              f"{dense / (file_bytes + layout_json):5.1f}x")  # fmt: skip
        kinds = {k: (v["index"]["kind"] + str(v["index"].get("bits", "")), v["values"]["kind"],
                     {s: e["codec"] for s, e in v["streams"].items()}) for k, v in layout.items()}  # fmt: skip
        for key, kind in kinds.items():
            print(f"      {key:10} {kind}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    seed = parser.parse_args().seed
    weights = [layer.weight.detach() for layer in _model(seed)]
    index_table(weights)
    code_table(weights)
    totals(seed)


if __name__ == "__main__":
    main()
