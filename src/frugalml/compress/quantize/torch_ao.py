"""Backend `torch` for int8: torch.ao.quantization (FX graph mode for static/QAT, eager
`quantize_dynamic` for Linear/LSTM/GRU) on the x86 quantized engine (fbgemm + oneDNN). torch.ao is
deprecated upstream in favour of pt2e; it is kept, behind this one module, because it still has the
broadest dynamic-quantization coverage (recurrent layers), needs no compiler, and takes models pt2e
cannot (a module applied twice).

Artifact (format `torch-ao-int8`): quantized tensors as their integer representation plus
scales/zero points in safetensors (no pickle, see `_ao_state`); loading re-applies the same settings
to the float skeleton and loads the saved state into it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml.artifact import Trust
from frugalml.compress.quantize._ao_state import decode_state, encode_state
from frugalml.compress.quantize._observers import activation_observer
from frugalml.compress.quantize._runtime import first_line, quiet
from frugalml.compress.quantize.base import (
    QuantizeContext,
    QuantizedModel,
    SafeTensors,
    float_skeleton,
    read_tensors,
    saved_settings,
)
from frugalml.compress.quantize.embedding import embedding_note, has_embeddings, quantize_embeddings
from frugalml.compress.quantize.interop import example_input
from frugalml.compress.quantize.registry import Backend, register_backend
from frugalml.data.features import as_args
from frugalml.errors import UnsupportedError
from frugalml.measure.env import has_int8_dot

FORMAT = "torch-ao-int8"
TENSORS = "quantized.safetensors"
DYNAMIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)


def supported_engines() -> list[str]:
    return list(torch.backends.quantized.supported_engines)


def _qconfig_mapping(settings: dict) -> Any:
    from torch.ao.quantization import (
        MinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
        get_default_qat_qconfig_mapping,
        get_default_qconfig_mapping,
    )

    per_channel = settings.get("per_channel", True)
    if settings["mode"] == "qat":
        from torch.ao.quantization import (
            FusedMovingAvgObsFakeQuantize,
            MovingAverageMinMaxObserver,
            MovingAveragePerChannelMinMaxObserver,
        )

        mapping = get_default_qat_qconfig_mapping("x86")
        act = FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver,
            quant_min=0,
            quant_max=255 if has_int8_dot() else 127,  # 7-bit activations without VNNI, as below
            dtype=torch.quint8,
            qscheme=torch.per_tensor_affine,
        )
        weight = FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver,
            quant_min=-128,
            quant_max=127,
            dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
        )
        mapping.set_global(QConfig(activation=act, weight=weight))
    else:
        mapping = get_default_qconfig_mapping("x86")
        observer = activation_observer(
            "torch", settings.get("observer", "histogram"), settings.get("percentile", 99.99)
        )
        # without VNNI, u8*s8 products can saturate int16 accumulators: keep 7-bit activations there
        act = observer.with_args(
            dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=not has_int8_dot()
        )
        if per_channel:
            weight = PerChannelMinMaxObserver.with_args(
                dtype=torch.qint8, qscheme=torch.per_channel_symmetric
            )
        else:
            weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        mapping.set_global(QConfig(activation=act, weight=weight))
    for name in settings.get("float_layers", []):
        mapping.set_module_name(name, None)
    return mapping


def _backend_config(settings: dict) -> Any:
    from torch.ao.quantization.backend_config import BackendConfig
    from torch.ao.quantization.backend_config.x86 import get_x86_backend_config

    base = get_x86_backend_config()
    if settings.get("fuse", True):
        return base
    # without the fusion patterns, conv, batchnorm and relu are quantized as separate ops
    return BackendConfig("x86-unfused").set_backend_pattern_configs(
        [c for c in base.configs if c.fuser_method is None and not isinstance(c.pattern, tuple)]
    )


def prepare(model: nn.Module, settings: dict, example: Any) -> torch.fx.GraphModule:
    """FX graph with observers (static) or fake quantizers (QAT, trainable) of a copy of `model`."""
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    torch.backends.quantized.engine = "x86"
    qat = settings["mode"] == "qat"
    model = copy.deepcopy(model).train(qat)
    try:
        with quiet():
            fn = prepare_qat_fx if qat else prepare_fx
            return fn(model, _qconfig_mapping(settings), as_args(example), backend_config=_backend_config(settings))
    except (torch.fx.proxy.TraceError, TypeError, AssertionError, RuntimeError, NotImplementedError) as e:
        raise UnsupportedError(
            f"backend torch: torch.fx cannot trace {type(model).__name__} ({first_line(e)}); "
            "use backend pt2e or onnxruntime"
        ) from None


def convert(prepared: torch.fx.GraphModule, settings: dict) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet():
        return convert_fx(prepared.eval(), backend_config=_backend_config(settings))


def _dynamic(model: nn.Module, settings: dict) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    torch.backends.quantized.engine = "x86"
    linear = per_channel_dynamic_qconfig if settings.get("per_channel", True) else default_dynamic_qconfig
    spec = {nn.Linear: linear, nn.LSTM: default_dynamic_qconfig, nn.GRU: default_dynamic_qconfig}
    model = copy.deepcopy(model).eval()
    if settings.get("embeddings") == "int8":
        quantize_embeddings(model)  # per-row int8 tables (torch.ao's own quantized Embedding does not save)
    with quiet():
        return quantize_dynamic(model, spec, dtype=torch.qint8)


class TorchAoModel(QuantizedModel):
    format = FORMAT

    def __init__(self, module: nn.Module, cost_model: nn.Module, settings: dict) -> None:
        kind = "dynamic-int8" if settings["mode"] == "dynamic" else "int8"
        super().__init__(f"torch-ao-{kind}", cost_model, settings)
        self.module = module

    def run(self, x: Any) -> torch.Tensor:
        torch.backends.quantized.engine = "x86"
        with torch.no_grad():
            return self.module(*as_args(x))

    def artifact(self) -> tuple[dict[str, SafeTensors], dict[str, Any]]:
        tensors, layout = encode_state(self.module)
        return {TENSORS: SafeTensors(tensors)}, {"state_layout": layout}


class TorchAoBackend(Backend):
    name = "torch"
    about = "torch.ao int8 on the x86 engine"
    modes = ("static", "dynamic", "qat")
    formats = (FORMAT,)
    keeps_batchnorm = True
    keeps_float_layers = True

    def missing(self) -> str | None:
        if "x86" in supported_engines():
            return None
        return f"the x86 quantized engine, which this torch build lacks (has {supported_engines()})"

    def quantize(self, model: nn.Module, settings: dict, ctx: QuantizeContext) -> TorchAoModel:
        if settings["mode"] == "dynamic":
            if not any(isinstance(m, DYNAMIC_TYPES) for m in model.modules()):
                raise UnsupportedError(
                    f"dynamic quantization covers Linear/LSTM/GRU layers and {type(model).__name__} has none; "
                    "use mode: static"
                )
            if has_embeddings(model):
                settings = {**settings, "embeddings": "int8"}
            q = TorchAoModel(_dynamic(model, settings), model, settings)
            note = embedding_note(q.module)
            if note:
                q.frugal_report["embeddings"] = note
            return q
        batches = ctx.batches()
        prepared = prepare(model, settings, batches[0])
        with torch.no_grad():
            for x in batches:
                prepared(*as_args(x))
        return TorchAoModel(convert(prepared, settings), model, settings)

    def qat_prepare(self, model: nn.Module, settings: dict, example: Any) -> nn.Module:
        return prepare(model, settings, example)

    def qat_freeze(self, prepared: nn.Module) -> None:
        import torch.ao.nn.intrinsic.qat as nniqat
        from torch.ao.quantization import disable_observer

        prepared.apply(nniqat.freeze_bn_stats)
        prepared.apply(disable_observer)

    def qat_finish(self, prepared: nn.Module, float_model: nn.Module, settings: dict) -> TorchAoModel:
        return TorchAoModel(convert(prepared, settings), float_model, settings)

    def load(self, directory: Path, info: dict, trust_code: Trust = False) -> TorchAoModel:
        settings = saved_settings(info, directory)
        tensors = read_tensors(directory, TENSORS)
        float_model = float_skeleton(info, directory, trust_code)
        if settings["mode"] == "dynamic":
            module = _dynamic(float_model, settings)
        else:
            example = example_input(float_model, info["spec"])
            prepared = prepare(float_model, settings, example)
            with torch.no_grad():
                prepared.eval()(*as_args(example))  # observers need one batch before convert; values are overwritten
            module = convert(prepared, settings)
        decode_state(module, tensors, info.get("state_layout", {"state": {}, "rnn": {}}), directory)
        return TorchAoModel(module, float_model, settings)


register_backend(TorchAoBackend())
