"""Backend `pt2e`: torchao's PT2 export quantization with the X86InductorQuantizer, run through
torch.compile with inductor freezing, which lowers q/dq patterns to oneDNN int8 kernels.

Artifact (format `pt2e-int8`): `quantized.safetensors` holds every tensor the converted graph reads
(int8 weights, per-channel scales, folded biases) and model.json the per-tensor activation
scales/zero points, both keyed by graph position. Loading rebuilds the float skeleton and re-runs
export + prepare + convert with the saved settings — QAT through QAT's own prepare and convert, as
its graphs differ from PTQ's (e.g. conv-bn followed by `F.relu` keeps a q/dq pair before the ReLU;
folding conv-bn patterns makes that rebuild take tens of seconds) — then swaps in the saved values.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml.artifact import Trust
from frugalml.compress.quantize._observers import activation_observer
from frugalml.compress.quantize._pt2e_state import graph_state, restore
from frugalml.compress.quantize._runtime import (
    CompiledRunner,
    first_line,
    import_torchao,
    quiet,
    reused_modules,
)
from frugalml.compress.quantize.base import (
    QuantizeContext,
    QuantizedModel,
    SafeTensors,
    float_skeleton,
    read_tensors,
    saved_settings,
)
from frugalml.compress.quantize.embedding import has_embeddings, quantize_embeddings
from frugalml.compress.quantize.interop import auto_dims, example_input
from frugalml.compress.quantize.registry import Backend, register_backend
from frugalml.data.features import Features, as_args
from frugalml.errors import UnsupportedError
from frugalml.measure.env import has_int8_dot

FORMAT = "pt2e-int8"
TENSORS = "quantized.safetensors"


def _qconfig(settings: dict) -> Any:
    import_torchao()
    from torchao.quantization.pt2e import (
        FusedMovingAvgObsFakeQuantize,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PerChannelMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        get_default_x86_inductor_quantization_config,
    )

    mode, per_channel = settings["mode"], settings.get("per_channel", True)
    if mode == "dynamic":
        return get_default_x86_inductor_quantization_config(is_dynamic=True)
    qat = mode == "qat"
    eps = {"eps": 2**-12}
    if qat:
        act = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **eps)
        wobs = MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
        weight = FusedMovingAvgObsFakeQuantize.with_args(observer=wobs, **eps)
    else:
        act = activation_observer(
            "torchao", settings.get("observer", "histogram"), settings.get("percentile", 99.99)
        )
        act = act.with_args(**eps)
        weight = (PerChannelMinMaxObserver if per_channel else MinMaxObserver).with_args(**eps)
    act_spec = QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=255,
        qscheme=torch.per_tensor_affine,
        is_dynamic=False,
        observer_or_fake_quant_ctr=act,
    )
    weight_spec = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
        ch_axis=0,
        is_dynamic=False,
        observer_or_fake_quant_ctr=weight,
    )
    return QuantizationConfig(act_spec, act_spec, weight_spec, None, qat)


def _quantizer(settings: dict) -> Any:
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    quantizer = X86InductorQuantizer()
    if settings.get("linear_only"):  # transformers: Linear layers only (see Pt2eBackend.quantize)
        quantizer.set_module_type_qconfig(nn.Linear, _qconfig(settings))
    else:
        quantizer.set_global(_qconfig(settings))
    for name in settings.get("float_layers", []):
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def capture(model: nn.Module, example: Any, train: bool = False) -> torch.fx.GraphModule:
    """torch.export with a dynamic batch dimension (any batch size runs the same graph). Exports a
    copy: the exported module shares parameters with its source, and QAT trains them in place. Named
    inputs (Features) become positional graph inputs in their names' order."""
    model = copy.deepcopy(model).train(train)
    try:
        with quiet():
            return torch.export.export(model, as_args(example), dynamic_shapes=auto_dims(example)).module()
    except Exception as e:  # export raises many internal types; the user needs one line
        raise UnsupportedError(
            f"backend pt2e: torch.export cannot capture {type(model).__name__} ({first_line(e)}); "
            "use backend torch or onnxruntime"
        ) from None


def _refusal(model: nn.Module, settings: dict, example: Any, e: Exception) -> UnsupportedError:
    """pt2e's quantizer fails with graph-partition messages; the usual cause is a module applied
    more than once (its one conv then has several output nodes): name it when that is the case."""
    what = f"backend pt2e cannot {settings['mode']}-quantize {type(model).__name__}"
    reused = reused_modules(copy.deepcopy(model).eval(), example)
    if reused:
        name, calls = next(iter(reused.items()))
        return UnsupportedError(
            f"{what}: module {name!r} is applied {calls} times in forward and pt2e needs one module per use "
            f"({first_line(e, 120)}); give each use its own module, or use backend torch"
        )
    return UnsupportedError(f"{what} ({first_line(e)}); use backend torch or onnxruntime")


def prepare(model: nn.Module, settings: dict, example: Any) -> torch.fx.GraphModule:
    """Exported copy of `model` with observers (PTQ) or fake quantizers (QAT, trainable) inserted."""
    import_torchao()
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    qat = settings["mode"] == "qat"
    if settings.get("embeddings") == "int8":  # the x86 quantizer has no embedding pattern: int8 tables first
        model = copy.deepcopy(model)
        quantize_embeddings(model, weights=True)
    gm = capture(model, example, train=qat)
    try:
        with quiet():
            prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(gm, _quantizer(settings))
    except Exception as e:  # torchao's passes raise bare Exception with the failing pass named
        raise _refusal(model, settings, example, e) from None
    if qat:
        allow_exported_model_train_eval(prepared)  # so the Trainer's model.train()/eval() switch BN/dropout
    return prepared


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    move_exported_model_to_eval(prepared)
    with quiet():
        gm = convert_pt2e(prepared)
    # the float weights stay attached after weight quantization is folded into int8 constants
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [k for k in gm.state_dict() if k not in used]:
        prefix, _, leaf = name.rpartition(".")
        owner = gm.get_submodule(prefix) if prefix else gm
        owner._parameters.pop(leaf, None)
        owner._buffers.pop(leaf, None)
    gm.delete_all_unused_submodules()
    return gm


class Pt2eModel(QuantizedModel):
    format = FORMAT

    def __init__(self, graph_module: torch.fx.GraphModule, cost_model: nn.Module, settings: dict) -> None:
        super().__init__("pt2e-inductor-int8", cost_model, settings)
        self.graph_module = graph_module
        self.compiled = True  # False: run the reference q/dq graph (exact numerics, float speed)
        self._runner = CompiledRunner(graph_module)

    def run(self, x: Any) -> torch.Tensor:
        if not self.compiled:
            with torch.no_grad():
                return self.graph_module(*as_args(x))
        return self._runner(x)

    def artifact(self) -> tuple[dict[str, SafeTensors], dict[str, Any]]:
        tensors, scalars = graph_state(self.graph_module)
        qparams = {k: [n.args[1], n.args[2]] for k, n in scalars.items()}
        return {TENSORS: SafeTensors(tensors)}, {"activation_qparams": qparams}

    def exportable(self) -> nn.Module:
        return self.graph_module

    def to_onnx(self, x: Any) -> bytes:
        from frugalml.compress.quantize.interop import unsigned_int8_weights

        blob = super().to_onnx(x)
        return blob if has_int8_dot() else unsigned_int8_weights(blob)


class Pt2eBackend(Backend):
    name = "pt2e"
    about = "torchao PT2E + inductor int8"
    modes = ("static", "dynamic", "qat")
    formats = (FORMAT,)
    keeps_float_layers = True

    def missing(self) -> str | None:
        if importlib.util.find_spec("torchao") is None:
            return "torchao (pip install torchao)"
        if not (os.environ.get("CXX") or any(shutil.which(c) for c in ("g++", "c++", "clang++"))):
            return "a C++ compiler for torch.compile (install g++ or set CXX)"
        return None

    def quantize(self, model: nn.Module, settings: dict, ctx: QuantizeContext) -> Pt2eModel:
        if settings["mode"] == "dynamic":
            if not any(isinstance(m, nn.Linear) for m in model.modules()):
                raise UnsupportedError(
                    f"backend pt2e: dynamic quantization covers Linear layers and {type(model).__name__} has "
                    "none; use mode: static"
                )
            batches = [ctx.example()]  # weight observers run in the forward pass; activations per batch
        else:
            batches = ctx.batches()
        if has_embeddings(model):
            settings = {**settings, "embeddings": "int8"}
        if isinstance(batches[0], Features):
            # named (text) inputs: only the Linear layers; a transformer's attention matmuls, scaling and
            # mask additions stay float (calibrating ranges across the mask's huge negative bias wipes the
            # signal out), as in the onnxruntime backend
            settings = {**settings, "linear_only": True}
        prepared = prepare(model, settings, batches[0])
        with torch.no_grad():
            for x in batches:
                prepared(*as_args(x))
        q = Pt2eModel(convert(prepared), model, settings)
        if settings.get("embeddings"):
            q.frugal_report["embeddings"] = "int8, one scale per row (counted in the size)"
        return q

    def qat_prepare(self, model: nn.Module, settings: dict, example: Any) -> nn.Module:
        return prepare(model, settings, example)

    def qat_freeze(self, prepared: nn.Module) -> None:
        from torchao.quantization.pt2e import disable_observer

        prepared.apply(disable_observer)

    def qat_finish(self, prepared: nn.Module, float_model: nn.Module, settings: dict) -> Pt2eModel:
        return Pt2eModel(convert(prepared), float_model, settings)

    def load(self, directory: Path, info: dict, trust_code: Trust = False) -> Pt2eModel:
        settings = saved_settings(info, directory)
        saved = read_tensors(directory, TENSORS)
        float_model = float_skeleton(info, directory, trust_code)
        example = example_input(float_model, info["spec"])
        # every value is overwritten below, so the observer kind does not matter: min/max is the cheapest
        rebuild = {**settings, "observer": "minmax"} if settings["mode"] == "static" else settings
        prepared = prepare(float_model, rebuild, example)
        with torch.no_grad():
            prepared(*as_args(example))  # observers need one batch before convert
        model = Pt2eModel(convert(prepared), float_model, settings)
        restore(model.graph_module, saved, info.get("activation_qparams", {}), directory)
        return model


register_backend(Pt2eBackend())
