"""Backend `pt2e`: torchao's PT2 export quantization with the X86InductorQuantizer, run through
torch.compile with inductor freezing, which lowers q/dq patterns to oneDNN int8 kernels (VNNI/AMX).

Artifact (format `pt2e-int8`): `quantized.safetensors` holds every tensor the converted graph reads
(int8 weights, per-channel scales, folded biases) and model.json the per-tensor activation
scales/zero points by graph node. Loading rebuilds the float skeleton, re-runs export + prepare +
convert with the saved recipe (deterministic), then swaps in the saved tensors and scales.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml.artifact import Trust
from frugalml.compress.quantize._common import (
    CompiledRunner,
    QuantizedModel,
    example_batch,
    expect_same_keys,
    import_torchao,
    quiet,
    read_tensors,
    replace_tensor,
    save_tensors,
    skeleton,
    write_info,
)
from frugalml.compress.quantize._observers import activation_observer
from frugalml.errors import ArtifactError, UnsupportedError

FORMAT = "pt2e-int8"
TENSORS = "quantized.safetensors"
_PER_TENSOR = ("quantize_per_tensor", "dequantize_per_tensor")


def _qconfig(recipe: dict) -> Any:
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

    mode, per_channel = recipe["mode"], recipe.get("per_channel", True)
    if mode == "dynamic":
        return get_default_x86_inductor_quantization_config(is_dynamic=True)
    qat = mode == "qat"
    eps = {"eps": 2**-12}
    if qat:
        act = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **eps)
        wobs = MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
        weight = FusedMovingAvgObsFakeQuantize.with_args(observer=wobs, **eps)
    else:
        act = activation_observer("torchao", recipe.get("observer", "histogram"), recipe.get("percentile", 99.99))
        act = act.with_args(**eps)
        weight = (PerChannelMinMaxObserver if per_channel else MinMaxObserver).with_args(**eps)
    act_spec = QuantizationSpec(
        dtype=torch.uint8, quant_min=0, quant_max=255, qscheme=torch.per_tensor_affine,
        is_dynamic=False, observer_or_fake_quant_ctr=act,
    )  # fmt: skip
    weight_spec = QuantizationSpec(
        dtype=torch.int8, quant_min=-128, quant_max=127,
        qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
        ch_axis=0, is_dynamic=False, observer_or_fake_quant_ctr=weight,
    )  # fmt: skip
    return QuantizationConfig(act_spec, act_spec, weight_spec, None, qat)


def _quantizer(recipe: dict) -> Any:
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    quantizer = X86InductorQuantizer().set_global(_qconfig(recipe))
    for name in recipe.get("float_layers", []):
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def capture(model: nn.Module, example: torch.Tensor, train: bool = False) -> torch.fx.GraphModule:
    """torch.export with a dynamic batch dimension (any batch size runs the same graph). Exports a
    copy: the exported module shares parameters with its source, and QAT trains them in place."""
    model = copy.deepcopy(model).train(train)
    try:
        with quiet():
            return torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()
    except Exception as e:  # export raises many internal types; the user needs one line
        raise UnsupportedError(
            f"backend pt2e: torch.export cannot capture {type(model).__name__} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); use backend torch or onnxruntime"
        ) from None


def prepare(model: nn.Module, recipe: dict, example: torch.Tensor) -> torch.fx.GraphModule:
    """Exported model with observers (PTQ) or fake quantizers (QAT, trainable) inserted."""
    import_torchao()
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    qat = recipe["mode"] == "qat"
    gm = capture(model, example, train=qat)
    try:
        with quiet():
            prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(gm, _quantizer(recipe))
    except Exception as e:  # torchao's passes raise bare Exception with the failing pass named
        raise UnsupportedError(
            f"backend pt2e cannot {recipe['mode']}-quantize {type(model).__name__} "
            f"({str(e).splitlines()[0][:200]}); use backend torch or onnxruntime"
        ) from None
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

    def __init__(self, graph_module: torch.fx.GraphModule, cost_model: nn.Module, recipe: dict) -> None:
        super().__init__("pt2e-inductor-int8", cost_model, recipe)
        self.graph_module = graph_module
        self.compiled = True  # False: run the reference q/dq graph (exact numerics, float speed)
        self._runner = CompiledRunner(graph_module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.compiled:
            with torch.no_grad():
                return self.graph_module(x)
        return self._runner(x)

    def save(self, directory: Path, spec: dict, meta: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors, scalars = graph_state(self.graph_module)
        save_tensors(directory, TENSORS, tensors)
        qparams = {k: [n.args[1], n.args[2]] for k, n in scalars.items()}
        write_info(directory, FORMAT, spec, self.frugal_cost_model, self.frugal_recipe, meta,
                   activation_qparams=qparams)  # fmt: skip
        return directory


# --- graph state by position: node names differ between PTQ- and QAT-converted graphs of one model,
# the sequence of compute ops and what feeds each of their arguments does not --------------------------


def _is_qdq(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and "quantized_decomposed" in str(node.target)


def _walk(arg: Any, key: str, attrs: dict[str, str], scalars: dict[str, torch.fx.Node]) -> None:
    if isinstance(arg, (list, tuple)):
        for i, a in enumerate(arg):
            _walk(a, f"{key}.{i}", attrs, scalars)
        return
    if not isinstance(arg, torch.fx.Node):
        return
    if arg.op == "get_attr":
        attrs.setdefault(key, arg.target)
    elif _is_qdq(arg):
        if getattr(arg.target, "__name__", "").startswith(_PER_TENSOR) and isinstance(arg.args[1], float):
            scalars.setdefault(key, arg)
        for i, a in enumerate(arg.args):
            _walk(a, f"{key}.{i}", attrs, scalars)


def graph_refs(gm: torch.fx.GraphModule) -> tuple[dict[str, str], dict[str, torch.fx.Node]]:
    """({key: get_attr target}, {key: per-tensor q/dq node with python-float qparams}), keyed by
    `op<i>.arg<j>[.<k>...]`: the i-th compute op, its j-th argument, then the path back through q/dq."""
    attrs: dict[str, str] = {}
    scalars: dict[str, torch.fx.Node] = {}
    ops = [n for n in gm.graph.nodes if (n.op == "call_function" and not _is_qdq(n)) or n.op == "output"]
    for i, node in enumerate(ops):
        for j, arg in enumerate(node.args):
            _walk(arg, f"op{i}.arg{j}", attrs, scalars)
    return attrs, scalars


def graph_state(gm: torch.fx.GraphModule) -> tuple[dict[str, torch.Tensor], dict[str, torch.fx.Node]]:
    attrs, scalars = graph_refs(gm)
    tensors = {k: _attr(gm, t) for k, t in attrs.items()}
    return {k: v.detach() for k, v in tensors.items() if isinstance(v, torch.Tensor)}, scalars


def _attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def quantize_static(model: nn.Module, recipe: dict, batches: list[torch.Tensor]) -> Pt2eModel:
    prepared = prepare(model, recipe, batches[0])
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return Pt2eModel(convert(prepared), model, recipe)


def quantize_dynamic(model: nn.Module, recipe: dict, example: torch.Tensor) -> Pt2eModel:
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise UnsupportedError(
            f"backend pt2e: dynamic quantization covers Linear layers and {type(model).__name__} has none; "
            "use mode: static"
        )
    prepared = prepare(model, recipe, example)
    with torch.no_grad():
        prepared(example)  # weight observers run in the forward pass; activations are quantized per batch
    return Pt2eModel(convert(prepared), model, recipe)


def finish_qat(prepared: torch.fx.GraphModule, float_model: nn.Module, recipe: dict) -> Pt2eModel:
    return Pt2eModel(convert(prepared), float_model, recipe)


def load(directory: Path, info: dict, trust_code: Trust = False) -> Pt2eModel:
    recipe = dict(info["quantization"])
    float_model = skeleton(info, directory, trust_code)
    example = example_batch(info["spec"], 8)
    # every value is overwritten below, so the cheapest recipe with the same converted graph rebuilds
    # it: min/max observers, and PTQ for QAT too (same get_attr targets and q/dq nodes; QAT's prepare
    # would re-trace conv-bn patterns for a minute)
    skeleton_recipe = {**recipe, "mode": "static", "observer": "minmax"} if recipe["mode"] != "dynamic" else recipe
    prepared = prepare(float_model, skeleton_recipe, example)
    with torch.no_grad():
        prepared(example)  # observers need one batch before convert; every value is overwritten below
    model = Pt2eModel(convert(prepared), float_model, recipe)
    gm = model.graph_module
    saved = read_tensors(directory, TENSORS)
    attrs, _ = graph_refs(gm)
    rebuilt, scalars = graph_state(gm)
    expect_same_keys(directory, set(saved), set(rebuilt), "pt2e graph")
    qparams = info.get("activation_qparams", {})
    expect_same_keys(directory, set(qparams), set(scalars), "pt2e graph")
    for key, value in saved.items():
        if value.shape != rebuilt[key].shape:
            raise ArtifactError(f"{directory}: saved tensor {key} has shape {list(value.shape)}, the rebuilt "
                                f"graph needs {list(rebuilt[key].shape)}; re-run the quantize stage")  # fmt: skip
        replace_tensor(gm, attrs[key], value)
    for key, (scale, zero_point) in qparams.items():
        args = list(scalars[key].args)
        args[1], args[2] = float(scale), int(zero_point)
        scalars[key].args = tuple(args)
    gm.recompile()
    return model
