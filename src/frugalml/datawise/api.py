"""Python verbs for the label-wise stages: the same config classes and handlers as in recipes.

    model, metrics = frugalml.transfer(TransferStage(phases="probe"), data)
    model, metrics = frugalml.semisup(SemiSupStage(method=FixMatch(threshold=0.9)), data, model=model)
    model, metrics = frugalml.find_label_issues(LabelIssuesStage(folds=4), data, spec=spec)

Each runs the registered stage handler with a context of its own (scratch files under `workdir`,
a temporary folder by default) and returns the model (with `frugal_spec`, so `frugalml.save` works)
and the stage's metrics.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch.nn as nn

from frugalml.data.bundle import DataBundle
from frugalml.datawise.label_issues import LabelIssuesStage
from frugalml.datawise.semisup import SemiSupStage
from frugalml.datawise.transfer import TransferStage
from frugalml.stages import StageConfig, StageContext, handler_for
from frugalml.train import TrainConfig


def _apply(cfg: StageConfig, data: DataBundle, model: nn.Module | None, spec: dict | None, train: TrainConfig | None,
           workdir: str | Path | None, seed: int, log: logging.Logger | None) -> tuple[nn.Module, dict]:
    if cfg.name is None:
        cfg = cfg.model_copy(update={"name": cfg.kind})
    spec = spec or getattr(model, "frugal_spec", None) or {}
    stage_dir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=f"frugal-{cfg.kind}-"))
    ctx = StageContext(data=data, model_spec=dict(spec), stage_dir=stage_dir, train_defaults=train, seed=seed,
                       log=log or logging.getLogger("frugalml"))
    out = handler_for(cfg)(model, cfg, ctx)
    out.frugal_spec = ctx.model_spec
    return out, ctx.extra_metrics


def transfer(cfg: TransferStage, data: DataBundle, *, train: TrainConfig | None = None, workdir: str | Path | None = None,
             seed: int = 0, log: logging.Logger | None = None) -> tuple[nn.Module, dict]:
    """A pretrained source adapted to `data` and fine-tuned with `cfg.phases`."""
    return _apply(cfg, data, None, None, train, workdir, seed, log)


def semisup(cfg: SemiSupStage, data: DataBundle, *, model: nn.Module | None = None, spec: dict | None = None,
            train: TrainConfig | None = None, workdir: str | Path | None = None, seed: int = 0,
            log: logging.Logger | None = None) -> tuple[nn.Module, dict]:
    """`model` (or a fresh one from `cfg.model`/`spec`) trained on the labelled split and the pool."""
    return _apply(cfg, data, model, spec, train, workdir, seed, log)


def find_label_issues(cfg: LabelIssuesStage, data: DataBundle, *, spec: dict | None = None,
                      model: nn.Module | None = None, train: TrainConfig | None = None,
                      workdir: str | Path | None = None, seed: int = 0,
                      log: logging.Logger | None = None) -> tuple[nn.Module, dict]:
    """Likely label errors of `data`'s training split (metrics["label_issues"]) and, with `cfg.retrain`,
    a model trained without them."""
    return _apply(cfg, data, model, spec, train, workdir, seed, log)
