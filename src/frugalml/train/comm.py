"""Gradient communication of data-parallel training: PyTorch's DDP communication hooks (fp16/bf16
casts, PowerSGD, post-local SGD) and a meter that counts the bytes each setting sends.

Bytes are counted twice, and the two counts must agree:
- expected: inside our thin wrapper around the hook, from each `GradBucket` DDP hands it (its
  gradients' shapes) and the hook's compression rule: 4 B per element plain, 2 B fp16/bf16;
  PowerSGD (n + m)·r·4 B per n×m gradient matrix it compresses (n·m·4 B for the rest, and
  everything during its warm-up); post-local SGD plain during warm-up, then nothing.
- measured: the payload of every collective torch.distributed issued meanwhile (the hook's own
  all-reduces, its chained callbacks on gloo's threads included, FSDP's gathers and scatters, the
  model averager): while a distributed fit runs, torch.distributed's collective functions are
  wrapped by a counting shim (`CommMeter.install`), restored when it ends.
Payload = the tensor one process hands to the collective; a ring all-reduce moves about
2·(N−1)/N of it in and out of each process.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from frugalml.errors import UnsupportedError
from frugalml.train.config import DistributedConfig

# collective -> position of the tensor whose bytes a process sends (and its keyword name)
_PAYLOAD = {
    "all_reduce": (0, "tensor"), "broadcast": (0, "tensor"),
    "all_gather_single": (1, "input_tensor"), "all_gather_into_tensor": (1, "input_tensor"),
    "reduce_scatter_single": (1, "input"), "reduce_scatter_tensor": (1, "input"),
}


def _payload(name: str, args: tuple, kwargs: dict) -> int:
    pos, key = _PAYLOAD[name]
    t = args[pos] if len(args) > pos else kwargs.get(key)
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


class CommMeter:
    """Collective payloads by phase: `grad` (forward/backward: hooks, FSDP), `average` (local SGD's
    parameter averaging), `epoch` (between epochs: metrics, buffers). `end_step()` closes a step."""

    def __init__(self) -> None:
        self.phase = "epoch"
        self._lock = threading.Lock()
        self._bytes: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()
        self._expected = 0
        self._bucket_calls = 0
        self._saved: dict[str, Callable] = {}
        self.steps: list[dict[str, int]] = []  # per optimizer step: bytes, calls, expected, buckets
        self.first_step = 0  # the optimizer step the first recorded step follows (> 0 after a resume)

    def install(self) -> None:
        for name in _PAYLOAD:
            fn = getattr(dist, name, None)
            if fn is not None and name not in self._saved:
                self._saved[name] = fn
                setattr(dist, name, self._counting(name, fn))

    def uninstall(self) -> None:
        for name, fn in self._saved.items():
            setattr(dist, name, fn)
        self._saved.clear()

    def _counting(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._bytes[self.phase] += _payload(name, args, kwargs)
                self._calls[self.phase] += 1
            return fn(*args, **kwargs)

        return counted

    def expect(self, nbytes: int) -> None:
        with self._lock:
            self._expected += nbytes
            self._bucket_calls += 1

    def end_step(self) -> None:
        with self._lock:
            self.steps.append({
                "grad_bytes": self._bytes.pop("grad", 0), "grad_calls": self._calls.pop("grad", 0),
                "average_bytes": self._bytes.pop("average", 0), "average_calls": self._calls.pop("average", 0),
                "expected": self._expected, "buckets": self._bucket_calls,
            })
            self._expected = self._bucket_calls = 0

    def summary(self, warmup_steps: int = 0) -> dict:
        """Totals over the run plus means per step (all steps, and after the warm-up). `warmup_steps`
        counts optimizer steps from the start of training: after a resume past it, none is warm-up."""
        steps, epoch = self.steps, {"bytes": self._bytes["epoch"], "calls": self._calls["epoch"]}
        if not steps:
            return {"steps": 0, "between_epochs": epoch}
        total = {k: sum(s[k] for s in steps) for k in steps[0]}
        sent = total["grad_bytes"] + total["average_bytes"]
        after = steps[max(0, warmup_steps - self.first_step):] or steps[-1:]
        return {
            **({"resumed_after_step": self.first_step} if self.first_step else {}),
            "steps": len(steps),
            "bytes_per_step": round(sent / len(steps)),
            "bytes_per_step_after_warmup": round(sum(s["grad_bytes"] + s["average_bytes"] for s in after) / len(after)),
            "collectives_per_step": round((total["grad_calls"] + total["average_calls"]) / len(steps), 3),
            "bytes_total": sent,
            "expected_grad_bytes_total": total["expected"],
            "measured_grad_bytes_total": total["grad_bytes"],
            "averaging": {"bytes": total["average_bytes"], "all_reduces": total["average_calls"]},
            "buckets_per_step": round(total["buckets"] / len(steps), 3),
            "between_epochs": epoch,
        }


# --- what each hook sends for one bucket ----------------------------------------------------------


def _plain(bucket: dist.GradBucket, element_bytes: int | None = None) -> int:
    buf = bucket.buffer()
    return buf.numel() * (element_bytes or buf.element_size())


def _powersgd_bytes(state: Any, bucket: dist.GradBucket) -> int:
    """PyTorch's rule (powerSGD_hook._should_compress), applied to this bucket's gradients."""
    if state.iter < state.start_powerSGD_iter:
        return _plain(bucket)
    size = bucket.buffer().element_size()
    total = 0
    for g in bucket.gradients():
        n = g.shape[0]
        m = g.numel() // n
        r = min(n, m, state.matrix_approximation_rank)
        total += (n + m) * r * size if (n + m) * r * state.min_compression_rate < n * m else n * m * size
    return total


def _post_local_bytes(state: Any, bucket: dist.GradBucket) -> int:
    return _plain(bucket) if state.iter < state.start_localSGD_iter else 0


def _counted(hook: Callable, expected: Callable[[Any, dist.GradBucket], int], meter: CommMeter) -> Callable:
    @functools.wraps(hook)  # keeps the name DDP checks (bf16 needs NCCL >= 2.10)
    def wrapped(state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        meter.expect(expected(state, bucket))  # before the hook: it advances its own step counter
        return hook(state, bucket)

    return wrapped


def register_hook(ddp: torch.nn.parallel.DistributedDataParallel, cfg: DistributedConfig, backend: str,
                  meter: CommMeter, seed: int) -> Any:
    """Register the configured PyTorch hook (counted) on `ddp`; returns the hook's state object."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, post_localSGD_hook, powerSGD_hook

    state: Any = None
    if cfg.local_sgd is not None:
        state = post_localSGD_hook.PostLocalSGDState(
            process_group=None, subgroup=None, start_localSGD_iter=cfg.local_sgd.warmup_steps,
            post_local_gradient_allreduce=False)  # pure local steps: no intra-node gradient all-reduce either
        hook, expected = post_localSGD_hook.post_localSGD_hook, _post_local_bytes
    elif cfg.comm_hook == "powersgd":
        p = cfg.powersgd
        state = powerSGD_hook.PowerSGDState(
            process_group=None, matrix_approximation_rank=p.rank, start_powerSGD_iter=p.warmup_steps,
            min_compression_rate=p.min_compression_rate, use_error_feedback=p.error_feedback,
            warm_start=p.warm_start, random_seed=seed)
        hook, expected = powerSGD_hook.powerSGD_hook, _powersgd_bytes
    elif cfg.comm_hook in ("fp16", "bf16"):
        if cfg.comm_hook == "bf16":
            require_bf16_allreduce(backend)
        hook = default_hooks.fp16_compress_hook if cfg.comm_hook == "fp16" else default_hooks.bf16_compress_hook
        expected = _half_bytes
    else:  # the Python twin of DDP's built-in all-reduce, so the count is taken inside a hook too
        hook, expected = default_hooks.allreduce_hook, lambda s, b: _plain(b)
    ddp.register_comm_hook(state, _counted(hook, expected, meter))
    return state


def _half_bytes(state: Any, bucket: dist.GradBucket) -> int:
    return _plain(bucket, 2)


def require_bf16_allreduce(backend: str) -> None:
    """PyTorch's bf16 hook needs NCCL >= 2.10 on CUDA (DDP's own check); say so in one line."""
    ok = backend == "nccl" and torch.cuda.is_available() and torch.cuda.nccl.version() >= (2, 10)
    if not ok:
        raise UnsupportedError(
            f"train.distributed.comm_hook: bf16 gradient all-reduce needs CUDA GPUs with NCCL >= 2.10 "
            f"(PyTorch's bf16_compress_hook); this run uses {backend}: use fp16 or powersgd here"
        )


def grad_bytes(model: torch.nn.Module) -> int:
    """What plain DDP all-reduces per step: every trainable parameter's gradient."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
