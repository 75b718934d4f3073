"""Feature ("hint") distillation, FitNets-style (Romero et al. 2015): a student layer's output
regresses a teacher layer's output through a learned adapter, chosen from the shapes the two layers
really produce: a 1x1 convolution for feature maps (N, C, H, W), a Linear for vectors (N, F) and
sequences (N, L, F); none when the widths already match. Feature maps of different resolution are
average-pooled to the smaller one. Layers are named as in `model.named_modules()`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from frugalml.compress.distill.cache import taps
from frugalml.config import Config
from frugalml.errors import ConfigError
from frugalml.train.evaluate import eval_mode

MAX_CANDIDATES = 30  # layer names listed in an error message


class Hint(Config):
    """Match the student's `student` layer to the teacher's `teacher` layer: `weight * MSE(adapter(s), t)`.
    The adapter (1x1 conv or Linear when widths differ) is trained with the student and dropped after."""

    student: str = Field(min_length=1, description="layer of the student (a name from named_modules())")
    teacher: str = Field(min_length=1, description="layer of the teacher")
    weight: float = Field(1.0, gt=0, description="weight of this hint's MSE in the training loss")


def layer_candidates(model: nn.Module) -> str:
    names = [n for n, _ in model.named_modules() if n]
    if len(names) > MAX_CANDIDATES:  # the shallowest names first: blocks, then their parts
        names = sorted(names, key=lambda n: (n.count("."), names.index(n)))[:MAX_CANDIDATES]
        return ", ".join(names) + ", ..."
    return ", ".join(names) or "(none: the model has no submodules)"


def check_layer(model: nn.Module, name: str, where: str, role: str) -> None:
    if not name or name not in dict(model.named_modules()):
        raise ConfigError(f"{where}: the {role} has no layer {name!r}; candidates: {layer_candidates(model)}")


def _sample_features(model: nn.Module, layers: Sequence[str], x: torch.Tensor, where: str,
                     role: str) -> list[torch.Tensor]:
    with taps(model, layers) as hooks, eval_mode(model), torch.no_grad():
        model(x)
    out = []
    for name, hook in zip(layers, hooks):
        if not isinstance(hook.value, torch.Tensor):
            raise ConfigError(f"{where}: the {role}'s layer {name!r} did not run or returned no tensor; "
                              "choose a layer the forward pass uses")
        out.append(hook.value)
    return out


class Adapter(nn.Module):
    """Maps a student feature onto the teacher feature's width (and, for maps, resolution)."""

    def __init__(self, s_shape: Sequence[int], t_shape: Sequence[int], where: str) -> None:
        super().__init__()
        s_shape, t_shape = tuple(s_shape), tuple(t_shape)
        if len(s_shape) != len(t_shape) or len(s_shape) not in (2, 3, 4):
            raise ConfigError(f"{where}: student feature {list(s_shape[1:])} and teacher feature "
                              f"{list(t_shape[1:])} cannot be matched; pick layers of the same kind "
                              "(both feature maps, both vectors)")
        if len(s_shape) == 3 and s_shape[1] != t_shape[1]:
            raise ConfigError(f"{where}: sequence lengths differ ({s_shape[1]} vs {t_shape[1]})")
        self.maps = len(s_shape) == 4
        cs, ct = (s_shape[1], t_shape[1]) if self.maps else (s_shape[-1], t_shape[-1])
        self.size = min(s_shape[2:], t_shape[2:]) if self.maps else None
        self.proj: nn.Module = nn.Identity()
        if cs != ct:
            self.proj = nn.Conv2d(cs, ct, 1, bias=False) if self.maps else nn.Linear(cs, ct, bias=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        s = self.proj(s)
        if self.maps and tuple(s.shape[2:]) != tuple(self.size):  # type: ignore[arg-type]
            s = F.adaptive_avg_pool2d(s, self.size)
        return s

    def match_teacher(self, t: torch.Tensor) -> torch.Tensor:
        if self.maps and tuple(t.shape[2:]) != tuple(self.size):  # type: ignore[arg-type]
            t = F.adaptive_avg_pool2d(t, self.size)
        return t


class StudentWithAdapters(nn.Module):
    """What the Trainer trains when hints are used: the student plus its adapters (so the optimizer
    and checkpoints include them). The forward pass is the student's alone."""

    def __init__(self, student: nn.Module, adapters: Sequence[Adapter]) -> None:
        super().__init__()
        self.student = student
        self.adapters = nn.ModuleList(adapters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def build_adapters(student: nn.Module, teacher: nn.Module, hints: Sequence[Hint], x: torch.Tensor,
                   where: str) -> list[Adapter]:
    """Validate the hint layers (one ConfigError listing candidates) and size an adapter for each
    from the features the layers produce on `x`."""
    for i, h in enumerate(hints):
        check_layer(student, h.student, f"{where}.hints.{i}.student", "student")
        check_layer(teacher, h.teacher, f"{where}.hints.{i}.teacher", "teacher")
    s_feats = _sample_features(student, [h.student for h in hints], x, f"{where}.hints", "student")
    t_feats = _sample_features(teacher, [h.teacher for h in hints], x, f"{where}.hints", "teacher")
    return [Adapter(s.shape, t.shape, f"{where}.hints.{i}") for i, (s, t) in enumerate(zip(s_feats, t_feats))]


class HintTerm:
    """Trainer loss term for all hints: `sum_i weight_i * MSE(adapter_i(student_i), teacher_i)`.
    Student features come from forward hooks (`student_feats()`, read after the forward pass);
    teacher features from `teacher_feats(x)` (cache.TeacherOutputs.features)."""

    def __init__(self, hints: Sequence[Hint], adapters: Sequence[Adapter],
                 student_feats: Callable[[], list[torch.Tensor]],
                 teacher_feats: Callable[[torch.Tensor], list[torch.Tensor]]) -> None:
        self.weights = [h.weight for h in hints]
        self.adapters, self.student_feats, self.teacher_feats = list(adapters), student_feats, teacher_feats

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for w, a, s, t in zip(self.weights, self.adapters, self.student_feats(), self.teacher_feats(x)):
            total = total + w * F.mse_loss(a(s).float(), a.match_teacher(t.detach()).float())
        return total
