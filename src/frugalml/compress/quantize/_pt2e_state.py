"""The state of a converted pt2e graph, keyed by position (the i-th compute op, its j-th argument,
then back through q/dq), not by node name: names are not stable across re-exports of one model.
Tensors (int8 weights, scales, folded biases) go to safetensors; per-tensor activation qparams,
which live in the graph as Python floats, go to model.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml.compress.quantize._runtime import expect_same_keys, replace_tensor
from frugalml.errors import ArtifactError

_PER_TENSOR = ("quantize_per_tensor", "dequantize_per_tensor")


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
    `op<i>.arg<j>[.<k>...]`."""
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


def restore(gm: torch.fx.GraphModule, saved: dict[str, torch.Tensor], qparams: dict, directory: Path) -> None:
    attrs, _ = graph_refs(gm)
    rebuilt, scalars = graph_state(gm)
    expect_same_keys(directory, set(saved), set(rebuilt), "pt2e graph")
    expect_same_keys(directory, set(qparams), set(scalars), "pt2e graph")
    for key, value in saved.items():
        if value.shape != rebuilt[key].shape:
            raise ArtifactError(
                f"{directory}: saved tensor {key} has shape {list(value.shape)}, the rebuilt graph needs "
                f"{list(rebuilt[key].shape)}; re-run the quantize stage"
            )
        replace_tensor(gm, attrs[key], value)
    for key, (scale, zero_point) in qparams.items():
        args = list(scalars[key].args)
        args[1], args[2] = float(scale), int(zero_point)
        scalars[key].args = tuple(args)
    gm.recompile()
