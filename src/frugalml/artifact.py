"""Model artifacts: a directory with `model.json` + weight files. Never pickle, never run code that
the caller did not allow.

`model.json` holds the ModelSpec (how to rebuild the module: zoo name or import path, kwargs,
input shape, class count), the format, and the shape-bearing attributes of every submodule, so a
structurally pruned model (fewer channels than its factory builds) loads back exactly.

Formats: `torch-fp32` lives here; every other format lives in the technique module named in
`FORMAT_MODULES`, which is imported the first time that format is saved or loaded and registers its
saver and loader with `register_format` (the timm trick: a name → module map, no import cycle).

A ModelSpec naming a user factory (`package.module:factory`) is imported only when the caller trusts
it: `load(dir, trust_code=True)` (CLI `--trust-code`), or a set of factory names the caller asked for
(a recipe's own `model.name`), the way Hugging Face treats `trust_remote_code`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml._io import atomic_write_json, save_tensors_atomic
from frugalml._modstate import plain_attributes, reshape_to, restore_attributes
from frugalml.errors import ArtifactError, ConfigError
from frugalml.schemas import ARTIFACT_VERSION, read_model_json

Trust = bool | Collection[str]
Saver = Callable[[nn.Module, Path, dict, dict], Path]
Loader = Callable[[Path, dict], nn.Module]

FORMAT_MODULES = {
    "torch-packed": "frugalml.compress.storage.packed",
    "torch-ao-int8": "frugalml.compress.quantize.torch_ao",
    "pt2e-int8": "frugalml.compress.quantize.pt2e",
    "onnx-int8": "frugalml.compress.quantize.onnxrt",
    "onnx-fp32": "frugalml.compress.quantize.onnxrt",
    "torch-compiled": "frugalml.compress.runtime",
    "torch-sparse-csr": "frugalml.compress.runtime",
    "torchao-weight-only": "frugalml.compress.quantize.weight_only",
    "torch-fp16": "frugalml.compress.quantize.cast",
    "torch-bf16": "frugalml.compress.quantize.cast",
    "torch-codebook": "frugalml.compress.quantize.codebook",
    "torch-ensemble": "frugalml.compress.ensemble",
}
# ModelSpec keys that change the architecture a factory builds, and the module whose
# `apply_spec(model, value, where)` rebuilds that change (imported only when a spec has the key)
SPEC_EXTENSIONS = {"lowrank": "frugalml.compress.lowrank", "fold_bn": "frugalml.compress.fold"}
LOADERS: dict[str, Loader] = {}
SAVERS: dict[str, Saver] = {}


def register_format(fmt: str, saver: Saver | None, loader: Loader) -> None:
    """Called by the module named in FORMAT_MODULES[fmt] when it is imported."""
    if saver is not None:
        SAVERS[fmt] = saver
    LOADERS[fmt] = loader


def _format_module(fmt: str) -> None:
    module = FORMAT_MODULES.get(fmt)
    if module is not None and (fmt not in LOADERS or fmt not in SAVERS):
        importlib.import_module(module)


def module_attributes(model: nn.Module, spec: dict | None = None) -> dict[str, dict[str, Any]]:
    """Plain (JSON-able) public attributes of each submodule, e.g. in_channels, groups, num_heads.
    With the model's `spec`: only those that differ from what the spec builds (e.g. the channel
    counts structured pruning changed) — the rest is rebuilt on load anyway, and costs bytes."""
    out = plain_attributes(model)
    if spec is None:
        return out
    try:
        fresh = plain_attributes(build_from_spec(spec, trust_code=True))
    except Exception:  # noqa: BLE001 - a spec that does not build here: keep every attribute
        return out
    diff = {}
    for name, attrs in out.items():
        changed = {k: v for k, v in attrs.items() if fresh.get(name, {}).get(k, _MISSING) != v}
        if changed:
            diff[name] = changed
    return diff


_MISSING = object()


def changed_shapes(model: nn.Module, spec: dict) -> dict[str, list[int]]:
    """Shapes of the model's tensors that differ from what `spec` builds (structured pruning)."""
    shapes = {k: list(v.shape) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    try:
        fresh = {k: list(v.shape) for k, v in build_from_spec(spec, trust_code=True).state_dict().items()}
    except Exception:  # noqa: BLE001 - a spec that does not build here: keep every shape
        return shapes
    return {k: s for k, s in shapes.items() if fresh.get(k) != s}


def is_user_factory(name: str) -> bool:
    return ":" in name


def check_trusted(name: str, trust_code: Trust, where: str | Path) -> None:
    """A `package.module:factory` ModelSpec imports and calls code: only when the caller allowed it."""
    if not is_user_factory(name) or trust_code is True:
        return
    if trust_code and not isinstance(trust_code, bool) and name in trust_code:
        return
    what = "transformers from a Hugging Face config" if name.startswith("hf:") else "code outside frugalml"
    raise ArtifactError(
        f"{where}: the model is built by {name!r} ({what}); load it only if you trust that "
        "code: frugalml.load(path, trust_code=True) or --trust-code"
    )


def build_from_spec(spec: dict, trust_code: Trust = False, where: str | Path = "model spec") -> nn.Module:
    """The (untrained) model a ModelSpec describes, with its SPEC_EXTENSIONS applied."""
    from frugalml.models import build_model

    check_trusted(spec["name"], trust_code, where)
    model = build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec.get("kwargs", {}))
    for key, module in SPEC_EXTENSIONS.items():
        if spec.get(key):
            importlib.import_module(module).apply_spec(model, spec[key], where)
    model.frugal_spec = spec
    return model


def skeleton(info: dict, directory: Path, trust_code: Trust, shapes: dict[str, list[int]] | None = None) -> nn.Module:
    """The float model an artifact was saved from, with its (possibly pruned) shapes: built from the
    spec, attributes restored, tensors resized (to `shapes`, when the weights are stored elsewhere)."""
    model = build_from_spec(info["spec"], trust_code, directory)
    restore_attributes(model, info.get("module_attributes", {}))
    if shapes:
        before = {k: v.shape for k, v in model.state_dict().items()}
        reshape_to(model, {k: torch.empty(s) for k, s in shapes.items()})
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if before.get(k) != v.shape:  # resized by pruning: defined values, not uninitialized memory
                    v.zero_()
    return model.eval()


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


def spec_of(model: nn.Module, spec: dict | None = None) -> dict:
    """The ModelSpec to save `model` with: the one given, or the one `build_model` attached to it."""
    spec = spec if spec is not None else getattr(model, "frugal_spec", None)
    if spec is None:
        raise ConfigError(
            f"cannot save {type(model).__name__}: frugalml does not know how to rebuild it. Build it with "
            "frugalml.build_model(...) or pass spec=frugalml.models.model_spec('package.module:factory', "
            "input_shape, num_classes, **kwargs)"
        )
    return spec


def check_rebuildable(model: nn.Module | None, spec: dict) -> None:
    """At save time, not load time: a user factory must import and build a model with the same
    tensors (names) as `model` (None: only check that it builds). Zoo names always rebuild."""
    if not is_user_factory(spec.get("name", "")):
        return
    try:
        rebuilt = build_from_spec(spec, trust_code=True)
    except ConfigError as e:
        raise ConfigError(f"cannot save: {e}") from None
    if model is None:
        return
    want = set(model.state_dict())
    have = set(rebuilt.state_dict())
    if want != have:
        diff = sorted(want ^ have)[:4]
        raise ConfigError(
            f"cannot save: {spec['name']!r} with {spec.get('kwargs', {})} builds a model whose tensors differ "
            f"from this one's (e.g. {diff}); pass the factory and options that built it"
        )


def save(model: nn.Module, directory: str | Path, spec: dict | None = None, meta: dict | None = None) -> Path:
    """Save a float model as safetensors + JSON; `spec` defaults to the one build_model attached.

    A model that names its own artifact format (a quantized model, a compiled runtime, an ensemble:
    the `format` attribute) is written by that format's saver, so its files are the ones it loads
    from; saving its float state as fp32 would label an int8 or codebook model as something else."""
    spec = spec_of(model, spec)
    fmt = getattr(model, "format", None)
    if isinstance(fmt, str) and fmt in FORMAT_MODULES:
        return save_any(model, directory, spec, {**(meta or {}), "format": fmt})
    check_rebuildable(model, spec)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    tensors, aliases = dedupe_tensors(state)
    save_tensors_atomic(tensors, directory / "model.safetensors")
    info = {
        "frugalml_artifact": ARTIFACT_VERSION,
        **(meta or {}),
        "format": "torch-fp32",
        "spec": spec,
        "module_attributes": module_attributes(model, spec),
        "aliases": aliases,
        **sparse_mark(model),
    }
    write_info(directory, info)
    return directory


def sparse_mark(model: nn.Module) -> dict:
    """model.json's record that a model's zeros are pruning masks to keep when it is fine-tuned again."""
    return {"keeps_zeros": True} if getattr(model, "frugal_sparse", False) else {}


def write_info(directory: str | Path, info: dict) -> None:
    """Write model.json on one line: it is part of the artifact that size_bytes counts, and indented it
    was 906 of the 9,733 bytes of a 93%-sparse 4-bit codebook CNN (615 on one line). `python -m
    json.tool model.json` shows it indented."""
    atomic_write_json(Path(directory) / "model.json", info, compact=True)


def read_info(directory: str | Path) -> dict:
    """model.json, validated (one ArtifactError naming the file and key if anything is off)."""
    return read_model_json(Path(directory) / "model.json")


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ArtifactError(f"{path}: missing weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: corrupt safetensors file ({str(e).splitlines()[0][:200]})") from None


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], info: dict, directory: Path) -> nn.Module:
    """Aliases restored, shapes fitted, strict load: the shared tail of every float-weights loader."""
    for k, src in info.get("aliases", {}).items():
        if src not in tensors:
            raise ArtifactError(f"{directory}/model.json: aliases.{k} names missing tensor {src!r}")
        tensors[k] = tensors[src]
    reshape_to(model, tensors)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{directory}: weights do not fit the model ({str(e).splitlines()[0][:200]})") from None
    return smoke_test(model.eval(), info["spec"], directory)


def smoke_test(model: nn.Module, spec: dict, directory: Path) -> nn.Module:
    """One forward pass on a zero sample: weights whose shapes do not fit together are corrupt, and
    must be reported as such on load, not as a matmul error minutes later."""
    example = getattr(model, "example_input", None)  # models with named/integer inputs (frugalml.hf) make their own
    try:
        with torch.no_grad():
            model(example(1) if callable(example) else torch.zeros(1, *spec["input_shape"]))
    except (RuntimeError, ValueError, IndexError) as e:
        raise ArtifactError(f"{directory}: the stored weights do not fit together ({str(e).splitlines()[0][:160]})") from None
    return model


def _load_fp32(directory: Path, info: dict, trust_code: Trust = False) -> nn.Module:
    model = skeleton(info, directory, trust_code)
    return load_state(model, load_tensors(directory / "model.safetensors"), info, directory)


register_format("torch-fp32", None, _load_fp32)


def save_any(model: nn.Module, directory: str | Path, spec: dict, meta: dict | None = None) -> Path:
    """Save with the saver registered for `meta["format"]` (default: dense safetensors)."""
    meta = dict(meta or {})
    fmt = meta.get("format", "torch-fp32")
    if fmt == "torch-fp32":
        meta.pop("format", None)
        return save(model, directory, spec, meta)
    check_rebuildable(None, spec)
    _format_module(fmt)
    if fmt not in SAVERS:
        raise ArtifactError(f"no saver registered for artifact format {fmt!r}; known: torch-fp32, {', '.join(sorted(SAVERS))}")
    return SAVERS[fmt](model, Path(directory), spec, meta)


def load(directory: str | Path, *, trust_code: Trust = False) -> nn.Module:
    """Load any frugalml artifact directory into a module ready for inference. A user factory named
    in model.json is imported only with `trust_code` (True, or a collection of allowed names)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: artifact directory does not exist")
    info = read_info(directory)
    fmt = info["format"]
    _format_module(fmt)
    loader = LOADERS.get(fmt)
    if loader is None:
        raise ArtifactError(f"{directory}/model.json: unknown artifact format {fmt!r}; known: {', '.join(sorted(LOADERS))}")
    check_trusted(info["spec"]["name"], trust_code, directory)
    model = loader(directory, info, trust_code=trust_code)
    if info.get("keeps_zeros"):
        model.frugal_sparse = True  # fine-tuning it later keeps its zeros (frugalml.train.KeepZeros)
    return model


def artifact_files(directory: str | Path) -> list[Path]:
    """Files that make up the deployable artifact (what size_bytes counts)."""
    d = Path(directory)
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "metrics.json")

