"""What of a Trainer is checkpointed each epoch, and how it is restored (file format: checkpoint.py).

With several processes: rank 0 writes (the model and optimizer are the same on every process), except
that each process's RNG states are gathered and stored under `rank<r>.` so every process resumes its
own dropout/augmentation stream; with FSDP every process also writes its shard (`sharded-<epoch>/`).
Every process reads the checkpoint on resume.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from frugalml.errors import ArtifactError, ConfigError
from frugalml.train import checkpoint as ckpt


def stateful(trainer: Any) -> list[tuple[str, Any]]:
    named = [(f"transform{i}", t) for i, t in enumerate(trainer.batch_transforms)]
    named += [(f"callback{i}", c) for i, c in enumerate(trainer.callbacks)]
    return [(n, o) for n, o in named if hasattr(o, "state_dict") and hasattr(o, "load_state_dict")]


def model_signature(model: torch.nn.Module) -> str:
    shapes = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    return hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:16]


def _generators(trainer: Any) -> dict[str, torch.Generator]:
    gens = {"shuffle": trainer.generator}
    if trainer.augment is not None:
        gens["augment"] = trainer.augment.generator
    return gens


def _rng_of_every_rank(trainer: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, meta = ckpt.capture_rng({"shuffle": trainer.generator})
    if trainer.dist.world == 1:
        return tensors, meta
    per_rank = trainer.dist.gather(ckpt.capture_rng(_generators(trainer)))
    for r, (t, m) in enumerate(per_rank):
        tensors.update({f"rank{r}.{k}": v for k, v in t.items()})
        meta[f"rank{r}"] = m
    meta["world"] = trainer.dist.world
    return tensors, meta


def save(trainer: Any, write_best: bool) -> None:
    """Collective with several processes (every process must call it)."""
    t, d = trainer, trainer.checkpoint_dir
    assert d is not None and t.optimizer is not None and t.scheduler is not None
    rng_tensors, rng_meta = _rng_of_every_rank(t)
    sharded = t.dist.save_sharded(t.model, t.optimizer, d, t.epoch) if hasattr(t.dist, "save_sharded") else None
    if not t.dist.is_main:
        return
    tensors, opt_meta = ({}, {}) if sharded else ckpt.flatten_optimizer(t.optimizer)
    tensors.update(rng_tensors)
    ext_meta: dict[str, dict] = {}
    for name, obj in stateful(t):
        for key, val in obj.state_dict().items():
            if isinstance(val, torch.Tensor):
                tensors[f"ext.{name}.{key}"] = val.detach().clone()
            else:
                ext_meta.setdefault(name, {})[key] = val
    state = {
        "epoch": t.epoch, "step": t.step, "stop": t.stop, "stopped_early": t.stopped_early,
        "config_hash": t.cfg.fingerprint(), "config": t.cfg.to_dict(), "model": t.model_signature,
        "data": t.data.describe(), "scheduler": t.scheduler.state_dict(), "optimizer": opt_meta,
        "rng": rng_meta, "extensions": ext_meta, "history": t.history,
        "best_val_accuracy": t.best_val_accuracy, "best_epoch": t.best_epoch, "bad_epochs": t._bad_epochs,
        **({"sharded": sharded} if sharded else {}),
    }
    files: dict[str, tuple[int, dict[str, torch.Tensor]]] = {ckpt.OPTIMIZER: (t.epoch, tensors)}
    if not sharded:  # clones: safetensors refuses tensors that share storage (tied weights)
        files[ckpt.WEIGHTS] = (t.epoch, {k: v.detach().clone() for k, v in t.model.state_dict().items()})
    if write_best:
        files[ckpt.BEST] = (t.epoch, t._best_state)
    ckpt.write_checkpoint(d, state, files)
    if sharded:
        from frugalml.train.fsdp import drop_old_sharded

        drop_old_sharded(d, sharded)


def restore(trainer: Any) -> None:
    t, d = trainer, trainer.checkpoint_dir
    assert d is not None
    state = ckpt.read_state(d)
    if state.get("config_hash") != t.cfg.fingerprint():
        old, new = state.get("config") or {}, t.cfg.to_dict()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ConfigError(
            f"checkpoint in {d} was written with a different train config (differs in: "
            f"{', '.join(diff) or 'unknown'}); train without resume or delete {d}"
        )
    if state.get("model") != t.model_signature:
        raise ConfigError(f"checkpoint {d / ckpt.WEIGHTS} was written for a different model; delete {d}")
    if state.get("data") != json.loads(json.dumps(t.data.describe())):
        raise ConfigError(f"checkpoint in {d} was written for a different dataset; delete {d}")
    if bool(state.get("sharded")) != hasattr(t.dist, "save_sharded"):
        how = "sharded (fsdp)" if state.get("sharded") else "unsharded"
        raise ConfigError(f"checkpoint in {d} is {how}; resume with the sharding it was written with or delete it")
    epoch = int(state["epoch"])
    if state.get("sharded"):
        t.dist.load_sharded(t.model, t.optimizer, d / state["sharded"])
    else:
        t.model.load_state_dict(ckpt.read_tensors(d, ckpt.WEIGHTS, epoch))
    if t.optimizer is not None and t.scheduler is not None:
        other = ckpt.read_tensors(d, ckpt.OPTIMIZER, epoch)
        try:
            if not state.get("sharded"):
                ckpt.unflatten_optimizer(t.optimizer, other, state["optimizer"])
            t.scheduler.load_state_dict(state["scheduler"])
            ckpt.restore_rng({"shuffle": t.generator}, other, state["rng"])
            for name, obj in stateful(t):
                prefix = f"ext.{name}."
                sd = {k[len(prefix) :]: v for k, v in other.items() if k.startswith(prefix)}
                sd.update(state["extensions"].get(name, {}))
                obj.load_state_dict(sd)
            _restore_own_rng(t, other, state["rng"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise ArtifactError(f"checkpoint in {d} is inconsistent ({type(e).__name__}: {e}); delete it") from None
    if t.cfg.early_stopping and state.get("best_epoch"):
        t._best_state = ckpt.read_tensors(d, ckpt.BEST, int(state["best_epoch"]))
    t.epoch, t.step = epoch, int(state["step"])
    t.stop, t.stopped_early = bool(state["stop"]), bool(state["stopped_early"])
    t.history = list(state["history"])
    t.best_val_accuracy, t.best_epoch = state["best_val_accuracy"], state["best_epoch"]
    t._bad_epochs = int(state["bad_epochs"])
    t.dist.resumed(t.step)


def _restore_own_rng(t: Any, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Each process continues its own random streams when the checkpoint has them (same number of
    processes); otherwise every process continues rank 0's, reseeded per rank."""
    rank = t.dist.rank
    if t.dist.world == 1:
        return
    if meta.get("world") == t.dist.world and f"rank{rank}" in meta:
        prefix = f"rank{rank}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        ckpt.restore_rng(_generators(t), own, meta[f"rank{rank}"])
        return
    torch.manual_seed(t.seed + rank + t.step)  # a different process count: fresh per-rank streams
