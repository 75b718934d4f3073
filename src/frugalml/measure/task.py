"""Tasks: what "quality" means for a model, so `tolerance`, `backend: auto`, pruning sensitivity,
fine-tuning and the report judge it by the right number.

- `classification` (y: int64 labels): quality = top-1 accuracy.
- `embedding` (y: the reference model's embeddings (N, D)): quality = mean cosine to them; also
  `recall_at_10`: how many of each test text's 10 nearest neighbours under the reference embeddings
  the model's embeddings find again (retrieval agreement). Training objective: 1 - cosine.
- `regression` (y: float targets (N, D), given or the reference's outputs): quality = R² (1 - MSE /
  variance of y), also `mse`. Training objective: MSE.

Quality is "higher is better" for every task, and `tolerance` is in points (quality × 100).
Reference-based targets are filled once the run's first model exists (`bind_reference`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from frugalml.data.features import Features
from frugalml.errors import DataError

Predict = Callable[[Any], Any]
RECALL_K = 10


def outputs(predict: Predict, x: Any, batch_size: int = 256, trim: bool = False) -> torch.Tensor:
    """Outputs for all rows of `x`. `trim` (named token inputs, a float torch model): rows sorted by
    length and each batch cut to its longest row — the same outputs for a third of the work on short
    texts; measurements leave it off, so every model is judged on the inputs as the data holds them."""
    from frugalml.measure.accuracy import to_tensor

    lengths = x.lengths() if trim and isinstance(x, Features) else None
    if lengths is None:
        outs = [to_tensor(predict(x[i : i + batch_size])).float() for i in range(0, len(x), batch_size)]
        return torch.cat(outs) if outs else torch.zeros(0)
    order = torch.argsort(lengths, stable=True)
    outs = [to_tensor(predict(x[order[i : i + batch_size]].trimmed())).float() for i in range(0, len(x), batch_size)]
    out = torch.cat(outs)
    return out[torch.argsort(order)]


def cosine(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity (N,)."""
    return F.cosine_similarity(pred.float(), ref.float(), dim=-1, eps=1e-8)


def recall_at_k(pred: torch.Tensor, ref: torch.Tensor, k: int = RECALL_K) -> float | None:
    """Mean fraction of each row's k nearest neighbours (cosine, itself excluded) under `ref` that
    are also among its k nearest under `pred`. None when there are not k+1 rows."""
    n = len(ref)
    if n <= k:
        return None
    k = min(k, n - 1)

    def neighbours(e: torch.Tensor) -> torch.Tensor:
        e = F.normalize(e.float(), dim=-1)
        sim = e @ e.T
        sim.fill_diagonal_(float("-inf"))
        return sim.topk(k, dim=1).indices

    a, b = neighbours(ref), neighbours(pred)
    hits = (a[:, :, None] == b[:, None, :]).any(-1).float().sum(1) / k
    return float(hits.mean())


class Task:
    name = "task"
    metric = "quality"  # the key `quality` is reported under too

    def scores(self, out: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, Any]:
        raise NotImplementedError

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, predict: Predict, x: Any, y: torch.Tensor, num_classes: int) -> dict[str, Any]:
        """{"quality", "quality_metric", <task metrics>}; quality None for an empty split."""
        if len(y) == 0:
            return {"quality": None, "quality_metric": self.metric}
        if y.ndim == 2 and y.shape[1] == 0:
            raise DataError(f"the {self.name} task has no targets yet: bind the reference model's outputs first "
                            "(frugalml.measure.task.bind_reference)")
        with torch.inference_mode():  # token batches of 32: the size latency is timed at (one compiled graph)
            out = outputs(predict, x, 32 if isinstance(x, Features) else 256)
        s = self.scores(out, y, num_classes)
        return {"quality": s[self.metric], "quality_metric": self.metric, **s}


class Classification(Task):
    name, metric = "classification", "accuracy"

    def scores(self, out: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, Any]:
        correct = (out.argmax(dim=1) == y).double()
        total = torch.bincount(y, minlength=num_classes)
        hit = torch.bincount(y, weights=correct, minlength=num_classes)
        per_class = [float(c / t) if t > 0 else None for c, t in zip(hit.tolist(), total.tolist())]
        return {"accuracy": float(correct.mean()), "per_class_accuracy": per_class}

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.float(), y)


class Embedding(Task):
    name, metric = "embedding", "cosine"

    def scores(self, out: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, Any]:
        if out.shape != y.shape:
            raise DataError(f"embedding task: the model gives {list(out.shape)} but the reference embeddings are "
                            f"{list(y.shape)}")
        cos = cosine(out, y)
        return {"cosine": float(cos.mean()), "cosine_min": float(cos.min()), "cosine_p05": float(cos.quantile(0.05)),
                "recall_at_10": recall_at_k(out, y)}

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (1.0 - cosine(out, y)).mean()


class Regression(Task):
    name, metric = "regression", "r2"

    def scores(self, out: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, Any]:
        y = y.float().reshape(len(y), -1)
        out = out.float().reshape(len(out), -1)
        if out.shape != y.shape:
            raise DataError(f"regression task: the model gives {list(out.shape)}, the targets are {list(y.shape)}")
        mse = float(F.mse_loss(out, y))
        var = float(y.var(dim=0, unbiased=False).mean())
        return {"r2": 1.0 - mse / var if var > 0 else None, "mse": mse}

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out.float().reshape(len(out), -1), y.float().reshape(len(y), -1))


TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Embedding(), Regression())}


def task_of(data: Any) -> Task:
    return TASKS[getattr(data, "task", "classification") or "classification"]


def quality(predict: Predict, data: Any, which: str = "test", limit: int | None = None) -> dict[str, Any]:
    """The task's metrics of `predict` on one split of `data` (first `limit` rows)."""
    x, y = data.split(which)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return task_of(data).evaluate(predict, x, y, data.num_classes)


def needs_reference(data: Any) -> bool:
    return getattr(data, "task", "classification") != "classification" and not data.has_targets


def bind_reference(data: Any, model: Any, name: str = "the first stage") -> bool:
    """For a reference-based task without targets: y of every split := `model`'s outputs (float32,
    computed once), `num_classes` := their width. In place; False when there was nothing to do."""
    if not needs_reference(data):
        return False
    from frugalml.train.evaluate import eval_mode

    with eval_mode(model), torch.no_grad():  # no_grad, not inference_mode: the targets enter training losses
        for which in ("train", "val", "test"):
            x = getattr(data, f"x_{which}")
            setattr(data, f"y_{which}", outputs(model, x, 64, trim=True) if len(x) else torch.zeros(0, 0))
    widths = {int(getattr(data, f"y_{w}").shape[-1]) for w in ("train", "val", "test") if len(getattr(data, f"y_{w}"))}
    data.num_classes = max(widths) if widths else 0
    data.reference = f"outputs of {name}"
    return True
