"""Model artifacts: a directory with `model.safetensors` + `model.json`. Never pickle.

`model.json` holds the ModelSpec (how to rebuild the module: zoo name or import path, kwargs,
input shape, class count), the format, and the shape-bearing attributes of every submodule, so a
structurally pruned model (fewer channels than its factory builds) loads back exactly.

Other formats (sparse storage, quantized ONNX, ...) register a loader in `LOADERS` keyed by
`model.json["format"]` and write their own files next to `model.json`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml._io import atomic_write_json, read_json_file, save_tensors_atomic
from frugalml.errors import ArtifactError

ARTIFACT_VERSION = 1
_ATTR_TYPES = (int, float, bool, str, type(None))


def module_attributes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Plain (JSON-able) public attributes of each submodule, e.g. in_channels, groups, num_heads."""
    out: dict[str, dict[str, Any]] = {}
    for name, mod in model.named_modules():
        attrs = {}
        for k, v in vars(mod).items():
            if k.startswith("_") or k == "training":
                continue
            if isinstance(v, _ATTR_TYPES) or (
                isinstance(v, (tuple, list)) and all(isinstance(e, (int, float, bool)) for e in v)
            ):
                attrs[k] = list(v) if isinstance(v, tuple) else v
        if attrs:
            out[name] = attrs
    return out


def _restore_attributes(model: nn.Module, attrs: dict[str, dict[str, Any]]) -> None:
    mods = dict(model.named_modules())
    for name, a in attrs.items():
        mod = mods.get(name)
        if mod is None:
            continue
        for k, v in a.items():
            cur = getattr(mod, k, None)
            setattr(mod, k, tuple(v) if isinstance(cur, tuple) and isinstance(v, list) else v)


def _reshape_to(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Give parameters/buffers the saved shapes (structured pruning changes them)."""
    for key, t in tensors.items():
        mod_name, _, leaf = key.rpartition(".")
        try:
            mod = model.get_submodule(mod_name) if mod_name else model
        except AttributeError:
            continue
        cur = getattr(mod, leaf, None)
        if isinstance(cur, torch.Tensor) and cur.shape != t.shape:
            if isinstance(cur, nn.Parameter):
                setattr(mod, leaf, nn.Parameter(torch.empty_like(t), requires_grad=cur.requires_grad))
            else:
                mod._buffers[leaf] = torch.empty_like(t)


def build_from_spec(spec: dict) -> nn.Module:
    from frugalml.models import build_model

    return build_model(
        spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec.get("kwargs", {})
    )


def dedupe_tensors(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Shared tensors (tied weights) are stored once, as safetensors requires: (unique, {alias: source})."""
    seen: dict[tuple, str] = {}
    tensors, aliases = {}, {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else id(v)
        key = (ptr, v.shape, v.stride(), v.storage_offset())
        if key in seen and v.numel():
            aliases[k] = seen[key]
        else:
            seen[key] = k
            tensors[k] = v
    return tensors, aliases


def save(model: nn.Module, directory: str | Path, spec: dict, meta: dict | None = None) -> Path:
    """Save a float model as safetensors + JSON. `spec` is the ModelSpec dict."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    tensors, aliases = dedupe_tensors(state)
    save_tensors_atomic(tensors, directory / "model.safetensors")
    info = {
        "frugalml_artifact": ARTIFACT_VERSION,
        "format": "torch-fp32",
        "spec": spec,
        "module_attributes": module_attributes(model),
        "aliases": aliases,
        **(meta or {}),
    }
    atomic_write_json(directory / "model.json", info)
    return directory


def read_info(directory: str | Path) -> dict:
    return read_json_file(Path(directory) / "model.json", "model.json", "spec",
                          f"{directory}: not a frugalml artifact (no model.json)")  # fmt: skip


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ArtifactError(f"{path}: missing weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path}: corrupt safetensors file ({e})") from None


def _load_fp32(directory: Path, info: dict) -> nn.Module:
    model = build_from_spec(info["spec"])
    _restore_attributes(model, info.get("module_attributes", {}))
    tensors = load_tensors(directory / "model.safetensors")
    for k, src in info.get("aliases", {}).items():
        tensors[k] = tensors[src]
    _reshape_to(model, tensors)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{directory}: weights do not fit the model ({str(e).splitlines()[0]})") from None
    return model.eval()


LOADERS: dict[str, Callable[[Path, dict], nn.Module]] = {"torch-fp32": _load_fp32}
# savers take (model, directory, spec, meta); techniques with their own formats register here
SAVERS: dict[str, Callable[[nn.Module, Path, dict, dict], Path]] = {}


def save_any(model: nn.Module, directory: str | Path, spec: dict, meta: dict | None = None) -> Path:
    """Save with the saver registered for `meta["format"]` (default: dense safetensors)."""
    meta = dict(meta or {})
    fmt = meta.get("format", "torch-fp32")
    if fmt == "torch-fp32":
        meta.pop("format", None)
        return save(model, directory, spec, meta)
    if fmt not in SAVERS:
        from frugalml.recipe import load_stage_modules

        load_stage_modules()
    if fmt not in SAVERS:
        raise ArtifactError(f"no saver registered for artifact format {fmt!r}; known: torch-fp32, {', '.join(SAVERS)}")
    return SAVERS[fmt](model, Path(directory), spec, meta)


def load(directory: str | Path) -> nn.Module:
    """Load any frugalml artifact directory into a module ready for inference."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: artifact directory does not exist")
    info = read_info(directory)
    fmt = info.get("format", "torch-fp32")
    if fmt not in LOADERS:  # techniques register their formats when imported
        from frugalml.recipe import load_stage_modules

        load_stage_modules()
    loader = LOADERS.get(fmt)
    if loader is None:
        raise ArtifactError(f"{directory}: unknown artifact format {fmt!r}; known: {', '.join(LOADERS)}")
    return loader(directory, info)


def artifact_files(directory: str | Path) -> list[Path]:
    """Files that make up the deployable artifact (what size_bytes counts)."""
    d = Path(directory)
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "metrics.json")
