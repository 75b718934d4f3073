"""Knowledge distillation: the `distill` stage and the `distill()` verb (the same config classes for
YAML and Python), built on the one Trainer's loss terms.

    from frugalml.compress.distill import DIST, DistillStage, distill
    student = distill(ModelConfig(name="cnn", kwargs={"width": 8}), teacher, DistillStage(loss=DIST()), data)

Files: `losses` (KD, DKD, DIST: config classes, pure loss functions, the logit loss term, reusable
by any stage that fine-tunes: `LogitDistillTerm(KD(...), teacher_logits_fn)` or `kd_loss`), `hints`
(FitNets feature distillation with learned adapters), `cache` (the teacher's outputs, live or
computed once), `refs` (models named by stage or folder), `stage` (config, verb, stage handler).
"""

from __future__ import annotations

from frugalml.compress.distill.hints import Hint
from frugalml.compress.distill.losses import (
    DIST,
    DKD,
    KD,
    LogitDistillTerm,
    dist_loss,
    dkd_loss,
    kd_loss,
    logit_loss,
)
from frugalml.compress.distill.stage import DistillStage, distill, distill_with_metrics, run_distill_stage

__all__ = [
    "DIST",
    "DKD",
    "KD",
    "DistillStage",
    "Hint",
    "LogitDistillTerm",
    "dist_loss",
    "distill",
    "distill_with_metrics",
    "dkd_loss",
    "kd_loss",
    "logit_loss",
    "run_distill_stage",
]
