"""Runtime plumbing the backends share: a torch.compile runner that never recompiles while timed,
quieting the quantization libraries, and small graph/tensor helpers."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import types
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml.errors import ArtifactError


class CompiledRunner:
    """`torch.compile` with inductor freezing (weights become constants, so int8 weights are packed
    once for oneDNN). Static shapes: one graph per batch size, as inductor's int8 conv lowering
    rejects a symbolic batch; freezing is patched in only while a new shape compiles.

    Strict `torch.export` (pt2e quantization and loading; ONNX export when its non-strict capture
    fails) calls `torch._dynamo.reset()`, which drops the graphs of every model compiled before it;
    the next call compiled again, outside the freezing patch: int8 graphs ran 2-3x slower (a loaded
    trial timed 8.4 ms instead of 4.2 ms). A compilation during a call of a known shape is therefore
    undone: the module is compiled again through a function of its own (dynamo keeps graphs per code
    object), with freezing.

    Every call runs under `torch.inference_mode()`, the mode `measure_latency` times in: a graph
    compiled under `no_grad` is guarded on autograd dispatch keys and recompiles (without freezing)
    the first time it is timed. `compiles` counts graph compilations, so a caller can tell that a
    timing included one; `warm_up` compiles every batch size before anything is timed."""

    # dynamo counts recompiles per code object, so every stage's copy of the same model class (and
    # every batch size) shares one budget; past it dynamo silently falls back to eager, which would
    # make the "best fp32 runtime" reference an eager one. A run compiles a few dozen graphs at most.
    RECOMPILE_LIMIT = 64

    def __init__(self, module: nn.Module) -> None:
        import torch._dynamo.config as dynamo_config

        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, self.RECOMPILE_LIMIT)
        self.module = module
        self.compiles = 0
        self._compiled: Any = None
        self._shapes: set[tuple[int, ...]] = set()

    def _inductor(self, gm: torch.fx.GraphModule, example_inputs: list) -> Any:
        from torch._inductor.compile_fx import compile_fx

        self.compiles += 1
        return compile_fx(gm, example_inputs)

    def __call__(self, x: Any) -> torch.Tensor:
        from frugalml.data.features import as_args

        if self._compiled is None:
            self._compiled = torch.compile(self.module, dynamic=False, backend=self._inductor)
        args = as_args(x)  # named inputs (Features) are passed positionally, in their names' order
        shape = tuple(tuple(a.shape) for a in args)
        with torch.inference_mode():
            if shape in self._shapes:
                compiles = self.compiles
                out = self._compiled(*args)
                if self.compiles == compiles:
                    return out
                self._compiled = self._recompiled()  # compiled again without freezing: see the class doc
                self._shapes = set()
            out = self._compile_call(args)
            self._shapes.add(shape)
            return out

    def _compile_call(self, args: tuple) -> Any:
        from torch._inductor import config as inductor_config

        with inductor_config.patch(freezing=True), quiet():
            return self._compiled(*args)

    def _recompiled(self) -> Any:
        """The module behind a function with a code object of its own: nothing dynamo cached for the
        module (or for an earlier copy of this function) matches it, so its first call compiles."""
        module = self.module

        def forward(*args: Any) -> Any:
            return module(*args)

        fresh = types.FunctionType(forward.__code__.replace(), forward.__globals__, "forward", None,
                                   forward.__closure__)
        return torch.compile(fresh, dynamic=False, backend=self._inductor)

    def warm_up(self, inputs: Iterable[Any], calls: int = 3) -> None:
        """Compile for each input's shape and run it a few times, before any timing."""
        for x in inputs:
            for _ in range(calls):
                self(x)


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Silence C++ writes to fd 1 (torch's TorchScript ONNX exporter dumps whole graphs there when
    an export fails, whatever its verbosity flag says)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real fd 1 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The quantization libraries warn (and print) a lot about their own internals; users cannot act
    on it. Errors still propagate."""
    loggers = [logging.getLogger(n) for n in ("", "onnxruntime", "torch.onnx", "torch._export", "torchao")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def import_torchao() -> None:
    """Import torchao without its start-up noise (optional CUDA kernels it cannot load on CPU)."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with quiet():
            import torchao  # noqa: F401
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def first_line(e: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, for one-line reasons."""
    text = str(e).splitlines()[0][:limit] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def reused_modules(model: nn.Module, example: Any) -> dict[str, int]:
    """Modules with weights that one forward pass calls more than once ({name: calls}), outermost
    only: graph quantizers (pt2e) need one module per use."""
    calls: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
        for name, m in model.named_modules()
        if name and any(True for _ in m.parameters())
    ]
    try:
        with torch.no_grad():
            model(example)
    except Exception:  # the caller is already reporting a failure; this only refines its message
        return {}
    finally:
        for h in hooks:
            h.remove()
    reused = {n: c for n, c in calls.items() if c > 1}
    return {n: c for n, c in reused.items() if not any(n.startswith(f"{o}.") for o in reused)}


def replace_tensor(root: nn.Module, target: str, value: torch.Tensor) -> None:
    """Set a parameter/buffer/plain tensor attribute by dotted name, keeping its kind."""
    prefix, _, leaf = target.rpartition(".")
    owner = root.get_submodule(prefix) if prefix else root
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    elif leaf in owner._buffers:
        owner._buffers[leaf] = value
    else:
        setattr(owner, leaf, value)


def expect_same_keys(directory: Path, saved: set[str], rebuilt: set[str], what: str) -> None:
    if saved != rebuilt:
        diff = sorted(saved ^ rebuilt)[:5]
        raise ArtifactError(
            f"{directory}: the rebuilt {what} does not match the saved one (differs in {diff}); "
            "was it written by another torch/torchao version? re-run the quantize stage"
        )
