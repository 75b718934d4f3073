"""Training toward targets that are not class labels: the data's task objective (`measure.task`:
1 - cosine for embeddings, MSE for regression) instead of cross-entropy, through the one Trainer.

Distilling an embedding model is this with the teacher's outputs as targets: they are computed once
(the teacher is frozen and text batches are not augmented), so each step costs one student forward
and backward. When the teacher is the run's reference model, the data's targets already are its
outputs and nothing is recomputed.

    student = train_on_targets(student, teacher, data, TrainConfig(epochs=3, optimizer="adamw", lr=5e-5))

One output vector per text is little signal for a transformer. `HiddenMatch` (the `hints` of the
distill stage and of pruning's fine-tuning, on these tasks) adds the MSE between named layers' outputs
of the student and of the live teacher — e.g. every encoder layer's hidden states, one target per token
(TinyBERT's hidden-state loss; rows' padding positions are left out).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml.data.features import Features
from frugalml.errors import ConfigError
from frugalml.measure.task import Task, outputs, task_of
from frugalml.train import Trainer, TrainResult
from frugalml.train.evaluate import eval_mode

VAL_LIMIT = 1024  # rows of val scored after each epoch
BUCKET = 50  # batches per window in which rows are grouped by length


def _trim(x: Any, y: torch.Tensor) -> tuple[Any, torch.Tensor]:
    return x.trimmed(), y


class TaskTrainer(Trainer):
    """The one Trainer with the data's task loss. The loop's own val accuracy means nothing for these
    targets, so it runs on a view without a val split, and each epoch's history row gets
    `val_<metric>` (e.g. val_cosine) from the real one instead."""

    counts_accuracy = False  # argmax of embedding/regression targets is no accuracy

    def __init__(self, model: nn.Module, data: Any, cfg: Any, **kwargs: Any) -> None:
        self.task: Task = task_of(data)
        self.full_data = data
        view = dataclasses.replace(data, x_val=data.x_val[:0], y_val=data.y_val[:0])
        # token batches of similar lengths, cut to their longest row: the same loss, a fraction of the work
        self.lengths = data.x_train.lengths() if isinstance(data.x_train, Features) else None
        if self.lengths is not None:
            kwargs["batch_transforms"] = [_trim, *kwargs.get("batch_transforms", ())]
        super().__init__(model, view, cfg, **kwargs)

    def epoch_indices(self) -> torch.Tensor:
        """The shuffled order, then rows of similar length grouped into batches (within windows of
        BUCKET batches) and the whole batches shuffled again; the last, partial batch stays last."""
        perm = super().epoch_indices()
        if self.lengths is None:
            return perm
        bs = self.cfg.batch_size
        window = bs * BUCKET
        parts = [p[torch.argsort(self.lengths[p], stable=True)] for p in perm.split(window)]
        ordered = torch.cat(parts)
        full = len(ordered) // bs * bs
        batches = list(ordered[:full].split(bs))
        shuffled = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        return torch.cat([*shuffled, ordered[full:]]) if shuffled else ordered

    def _loss(self, x: Any, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        loss = self.task.loss(logits, y)
        for term in self.loss_terms:
            loss = loss + term(self.model, x, y, logits)
        return loss

    def val_quality(self) -> float | None:
        data = self.full_data
        if not len(data.y_val):
            return None
        with eval_mode(self.model):
            q = self.task.evaluate(self.model, data.x_val[:VAL_LIMIT], data.y_val[:VAL_LIMIT], data.num_classes)
        return q["quality"]

    def _end_epoch(self, train: dict, t0: float) -> None:
        quality = self.val_quality()
        super()._end_epoch(train, t0)
        self.history[-1][f"val_{self.task.metric}"] = quality
        self.log.info("epoch %d: val %s %s", self.epoch, self.task.metric, "n/a" if quality is None else f"{quality:.4f}")


def _tensor(value: Any) -> torch.Tensor | None:
    """A layer's output tensor (Hugging Face layers return tuples: the hidden states come first)."""
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    return value if isinstance(value, torch.Tensor) else None


class HiddenMatch:
    """Trainer loss term: `sum_i weight_i * MSE(student layer_i, teacher layer_i)` over the rows' real
    tokens (attention_mask) for (N, L, F) outputs, over everything otherwise. Widths must match (a pruned
    model keeps its residual width; a layer-dropped student keeps the teacher's). The teacher runs live,
    frozen, in eval mode; `close()` removes the hooks and restores its mode flags."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: list[tuple[str, str, float]], where: str) -> None:
        from frugalml.compress.distill.hints import check_layer

        for s_name, t_name, _ in pairs:
            check_layer(student, s_name, where, "student")
            check_layer(teacher, t_name, where, "teacher")
        self.teacher = teacher
        self._modes = [(m, m.training) for m in teacher.modules()]
        teacher.eval()  # run under no_grad; its flags are restored by close()
        self.weights = [w for _, _, w in pairs]
        self.s_out: dict[int, Any] = {}
        self.t_out: dict[int, Any] = {}
        self.handles = []
        for i, (s_name, t_name, _) in enumerate(pairs):
            self.handles.append(student.get_submodule(s_name).register_forward_hook(self._keep(self.s_out, i)))
            self.handles.append(teacher.get_submodule(t_name).register_forward_hook(self._keep(self.t_out, i)))
        self.names = [(s, t) for s, t, _ in pairs]
        self.where = where

    @staticmethod
    def _keep(store: dict[int, Any], i: int) -> Any:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            store[i] = _tensor(output)

        return hook

    def __call__(self, model: nn.Module, x: Any, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.teacher(x)
        mask = x["attention_mask"] if isinstance(x, Features) and "attention_mask" in x.names else None
        total = logits.new_zeros((), dtype=torch.float32)
        for i, w in enumerate(self.weights):
            s, t = self.s_out.get(i), self.t_out.get(i)
            if s is None or t is None or s.shape != t.shape:
                raise ConfigError(
                    f"{self.where}: hint {self.names[i][0]!r} -> {self.names[i][1]!r} needs both layers to give tensors "
                    f"of one shape; got {None if s is None else list(s.shape)} and {None if t is None else list(t.shape)}"
                )
            err = (s.float() - t.float()).pow(2)
            if mask is not None and err.dim() == 3 and mask.shape == err.shape[:2]:
                keep = mask.to(err.dtype).unsqueeze(-1)
                total = total + w * (err * keep).sum() / (keep.sum() * err.shape[-1]).clamp(min=1)
            else:
                total = total + w * err.mean()
        return total

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        for m, training in self._modes:
            m.training = training


def with_teacher_targets(data: Any, teacher: nn.Module | None) -> Any:
    """A view of `data` whose train targets are `teacher`'s outputs (None: the data's own targets)."""
    if teacher is None:
        return data
    with eval_mode(teacher), torch.no_grad():
        y = outputs(teacher, data.x_train, batch_size=64, trim=True)
    return dataclasses.replace(data, y_train=y)


def train_on_targets(
    model: nn.Module,
    teacher: nn.Module | None,
    data: Any,
    cfg: Any,
    *,
    callbacks: Any = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    log: logging.Logger | None = None,
    progress: bool = False,
    hints: Any = (),
    hint_teacher: nn.Module | None = None,
    where: str = "hints",
) -> tuple[nn.Module, dict]:
    """Train `model` in place toward `teacher`'s outputs (or the data's targets) with the task loss,
    plus the hidden-state MSE of `hints` (Hint-like: student, teacher, weight) to `hint_teacher`
    (a HiddenMatch); returns (model, metrics {val quality before/after, epochs, history})."""
    log = log or logging.getLogger("frugalml")
    view = with_teacher_targets(data, teacher)
    terms = []
    if hints:
        if hint_teacher is None:
            raise ConfigError(f"{where}: hints need a model to match (a teacher)")
        terms.append(HiddenMatch(model, hint_teacher, [(h.student, h.teacher, h.weight) for h in hints], where))
    try:
        trainer = TaskTrainer(model, view, cfg, callbacks=callbacks, checkpoint_dir=checkpoint_dir, log=log,
                              progress=progress, loss_terms=terms)
        before = trainer.val_quality()
        t0 = time.perf_counter()
        result: TrainResult = trainer.fit(resume=resume and checkpoint_dir is not None)
    finally:
        for term in terms:
            term.close()
    metric = trainer.task.metric
    objective = {"embedding": "1 - cosine", "regression": "mse"}.get(trainer.task.name, "cross-entropy")
    return trainer.model, {
        "objective": objective + (" + hidden-state MSE" if terms else ""),
        "targets": "teacher outputs" if teacher is not None else (getattr(data, "reference", None) or "data"),
        f"val_{metric}_before": before,
        f"val_{metric}_after": trainer.val_quality(),
        "epochs": result.epochs_run,
        "seconds_this_session": round(time.perf_counter() - t0, 2),
        "history": result.history,
    }


def even_layers(total: int, keep: int) -> list[int]:
    """`keep` of `total` layers, evenly spaced from the first (6 -> 3: 0, 2, 4), as DistilBERT does."""
    return sorted({min(total - 1, round(i * total / keep)) for i in range(keep)})
