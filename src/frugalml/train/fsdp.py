"""Model sharding: FSDP2 (`fully_shard`) for models that do not fit one device, with sharded
checkpoints through torch.distributed.checkpoint (DCP) that load back into a single-process model.

- Units: every parameter-holding child of the model (a Sequential/ModuleList child contributes its
  children: one unit per block) is its own FSDP unit, then the root; one unit is gathered at a time.
- The Trainer trains a sharded copy; when training ends the full weights are gathered and loaded
  into the model it was given (so the caller's object holds the trained weights, as with one process).
- Gradients must be averaged. PyTorch reports that FSDP2 on gloo sums them instead
  (pytorch/pytorch#162338: gloo's reduce-scatter ignores ReduceOp.AVG). Before sharding, one tiny
  reduce-scatter with AVG checks the backend; where it does not average, FSDP is told to reduce with
  SUM and divide by N itself (`set_force_sum_reduction_for_comms`), and the stats say so.
- Checkpoints: every process writes its shard of the model and optimizer into `sharded-<epoch>/`
  (DCP); rank 0 writes the rest (state.json, RNG states). `load_sharded_weights` reads such a
  checkpoint into a plain model in one process.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from frugalml.errors import ArtifactError, UnsupportedError
from frugalml.train.distributed import ProcessGroupTraining

SHARDED_PREFIX = "sharded-"


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The model's children that hold parameters; a Sequential/ModuleList child (e.g. `features`)
    gives its own children instead (e.g. one unit per conv block)."""
    units: list[nn.Module] = []
    for child in model.children():
        parts = list(child.children()) if isinstance(child, (nn.Sequential, nn.ModuleList)) else [child]
        units += [p for p in parts if any(True for _ in p.parameters())]
    return units


def reduce_scatter_averages(device: torch.device) -> bool:
    """Does this backend's reduce-scatter with ReduceOp.AVG average? (pytorch/pytorch#162338)"""
    world, rank = dist.get_world_size(), dist.get_rank()
    out = torch.zeros(1, device=device)
    try:
        dist.reduce_scatter_single(out, torch.full((world,), float(rank + 1), device=device), op=dist.ReduceOp.AVG)
    except (RuntimeError, ValueError):
        return False
    return abs(float(out) - (world + 1) / 2) < 1e-6


class FullyShardedTraining(ProcessGroupTraining):
    def setup(self, trainer: Any) -> None:
        from torch.distributed.fsdp import fully_shard

        if trainer.cfg.early_stopping:
            raise UnsupportedError("train.early_stopping: not available with train.distributed.sharding: fsdp "
                                   "(the best weights would have to be gathered every epoch); use ddp")
        self.original = trainer.model
        model = copy.deepcopy(trainer.model)
        trainer.model = model
        self._start(trainer)
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:  # one starting point: rank 0's
                dist.broadcast(t, src=0)
        self.averages = reduce_scatter_averages(self.device)
        units = fsdp_units(model)
        for unit in units:
            fully_shard(unit)
        fully_shard(model)
        self._root = model
        if not self.averages:
            for unit in [*units, model]:
                unit.set_force_sum_reduction_for_comms(True)  # SUM, then FSDP divides by N

    def sync(self, last: bool) -> Any:
        self.meter.phase = "grad"
        self._root.set_requires_gradient_sync(last)
        return super().sync(last)

    def teardown(self, trainer: Any, ok: bool = True) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        self.meter.uninstall()
        try:
            if ok and hasattr(self, "_root"):  # gather the full weights (a collective)
                full = get_model_state_dict(self._root, options=StateDictOptions(full_state_dict=True))
                self.original.load_state_dict({k: v.cpu() for k, v in full.items()})
        finally:
            trainer.model = getattr(self, "original", trainer.model)

    def stats(self) -> dict:
        note = ("reduce-scatter averages" if self.averages else
                "this backend's reduce-scatter does not average (pytorch/pytorch#162338): FSDP reduces with "
                "SUM and divides by the number of processes")
        return {**super().stats(), "comm_hook": "none", "fsdp_gradient_reduction": note,
                "communication": self.meter.summary()}

    # --- checkpoints (collective: every process calls them) ----------------------------------------

    def save_sharded(self, model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path, epoch: int) -> str:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        name = f"{SHARDED_PREFIX}{epoch}"
        msd, osd = get_state_dict(model, optimizer)
        self.meter.phase = "epoch"
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(directory / name))
        return name

    def load_sharded(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, folder: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        if optimizer is None:
            raise ArtifactError(f"{folder}: a sharded checkpoint resumes only a run that trains (epochs > 0)")
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def drop_old_sharded(directory: Path, keep: str) -> None:
    """Rank 0, after state.json points at `keep`: remove older sharded folders."""
    for old in directory.glob(f"{SHARDED_PREFIX}*"):
        if old.name != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def load_sharded_weights(model: nn.Module, checkpoint_dir: str | Path) -> nn.Module:
    """Load the weights of an FSDP training checkpoint (any number of processes wrote it) into a plain
    single-process `model` of the same architecture; DCP reassembles the shards. Returns `model`."""
    import torch.distributed.checkpoint as dcp

    from frugalml.train.checkpoint import read_state

    d = Path(checkpoint_dir)
    name = read_state(d).get("sharded")
    if not name:
        raise ArtifactError(f"{d}: not a sharded (FSDP) checkpoint; it holds weights.safetensors")
    state = {"model": {k: v.clone() for k, v in model.state_dict().items()}}
    try:
        dcp.load(state, checkpoint_id=str(d / name), no_dist=True)
    except Exception as e:  # DCP raises CheckpointException and others for missing/corrupt shards
        raise ArtifactError(f"{d / name}: cannot read the sharded checkpoint ({type(e).__name__}: {e})") from None
    model.load_state_dict(state["model"])
    return model
