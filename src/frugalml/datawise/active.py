"""Active learning, simulated (`frugal active`): on a dataset whose labels are all known, start from a
small random labelled pool, and each round train a fresh model, pick the K pool samples a strategy
wants labelled next, reveal their labels, and go on. Strategies: entropy, margin (smallest gap
between the two top classes), least_confidence, and random as the baseline. Every strategy starts from
the same initial pool and trains with the same seed, so the curves differ only by what was picked.
The area under each accuracy-vs-labels curve (mean accuracy over the label range) compares them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from frugalml._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from frugalml.config import Config
from frugalml.data import DataBundle, DataConfig, load_data
from frugalml.errors import ConfigError
from frugalml.models import ModelConfig, build_model
from frugalml.train import TrainConfig, Trainer, evaluate, predict_logits

Strategy = Literal["entropy", "margin", "least_confidence", "random"]
STRATEGIES: tuple[str, ...] = ("entropy", "margin", "least_confidence", "random")


class ActiveConfig(Config):
    """A simulated labelling loop; the same class is `frugal active`'s options and the Python API."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig(epochs=10)
    strategies: list[Strategy] = Field(default_factory=lambda: list(STRATEGIES), min_length=1)
    initial: int = Field(100, ge=1, description="randomly chosen labelled samples to start from")
    batch: int = Field(100, ge=1, description="samples labelled per round (K)")
    rounds: int = Field(5, ge=1)
    candidates: int | None = Field(None, ge=1, description="score a random subset of the pool each round (speed)")
    seed: int = 0

    @model_validator(mode="after")
    def _unique(self) -> ActiveConfig:
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies: each at most once, got {self.strategies}")
        return self


def scores(probs: np.ndarray, strategy: str) -> np.ndarray:
    """Uncertainty per sample: higher = label it sooner."""
    if strategy == "entropy":
        return -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)
    top2 = -np.sort(-probs, axis=1)[:, :2]
    if strategy == "margin":
        return -(top2[:, 0] - top2[:, 1])
    if strategy == "least_confidence":
        return 1.0 - top2[:, 0]
    raise ConfigError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")


def select(model: torch.nn.Module | None, x: torch.Tensor, candidates: np.ndarray, k: int, strategy: str,
           rng: np.random.Generator) -> np.ndarray:
    """The `k` candidates `strategy` picks (indices into x)."""
    k = min(k, len(candidates))
    if strategy == "random":
        return rng.choice(candidates, size=k, replace=False)
    assert model is not None
    probs = predict_logits(model, x[torch.from_numpy(candidates)]).softmax(1).numpy()
    return candidates[np.argsort(-scores(probs, strategy), kind="stable")[:k]]


def area_under_curve(curve: list[dict]) -> float:
    """Mean accuracy over the label range (trapezoids, normalized by the range)."""
    xs = np.array([c["labels"] for c in curve], float)
    ys = np.array([c["accuracy"] for c in curve], float)
    if len(xs) < 2 or xs[-1] == xs[0]:
        return float(ys.mean())
    return float(((ys[1:] + ys[:-1]) / 2 * np.diff(xs)).sum() / (xs[-1] - xs[0]))


def _train(data: DataBundle, idx: np.ndarray, cfg: ActiveConfig, log: logging.Logger) -> torch.nn.Module:
    subset = dataclasses.replace(data, x_train=data.x_train[torch.from_numpy(idx)],
                                 y_train=data.y_train[torch.from_numpy(idx)], x_unlabelled=None, y_unlabelled=None)
    spec = cfg.model.spec(data.input_shape, data.num_classes)
    torch.manual_seed(cfg.seed)
    model = build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec["kwargs"])
    tcfg = cfg.train if cfg.train.seed is not None else cfg.train.model_copy(update={"seed": cfg.seed})
    trainer = Trainer(model, subset, tcfg, log=log, progress=False)
    trainer.fit()
    return trainer.model


def active_learning(cfg: ActiveConfig, data: DataBundle | None = None, log: logging.Logger | None = None) -> dict:
    """Run every strategy's loop; returns {"strategies": {name: {"curve": [...], "auc": ...}}, ...}."""
    log = log or logging.getLogger("frugalml")
    data = data or load_data(cfg.data)
    n = len(data.y_train)
    if cfg.initial + cfg.batch * cfg.rounds > n:
        raise ConfigError(f"active: initial + batch * rounds = {cfg.initial + cfg.batch * cfg.rounds} labels, "
                          f"but the training split has {n} samples")
    start = np.random.default_rng([cfg.seed, 31]).choice(n, size=cfg.initial, replace=False)
    out: dict = {"config": cfg.to_dict(), "data": data.describe(), "strategies": {}}
    for s, strategy in enumerate(cfg.strategies):
        rng = np.random.default_rng([cfg.seed, 32, s])
        labelled, curve, picked = start.copy(), [], []
        t0 = time.perf_counter()
        for r in range(cfg.rounds + 1):
            model = _train(data, labelled, cfg, log)
            curve.append({"labels": len(labelled), "accuracy": evaluate(model, data.x_test, data.y_test)})
            log.info("active %s round %d: %d labels, accuracy %.4f", strategy, r, len(labelled), curve[-1]["accuracy"])
            if r == cfg.rounds:
                break
            pool = np.setdiff1d(np.arange(n), labelled)
            if cfg.candidates is not None and cfg.candidates < len(pool):
                pool = np.sort(rng.choice(pool, size=cfg.candidates, replace=False))
            chosen = select(model, data.x_train, pool, cfg.batch, strategy, rng)
            picked.append(chosen.tolist())
            labelled = np.concatenate([labelled, chosen])
        out["strategies"][strategy] = {"curve": curve, "auc": area_under_curve(curve), "picked": picked,
                                       "seconds": round(time.perf_counter() - t0, 2)}
    return out


def write_active(out_dir: str | Path, result: dict) -> dict[str, Path]:
    """active.json, active.csv and active.png (accuracy against labels used) in `out_dir`."""
    from frugalml.report.label_plots import label_efficiency_plot

    out_dir = Path(out_dir)
    paths = {"json": out_dir / "active.json", "csv": out_dir / "active.csv", "png": out_dir / "active.png"}
    atomic_write_json(paths["json"], result)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["strategy", "labels", "accuracy"])
    for name, r in result["strategies"].items():
        w.writerows([name, c["labels"], f"{c['accuracy']:.4f}"] for c in r["curve"])
    atomic_write_text(paths["csv"], buf.getvalue())
    series = {f"{name} (AUC {100 * r['auc']:.2f})": [(c["labels"], 100 * c["accuracy"], None) for c in r["curve"]]
              for name, r in result["strategies"].items()}
    atomic_write_bytes(paths["png"], label_efficiency_plot(series, "active learning: accuracy against labels used"))
    return paths
