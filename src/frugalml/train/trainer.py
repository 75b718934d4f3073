"""The one training loop. Distillation, semi-supervised learning, QAT, pruning schedules and
distributed training plug into it through three extension points instead of copying it:

- loss_terms:       `(model, x, y, logits) -> scalar` added to the cross-entropy;
- batch_transforms: `(x, y) -> (x, y)` applied to every training micro-batch (after `cfg.augment`);
- callbacks:        objects with any of `on_train_start(trainer)`, `on_step_end(trainer, step, loss)`,
                    `on_epoch_end(trainer, epoch, metrics)`, `on_train_end(trainer)`; they may read
                    trainer.model/.optimizer/.epoch/.step/.cfg and set `trainer.stop = True`.
                    on_train_start runs before the optimizer is built, so in one process it may
                    swap modules by assigning trainer.model (with several processes it runs after
                    the DDP wrapper / FSDP sharding is in place, and must not).

Transforms and callbacks that have `state_dict()`/`load_state_dict()` are checkpointed with the run.
Subclasses may override `forward(x)` (the model call: call `super().forward(x)`, which goes through
the DDP wrapper), `epoch_order()` (the epoch's global sample order) and `samples_per_epoch`; the
Trainer shards the order across processes (`epoch_indices()`): several processes (torchrun, see
train/distributed.py) run this same loop, `cfg.distributed` picking DDP or FSDP.
Epochs are counted from 1; `trainer.epoch` is the epoch in progress, `trainer.step` counts optimizer steps.
`fit()` seeds the global torch/python/numpy RNGs with the run seed (+ rank; dropout draws from them)
and checkpoints their (CPU) states, so an interrupted run resumes bit-identically on CPU.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from frugalml.data.augment import make_augment
from frugalml.data.bundle import DataBundle
from frugalml.errors import ConfigError, DataError
from frugalml.train import checkpoint as ckpt
from frugalml.train import distributed, trainer_state
from frugalml.train.callbacks import KeepZeros
from frugalml.train.config import TrainConfig
from frugalml.train.optim import build_optimizer, build_scheduler
from frugalml.train.progress import EpochBar, epoch_bar, epoch_line

LossTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one dict per epoch (see Trainer._end_epoch)
    best_val_accuracy: float | None = None
    epochs_run: int = 0
    stopped_early: bool = False
    best_epoch: int | None = None


class Trainer:
    counts_accuracy = True  # train_accuracy from argmax vs labels (False for embedding/regression targets)

    def __init__(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: TrainConfig,
        *,
        loss_terms: Sequence[LossTerm] = (),
        batch_transforms: Sequence[BatchTransform] = (),
        callbacks: Sequence[Any] = (),
        checkpoint_dir: str | Path | None = None,
        log: logging.Logger | None = None,
        progress: bool = True,
    ) -> None:
        self.model, self.data, self.cfg = model, data, cfg
        self.seed = int(cfg.seed if cfg.seed is not None else getattr(data, "seed", 0))
        self.augment = None
        if cfg.augment is not None and cfg.augment.active:
            black = (0.0 - data.mean) / data.std  # a raw black pixel, normalized: crop borders look like background
            white = (1.0 - data.mean) / data.std
            self.augment = make_augment(cfg.augment, self.seed + 1, fill=black, num_classes=data.num_classes,
                                        value_range=(black, white))
        self.loss_terms = list(loss_terms)
        self.batch_transforms = ([self.augment] if self.augment else []) + list(batch_transforms)
        self.callbacks = list(callbacks)
        if getattr(model, "frugal_sparse", False) and not any(isinstance(c, KeepZeros) for c in self.callbacks):
            self.callbacks.append(KeepZeros())  # a pruned model keeps its zeros through fine-tuning
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.log = log or logging.getLogger("frugalml.train")
        self.progress = progress
        self.generator = torch.Generator()  # shuffling only; augmentation has its own
        self.dist = distributed.make(cfg.distributed, self.seed)  # one process: the plain loop
        self.local_batch_size = self.dist.local_batch(cfg.batch_size)
        self.model_signature = ""
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self._reset()

    def _reset(self) -> None:
        self.epoch = 0
        self.step = 0
        self.stop = False
        self.stopped_early = False
        self.history: list[dict] = []
        self.best_val_accuracy: float | None = None
        self.best_epoch: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._bad_epochs = 0
        self._throughput = {"train_seconds": 0.0, "samples": 0}

    # --- overridable pieces -----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dist.module(self.model)(x)

    def epoch_order(self) -> torch.Tensor:
        """Order of this epoch's training samples, the same on every process (drawn from the shuffle
        generator). Override together with `samples_per_epoch` (the lr schedule is sized from it)."""
        return torch.randperm(len(self.data.y_train), generator=self.generator)

    def epoch_indices(self) -> torch.Tensor:
        """This process's share of `epoch_order()` (all of it in one process)."""
        return self.dist.shard(self.epoch_order())

    @property
    def samples_per_epoch(self) -> int:
        return len(self.data.y_train)

    # --- public API ---------------------------------------------------------------------------------------

    @property
    def micro_batches_per_epoch(self) -> int:
        return len(self._micro_batches(self.dist.local_count(self.samples_per_epoch)))

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_batches_per_epoch / self.cfg.grad_accum)

    def fit(self, resume: bool = False) -> TrainResult:
        cfg, data = self.cfg, self.data
        if resume and self.checkpoint_dir is None:
            raise ConfigError("resume=True needs a checkpoint_dir to resume from")
        if cfg.epochs > 0 and len(data.y_train) == 0:
            raise DataError(f"dataset {data.name!r} has no training samples")
        if cfg.early_stopping and len(data.y_val) == 0:
            raise ConfigError(
                f"train.early_stopping needs a validation split, but dataset {data.name!r} has none"
            )
        self._reset()
        self._seed_everything()
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model_signature = trainer_state.model_signature(self.model)
        try:
            self.dist.setup(self)
            self._call("on_train_start")
            if cfg.epochs > 0:
                self.optimizer = build_optimizer(self.model, cfg)
                self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
            if self.checkpoint_dir is not None:
                if resume and ckpt.has_checkpoint(self.checkpoint_dir):
                    trainer_state.restore(self)
                    self._info("resumed from %s after epoch %d", self.checkpoint_dir, self.epoch)
                elif self.dist.is_main:
                    ckpt.discard_checkpoint(self.checkpoint_dir)
            with epoch_bar(self.progress and self.dist.is_main) as bar:
                while self.epoch < cfg.epochs and not self.stop:
                    self.epoch += 1
                    t0 = time.perf_counter()
                    self._end_epoch(self._run_epoch(bar), t0)
        except BaseException:
            self.dist.teardown(self, ok=False)  # no collective: another process may be gone
            raise
        self.dist.teardown(self, ok=True)  # hands back a plain single-process model
        distributed.FIT_STATS.append({**self.dist.stats(), **self._throughput_stats()})
        if cfg.early_stopping and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        if cfg.channels_last:  # hand back the default layout: later stages and baselines expect it
            self.model.to(memory_format=torch.contiguous_format)
        # hand back an inference model, like a loaded artifact: a forward pass after fit (a shape check,
        # a trace, a calibration batch) must not move BatchNorm statistics. Epochs set train() themselves.
        self.model.eval()
        self._call("on_train_end")
        return TrainResult(
            history=list(self.history),
            best_val_accuracy=self.best_val_accuracy,
            epochs_run=len(self.history),
            stopped_early=self.stopped_early,
            best_epoch=self.best_epoch,
        )

    def rebuild_optimizer(self) -> None:
        """For callbacks that change parameter shapes (structured pruning): fresh optimizer state,
        same position on the learning-rate curve."""
        assert self.scheduler is not None
        if self.dist.world > 1:
            raise RuntimeError("rebuild_optimizer: parameter shapes cannot change under DDP/FSDP mid-training")
        sched_state = self.scheduler.state_dict()
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.scheduler = build_scheduler(self.optimizer, self.cfg, self.steps_per_epoch)
        self.scheduler.load_state_dict(sched_state)
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr

    # --- the loop -----------------------------------------------------------------------------------------

    def _micro_batches(self, n: int) -> list[tuple[int, int]]:
        bs = self.local_batch_size
        bounds = [(s, min(s + bs, n)) for s in range(0, n, bs)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
            bounds.pop()  # BatchNorm cannot train on a batch of one sample
        return bounds

    def _run_epoch(self, bar: EpochBar) -> dict:
        cfg, model = self.cfg, self.model
        assert self.optimizer is not None and self.scheduler is not None
        model.train()
        device = next(model.parameters()).device
        perm = self.epoch_indices()
        if self.dist.world > 1 and len(perm) != self.dist.local_count(self.samples_per_epoch):
            raise RuntimeError(f"{type(self).__name__}.epoch_indices() did not shard the epoch across "
                               "processes; override epoch_order() instead (the Trainer shards it)")
        t_start = time.perf_counter()
        bounds = self._micro_batches(len(perm))
        groups = [bounds[i : i + cfg.grad_accum] for i in range(0, len(bounds), cfg.grad_accum)]
        bar.start(self.epoch, cfg.epochs, len(bounds))
        loss_sum, seen, correct, counted, lr = 0.0, 0, 0, 0, self.optimizer.param_groups[0]["lr"]
        for group in groups:
            group_n = sum(e - s for s, e in group)
            self.optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for i, (s, e) in enumerate(group):
                x, y = self.data.x_train[perm[s:e]], self.data.y_train[perm[s:e]]
                for transform in self.batch_transforms:
                    x, y = transform(x, y)
                x, y = x.to(device), y.to(device)
                if cfg.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                # gradients are synchronised across processes only on a step's last micro-batch
                with self.dist.sync(last=i == len(group) - 1):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self._bf16(device)):
                        logits = self.forward(x)
                        loss = self._loss(x, y, logits)
                    # weight by size so accumulated micro-batches equal one big batch, ragged tail
                    # included (every process has the same micro-batch sizes, see distributed.py)
                    weight = (e - s) / group_n
                    (loss * weight).backward()
                value = float(loss.detach())
                step_loss += value * weight
                loss_sum, seen = loss_sum + value * (e - s), seen + (e - s)
                if self.counts_accuracy:
                    hit, count = _hits(logits.detach(), y)
                    correct, counted = correct + hit, counted + count
                bar.advance(loss_sum / seen, correct / max(counted, 1))
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.dist.after_step(self)
            self.scheduler.step()
            self.step += 1
            self._call("on_step_end", self.step, step_loss)
            if self.stop:
                break
        self._throughput["train_seconds"] += time.perf_counter() - t_start
        loss_sum, seen, correct, counted = self.dist.all_sum([loss_sum, seen, correct, counted])
        self._throughput["samples"] += int(seen)
        return {
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / counted if counted else None,
            "lr": lr,
        }

    def _bf16(self, device: torch.device) -> bool:
        if self.cfg.bf16 == "auto":
            from frugalml.measure.env import has_native_bf16

            return device.type == "cuda" or has_native_bf16()
        return bool(self.cfg.bf16)

    def _loss(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        # float32 loss even under bf16 autocast; soft (N, C) targets and ignore_index=-100 both work
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
        for term in self.loss_terms:
            loss = loss + term(self.model, x, y, logits)
        return loss

    def _end_epoch(self, train: dict, t0: float) -> None:
        self.dist.before_eval(self)  # processes agree on the model (BatchNorm statistics, local SGD)
        val = self.dist.evaluate(self.model, self.data.x_val, self.data.y_val) if len(self.data.y_val) else None
        metrics = {
            "epoch": self.epoch,
            "train_loss": train["train_loss"],
            "train_accuracy": train["train_accuracy"],
            "val_accuracy": val,
            "lr": train["lr"],  # the lr of the epoch's last optimizer step
            "steps": self.step,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        self._call("on_epoch_end", self.epoch, metrics)
        improved = val is not None and (self.best_val_accuracy is None or val > self.best_val_accuracy)
        if improved:
            self.best_val_accuracy, self.best_epoch, self._bad_epochs = val, self.epoch, 0
            if self.cfg.early_stopping:
                self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        elif val is not None:
            self._bad_epochs += 1
            if self.cfg.early_stopping and self._bad_epochs >= self.cfg.early_stopping:
                self.stop = self.stopped_early = True
        self.history.append(metrics)
        if self.checkpoint_dir is not None:
            trainer_state.save(self, write_best=improved and self._best_state is not None)
        self._info("%s", epoch_line(metrics, self.cfg.epochs))

    def _throughput_stats(self) -> dict:
        secs, n = self._throughput["train_seconds"], self._throughput["samples"]
        # global samples per second of the training loop (evaluation and checkpoints not counted)
        return {"train_seconds": round(secs, 3), "samples": n, "samples_per_second": round(n / secs, 1) if secs else None}

    def _info(self, msg: str, *args: Any) -> None:
        if self.dist.is_main:  # one process logs
            self.log.info(msg, *args)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)

    def _seed_everything(self) -> None:
        # the model is already initialized; these seeds drive dropout, shuffling and augmentation.
        # Shuffling is the same on every process (the sampler shards one order); the rest is per rank.
        own = self.seed + self.dist.rank
        torch.manual_seed(own)
        random.seed(own)
        np.random.seed(own % 2**32)
        self.generator.manual_seed(self.seed)
        if self.augment is not None:
            self.augment.generator.manual_seed(own + 1)


def _hits(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    target = y.argmax(dim=1) if y.ndim == 2 else y
    mask = target >= 0  # -100 marks unlabelled samples (semi-supervised batches)
    return int(((logits.argmax(dim=1) == target) & mask).sum()), int(mask.sum())

