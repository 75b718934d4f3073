"""Artifact format ``torch-packed``: a float model stored with the codecs of this package.

Every tensor goes through `encode_state` (dense / bitmask / delta / CSR positions, raw or palette
values, entropy-coded streams: whichever is smallest, per tensor), into ONE safetensors file
(``model.packed.safetensors``), whose decoding layout travels in that file's metadata as compact
JSON (tensors under 256 elements are stored as they are, with no layout). So a
pruned model stores only its nonzeros, a codebook-shared one only its codes, and the size in the
report is the size of this file — the one `frugalml.load` reads back, bit for bit.

The same two helpers, `write_packed` / `read_packed`, store the tensors of quantized artifacts, so
int8 weights of a pruned model keep their zeros on disk too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from frugalml import artifact
from frugalml._io import atomic_write_json, save_tensors_atomic
from frugalml.compress.storage.tensor import decode_state, encode_state
from frugalml.errors import ArtifactError
from frugalml.schemas import ARTIFACT_VERSION

FORMAT = "torch-packed"
WEIGHTS_FILE = "model.packed.safetensors"


LAYOUT_KEY = "frugalml_storage_layout"


def write_packed(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Encode `tensors` into the safetensors file `path` (layout in its metadata)."""
    streams, layout = encode_state({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    save_tensors_atomic(streams, path, metadata={LAYOUT_KEY: json.dumps(layout, separators=(",", ":"))})


def read_packed(path: Path) -> dict[str, torch.Tensor]:
    """The tensors `write_packed` stored (bit-exact); ArtifactError naming the file if anything is off."""
    from safetensors import SafetensorError, safe_open

    tensors = artifact.load_tensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            layout = json.loads((f.metadata() or {})[LAYOUT_KEY])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise ArtifactError(f"{path}: corrupt packed tensors (no storage layout: {type(e).__name__})") from None
    if not isinstance(layout, dict):
        raise ArtifactError(f"{path}: corrupt packed tensors (the storage layout is not a mapping)")
    return decode_state(tensors, layout, where=str(path))


def save_packed(model: nn.Module, directory: str | Path, spec: dict, meta: dict | None = None) -> Path:
    """Save a float model as a ``torch-packed`` artifact (same directory contract as artifact.save)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    if any(k.endswith(("_orig", "_mask")) or ".parametrizations." in k for k in state):
        raise ArtifactError("model still carries pruning masks or parametrizations (weight_orig/weight_mask); "
                            "bake them (torch.nn.utils.prune.remove / bake_codebooks) before saving")
    unique, aliases = artifact.dedupe_tensors(state)
    write_packed(directory / WEIGHTS_FILE, unique)
    # drop a dense weights file left by an earlier save so size_bytes counts only this artifact
    (directory / "model.safetensors").unlink(missing_ok=True)
    info = {
        "frugalml_artifact": ARTIFACT_VERSION,
        **{k: v for k, v in (meta or {}).items() if k != "format"},
        "format": FORMAT,
        "spec": spec,
        "module_attributes": artifact.module_attributes(model),
        "aliases": aliases,
    }
    atomic_write_json(directory / "model.json", info)
    return directory


def load_packed(directory: Path, info: dict, trust_code: artifact.Trust = False) -> nn.Module:
    model = artifact.skeleton(info, directory, trust_code)
    tensors = read_packed(Path(directory) / WEIGHTS_FILE)
    model = artifact.load_state(model, tensors, info, directory)
    if info.get("pruning"):
        model.frugal_sparse = True  # fine-tuning it later keeps its zeros (frugalml.train.KeepZeros)
    return model


artifact.register_format(FORMAT, save_packed, load_packed)
