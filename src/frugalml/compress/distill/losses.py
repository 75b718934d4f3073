"""Logit distillation losses: one config class per method (its docstring is the documentation) and
one pure function on (student logits, teacher logits[, labels]) that the tests check by hand.

Every method is used the same way: the Trainer always adds the hard-label cross-entropy, and the
`LogitDistillTerm` loss term adds the method's distillation loss and rescales that cross-entropy to
the method's `ce_weight` (by adding `(ce_weight - 1) * CE`, which has exactly that gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from frugalml.config import Config

TeacherLogits = Callable[[torch.Tensor], torch.Tensor]


class KD(Config):
    """Hinton et al. (2015): `(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher || student)` on
    temperature-softened outputs. `alpha` is the weight of the distillation term against the
    hard-label loss; T^2 keeps its gradients on the scale of the cross-entropy's."""

    type: Literal["kd"] = "kd"
    temperature: float = Field(4.0, gt=0, description="softmax temperature T")
    alpha: float = Field(0.9, ge=0, le=1, description="share of the distillation term; 1 - alpha goes to the labels")

    @property
    def ce_weight(self) -> float:
        return 1.0 - self.alpha


class DKD(Config):
    """Decoupled KD (Zhao et al., CVPR 2022): KD split into its target-class part (TCKD: how sure
    the teacher is of the label, a binary KL) and its non-target part (NCKD: how it ranks the wrong
    classes, a KL over them alone). Plain KD weights NCKD by the teacher's confidence, which starves
    it exactly where it says most; DKD weights the two freely:
    `ce_weight * CE + ramp * (alpha * TCKD + beta * NCKD)`, ramp rising linearly to 1 over
    `warmup_epochs` (the large beta would swamp a random student otherwise)."""

    type: Literal["dkd"] = "dkd"
    alpha: float = Field(1.0, ge=0, description="weight of the target-class part (TCKD)")
    beta: float = Field(8.0, ge=0, description="weight of the non-target-class part (NCKD)")
    temperature: float = Field(4.0, gt=0)
    warmup_epochs: float = Field(3.0, ge=0, description="epochs over which the distillation term ramps up")
    ce_weight: float = Field(1.0, ge=0, description="weight of the hard-label cross-entropy")


class DIST(Config):
    """DIST (Huang et al., NeurIPS 2022): instead of matching the teacher's probabilities exactly
    (hard for a much smaller student), match their relations: per sample, the Pearson correlation of
    the class probabilities (inter-class, weight beta); per class, across the batch (intra-class,
    weight gamma). `ce_weight * CE + T^2 * (beta * (1 - inter) + gamma * (1 - intra))`. Defaults
    are the paper's ImageNet setting: with few classes, a high temperature makes both distributions
    nearly uniform, and the correlation's gradient (1 / their spread) then blows training up."""

    type: Literal["dist"] = "dist"
    beta: float = Field(1.0, ge=0, description="weight of the inter-class relation loss")
    gamma: float = Field(1.0, ge=0, description="weight of the intra-class relation loss")
    temperature: float = Field(1.0, gt=0)
    ce_weight: float = Field(1.0, ge=0, description="weight of the hard-label cross-entropy")


LogitLoss = Annotated[KD | DKD | DIST, Field(discriminator="type")]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """`T^2 * KL(softmax(teacher/T) || softmax(student/T))`, averaged over the batch."""
    t = temperature
    target = F.softmax(teacher.float() / t, dim=1)
    log_p = F.log_softmax(student.float() / t, dim=1)
    return t * t * F.kl_div(log_p, target, reduction="batchmean")


def dkd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float, beta: float,
             temperature: float) -> torch.Tensor:
    """`alpha * TCKD + beta * NCKD`, each scaled by T^2 and averaged over the batch (Zhao et al.)."""
    t = temperature
    s, te = student.float() / t, teacher.float() / t
    gt = F.one_hot(labels, s.shape[1]).bool()
    p_s, p_t = F.softmax(s, dim=1), F.softmax(te, dim=1)
    # binary distributions (target class, all the others)
    b_s = torch.stack([p_s[gt], p_s.masked_fill(gt, 0).sum(1)], dim=1).clamp_min(1e-12)
    b_t = torch.stack([p_t[gt], p_t.masked_fill(gt, 0).sum(1)], dim=1)
    tckd = F.kl_div(b_s.log(), b_t, reduction="batchmean")
    # distributions over the non-target classes only (the target masked out before the softmax)
    log_q_s = F.log_softmax(s.masked_fill(gt, -1e9), dim=1)
    q_t = F.softmax(te.masked_fill(gt, -1e9), dim=1)
    nckd = F.kl_div(log_q_s.masked_fill(gt, 0), q_t, reduction="batchmean")
    return t * t * (alpha * tckd + beta * nckd)


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student: torch.Tensor, teacher: torch.Tensor, beta: float, gamma: float,
              temperature: float) -> torch.Tensor:
    """`T^2 * (beta * (1 - mean inter-class Pearson) + gamma * (1 - mean intra-class Pearson))`."""
    t = temperature
    p_s, p_t = F.softmax(student.float() / t, dim=1), F.softmax(teacher.float() / t, dim=1)
    inter = 1 - _pearson_rows(p_s, p_t).mean()
    intra = 1 - _pearson_rows(p_s.T, p_t.T).mean()
    return t * t * (beta * inter + gamma * intra)


def hard_labels(y: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Class indices for DKD: soft (N, C) targets become their argmax; unlabelled samples (-100)
    take the teacher's prediction."""
    y = y.argmax(dim=1) if y.ndim == 2 else y
    return torch.where(y >= 0, y, teacher.argmax(dim=1))


def logit_loss(cfg: KD | DKD | DIST, student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor,
               epoch: int = 1) -> torch.Tensor:
    """The distillation part of `cfg` (without any cross-entropy), at training epoch `epoch` (from 1)."""
    if isinstance(cfg, KD):
        return cfg.alpha * kd_loss(student, teacher, cfg.temperature)
    if isinstance(cfg, DKD):
        ramp = min(epoch / cfg.warmup_epochs, 1.0) if cfg.warmup_epochs > 0 else 1.0
        return ramp * dkd_loss(student, teacher, hard_labels(y, teacher), cfg.alpha, cfg.beta, cfg.temperature)
    return dist_loss(student, teacher, cfg.beta, cfg.gamma, cfg.temperature)


class LogitDistillTerm:
    """Trainer loss term for a logit method: adds the method's loss and rescales the Trainer's
    cross-entropy to `cfg.ce_weight`. `teacher(x)` gives the teacher's logits for the batch (live
    or cached, see cache.TeacherOutputs); `epoch()` the epoch in progress (for DKD's warm-up)."""

    def __init__(self, cfg: KD | DKD | DIST, teacher: TeacherLogits, *, label_smoothing: float = 0.0,
                 epoch: Callable[[], int] = lambda: 1) -> None:
        self.cfg, self.teacher, self.label_smoothing, self.epoch = cfg, teacher, label_smoothing, epoch

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        loss = logit_loss(self.cfg, logits, self.teacher(x).detach(), y, self.epoch())
        if self.cfg.ce_weight != 1.0:  # the Trainer adds CE with weight 1; this makes it ce_weight
            ce = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
            loss = loss + (self.cfg.ce_weight - 1.0) * ce
        return loss


class DistillFrom:
    """Trainer loss term: `weight * T^2 * KL(teacher || student)` on temperature-softened outputs
    (Hinton et al., `kd_loss`), the teacher being the model as it was before pruning or
    quantization (frozen, eval mode): pruning's `finetune.distill`, quantization's `qat.distill`.
    The teacher is the caller's own copy: it follows the batches to their device (the Trainer moves the
    student, not the loss terms)."""

    def __init__(self, teacher: nn.Module, weight: float, temperature: float) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight, self.t = weight, temperature
        self._device: torch.device | None = None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if x.device != self._device:
            self.teacher.to(x.device)
            self._device = x.device
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return self.weight * kd_loss(logits, teacher_logits, self.t)
