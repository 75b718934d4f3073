"""Training on several processes: the Trainer's side of torch.distributed (no launcher, process group
or collective of our own; `frugalml.train.launch` starts the processes through torchrun's machinery).

One process is the plain loop (`LocalTraining`: every method a no-op). With N > 1 processes
(`WORLD_SIZE` set by torchrun) the Trainer gets a `DataParallel` (DDP) or, with `sharding: fsdp`,
a `FullyShardedTraining` (frugalml.train.fsdp) that keeps the semantics of one process:

- Global batch. `train.batch_size` is the global micro-batch: each process trains on batch_size / N
  samples (batch_size must divide by N), gradients are averaged, so N processes take the steps of
  one process with the same batch_size and seed.
- Sampler. Every process draws the same epoch order from the run seed; torch's DistributedSampler
  (shuffle=False, drop_last=False) over that order gives process r the positions r, r+N, ... — so
  global micro-batch j is exactly one process's batch j. Padding policy (DistributedSampler's): an
  epoch of n samples is padded to a multiple of N by repeating its first samples (at most N-1 per
  epoch); with n divisible by N the batches are exactly those of one process. A last local
  micro-batch of one sample is skipped, as in one process (BatchNorm cannot train on one sample):
  with N processes that happens when the epoch's tail is N samples, which one process would keep.
- Gradient accumulation skips synchronisation on non-final micro-steps (DDP `no_sync`, FSDP
  `set_requires_gradient_sync(False)`).
- BatchNorm statistics are per process (each sees its share of the batch); rank 0's are broadcast
  before every evaluation and checkpoint, so the evaluated and saved model is rank 0's.
- Evaluation is sharded the same way and its counts all-reduced; training loss/accuracy too.
- Randomness: dropout and augmentation are seeded per process (seed + rank); each process's RNG
  states are gathered into the checkpoint, so a resumed DDP run continues exactly on CPU (tested).
  Not carried over a resume: CUDA RNG states, PowerSGD's error-feedback memory (restarts at zero),
  and under local SGD the other processes' optimizer states (rank 0's is restored on all).
- Rank 0 alone logs and writes checkpoints (FSDP: every process writes its shard through
  torch.distributed.checkpoint). On several machines the run folder must be on a shared filesystem.
"""

from __future__ import annotations

import math
import os
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DistributedSampler

from frugalml.errors import ConfigError
from frugalml.train.comm import CommMeter, grad_bytes, register_hook, require_bf16_allreduce
from frugalml.train.config import DistributedConfig
from frugalml.train.evaluate import eval_mode, evaluate

# what every fit reports: processes, samples/s, bytes sent (the pipeline drains it into the stage's metrics)
FIT_STATS: deque[dict] = deque(maxlen=64)


def world() -> tuple[int, int, int]:
    """(rank, local rank, world size) as torchrun sets them; (0, 0, 1) in a plain process."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def init_process_group(cfg: DistributedConfig) -> str:
    """The default process group from torchrun's environment: nccl on GPUs, else gloo, with
    `cfg.timeout` on every collective (a rank that died or hangs ends the run, not a wait forever)."""
    if dist.is_initialized():
        return str(dist.get_backend())
    _, local_rank, _ = world()
    backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=timedelta(seconds=cfg.timeout))
    return backend


def shutdown() -> None:
    """End this process's part of the process group (when it has one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def share_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every process (waits for rank 0); `obj` itself in a plain process."""
    if world()[2] == 1 or not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class LocalTraining:
    """One process: the plain loop. The distributed classes override what they change."""

    world, rank, is_main = 1, 0, True
    backend = "none"

    def __init__(self, cfg: DistributedConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or DistributedConfig()
        self.seed = seed
        self.meter = CommMeter()

    def local_batch(self, batch_size: int) -> int:
        return batch_size

    def local_count(self, n: int) -> int:
        return n

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        return order

    def setup(self, trainer: Any) -> None:
        pass

    def module(self, model: nn.Module) -> nn.Module:
        """What a training forward pass calls (the DDP wrapper under DDP)."""
        return model

    def sync(self, last: bool) -> AbstractContextManager:
        """Context of one training micro-step; `last`: the one whose backward synchronises."""
        return nullcontext()

    def after_step(self, trainer: Any) -> None:
        pass

    def resumed(self, step: int) -> None:
        self.meter.first_step = step  # the meter's warm-up steps are counted from the start of training

    def before_eval(self, trainer: Any) -> None:
        pass

    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        return evaluate(model, x, y)

    def all_sum(self, values: list[float]) -> list[float]:
        return values

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def teardown(self, trainer: Any, ok: bool = True) -> None:
        """After training (`ok`) or a failure (then no collective: another process may be gone)."""

    def stats(self) -> dict:
        return {"processes": 1}


class ProcessGroupTraining(LocalTraining):
    """What DDP and FSDP share: sharding, evaluation, all-reduced metrics, the byte meter."""

    def __init__(self, cfg: DistributedConfig, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        self.backend = init_process_group(cfg)
        self.rank, local_rank, self.world = world()
        self.is_main = self.rank == 0
        self.device = torch.device(f"cuda:{local_rank}") if self.backend == "nccl" else torch.device("cpu")
        self.global_batch = self.local_size = 0

    def local_batch(self, batch_size: int) -> int:
        if batch_size % self.world:
            raise ConfigError(
                f"train.batch_size: {batch_size} is the global batch and must divide by the {self.world} "
                f"processes (each trains on batch_size / {self.world} samples); use a multiple of {self.world}"
            )
        self.global_batch, self.local_size = batch_size, batch_size // self.world
        return self.local_size

    def local_count(self, n: int) -> int:
        return math.ceil(n / self.world)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        sampler = DistributedSampler(order, num_replicas=self.world, rank=self.rank, shuffle=False, drop_last=False)
        return order[torch.tensor(list(sampler), dtype=torch.long)]

    def _start(self, trainer: Any) -> None:
        trainer.model.to(self.device)
        self.uncompressed = grad_bytes(trainer.model)
        self.meter.install()
        self.meter.phase = "epoch"

    def sync(self, last: bool) -> AbstractContextManager:
        self.meter.phase = "grad"
        return nullcontext()

    def after_step(self, trainer: Any) -> None:
        self.meter.end_step()
        self.meter.phase = "epoch"

    @torch.no_grad()
    def before_eval(self, trainer: Any) -> None:
        self.meter.phase = "epoch"
        for b in trainer.model.buffers():  # BatchNorm statistics: rank 0's, everywhere
            dist.broadcast(b, src=0)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
        """Sharded like training; every process runs the same number of forward passes (FSDP
        gathers parameters in each), the padded repeats are not counted."""
        n = len(y)
        pos = torch.arange(self.rank, self.local_count(n) * self.world, self.world)
        counted, idx = pos < n, pos % n
        correct = 0
        with eval_mode(model):
            for i in range(0, len(idx), batch_size):
                sel = idx[i : i + batch_size]
                pred = model(x[sel].to(self.device)).argmax(dim=1).cpu()
                correct += int(((pred == y[sel]) & counted[i : i + batch_size]).sum())
        total_correct, total = self.all_sum([correct, int(counted.sum())])
        return total_correct / total

    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def teardown(self, trainer: Any, ok: bool = True) -> None:
        self.meter.uninstall()
        trainer.model.to("cpu")

    def stats(self) -> dict:
        return {
            "processes": self.world, "backend": self.backend, "sharding": self.cfg.sharding,
            "global_batch": self.global_batch, "batch_per_process": self.local_size,
            "uncompressed_grad_bytes": self.uncompressed,
        }


class DataParallel(ProcessGroupTraining):
    """DistributedDataParallel with the configured communication hook or post-local SGD."""

    def __init__(self, cfg: DistributedConfig, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        if cfg.comm_hook == "bf16":
            require_bf16_allreduce(self.backend)  # before any work, with the one-line reason

    def setup(self, trainer: Any) -> None:
        self._start(trainer)
        cfg = self.cfg
        self.ddp = nn.parallel.DistributedDataParallel(
            trainer.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            bucket_cap_mb=cfg.bucket_mb, find_unused_parameters=cfg.find_unused_parameters,
            forward_sync_buffers=False,  # BatchNorm statistics: broadcast before evaluation instead
        )
        self.hook_state = register_hook(self.ddp, cfg, self.backend, self.meter, self.seed)
        self.averager = None
        if cfg.local_sgd is not None:
            from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

            self.averager = PeriodicModelAverager(cfg.local_sgd.period, cfg.local_sgd.warmup_steps)

    def module(self, model: nn.Module) -> nn.Module:
        if model is not self.ddp.module:
            raise RuntimeError("trainer.model was replaced after the DDP wrapper was built; "
                               "callbacks must not swap the model in distributed training")
        return self.ddp

    def sync(self, last: bool) -> AbstractContextManager:
        self.meter.phase = "grad"
        return nullcontext() if last else self.ddp.no_sync()

    def after_step(self, trainer: Any) -> None:
        if self.averager is not None:  # PostLocalSGDOptimizer.step's second half
            self.meter.phase = "average"
            self.averager.average_parameters(trainer.optimizer.param_groups)
        super().after_step(trainer)

    def resumed(self, step: int) -> None:
        super().resumed(step)
        if self.hook_state is not None and hasattr(self.hook_state, "iter"):
            self.hook_state.iter = step  # warm-ups count optimizer steps; error memory restarts at zero
        if self.averager is not None:
            self.averager.step = step

    @torch.no_grad()
    def before_eval(self, trainer: Any) -> None:
        super().before_eval(trainer)
        local = self.cfg.local_sgd
        if local is not None and trainer.step > local.warmup_steps:  # evaluate/save the average
            from torch.distributed.algorithms.model_averaging.utils import (
                average_parameters_or_parameter_groups,
            )

            average_parameters_or_parameter_groups(trainer.optimizer.param_groups, None)

    def teardown(self, trainer: Any, ok: bool = True) -> None:
        self.__dict__.pop("ddp", None)  # its reducer removes the gradient hooks from the parameters
        super().teardown(trainer, ok)

    def stats(self) -> dict:
        cfg = self.cfg
        hook = "local_sgd" if cfg.local_sgd is not None else cfg.comm_hook
        warmup = (cfg.local_sgd.warmup_steps if cfg.local_sgd is not None
                  else cfg.powersgd.warmup_steps if hook == "powersgd" else 0)
        comm = self.meter.summary(warmup)
        out = {**super().stats(), "comm_hook": hook, "communication": comm}
        if hook == "powersgd":
            out["powersgd"] = cfg.powersgd.to_dict()
        if comm["steps"]:
            agree = comm["expected_grad_bytes_total"] == comm["measured_grad_bytes_total"]
            comm["cross_check"] = "expected == measured" if agree else "MISMATCH: expected != measured"
            after = comm["bytes_per_step_after_warmup"]
            comm["compression"] = round(self.uncompressed / after, 2) if after else None
        if cfg.local_sgd is not None and comm["steps"]:
            plain = round(comm["buckets_per_step"] * comm["steps"])  # DDP: one all-reduce per bucket per step
            sent = round(comm["collectives_per_step"] * comm["steps"])
            out["local_sgd"] = {**cfg.local_sgd.to_dict(), "all_reduces": sent, "all_reduces_plain_ddp": plain,
                                "all_reduces_saved": plain - sent,
                                "bytes_saved": self.uncompressed * comm["steps"] - comm["bytes_total"]}
        return out


def make(cfg: DistributedConfig, seed: int = 0) -> LocalTraining:
    """The Trainer's distributed side for this process: plain, DDP or FSDP."""
    if world()[2] == 1:
        return LocalTraining(cfg, seed)
    if cfg.sharding == "fsdp":
        from frugalml.train.fsdp import FullyShardedTraining

        return FullyShardedTraining(cfg, seed)
    return DataParallel(cfg, seed)


def drain_fit_stats() -> list[dict]:
    """What every Trainer.fit since the last call reported (the pipeline adds it to the stage's metrics)."""
    out = list(FIT_STATS)
    FIT_STATS.clear()
    return out
