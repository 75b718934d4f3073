"""Storage cost: bytes on disk and bytes after a strong general-purpose compressor.

Given the artifact's files, size is what a deployment ships (the caller lists them:
`frugalml.artifact.artifact_files(dir)`).
Without one, it is the model's state_dict serialized with safetensors in memory. Compressed size
(zstd level 19; zlib level 9 if zstandard is missing) shows what sparsity and low-entropy weights
buy at rest, which raw size hides.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from frugalml.errors import ArtifactError

try:
    import zstandard
except ImportError:  # pragma: no cover - zstandard is a declared dependency
    zstandard = None


def compress(blob: bytes) -> tuple[int, str]:
    """(compressed length, compression name)."""
    if zstandard is not None:
        return len(zstandard.ZstdCompressor(level=19).compress(blob)), "zstd-19"
    return len(zlib.compress(blob, 9)), "zlib-9"


def _plain(name: str, value: object) -> Iterator[tuple[str, torch.Tensor]]:
    """Storage tensors behind one state_dict entry: unwraps quantized tensors, tensor subclasses
    (torchao) and packed-param tuples (torch.ao), so bytes reflect what is really stored."""
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _plain(f"{name}.{i}", v)
    elif isinstance(value, torch.Tensor):
        if value.is_quantized:
            yield f"{name}.int_repr", value.int_repr()
            if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                yield f"{name}.scale", torch.tensor([value.q_scale()], dtype=torch.float64)
                yield f"{name}.zero_point", torch.tensor([value.q_zero_point()], dtype=torch.int64)
            else:
                yield f"{name}.scales", value.q_per_channel_scales()
                yield f"{name}.zero_points", value.q_per_channel_zero_points()
        elif type(value) not in (torch.Tensor, nn.Parameter) and hasattr(value, "__tensor_flatten__"):
            inner_names, _ = value.__tensor_flatten__()
            for inner in inner_names:
                yield from _plain(f"{name}.{inner}", getattr(value, inner))
        else:
            yield name, value.detach()


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's stored tensors as plain CPU tensors, shared storage counted once."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    with torch.inference_mode(False):  # tensor subclasses (torchao) cannot detach in inference mode
        state = model.state_dict()
    for key, value in state.items():
        for name, t in _plain(key, value):
            ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
            if t.numel() and ident in seen:
                continue  # tied weights are stored once
            seen.add(ident)
            out[name] = t
    return out


def weights_bytes(model: nn.Module) -> int:
    """Bytes the model's stored tensors occupy in memory."""
    return sum(t.numel() * t.element_size() for t in plain_state(model).values())


def state_dict_blob(model: nn.Module) -> bytes:
    from safetensors.torch import save

    # clone: safetensors refuses tensors that share storage (views, tied or split weights)
    return save(
        {k: t.cpu().clone(memory_format=torch.contiguous_format) for k, t in plain_state(model).items()}
    )


def size_metrics(model: nn.Module | None, files: Sequence[Path] | None) -> dict:
    """{"size_bytes", "compressed_bytes", "compression", "size_method"}; Nones if nothing to size."""
    if files is not None:
        missing = [str(p) for p in files if not Path(p).is_file()]
        if missing or not files:
            raise ArtifactError(f"artifact file(s) missing: {', '.join(missing) or '(none given)'}")
        files = [Path(p) for p in files]
        blob = b"".join(p.read_bytes() for p in files)
        method = f"artifact files ({', '.join(p.name for p in files)})"
    elif model is not None:
        blob = state_dict_blob(model)
        method = "state_dict as safetensors (in memory)"
    else:
        return {"size_bytes": None, "compressed_bytes": None, "compression": None, "size_method": None}
    compressed, name = compress(blob)
    return {
        "size_bytes": len(blob),
        "compressed_bytes": compressed,
        "compression": name,
        "size_method": method,
    }
