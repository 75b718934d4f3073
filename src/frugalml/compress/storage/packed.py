"""Artifact format ``torch-packed``: a float model stored with the codecs of this package.

Every tensor goes through `encode_state` (dense / bitmask / delta / CSR positions, raw or palette
values, entropy-coded streams: whichever is smallest, per tensor), into ONE safetensors file
(``model.packed.safetensors``, zstd-wrapped as ``.zst`` when that makes it smaller), whose decoding
layout travels in that file's metadata as compact JSON (tensors under 256 elements are stored as they
are, with no layout). So a
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
import zstandard

from frugalml import artifact
from frugalml._io import atomic_write_bytes
from frugalml.compress.storage.tensor import decode_state, encode_state
from frugalml.errors import ArtifactError
from frugalml.schemas import ARTIFACT_VERSION

FORMAT = "torch-packed"
WEIGHTS_FILE = "model.packed.safetensors"


LAYOUT_KEY = "frugalml_storage_layout"
ZST = ".zst"  # a packed file whose safetensors header (names, offsets, layout JSON) zstd shrinks


def write_packed(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Encode `tensors` into the safetensors file `path` (decoding layout in its metadata, next to
    `metadata`, e.g. torchao's description of its tensor subclasses). When zstd makes the whole file
    (header included: on small models the header is a third of it) 3% smaller or more, it is written
    as `path` + ".zst" instead. Returns the path written."""
    from safetensors.torch import save

    streams, layout = encode_state({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    meta = {**(metadata or {}), LAYOUT_KEY: json.dumps(layout, separators=(",", ":"))}
    blob = save(streams, metadata=meta)
    squeezed = zstandard.ZstdCompressor(level=19).compress(blob)
    zpath = path.with_name(path.name + ZST)
    target, other, data = (zpath, path, squeezed) if len(squeezed) < 0.97 * len(blob) else (path, zpath, blob)
    other.unlink(missing_ok=True)  # first: a stale twin from an earlier save must never be read instead
    atomic_write_bytes(target, data)
    return target


def _blob(path: Path) -> bytes:
    zpath = path.with_name(path.name + ZST)
    if zpath.is_file() and path.is_file():
        raise ArtifactError(f"{path.parent}: both {path.name} and {zpath.name} exist; which one holds the weights "
                            "is unknown (an interrupted save?): save the model again")
    if zpath.is_file():
        try:
            return zstandard.ZstdDecompressor().decompress(zpath.read_bytes(), max_output_size=2**34)
        except zstandard.ZstdError as e:
            raise ArtifactError(f"{zpath}: corrupt zstd stream ({e})") from None
    if not path.is_file():
        raise ArtifactError(f"{path}: missing weights file")
    return path.read_bytes()


def _header(blob: bytes, path: Path) -> dict:
    """The safetensors header (an 8-byte little-endian length, then JSON): its __metadata__ holds the layout."""
    try:
        size = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8 : 8 + size])
    except (ValueError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or len(blob) < 8:
        raise ArtifactError(f"{path}: corrupt safetensors file (unreadable header)")
    return header


def file_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a file `write_packed` wrote (zstd-wrapped or not)."""
    meta = _header(_blob(path), path).get("__metadata__") or {}
    return dict(meta) if isinstance(meta, dict) else {}


def read_packed(path: Path) -> dict[str, torch.Tensor]:
    """The tensors `write_packed` stored (bit-exact); ArtifactError naming the file if anything is off."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    blob = _blob(path)
    try:
        layout = json.loads((_header(blob, path).get("__metadata__") or {})[LAYOUT_KEY])
    except (KeyError, ValueError, TypeError) as e:
        raise ArtifactError(f"{path}: corrupt packed tensors (no storage layout: {type(e).__name__})") from None
    if not isinstance(layout, dict):
        raise ArtifactError(f"{path}: corrupt packed tensors (the storage layout is not a mapping)")
    try:
        tensors = load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: corrupt safetensors file ({str(e).splitlines()[0][:160]})") from None
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
        "module_attributes": artifact.module_attributes(model, spec),
        "aliases": aliases,
        **artifact.sparse_mark(model),
    }
    artifact.write_info(directory, info)
    return directory


def load_packed(directory: Path, info: dict, trust_code: artifact.Trust = False) -> nn.Module:
    model = artifact.skeleton(info, directory, trust_code)
    tensors = read_packed(Path(directory) / WEIGHTS_FILE)
    return artifact.load_state(model, tensors, info, directory)


artifact.register_format(FORMAT, save_packed, load_packed)
