"""Semi-supervised methods: each a config class plus an object that is both a Trainer loss term and a
Trainer callback (so its state — unlabelled-batch order, augmentation generators, adaptive thresholds,
the EMA teacher — is checkpointed with the run and resumes exactly).

Every training step the loss term draws `mu * batch_size` unlabelled images and adds its unsupervised
loss to the labelled cross-entropy:
- PseudoLabel (Lee 2013): the model's own confident predictions on weakly augmented images are targets;
- FixMatch (Sohn et al. 2020): confident predictions on a weak view are targets for a strong view;
- FlexMatch (Zhang et al. 2021): FixMatch with a threshold per class, lowered for classes the model
  has learned less of (curriculum pseudo-labelling, with warm-up);
- MeanTeacher (Tarvainen & Valpola 2017): an EMA copy of the model gives targets; consistency loss.
Pseudo-label quantity (share above threshold) and precision (share correct, measured with the pool's
true labels, which nothing trains on) go into each epoch's history.
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any, Literal, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Discriminator, Field, Tag

from frugalml.config import Config
from frugalml.data.augment import AugmentConfig, make_augment
from frugalml.data.bundle import DataBundle


class _Method(Config):
    threshold: float = Field(0.95, gt=0, le=1, description="confidence a pseudo-label needs")
    mu: int = Field(3, ge=1, description="unlabelled batch = mu * train.batch_size")
    weight: float = Field(1.0, ge=0, description="weight of the unsupervised loss")


class PseudoLabel(_Method):
    """Self-training: confident predictions on weakly augmented unlabelled images become targets."""

    name: Literal["pseudo_label"] = "pseudo_label"
    ramp_epochs: float = Field(1.0, ge=0, description="unsupervised weight rises over this many epochs")
    weak: AugmentConfig = AugmentConfig.preset("weak")


class FixMatch(_Method):
    """Confident predictions on a weak view are targets for a strong view of the same image."""

    name: Literal["fixmatch"] = "fixmatch"
    weak: AugmentConfig = AugmentConfig.preset("weak")
    strong: AugmentConfig = AugmentConfig.preset("strong")


class FlexMatch(FixMatch):
    """FixMatch with per-class thresholds that adapt to how well each class is learned."""

    name: Literal["flexmatch"] = "flexmatch"  # type: ignore[assignment]
    warmup: bool = Field(True, description="count never-confident samples as unlearned (threshold warm-up)")


class MeanTeacher(_Method):
    """An exponential moving average of the model is the teacher; student and teacher must agree."""

    name: Literal["mean_teacher"] = "mean_teacher"
    ema: float = Field(0.99, gt=0, lt=1, description="teacher = ema * teacher + (1 - ema) * student, every step")
    weight: float = Field(10.0, ge=0, description="weight of the consistency loss (MSE of probabilities)")
    ramp_epochs: float = Field(2.0, ge=0)
    use_teacher: bool = Field(True, description="the stage's model is the teacher (usually the better one)")
    weak: AugmentConfig = AugmentConfig.preset("weak")


METHOD_NAMES = ("pseudo_label", "fixmatch", "flexmatch", "mean_teacher")
# a custom error type: the recipe's messages treat standard union-tag errors as stage-kind errors
MethodConfig = Annotated[
    Union[tuple(Annotated[c, Tag(n)] for c, n in zip((PseudoLabel, FixMatch, FlexMatch, MeanTeacher), METHOD_NAMES))],  # noqa: UP007
    Discriminator(lambda v: v.get("name") if isinstance(v, dict) else getattr(v, "name", None),
                  custom_error_type="unknown_method",
                  custom_error_message=f"method.name must be one of: {', '.join(METHOD_NAMES)}"),
]


def masked_pseudo_label_loss(student: torch.Tensor, target: torch.Tensor, threshold: float | torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy of `student` logits against the argmax of `target` logits, counted only where the
    target's confidence reaches `threshold` (a number, or one per sample); averaged over all samples
    as in FixMatch. Returns (loss, mask, pseudo-labels)."""
    probs = target.detach().float().softmax(1)
    conf, pseudo = probs.max(1)
    mask = (conf >= threshold).float()
    loss = (F.cross_entropy(student.float(), pseudo, reduction="none") * mask).mean()
    return loss, mask, pseudo


class UnlabelledStream:
    """Endless batches of pool indices: a fresh permutation per pass, from its own generator."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch = n, min(batch, n)
        self.generator = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(n, generator=self.generator), 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": torch.tensor(self.pos)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.pos = state["perm"].long(), int(state["pos"])


class SemiSupTerm:
    """Base runtime: unlabelled batches, views, statistics, checkpointable state."""

    def __init__(self, cfg: Any, data: DataBundle, seed: int, batch_size: int) -> None:
        assert data.x_unlabelled is not None
        self.cfg, self.x_u, self.y_u = cfg, data.x_unlabelled, data.y_unlabelled
        self.stream = UnlabelledStream(len(self.x_u), cfg.mu * batch_size, seed + 101)
        black, white = (0.0 - data.mean) / data.std, (1.0 - data.mean) / data.std
        self.views = {name: make_augment(getattr(cfg, name), seed + 102 + i, fill=black, value_range=(black, white))
                      for i, name in enumerate(("weak", "strong")) if hasattr(cfg, name)}
        self.counts = torch.zeros(3, dtype=torch.long)  # seen, above threshold, correct among those
        self.trainer: Any = None

    def view(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.views[name](x, None)[0]

    def batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.stream.next()
        return idx, self.x_u[idx].to(device)

    def count(self, idx: torch.Tensor, mask: torch.Tensor, pseudo: torch.Tensor) -> None:
        used = mask.bool().cpu()
        truth = self.y_u[idx] if self.y_u is not None else pseudo.cpu()
        self.counts += torch.tensor([len(idx), int(used.sum()), int((pseudo.cpu()[used] == truth[used]).sum())])

    def ramp(self, epochs: float) -> float:
        """Sigmoid ramp-up exp(-5 (1 - t)^2) over `epochs` (Laine & Aila 2017)."""
        if not epochs or self.trainer is None:
            return 1.0
        t = min(self.trainer.step / max(epochs * self.trainer.steps_per_epoch, 1), 1.0)
        return math.exp(-5.0 * (1.0 - t) ** 2)

    # --- Trainer callback hooks ---------------------------------------------------------------------------
    def on_train_start(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict) -> None:
        seen, used, correct = (int(v) for v in self.counts)
        metrics["pseudo_quantity"] = used / seen if seen else None
        metrics["pseudo_precision"] = correct / used if used else None
        self.counts.zero_()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {f"stream.{k}": v for k, v in self.stream.state_dict().items()}
        state.update({f"view.{n}": v.generator.get_state() for n, v in self.views.items()})
        state["counts"] = self.counts.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("stream.")})
        for n, v in self.views.items():
            v.generator.set_state(state[f"view.{n}"])
        self.counts = state["counts"].long().clone()


class PseudoLabelTerm(SemiSupTerm):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        idx, xu = self.batch(logits.device)
        out = model(self.view("weak", xu))
        loss, mask, pseudo = masked_pseudo_label_loss(out, out, self.cfg.threshold)
        self.count(idx, mask, pseudo)
        return self.cfg.weight * self.ramp(self.cfg.ramp_epochs) * loss


class FixMatchTerm(SemiSupTerm):
    def thresholds(self, weak_logits: torch.Tensor, idx: torch.Tensor) -> float | torch.Tensor:
        return self.cfg.threshold

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        idx, xu = self.batch(logits.device)
        with torch.no_grad():
            weak = model(self.view("weak", xu))
        strong = model(self.view("strong", xu))
        loss, mask, pseudo = masked_pseudo_label_loss(strong, weak, self.thresholds(weak, idx))
        self.count(idx, mask, pseudo)
        return self.cfg.weight * loss


class FlexMatchTerm(FixMatchTerm):
    def __init__(self, cfg: FlexMatch, data: DataBundle, seed: int, batch_size: int) -> None:
        super().__init__(cfg, data, seed, batch_size)
        self.num_classes = data.num_classes
        self.learned = torch.full((len(self.x_u),), -1, dtype=torch.long)  # last confident class per sample

    def class_thresholds(self) -> torch.Tensor:
        sigma = torch.bincount(self.learned[self.learned >= 0], minlength=self.num_classes).float()
        unused = float((self.learned < 0).sum())
        denom = max(float(sigma.max()), unused) if self.cfg.warmup else float(sigma.max())
        beta = sigma / denom if denom > 0 else torch.zeros_like(sigma)
        return self.cfg.threshold * beta / (2.0 - beta)  # the convex mapping M(x) = x / (2 - x)

    def thresholds(self, weak_logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        conf, pred = weak_logits.detach().float().softmax(1).max(1)
        thr = self.class_thresholds().to(conf.device)[pred]
        confident = (conf > self.cfg.threshold).cpu()
        self.learned[idx[confident]] = pred.cpu()[confident]
        return thr

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "learned": self.learned.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.learned = state["learned"].long().clone()


class MeanTeacherTerm(SemiSupTerm):
    def __init__(self, cfg: MeanTeacher, data: DataBundle, seed: int, batch_size: int) -> None:
        super().__init__(cfg, data, seed, batch_size)
        self.teacher: nn.Module | None = None

    def on_train_start(self, trainer: Any) -> None:
        super().on_train_start(trainer)
        self.teacher = copy.deepcopy(trainer.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        assert self.teacher is not None
        idx, xu = self.batch(logits.device)
        with torch.no_grad():
            target = self.teacher(self.view("weak", xu)).float()
        student = model(self.view("weak", xu)).float()
        _, mask, pseudo = masked_pseudo_label_loss(student, target, self.cfg.threshold)
        self.count(idx, mask, pseudo)
        consistency = ((student.softmax(1) - target.softmax(1)) ** 2).sum(1).mean()
        return self.cfg.weight * self.ramp(self.cfg.ramp_epochs) * consistency

    @torch.no_grad()
    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        assert self.teacher is not None
        # a short warm-up uses the true average while the model changes fast (Tarvainen & Valpola)
        ema = min(self.cfg.ema, 1.0 - 1.0 / (step + 1))
        for t, s in zip(self.teacher.parameters(), trainer.model.parameters()):
            t.mul_(ema).add_(s.detach(), alpha=1 - ema)
        for t, s in zip(self.teacher.buffers(), trainer.model.buffers()):
            t.copy_(s)

    def on_train_end(self, trainer: Any) -> None:
        if self.cfg.use_teacher and self.teacher is not None:
            trainer.model.load_state_dict(self.teacher.state_dict())

    def state_dict(self) -> dict[str, Any]:
        assert self.teacher is not None
        teacher = {f"teacher.{k}": v.detach().clone() for k, v in self.teacher.state_dict().items()}
        return {**super().state_dict(), **teacher}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        assert self.teacher is not None
        self.teacher.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("teacher.")})


RUNTIMES: dict[type, type[SemiSupTerm]] = {
    PseudoLabel: PseudoLabelTerm, FixMatch: FixMatchTerm, FlexMatch: FlexMatchTerm, MeanTeacher: MeanTeacherTerm,
}


def make_method(cfg: Any, data: DataBundle, seed: int, batch_size: int) -> SemiSupTerm:
    return RUNTIMES[type(cfg)](cfg, data, seed, batch_size)
