"""Where distillation loss terms get the teacher's outputs: one live forward pass per training batch
(shared by every term of that batch), or, when the teacher is frozen and the batches are the raw
training samples (no augmentation, no hint layers), a table of its logits computed once before
training and looked up by sample index: `epochs - 1` passes over the training split saved.

The Trainer does not hand sample indices to loss terms; `IndexedTrainer` uses its two documented
seams (`epoch_indices`, `forward`) to know which rows of the training split the current
micro-batch holds. Its first lookup is checked against a live forward pass, so a change in how the
Trainer slices batches fails loudly instead of distilling from the wrong samples.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from frugalml.train import Trainer
from frugalml.train.evaluate import eval_mode, predict_logits


class IndexedTrainer(Trainer):
    """The one Trainer, remembering which training rows each micro-batch holds (`batch_indices`)."""

    batch_indices: torch.Tensor | None = None

    def epoch_indices(self) -> torch.Tensor:
        self._perm, self._cursor = super().epoch_indices(), 0
        return self._perm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # micro-batches are consecutive slices of the epoch's permutation, taken in order
        self.batch_indices = self._perm[self._cursor : self._cursor + len(x)]
        self._cursor += len(x)
        return super().forward(x)


class _Tap:
    """Forward hook keeping a module's latest output (the first element of a tuple output)."""

    def __init__(self, module: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, output: object) -> None:
        self.value = output[0] if isinstance(output, (tuple, list)) else output  # type: ignore[assignment]


@contextmanager
def taps(model: nn.Module, names: Sequence[str]) -> Iterator[list[_Tap]]:
    """Forward hooks on `model`'s layers `names` (already validated) for the duration of the block."""
    hooks = [_Tap(model.get_submodule(n)) for n in names]
    try:
        yield hooks
    finally:
        for h in hooks:
            h.handle.remove()


class TeacherOutputs:
    """The teacher's logits (and hint-layer features) for the batch being trained on. The teacher
    is used in eval mode under no_grad and never trained; its mode flags are restored by `close()`."""

    def __init__(self, teacher: nn.Module, feature_layers: Sequence[str] = ()) -> None:
        self.teacher = teacher
        self.feature_layers = list(feature_layers)
        self.cache: torch.Tensor | None = None
        self.trainer: IndexedTrainer | None = None
        self.report: dict = {"used": False}
        self._batch: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]] | None = None
        self._checked = False
        self._modes = [(m, m.training) for m in teacher.modules()]
        self._taps = [_Tap(teacher.get_submodule(n)) for n in self.feature_layers]
        teacher.eval()

    def close(self) -> None:
        for t in self._taps:
            t.handle.remove()
        for m, training in self._modes:
            m.training = training

    def build_cache(self, x_train: torch.Tensor, epochs: int, reason_not: str | None) -> None:
        """Compute the teacher's logits on the whole training split once, unless `reason_not`."""
        if reason_not is not None:
            self.report = {"used": False, "reason": reason_not}
            return
        t0 = time.perf_counter()
        self.cache = predict_logits(self.teacher, x_train).float()
        seconds = time.perf_counter() - t0
        n = len(x_train)
        self.report = {
            "used": True,
            "samples": n,
            "seconds": round(seconds, 3),
            # each epoch would otherwise run the teacher over every training sample again
            "teacher_forward_samples_saved": max(epochs - 1, 0) * n,
            "estimated_seconds_saved": round(max(epochs - 1, 0) * seconds, 2),
            "note": "teacher frozen and batches un-augmented: its logits were computed once and looked up by sample",
        }

    def _live(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.no_grad():
            logits = self.teacher(x)
        return logits, [t.value for t in self._taps]  # type: ignore[misc]

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # every loss term of a micro-batch gets the same x object: one teacher pass serves them all
        if self._batch is not None and self._batch[0] is x:
            return self._batch[1], self._batch[2]
        if self.cache is not None:
            assert self.trainer is not None and self.trainer.batch_indices is not None, "cache needs an IndexedTrainer"
            logits = self.cache[self.trainer.batch_indices].to(x.device)
            if not self._checked:
                self._check(x, logits)
            feats: list[torch.Tensor] = []
        else:
            logits, feats = self._live(x)
        self._batch = (x, logits, feats)
        return logits, feats

    def _check(self, x: torch.Tensor, cached: torch.Tensor) -> None:
        with torch.autocast(x.device.type, enabled=False), eval_mode(self.teacher):
            live, _ = self._live(x.float())
        if not torch.allclose(live.float(), cached, atol=1e-3, rtol=1e-3):
            raise RuntimeError("distillation cache misaligned: cached teacher logits differ from a live pass "
                               "(did the Trainer change how it slices batches?)")
        self._checked = True

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._forward(x)[1]

    # --- Trainer callback ---------------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer) -> None:
        self.trainer = trainer  # type: ignore[assignment]

    def epoch(self) -> int:
        return max(self.trainer.epoch, 1) if self.trainer is not None else 1
