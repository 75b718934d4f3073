"""Compact storage for sparse models: artifact format ``torch-sparse``.

Each tensor with enough zeros is stored as a packed bitmask (``numpy.packbits``, 1 bit per element)
plus its nonzero values; other tensors are stored dense. Everything lives in one safetensors file
(``model.sparse.safetensors``); the layout (which tensors are encoded, their shape and dtype) is in
``model.json`` next to the ModelSpec and module attributes, exactly like a ``torch-fp32`` artifact.

Loading restores the dense weights bit for bit: NaN/inf are ordinary values, and the rare ``-0.0``
gets a second bitmask so its sign survives. Importing this module registers the format in ``frugalml.artifact.SAVERS`` and ``LOADERS``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from frugalml import artifact
from frugalml._io import atomic_write_json, save_tensors_atomic
from frugalml.errors import ArtifactError
from frugalml.schemas import ARTIFACT_VERSION

FORMAT = "torch-sparse"
WEIGHTS_FILE = "model.sparse.safetensors"
_MASK, _VALUES, _NEGZERO = "::mask", "::values", "::negzero"


def _worth_encoding(t: torch.Tensor, nonzero: int) -> bool:
    """Bitmask + values beats dense when the bytes saved on zeros exceed the mask's cost."""
    n = t.numel()
    return n >= 64 and (n + 7) // 8 + nonzero * t.element_size() < n * t.element_size()


def _pack(bits: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(bits.numpy().astype(np.uint8)))


def encode(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Split a state dict into stored tensors and a JSON layout of the bitmask-encoded ones."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        if t.is_floating_point():
            flat = t.flatten()
            keep = flat != 0
            nonzero = int(keep.sum())
            if _worth_encoding(t, nonzero):
                tensors[name + _MASK] = _pack(keep)
                tensors[name + _VALUES] = flat[keep].clone()
                spec = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "nonzero": nonzero}
                negative_zero = (~keep) & torch.signbit(flat)
                if bool(negative_zero.any()):  # -0.0 (e.g. a masked negative weight): keep its sign bit
                    tensors[name + _NEGZERO] = _pack(negative_zero)
                    spec["negative_zeros"] = True
                layout[name] = spec
                continue
        tensors[name] = t
    return tensors, layout


def decode(tensors: dict[str, torch.Tensor], layout: dict[str, dict], where: Path) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in tensors.items() if not k.endswith((_MASK, _VALUES, _NEGZERO))}
    for name, spec in layout.items():
        try:
            bits, values = tensors[name + _MASK], tensors[name + _VALUES]
            shape = tuple(spec["shape"])
            n = int(np.prod(shape)) if shape else 1
            keep = torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool))
            negzero = (torch.from_numpy(np.unpackbits(tensors[name + _NEGZERO].numpy(), count=n).astype(bool))
                       if spec.get("negative_zeros") else None)  # fmt: skip
        except (KeyError, ValueError, TypeError) as e:
            raise ArtifactError(f"{where}: corrupt sparse tensor {name!r} ({e})") from None
        if bits.numel() != (n + 7) // 8 or int(keep.sum()) != values.numel():
            raise ArtifactError(f"{where}: corrupt sparse tensor {name!r} ({bits.numel()} mask bytes and "
                                f"{values.numel()} values do not fit shape {list(shape)})")
        dense = torch.zeros(n, dtype=values.dtype)
        dense[keep] = values
        if negzero is not None:
            dense[negzero] = -0.0
        out[name] = dense.reshape(shape)
    return out


def save_sparse(model: nn.Module, directory: str | Path, spec: dict, meta: dict | None = None) -> Path:
    """Save `model` as a ``torch-sparse`` artifact (same directory contract as artifact.save)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    if any(k.endswith(("_orig", "_mask")) for k in state):
        raise ArtifactError("model still carries pruning masks (weight_orig/weight_mask); "
                            "bake them with torch.nn.utils.prune.remove before saving")
    unique, aliases = artifact.dedupe_tensors(state)
    tensors, layout = encode(unique)
    save_tensors_atomic(tensors, directory / WEIGHTS_FILE)
    # drop a dense weights file left by an earlier save so size_bytes counts only this artifact
    (directory / "model.safetensors").unlink(missing_ok=True)
    info = {
        "frugalml_artifact": ARTIFACT_VERSION,
        **(meta or {}),
        "format": FORMAT,
        "spec": spec,
        "module_attributes": artifact.module_attributes(model),
        "aliases": aliases,
        "sparse_layout": layout,
    }
    atomic_write_json(directory / "model.json", info)
    return directory


def load_sparse(directory: Path, info: dict, trust_code: artifact.Trust = False) -> nn.Module:
    directory = Path(directory)
    if "sparse_layout" not in info:  # a dense save that was only labelled sparse
        return artifact.LOADERS["torch-fp32"](directory, info, trust_code=trust_code)
    model = artifact.skeleton(info, directory, trust_code)
    path = directory / WEIGHTS_FILE
    tensors = decode(artifact.load_tensors(path), info["sparse_layout"], path)
    return artifact.load_state(model, tensors, info, directory)


artifact.register_format(FORMAT, save_sparse, load_sparse)
