"""Automated labelling at a target precision (`frugal label`).

A trained model predicts a label and a confidence for every unlabelled sample. Per class, a threshold
is calibrated on labelled validation data: the lowest confidence at which the validation samples
predicted as that class, counted from the most confident down, still reach the target precision. The
estimate is deliberately pessimistic — one error more than observed — so that a class seen on few
validation samples is not trusted on luck. Samples at or above their class's threshold are labelled
automatically; the rest are listed for a person.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from frugalml._io import atomic_write_text
from frugalml.data.bundle import DataBundle
from frugalml.errors import ConfigError, DataError
from frugalml.train import predict_logits

NEVER = float("inf")  # the threshold of a class whose precision cannot be shown on validation data


def calibrate_thresholds(probs: np.ndarray, labels: np.ndarray, target: float, min_support: int = 1) -> np.ndarray:
    """Per-class confidence thresholds so that predictions at or above them reach `target` precision
    on (probs, labels), counting one extra error per class; NEVER where no threshold does."""
    conf, pred = probs.max(1), probs.argmax(1)
    thresholds = np.full(probs.shape[1], NEVER)
    for c in range(probs.shape[1]):
        sel = np.flatnonzero(pred == c)
        order = sel[np.argsort(-conf[sel], kind="stable")]
        correct = np.cumsum(labels[order] == c)
        count = np.arange(1, len(order) + 1)
        ok = np.flatnonzero((correct / (count + 1) >= target) & (count >= min_support))
        if len(ok):
            k = ok[-1]  # the most samples that still reach the target
            # ties at the cut would let lower-ranked samples in: cut at the next distinct confidence
            thresholds[c] = conf[order[k]]
            if k + 1 < len(order) and conf[order[k + 1]] == conf[order[k]]:
                thresholds[c] = np.nextafter(conf[order[k]], 2.0)
    return thresholds


@dataclass
class AutoLabels:
    predicted: np.ndarray  # (N,) class index
    confidence: np.ndarray  # (N,) softmax maximum
    accepted: np.ndarray  # (N,) bool: confidence >= its class's threshold
    thresholds: np.ndarray  # (C,)

    def summary(self, truth: np.ndarray | None = None) -> dict:
        out = {"samples": len(self.predicted), "auto_labelled": int(self.accepted.sum()),
               "coverage": float(self.accepted.mean()) if len(self.accepted) else 0.0,
               "thresholds": [None if t == NEVER else round(float(t), 6) for t in self.thresholds]}
        if truth is not None:
            hits = self.predicted[self.accepted] == truth[self.accepted]
            out["precision"] = float(hits.mean()) if len(hits) else None
        return out


def probabilities(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    return predict_logits(model, x).softmax(1).numpy()


def auto_label(model: nn.Module, data: DataBundle, pool: torch.Tensor, target_precision: float = 0.99) -> AutoLabels:
    """Labels for `pool` with thresholds calibrated on `data`'s validation split."""
    if not 0 < target_precision < 1:
        raise ConfigError(f"--target-precision must lie strictly between 0 and 1, got {target_precision}")
    if len(data.y_val) == 0:
        raise DataError(f"dataset {data.name!r} has no validation split to calibrate thresholds on (data.val_fraction)")
    thresholds = calibrate_thresholds(probabilities(model, data.x_val), data.y_val.numpy(), target_precision)
    probs = probabilities(model, pool)
    conf, pred = probs.max(1), probs.argmax(1)
    return AutoLabels(pred, conf, conf >= thresholds[pred], thresholds)


def write_labels_csv(path: str | Path, labels: AutoLabels, names: list[str], ids: list[str] | None = None) -> Path:
    """One row per sample (id, predicted, class name, confidence, threshold, status auto|review); the
    rows for a person are also written, least confident first, to `<stem>.review.csv`."""
    path = Path(path)
    header = ["id", "predicted", "class", "confidence", "threshold", "status"]
    rows = []
    for i, (p, c, a) in enumerate(zip(labels.predicted, labels.confidence, labels.accepted)):
        t = labels.thresholds[p]
        rows.append([ids[i] if ids else str(i), int(p), names[int(p)], f"{c:.6f}",
                     "never" if t == NEVER else f"{t:.6f}", "auto" if a else "review"])
    review = sorted((r for r in rows if r[-1] == "review"), key=lambda r: float(r[3]))
    for target, chosen in ((path, rows), (path.with_suffix(".review.csv"), review)):
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(chosen)
        atomic_write_text(target, buf.getvalue())
    return path


def read_image_pool(directory: str | Path, shape: tuple[int, int, int], mean: float, std: float) -> tuple[torch.Tensor, list[str]]:
    """Every PNG/JPEG under `directory` (any depth), resized to `shape`, normalized like the data."""
    from frugalml.data.folder import IMAGE_SUFFIXES, _read_image

    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: unlabelled image folder not found")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) to label")
    c, h, w = shape
    if h != w:
        raise DataError(f"{root}: the model takes {h}x{w} images; only square inputs can be read from a folder")
    x = np.stack([_read_image(f, h, c) for f in files]).astype(np.float32) / 255.0
    return (torch.from_numpy(x) - mean) / std, [str(f.relative_to(root)) for f in files]


def label_pool(artifact_dir: str | Path, data_cfg: object, out: str | Path, target_precision: float = 0.99,
               unlabelled: str | Path | None = None, trust_code: bool = False) -> dict:
    """`frugal label`: label the pool (`unlabelled` folder, else the data's unlabelled split) with
    `artifact_dir`'s model; write the CSVs; return a summary (with measured precision where the true
    labels are known, and the same thresholds checked on the test split)."""
    from frugalml import artifact
    from frugalml._io import check_output_file
    from frugalml.data import load_data

    check_output_file(out)
    info = artifact.read_info(artifact_dir)
    data = load_data(data_cfg)  # type: ignore[arg-type]
    data.check_fits(info["spec"], f"artifact {artifact_dir}")
    truth, ids = None, None
    if unlabelled is not None:
        pool, ids = read_image_pool(unlabelled, data.input_shape, data.mean, data.std)
    elif data.x_unlabelled is not None:
        pool, truth = data.x_unlabelled, data.y_unlabelled.numpy() if data.y_unlabelled is not None else None
    else:
        raise ConfigError("nothing to label: pass --unlabelled DIR, or --labels-per-class N to treat the rest "
                          "of the training split as the unlabelled pool")
    model = artifact.load(artifact_dir, trust_code=trust_code)
    labels = auto_label(model, data, pool, target_precision)
    write_labels_csv(out, labels, data.class_names or [str(i) for i in range(data.num_classes)], ids)
    summary = {"target_precision": target_precision, **labels.summary(truth), "csv": str(out),
               "review_csv": str(Path(out).with_suffix(".review.csv"))}
    if len(data.y_test):
        probs = probabilities(model, data.x_test)
        pred = probs.argmax(1)
        accepted = probs.max(1) >= labels.thresholds[pred]
        test = AutoLabels(pred, probs.max(1), accepted, labels.thresholds).summary(data.y_test.numpy())
        summary["test_split"] = {k: test[k] for k in ("coverage", "precision")}
    return summary
