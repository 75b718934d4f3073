"""Compute cost of a model: parameter counts and FLOPs/MACs per sample.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` (counts matmul/conv/attention ops; it
counts a multiply-add as 2 FLOPs, so MACs = FLOPs / 2). Some modules run kernels it does not see:
the fused CPU `aten::lstm`, and torch.ao quantized Linear/Conv (`quantized::*` ops). For a leaf
module of those kinds that contributed zero counted FLOPs we add the analytic matmul count from a
forward hook, and name the module types in `flops_method`, so the fallback is never silent.
Element-wise ops (activations, norms, bias adds) are not counted by either method.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

FLOP_COUNTER = "torch.utils.flop_counter"


def _is_ao_quantized(mod: nn.Module) -> bool:
    return type(mod).__module__.startswith("torch.ao.nn.quantized")


def _dense(t: torch.Tensor) -> torch.Tensor:
    """A plain float view of a (possibly quantized or tensor-subclass) weight, for zero counting."""
    if t.is_quantized or (type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "dequantize")):
        return t.dequantize()
    return t


def weight_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every learnable tensor once, as the forward pass sees it.

    torch.nn.utils.prune keeps `weight_orig` + a mask and exposes the masked `weight`; parametrize
    keeps `parametrizations.weight.original`; torch.ao quantized modules hide weights in packed
    params behind `weight()`/`bias()` methods. All are mapped to the effective tensor.
    """
    seen: set[int] = set()
    alive: list[torch.Tensor] = []  # ids of freed temporaries get reused: keep them alive

    def once(t: torch.Tensor | None) -> Iterator[torch.Tensor]:
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            alive.append(t)
            yield t

    for mod in model.modules():
        if isinstance(mod, nn.utils.parametrize.ParametrizationList):
            for p in mod.parameters(recurse=False):
                seen.add(id(p))  # reported through the parametrized module below
            continue
        for name in getattr(mod, "parametrizations", {}) or {}:
            yield from once(getattr(mod, name).detach())
        for name, p in mod._parameters.items():
            if p is None or id(p) in seen:
                continue
            base = name[: -len("_orig")] if name.endswith("_orig") else None
            effective = getattr(mod, base, None) if base else None
            yield from once(effective if isinstance(effective, torch.Tensor) else p)
            seen.add(id(p))
        if _is_ao_quantized(mod):
            for attr in ("weight", "bias"):
                fn = getattr(mod, attr, None)
                if callable(fn):
                    try:
                        yield from once(fn())
                    except (RuntimeError, TypeError, AttributeError):
                        pass


@torch.inference_mode()
def count_params(model: nn.Module) -> tuple[int, int]:
    """(params, nonzero params) over the effective weights."""
    total = nonzero = 0
    for t in weight_tensors(model):
        total += t.numel()
        nonzero += int(torch.count_nonzero(_dense(t)))
    return total, nonzero


def _recurrent_macs(mod: nn.RNNBase, x: object) -> int:
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = int(x.data.shape[0])  # sum of sequence lengths over the batch
    elif isinstance(x, torch.Tensor):
        steps = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    else:
        return 0
    gates = {"LSTM": 4, "GRU": 3}.get(mod.mode, 1)
    hidden, proj = mod.hidden_size, getattr(mod, "proj_size", 0) or 0
    out = proj or hidden
    dirs = 2 if mod.bidirectional else 1
    per_step = 0
    for layer in range(mod.num_layers):
        in_size = mod.input_size if layer == 0 else out * dirs
        per_step += dirs * (gates * hidden * (in_size + out) + hidden * proj)
    return steps * per_step


def _leaf_macs(mod: nn.Module, inputs: tuple, output: object) -> int:
    """Analytic multiply-accumulates of one module call (only for kinds the counter may miss)."""
    x = inputs[0] if inputs else None
    if isinstance(mod, nn.RNNBase) or (hasattr(mod, "mode") and hasattr(mod, "hidden_size")):
        return _recurrent_macs(mod, x)  # type: ignore[arg-type]
    if not isinstance(x, torch.Tensor):
        return 0
    if isinstance(getattr(mod, "in_features", None), int) and isinstance(
        getattr(mod, "out_features", None), int
    ):
        return x.numel() * mod.out_features
    if all(hasattr(mod, a) for a in ("in_channels", "out_channels", "kernel_size", "groups")):
        k = math.prod(mod.kernel_size) if isinstance(mod.kernel_size, (tuple, list)) else mod.kernel_size
        if getattr(mod, "transposed", False):
            return x.numel() * (mod.out_channels // mod.groups) * k
        if isinstance(output, torch.Tensor):
            return output.numel() * (mod.in_channels // mod.groups) * k
    return 0


def _needs_fallback(mod: nn.Module) -> bool:
    shaped = any(hasattr(mod, a) for a in ("in_features", "in_channels", "hidden_size"))
    return isinstance(mod, nn.RNNBase) or (_is_ao_quantized(mod) and shaped)


@torch.inference_mode()
def count_flops(model: nn.Module, example_input: torch.Tensor) -> dict:
    """FLOPs and MACs of one forward of `example_input` (give a batch of 1 for per-sample numbers).

    Returns {"flops", "macs", "flops_method"}; the model is run once, hooks are removed after.
    """
    fallback_macs = 0
    fallback_kinds: set[str] = set()
    counter = FlopCounterMode(display=False)
    before: dict[int, int] = {}

    def pre(mod: nn.Module, inputs: tuple) -> None:
        before[id(mod)] = counter.get_total_flops()

    def post(mod: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal fallback_macs
        if counter.get_total_flops() == before.pop(id(mod), 0):  # the counter saw nothing here
            macs = _leaf_macs(mod, inputs, output)
            if macs:
                fallback_macs += macs
                fallback_kinds.add(type(mod).__name__)

    handles = []
    try:
        for mod in model.modules():
            if _needs_fallback(mod):
                handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
        with counter:
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    flops = int(counter.get_total_flops()) + 2 * fallback_macs
    method = FLOP_COUNTER
    if fallback_kinds:
        method += f" + analytic hooks for {', '.join(sorted(fallback_kinds))}"
    return {"flops": flops, "macs": flops // 2, "flops_method": method}
