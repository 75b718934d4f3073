"""Backend `torch`: torch.ao.quantization (FX graph mode for static/QAT, eager `quantize_dynamic` for
Linear/LSTM/GRU) on the x86 quantized engine (fbgemm + oneDNN). torch.ao is deprecated upstream in
favour of pt2e; it is kept here, behind this one module, because it still has the broadest
dynamic-quantization coverage (recurrent layers) and needs no compiler.

Artifact (format `torch-ao-int8`): quantized tensors are stored as their integer representation
plus scales/zero points in safetensors (no pickle); loading re-runs the same torch.ao recipe on the
float skeleton and loads the saved state into it.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml.artifact import Trust
from frugalml.compress.quantize._common import (
    QuantizedModel,
    cpu_has_vnni,
    example_batch,
    quiet,
    read_tensors,
    save_tensors,
    skeleton,
    write_info,
)
from frugalml.compress.quantize._observers import activation_observer
from frugalml.errors import ArtifactError, UnsupportedError

FORMAT = "torch-ao-int8"
TENSORS = "quantized.safetensors"
DYNAMIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)


def supported_engines() -> list[str]:
    return list(torch.backends.quantized.supported_engines)


def use_x86_engine() -> None:
    if "x86" not in supported_engines():
        raise UnsupportedError(
            "backend torch needs the x86 quantized engine, which this torch build lacks "
            f"(has {supported_engines()}); use backend onnxruntime or pt2e"
        )
    torch.backends.quantized.engine = "x86"


def _qconfig_mapping(recipe: dict) -> Any:
    from torch.ao.quantization import (
        MinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
        get_default_qat_qconfig_mapping,
        get_default_qconfig_mapping,
    )

    per_channel = recipe.get("per_channel", True)
    if recipe["mode"] == "qat":
        from torch.ao.quantization import (
            FusedMovingAvgObsFakeQuantize,
            MovingAverageMinMaxObserver,
            MovingAveragePerChannelMinMaxObserver,
        )

        mapping = get_default_qat_qconfig_mapping("x86")
        act = FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255 if cpu_has_vnni() else 127,
            dtype=torch.quint8, qscheme=torch.per_tensor_affine,
        )  # fmt: skip
        weight = FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver,
            quant_min=-128, quant_max=127, dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
        )  # fmt: skip
        mapping.set_global(QConfig(activation=act, weight=weight))
    else:
        mapping = get_default_qconfig_mapping("x86")
        observer = activation_observer("torch", recipe.get("observer", "histogram"), recipe.get("percentile", 99.99))
        # without VNNI, u8*s8 products can saturate int16 accumulators: keep 7-bit activations there
        act = observer.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=not cpu_has_vnni())
        if per_channel:
            weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        else:
            weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        mapping.set_global(QConfig(activation=act, weight=weight))
    for name in recipe.get("float_layers", []):
        mapping.set_module_name(name, None)
    return mapping


def _backend_config(recipe: dict) -> Any:
    from torch.ao.quantization.backend_config import BackendConfig
    from torch.ao.quantization.backend_config.x86 import get_x86_backend_config

    base = get_x86_backend_config()
    if recipe.get("fuse", True):
        return base
    # without the fusion patterns, conv, batchnorm and relu are quantized as separate ops
    return BackendConfig("x86-unfused").set_backend_pattern_configs(
        [c for c in base.configs if c.fuser_method is None and not isinstance(c.pattern, tuple)]
    )


def _trace_error(model: nn.Module, e: Exception) -> UnsupportedError:
    return UnsupportedError(
        f"backend torch: torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:200]}); use backend pt2e or onnxruntime"
    )


def prepare(model: nn.Module, recipe: dict, example: torch.Tensor) -> torch.fx.GraphModule:
    """FX graph with observers (static) or fake quantizers (QAT, trainable)."""
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    use_x86_engine()
    qat = recipe["mode"] == "qat"
    model = copy.deepcopy(model).train(qat)
    try:
        with quiet():
            fn = prepare_qat_fx if qat else prepare_fx
            return fn(model, _qconfig_mapping(recipe), (example,), backend_config=_backend_config(recipe))
    except (torch.fx.proxy.TraceError, TypeError, AssertionError, RuntimeError, NotImplementedError) as e:
        raise _trace_error(model, e) from None


def convert(prepared: torch.fx.GraphModule, recipe: dict) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet():
        return convert_fx(prepared.eval(), backend_config=_backend_config(recipe))


def quantize_static(model: nn.Module, recipe: dict, batches: list[torch.Tensor]) -> TorchAoModel:
    prepared = prepare(model, recipe, batches[0])
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return TorchAoModel(convert(prepared, recipe), model, recipe)


def _dynamic(model: nn.Module, recipe: dict) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    use_x86_engine()
    linear = per_channel_dynamic_qconfig if recipe.get("per_channel", True) else default_dynamic_qconfig
    spec = {nn.Linear: linear, nn.LSTM: default_dynamic_qconfig, nn.GRU: default_dynamic_qconfig}
    with quiet():
        return quantize_dynamic(copy.deepcopy(model).eval(), spec, dtype=torch.qint8)


def quantize_dynamic(model: nn.Module, recipe: dict) -> TorchAoModel:
    if not any(isinstance(m, DYNAMIC_TYPES) for m in model.modules()):
        raise UnsupportedError(
            f"dynamic quantization covers Linear/LSTM/GRU layers and {type(model).__name__} has none; "
            "use mode: static"
        )
    return TorchAoModel(_dynamic(model, recipe), model, recipe)


def finish_qat(prepared: torch.fx.GraphModule, float_model: nn.Module, recipe: dict) -> TorchAoModel:
    return TorchAoModel(convert(prepared, recipe), float_model, recipe)


class TorchAoModel(QuantizedModel):
    format = FORMAT

    def __init__(self, module: nn.Module, cost_model: nn.Module, recipe: dict) -> None:
        kind = "dynamic-int8" if recipe["mode"] == "dynamic" else "int8"
        super().__init__(f"torch-ao-{kind}", cost_model, recipe)
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.backends.quantized.engine = "x86"
        with torch.no_grad():
            return self.module(x)

    def save(self, directory: Path, spec: dict, meta: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors, layout = encode_state(self.module)
        save_tensors(directory, TENSORS, tensors)
        write_info(directory, FORMAT, spec, self.frugal_cost_model, self.frugal_recipe, meta, state_layout=layout)
        return directory


# --- state codec: quantized tensors, packed params and recurrent weights as plain tensors + JSON ---------


def _rnn_modules(module: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.nn.quantized.dynamic import GRU, LSTM

    return {n: m for n, m in module.named_modules() if isinstance(m, (LSTM, GRU))}


def _encode(key: str, value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if value is None:
        return {"kind": "none"}
    if isinstance(value, torch.dtype):
        return {"kind": "dtype", "value": str(value).removeprefix("torch.")}
    if isinstance(value, (tuple, list)):
        return {"kind": "tuple", "items": [_encode(f"{key}#{i}", v, tensors) for i, v in enumerate(value)]}
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"cannot store state entry {key!r} of type {type(value).__name__}")
    if not value.is_quantized:
        tensors[key] = value.detach()
        return {"kind": "tensor"}
    tensors[key] = value.int_repr()
    if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return {"kind": "qtensor", "scale": value.q_scale(), "zero_point": value.q_zero_point()}
    scales = value.q_per_channel_scales()  # float64/int64 in memory; observers made them in 32 bits
    narrow = scales.float()
    tensors[f"{key}#scales"] = narrow if torch.equal(narrow.double(), scales) else scales
    tensors[f"{key}#zero_points"] = value.q_per_channel_zero_points().int()
    return {"kind": "qtensor", "axis": value.q_per_channel_axis()}


def _decode(key: str, entry: dict, tensors: dict[str, torch.Tensor]) -> Any:
    kind = entry["kind"]
    if kind == "none":
        return None
    if kind == "dtype":
        return getattr(torch, entry["value"])
    if kind == "tuple":
        return tuple(_decode(f"{key}#{i}", e, tensors) for i, e in enumerate(entry["items"]))
    if kind == "tensor":
        return tensors[key]
    ints = tensors[key]
    if "axis" in entry:
        return torch._make_per_channel_quantized_tensor(
            ints, tensors[f"{key}#scales"].double(), tensors[f"{key}#zero_points"].long(), entry["axis"]
        )
    return torch._make_per_tensor_quantized_tensor(ints, entry["scale"], entry["zero_point"])


def encode_state(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {"state": {}, "rnn": {}}
    rnns = _rnn_modules(module)
    state = module.state_dict()
    # per-module state versions: quantized modules read their saved layout from them on load
    layout["versions"] = {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()}
    for key, value in state.items():
        if any(key.startswith(f"{n}._all_weight_values") for n in rnns):
            continue  # torchbind packed params: stored through _weight_bias() below
        layout["state"][key] = _encode(key, value, tensors)
    for name, rnn in rnns.items():
        wb = rnn._weight_bias()
        flat = {**wb["weight"], **wb["bias"]}
        layout["rnn"][name] = {k: _encode(f"{name}.rnn.{k}", v, tensors) for k, v in flat.items()}
    return tensors, layout


def decode_state(module: nn.Module, tensors: dict[str, torch.Tensor], layout: dict, directory: Path) -> None:
    try:
        state = OrderedDict((k, _decode(k, e, tensors)) for k, e in layout["state"].items())
        state._metadata = OrderedDict(layout.get("versions", {}))  # type: ignore[attr-defined]
        rnn_state = {
            name: {k: _decode(f"{name}.rnn.{k}", e, tensors) for k, e in entries.items()}
            for name, entries in layout["rnn"].items()
        }
    except (KeyError, RuntimeError, TypeError) as e:
        raise ArtifactError(f"{directory}: quantized state is incomplete or corrupt ({e})") from None
    rnns = _rnn_modules(module)
    for key, value in module.state_dict().items():  # rebuilt packed params, replaced by set_weight_bias
        if any(key.startswith(f"{n}._all_weight_values") for n in rnns):
            state[key] = value
    try:
        result = module.load_state_dict(state, strict=False)
        problems = [*result.missing_keys[:3], *result.unexpected_keys[:3]]
    except (KeyError, RuntimeError) as e:  # quantized modules index the state dict directly
        problems = [str(e).splitlines()[0][:120]]
    if problems or set(rnns) != set(rnn_state):
        raise ArtifactError(
            f"{directory}: saved quantized state does not fit the rebuilt model ({problems or 'recurrent layers'}); "
            "re-run the quantize stage"
        )
    for name, wb in rnn_state.items():
        rnns[name].set_weight_bias(wb)


def load(directory: Path, info: dict, trust_code: Trust = False) -> TorchAoModel:
    recipe = dict(info["quantization"])
    float_model = skeleton(info, directory, trust_code)
    if recipe["mode"] == "dynamic":
        module = _dynamic(float_model, recipe)
    else:
        example = example_batch(info["spec"], 8)
        prepared = prepare(float_model, recipe, example)
        with torch.no_grad():
            prepared.eval()(example)  # observers need one batch before convert; values are overwritten
        module = convert(prepared, recipe)
    tensors = read_tensors(directory, TENSORS)
    decode_state(module, tensors, info.get("state_layout", {"state": {}, "rnn": {}}), directory)
    return TorchAoModel(module, float_model, recipe)
