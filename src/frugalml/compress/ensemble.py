"""The `ensemble` stage: one model that runs several and averages their outputs.

    from frugalml.compress.ensemble import ensemble
    ens = ensemble([m1, m2, m3])              # an nn.Module: log of the mean probability

Its cost is what it really is, the sum of its members': every member runs on every input, and the
pipeline measures params, MACs and latency on the whole module. It can be a teacher like any stage
(`kind: distill, teacher: <ensemble stage>`): the seed's "model fusion" into one student.

Artifact format `torch-ensemble`: one safetensors file with every member's tensors (`members.<i>.`),
and in model.json each member's ModelSpec and module attributes, so pruned or factorized members
load back exactly (each member is rebuilt as its own artifact would be; user factories need
trust_code as usual).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, ValidationError, field_validator

from frugalml import artifact
from frugalml._io import save_tensors_atomic
from frugalml.compress.distill.refs import require_float, resolve
from frugalml.errors import ArtifactError, ConfigError
from frugalml.schemas import ARTIFACT_VERSION, ModelSpecSchema
from frugalml.stages import StageConfig, StageContext, register_stage
from frugalml.train.evaluate import predict_logits

FORMAT = "torch-ensemble"
SPEC_NAME = "ensemble"  # not a zoo model: only this format's loader rebuilds it
Combine = Literal["probs", "logits"]


class Ensemble(nn.Module):
    """Runs every member and averages: their probabilities (`probs`, returned as the log of the mean
    probability, i.e. logits whose softmax is that mean) or their logits (`logits`)."""

    def __init__(self, members: Sequence[nn.Module], combine: Combine = "probs") -> None:
        super().__init__()
        if combine not in ("probs", "logits"):
            raise ValueError(f"combine must be 'probs' or 'logits', not {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([m(x) for m in self.members]).float()
        if self.combine == "logits":
            return outs.mean(0)
        return torch.logsumexp(F.log_softmax(outs, dim=-1), dim=0) - math.log(len(self.members))


class EnsembleStage(StageConfig):
    """Average the outputs of several earlier stages or artifact folders (at least two, same data).
    Measured as the sum it is: every member runs. Distil it into one student with a `distill`
    stage whose `teacher:` is this stage."""

    kind: Literal["ensemble"] = "ensemble"
    members: list[str] = Field(description="earlier stage names or artifact folders")
    combine: Combine = Field("probs", description="average probabilities (probs) or logits")

    @field_validator("members")
    @classmethod
    def _at_least_two(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(v)} ({', '.join(v) or 'none'})")
        twice = sorted({m for m in v if v.count(m) > 1})
        if twice:
            raise ValueError(f"{twice[0]!r} is listed twice; an ensemble of copies only costs more")
        return v

    def starts_fresh(self) -> bool:
        return True  # it is made from its members, not from one parent


def ensemble(models: Sequence[nn.Module], combine: Combine = "probs") -> Ensemble:
    """An Ensemble of copies of `models` (the inputs are untouched)."""
    if len(models) < 2:
        raise ConfigError(f"ensemble: needs at least 2 models, got {len(models)}")
    return Ensemble([copy.deepcopy(m).eval() for m in models], combine)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


@register_stage(EnsembleStage)
def run_ensemble_stage(model: nn.Module | None, cfg: EnsembleStage, ctx: StageContext) -> nn.Module:
    where = f"stages.{cfg.name or 'ensemble'}.members"
    refs = [resolve(m, ctx, f"{where}.{i}") for i, m in enumerate(cfg.members)]
    members = []
    for i, ref in enumerate(refs):
        require_float(ref, f"{where}.{i}", "ensemble")
        member = copy.deepcopy(ref.model).eval()  # our own copy: the pipeline's models stay as they are
        member.frugal_spec = ref.spec
        members.append(member)
    ens = Ensemble(members, cfg.combine)
    data = ctx.data
    ctx.model_spec = {"name": SPEC_NAME, "kwargs": {"members": len(members), "combine": cfg.combine},
                      "input_shape": list(data.input_shape), "num_classes": data.num_classes}
    ctx.artifact_meta["format"] = FORMAT
    if len(data.y_test):
        accs = {r.name: _accuracy(predict_logits(m, data.x_test), data.y_test) for r, m in zip(refs, members)}
        best = max(accs, key=accs.__getitem__)
        acc = _accuracy(predict_logits(ens, data.x_test), data.y_test)
        ctx.extra_metrics["ensemble"] = {
            "members": {r.name: {"test_accuracy": accs[r.name], "params": sum(p.numel() for p in m.parameters())}
                        for r, m in zip(refs, members)},
            "combine": cfg.combine,
            "best_member": best,
            "best_member_test_accuracy": accs[best],
            "test_accuracy": acc,
            "gain_over_best_member_pts": round(100 * (acc - accs[best]), 3),
            "cost": "the sum of the members': every member runs on every input",
        }
    return ens


# --- artifact format ------------------------------------------------------------------------------------


def save_ensemble(model: nn.Module, directory: Path, spec: dict, meta: dict) -> Path:
    if not isinstance(model, Ensemble):
        raise ArtifactError(f"{directory}: format {FORMAT} saves an Ensemble, got {type(model).__name__}")
    members = [{"spec": artifact.spec_of(m), "module_attributes": artifact.module_attributes(m)} for m in model.members]
    if spec.get("name") != SPEC_NAME:  # e.g. save_any(ens, dir, {}, {"format": "torch-ensemble"}) from Python
        first = members[0]["spec"]
        spec = {"name": SPEC_NAME, "kwargs": {"members": len(members), "combine": model.combine},
                "input_shape": first["input_shape"], "num_classes": first["num_classes"]}
    directory.mkdir(parents=True, exist_ok=True)
    tensors, aliases = artifact.dedupe_tensors(dict(model.state_dict()))
    save_tensors_atomic(tensors, directory / "model.safetensors")
    info = {"frugalml_artifact": ARTIFACT_VERSION, **meta, "format": FORMAT, "spec": spec,
            "combine": model.combine, "members": members, "aliases": aliases}
    artifact.write_info(directory, info)
    return directory


def load_ensemble(directory: Path, info: dict, trust_code: artifact.Trust = False) -> nn.Module:
    where = directory / "model.json"
    members = info.get("members")
    if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) for m in members):
        raise ArtifactError(f"{where}: corrupt {FORMAT} artifact: 'members' must list at least 2 member records")
    if info.get("combine") not in ("probs", "logits"):
        raise ArtifactError(f"{where}: corrupt {FORMAT} artifact: combine must be 'probs' or 'logits'")
    built = []
    for i, m in enumerate(members):
        try:
            spec = ModelSpecSchema.model_validate(m.get("spec")).model_dump()
        except ValidationError as e:
            raise ArtifactError(f"{where}: members.{i}.spec: {e.errors()[0]['msg']}") from None
        if spec["input_shape"] != info["spec"]["input_shape"] or spec["num_classes"] != info["spec"]["num_classes"]:
            raise ArtifactError(f"{where}: members.{i} takes other inputs or classes than the ensemble")
        built.append(artifact.skeleton({"spec": spec, "module_attributes": m.get("module_attributes") or {}},
                                       directory, trust_code))
    ens = Ensemble(built, info["combine"])
    return artifact.load_state(ens, artifact.load_tensors(directory / "model.safetensors"), info, directory)


artifact.register_format(FORMAT, save_ensemble, load_ensemble)
