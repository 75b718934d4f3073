"""Stage `label_issues`: find likely label errors with confident learning (Northcutt et al. 2021).

Out-of-fold predicted probabilities come from our own Trainer: the labelled training split is cut into
`folds` stratified folds, a fresh model trains on all but one and predicts the one left out. cleanlab
(optional extra `labels`) ranks the samples whose given label disagrees with what the data says. The
issues are written to `label_issues/issues.csv` and `label_issues/issues.png` (the images with their
given and suggested labels) in the stage folder, and shown in the report. With `retrain: true` the
stage returns a fresh model trained on the cleaned set; otherwise it returns its parent unchanged.
When the data flipped labels on purpose (`data.label_noise`), recall and precision are measured.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
from pydantic import Field

from frugalml._io import atomic_write_bytes, atomic_write_text
from frugalml._plot import png_bytes
from frugalml.data._split import stratified_take
from frugalml.data.bundle import DataBundle
from frugalml.errors import ConfigError, UnsupportedError
from frugalml.models import ModelConfig, build_model
from frugalml.stages import StageConfig, StageContext, register_stage
from frugalml.train import Trainer, TrainOverrides, merge_train, predict_logits

EXTRA_HINT = "pip install 'frugalml[labels]' (cleanlab)"
OUT_DIR = "label_issues"  # inside the stage folder; a sub-folder is not part of the artifact's size


class LabelIssuesStage(StageConfig):
    """Find likely label errors (cleanlab on out-of-fold probabilities); optionally retrain without them."""

    kind: Literal["label_issues"] = "label_issues"
    folds: int = Field(4, ge=2, le=20, description="cross-validation folds for out-of-fold probabilities")
    fold_epochs: int | None = Field(None, ge=1, description="epochs of each fold's model (default: train.epochs)")
    model: ModelConfig | None = None  # the folds' (and the retrained) architecture; default: the recipe's
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
                       "low_self_confidence", "low_normalized_margin"] = Field(
        "prune_by_noise_rate",
        description="cleanlab's find_label_issues filter. low_self_confidence / low_normalized_margin: as many "
        "issues as confident learning estimates, taken in order of that score (cleanlab's own ranking)")
    retrain: bool = Field(True, description="train a fresh model on the cleaned set (else: pass the parent on)")
    show: int = Field(32, ge=0, le=256, description="issues drawn in issues.png and listed in the report")
    train: TrainOverrides = TrainOverrides()  # type: ignore[valid-type]

    def starts_fresh(self) -> bool:
        return self.retrain


def _subset(data: DataBundle, idx: np.ndarray, name: str) -> DataBundle:
    t = torch.from_numpy(idx)
    return dataclasses.replace(data, name=name, x_train=data.x_train[t], y_train=data.y_train[t],
                               x_unlabelled=None, y_unlabelled=None, y_train_true=None)


def out_of_fold_probabilities(data: DataBundle, spec: dict, tcfg: object, folds: int, seed: int,
                              ctx: StageContext) -> np.ndarray:
    """(N, C) softmax probabilities, each row from the fold model that did not train on it."""
    y = data.y_train.numpy()
    rest, fold_of = np.arange(len(y)), np.empty(len(y), np.int64)
    rng = np.random.default_rng([seed, 21])
    for k in range(folds):  # stratified folds: take 1/(folds-k) of what is left, per class
        take, keep = stratified_take(y[rest], len(rest) // (folds - k), rng)
        fold_of[rest[take]] = k
        rest = rest[keep]
    probs = np.zeros((len(y), data.num_classes), np.float32)
    for k in range(folds):
        held, train_idx = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        torch.manual_seed(seed + k)
        model = build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec["kwargs"])
        trainer = Trainer(model, _subset(data, train_idx, f"{data.name}:fold{k}"), tcfg,
                          checkpoint_dir=ctx.workdir / f"fold{k}", log=ctx.log)
        trainer.fit(resume=ctx.resume)
        probs[held] = predict_logits(trainer.model, data.x_train[torch.from_numpy(held)]).softmax(1).numpy()
        ctx.log.info("label issues: fold %d/%d done", k + 1, folds)
    return probs


def require_cleanlab() -> None:
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        raise UnsupportedError(f"stage label_issues needs the optional extra: {EXTRA_HINT}") from None


def find_issues(labels: np.ndarray, probs: np.ndarray, filter_by: str = "prune_by_noise_rate") -> np.ndarray:
    """Indices of likely label errors, most likely first (cleanlab's confident learning)."""
    require_cleanlab()
    from cleanlab.filter import find_label_issues

    ranked_by = "normalized_margin" if filter_by == "low_normalized_margin" else "self_confidence"
    return np.asarray(find_label_issues(labels, probs, filter_by=filter_by,
                                        return_indices_ranked_by=ranked_by), dtype=np.int64)


def issues_png(data: DataBundle, issues: np.ndarray, probs: np.ndarray, show: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked = issues[:show]
    cols = min(8, max(len(picked), 1))
    rows = max(1, -(-len(picked) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    names = data.class_names or [str(i) for i in range(data.num_classes)]
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picked):
        img = data.x_train[i] * data.std + data.mean
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"#{i}\n{names[int(data.y_train[i])]} → {names[int(probs[i].argmax())]}", fontsize=7)
    fig.suptitle("likely label errors: given → suggested", fontsize=9)
    return png_bytes(fig, dpi=90)


def _write(ctx: StageContext, data: DataBundle, issues: np.ndarray, probs: np.ndarray, show: int) -> None:
    names = data.class_names or [str(i) for i in range(data.num_classes)]
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["rank", "index", "given", "suggested", "given_probability"])
    for rank, i in enumerate(issues, start=1):
        given = int(data.y_train[i])
        w.writerow([rank, int(i), names[given], names[int(probs[i].argmax())], f"{probs[i, given]:.4f}"])
    atomic_write_text(ctx.stage_dir / OUT_DIR / "issues.csv", out.getvalue())
    atomic_write_bytes(ctx.stage_dir / OUT_DIR / "issues.png", issues_png(data, issues, probs, show))


def stage_train_config(train_defaults: object, cfg: LabelIssuesStage, seed: int) -> object:
    """The TrainConfig the stage trains with (the recipe's, its overrides, the run's seed if unset)."""
    tcfg = merge_train(train_defaults, cfg.train, where=f"stages.{cfg.name}.train")  # type: ignore[arg-type]
    return tcfg if tcfg.seed is not None else tcfg.model_copy(update={"seed": seed})


def score_issues(issues: np.ndarray, labels: np.ndarray, truth: np.ndarray) -> dict:
    """Against labels flipped on purpose: how many were flipped, and the finder's recall and precision."""
    flipped = labels != truth
    hits, k = int(flipped[issues].sum()), int(flipped.sum())
    return {"flipped": k, "recall": hits / k if k else None, "precision": hits / len(issues) if len(issues) else None}


@register_stage(LabelIssuesStage)
def run_label_issues_stage(model: nn.Module | None, cfg: LabelIssuesStage, ctx: StageContext) -> nn.Module:
    data = ctx.data
    if not cfg.retrain and model is None:
        raise ConfigError(f"stages.{cfg.name}.retrain: false passes the parent on, but there is no earlier stage")
    require_cleanlab()  # before minutes of fold training
    spec = cfg.model.spec(data.input_shape, data.num_classes) if cfg.model else ctx.model_spec
    tcfg = stage_train_config(ctx.train_defaults, cfg, ctx.seed)
    t0 = time.perf_counter()
    fold_cfg = tcfg.model_copy(update={"epochs": cfg.fold_epochs or tcfg.epochs})
    probs = out_of_fold_probabilities(data, spec, fold_cfg, cfg.folds, ctx.seed, ctx)
    labels = data.y_train.numpy()
    issues = find_issues(labels, probs, cfg.filter_by)
    _write(ctx, data, issues, probs, cfg.show)
    report: dict = {"found": len(issues), "fraction": len(issues) / len(labels), "folds": cfg.folds,
                    "filter_by": cfg.filter_by, "csv": f"stages/{cfg.name}/{OUT_DIR}/issues.csv",
                    "png": f"stages/{cfg.name}/{OUT_DIR}/issues.png", "seconds": round(time.perf_counter() - t0, 2),
                    "top": [{"index": int(i), "given": int(labels[i]), "suggested": int(probs[i].argmax())}
                            for i in issues[: cfg.show]]}
    if data.y_train_true is not None:
        report.update(score_issues(issues, labels, data.y_train_true.numpy()))
    ctx.extra_metrics["label_issues"] = report
    if not cfg.retrain:
        return model  # type: ignore[return-value]
    keep = np.setdiff1d(np.arange(len(labels)), issues)
    cleaned = _subset(data, keep, f"{data.name}:cleaned")
    ctx.model_spec = spec
    torch.manual_seed(ctx.seed)
    fresh = build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec["kwargs"])
    trainer = Trainer(fresh, cleaned, tcfg, checkpoint_dir=ctx.workdir / "cleaned", log=ctx.log)
    result = trainer.fit(resume=ctx.resume)
    report["retrained"] = {"samples": len(keep), "best_val_accuracy": result.best_val_accuracy}
    ctx.extra_metrics["labels_used"] = len(keep)
    return trainer.model
