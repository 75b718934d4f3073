"""Backend `torch` for mode `codebook`: weight sharing (Deep Compression). Every conv/linear weight is
clustered with k-means into 2**bits shared values (zeros stay zeros: pruned positions are not
clustered; BatchNorm is first folded into the convolutions, exactly, so its statistics need no
storage of their own), the centroids are fine-tuned through the one Trainer (`frugalml.compress.storage`'s
parametrization moves each centroid by the mean gradient of the weights sharing it, so one `qat.lr`
suits dense and sparse layers alike), then baked back into plain
weights. The model computes in fp32 as before; what shrinks is the file: the packed storage stores
each weight as a `bits`-wide code, entropy-coded, plus its position when the model is sparse. With
`half_floats`, every float32 parameter and buffer (centroids, biases) is then rounded to float16
values, which the packed storage keeps in 2 bytes each; a tensor float16 cannot hold (values beyond
65504) stays float32, with a note.

Artifact (format `torch-codebook`): one packed safetensors file of the baked weights.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from frugalml.artifact import Trust, load_state
from frugalml.compress.fold import fold_batchnorm
from frugalml.compress.quantize.base import (
    QuantizeContext,
    QuantizedModel,
    SafeTensors,
    float_skeleton,
    read_tensors,
    saved_settings,
)
from frugalml.compress.quantize.registry import Backend, register_backend

FORMAT = "torch-codebook"
TENSORS = "model.safetensors"
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


class CodebookModel(QuantizedModel):
    format = FORMAT

    def __init__(self, module: nn.Module, cost_model: nn.Module, settings: dict) -> None:
        super().__init__(f"torch-eager-codebook{settings.get('bits', 4)}", cost_model, settings)
        self.module = module

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x)

    def artifact(self) -> tuple[dict[str, SafeTensors], dict]:
        return {TENSORS: SafeTensors({k: v.clone() for k, v in self.module.state_dict().items()})}, {}


def layer_bits(model: nn.Module, settings: dict) -> dict[str, int]:
    """Layer name -> code width: `layer_bits` entries win over the stage's `bits`."""
    own = settings.get("layer_bits") or {}
    return {n: int(own.get(n, settings.get("bits", 4))) for n, m in model.named_modules() if isinstance(m, LAYERS)}


def round_to_half(module: nn.Module) -> list[str]:
    """Round every float32 parameter and buffer (centroids, biases; BatchNorm statistics when it was not
    folded) to float16 values in place; returns the names of those left alone because float16 would
    turn some of their values into inf."""
    kept = []
    for name, t in (*module.named_parameters(), *module.named_buffers()):
        if t.dtype != torch.float32:
            continue
        rounded = t.half().float()
        if bool((torch.isfinite(rounded) | ~torch.isfinite(t)).all()):
            t.copy_(rounded)
        else:
            kept.append(name)
    return kept


def fine_tune_centroids(model: nn.Module, ctx: QuantizeContext, teacher: nn.Module) -> dict | None:
    """Train only the codebooks (and the float parameters outside the clustered weights) with the Trainer;
    with `qat.distill` > 0, toward `teacher`'s outputs (the model before quantization) too."""
    from frugalml.train import Trainer, require_labels

    if ctx.train is None or ctx.train.epochs == 0 or ctx.data is None:
        return None
    require_labels(ctx.data, "quantize mode codebook: qat (centroid fine-tuning)")
    checkpoints = ctx.workdir / "codebook" if ctx.workdir is not None else None
    ctx.log.info("codebook: fine-tuning the centroids for %d epoch(s) at lr %g", ctx.train.epochs, ctx.train.lr)
    result = Trainer(model, ctx.data, ctx.train, loss_terms=ctx.loss_terms(teacher), checkpoint_dir=checkpoints,
                     log=ctx.log, progress=False).fit(resume=ctx.resume)
    return {"epochs_run": result.epochs_run, "best_val_accuracy": result.best_val_accuracy, **ctx.distill_report()}


class CodebookBackend(Backend):
    name = "torch"
    about = "k-means weight sharing (codebooks), fp32 compute"
    modes = ("codebook",)
    formats = (FORMAT,)

    def quantize(self, model: nn.Module, settings: dict, ctx: QuantizeContext) -> CodebookModel:
        from frugalml.compress.storage import apply_codebooks, bake_codebooks

        module = copy.deepcopy(model).eval()
        folded = fold_batchnorm(module) if settings.get("fold_batchnorm", True) else {}
        module.train()
        bits = layer_bits(module, settings)
        apply_codebooks(module, bits)
        report = fine_tune_centroids(module, ctx, teacher=model)
        bake_codebooks(module)
        with torch.no_grad():
            # the packed storage keeps float16-exact fp32 in 2 bytes
            kept = round_to_half(module) if settings.get("half_floats") else []
            for p in module.parameters():  # masked negative weights are -0.0: store them as the zeros they are
                p.add_(0.0)
        # the folded model is what runs (and what params/MACs describe); its spec records the folding
        q = CodebookModel(module.eval(), module, {**settings, "layer_bits": bits})
        if folded:
            q.spec_changes["fold_bn"] = folded
            q.frugal_report["folded_batchnorm"] = len(folded)
        if report is not None:
            q.frugal_report["codebook_training"] = report
        if kept:
            note = (f"half_floats: {len(kept)} tensor(s) hold values beyond float16's range and stay float32: "
                    f"{', '.join(kept[:5])}{' …' if len(kept) > 5 else ''}")
            ctx.log.warning(note)
            q.frugal_report.setdefault("notes", []).append(note)
        return q

    def load(self, directory: Path, info: dict, trust_code: Trust = False) -> CodebookModel:
        settings = saved_settings(info, directory)
        module = load_state(float_skeleton(info, directory, trust_code), read_tensors(directory, TENSORS), info,
                            directory)
        return CodebookModel(module, module, settings)


register_backend(CodebookBackend())
