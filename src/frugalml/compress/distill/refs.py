"""Models that a stage names rather than receives (teachers, ensemble members, soup ingredients): an
earlier stage of the run, by name, or an artifact folder, by path. Shared by distill, ensemble and
average; every mismatch with the data is one ConfigError naming the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from frugalml import artifact
from frugalml.data.bundle import DataBundle
from frugalml.errors import ArtifactError, ConfigError
from frugalml.stages import StageContext
from frugalml.train.evaluate import eval_mode


@dataclass
class ModelRef:
    name: str  # the stage name or the path, as the config wrote it
    model: nn.Module  # shared with the pipeline: never trained or mutated in place
    spec: dict | None  # how to rebuild it (None: a module frugalml cannot rebuild)


def resolve(ref: str, ctx: StageContext, where: str) -> ModelRef:
    """The model `ref` names: an earlier stage's, else the artifact folder at that path."""
    if ref in ctx.stage_models:
        model = ctx.stage_models[ref]
        ref_model = ModelRef(ref, model, getattr(model, "frugal_spec", None))
    elif (Path(ref) / "model.json").is_file():
        try:
            info = artifact.read_info(ref)
            ctx.data.check_fits(info["spec"], f"{where}: {ref}")
            ref_model = ModelRef(ref, artifact.load(ref, trust_code=ctx.trust_code), info["spec"])
        except ArtifactError as e:
            raise ConfigError(f"{where}: {e}") from None
    else:
        earlier = ", ".join(ctx.stage_models) or "none"
        raise ConfigError(f"{where}: {ref!r} is neither an earlier stage (earlier: {earlier}) nor an artifact "
                          "folder (no model.json there)")
    check_outputs(ref_model.model, ctx.data, where, repr(ref))
    return ref_model


def check_outputs(model: nn.Module, data: DataBundle, where: str, what: str) -> None:
    """One forward pass on two real samples: the model must take the data's input and predict its
    classes (a teacher, member or student built for other data fails here, not mid-training)."""
    x = data.sample_input(2)
    try:
        with eval_mode(model), torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f"{where}: {what} does not take the data's input {list(data.input_shape)} ({first})") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{where}: {what} returns {shape} for 2 samples; expected logits (2, {data.num_classes})")
    if out.shape[1] != data.num_classes:
        raise ConfigError(f"{where}: {what} predicts {out.shape[1]} classes, but the data (and so the student) "
                          f"has {data.num_classes}")


def require_float(ref: ModelRef, where: str, role: str) -> None:
    """Ensembles and soups hold float torch models that frugalml can rebuild from their spec."""
    runtime = getattr(ref.model, "frugal_runtime", None)
    if runtime is not None:
        raise ConfigError(f"{where}: {ref.name!r} is a {runtime} model; a {role} takes float models "
                          "(name the stage it was made from)")
    if ref.spec is None:
        raise ConfigError(f"{where}: {ref.name!r} has no ModelSpec, so the {role} could not be saved; "
                          "build it with frugalml.build_model or give it a frugal_spec")
