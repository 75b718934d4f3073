"""Training checkpoints: safetensors for tensors, JSON for everything else, never pickle.

A checkpoint directory holds
  weights.safetensors    model state_dict
  optimizer.safetensors  optimizer state tensors, RNG states, extension (transform/callback) tensors
  best.safetensors       best-so-far weights (only with early stopping)
  state.json             epoch, step, scheduler, optimizer hyperparameters, history, counters, ...

Each tensor file is tagged with the epoch it belongs to and written atomically; state.json is written
last and marks the checkpoint complete. Before a tensor file is replaced, the previous one is kept as
`<name>.prev.safetensors`, so a crash between the tensor writes and state.json still leaves, for each
file, a copy that matches the state.json on disk: the reader picks the copy whose tag matches.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from frugalml._io import atomic_write_json, save_tensors_atomic
from frugalml.errors import ArtifactError

STATE = "state.json"
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
BEST = "best.safetensors"
FORMAT_VERSION = 1


def _prev(path: Path) -> Path:
    return path.with_name(path.name.replace(".safetensors", ".prev.safetensors"))


def has_checkpoint(directory: Path) -> bool:
    return (directory / STATE).exists()


def discard_checkpoint(directory: Path) -> None:
    """Unmark an old checkpoint (a fresh run must never be resumed into a stale one)."""
    (directory / STATE).unlink(missing_ok=True)


def write_checkpoint(directory: Path, state: dict, files: dict[str, tuple[int, dict[str, torch.Tensor]]]) -> None:
    """`files` maps a file name to (epoch tag, tensors). Tensors first, then state.json."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, (epoch, tensors) in files.items():
        path = directory / name
        if path.exists():
            os.replace(path, _prev(path))
        save_tensors_atomic(tensors, path, metadata={"epoch": str(epoch), "format": str(FORMAT_VERSION)})
    atomic_write_json(directory / STATE, {"format": FORMAT_VERSION, **state})


def read_state(directory: Path) -> dict:
    path = directory / STATE
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"checkpoint state {path} is unreadable or corrupt ({e}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "epoch" not in state:
        raise ArtifactError(f"checkpoint state {path} is not a frugalml v{FORMAT_VERSION} training state")
    return state


def _epoch_tag(path: Path) -> int:
    try:
        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {}).get("epoch", -1))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ArtifactError(f"checkpoint file {path} is corrupt or truncated ({e}); delete it to start over") from None


def read_tensors(directory: Path, name: str, epoch: int) -> dict[str, torch.Tensor]:
    """The copy of `name` tagged `epoch` (current or previous), loaded without pickle."""
    path = directory / name
    for candidate in (path, _prev(path)):
        if candidate.exists() and _epoch_tag(candidate) == epoch:
            try:
                return load_file(str(candidate))
            except Exception as e:
                raise ArtifactError(f"checkpoint file {candidate} is corrupt or truncated ({e})") from None
    raise ArtifactError(
        f"checkpoint file {path} is missing or does not belong to epoch {epoch} recorded in "
        f"{directory / STATE}; the checkpoint is incomplete - delete {directory} to start over"
    )


# --- optimizer state: nested dict of tensors <-> flat names -------------------------------------------


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors as `optim.<param index>.<key>`; non-tensor state and param_groups go to JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            idx, key = name[len("optim.") :].split(".", 1)
            state.setdefault(int(idx), {})[key] = val
    for name, val in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    groups = []
    for saved, current in zip(meta["param_groups"], opt.param_groups):
        # JSON turned tuples (e.g. AdamW betas) into lists; give them their original type back
        groups.append({k: tuple(v) if isinstance(current.get(k), tuple) else v for k, v in saved.items()})
    opt.load_state_dict({"state": state, "param_groups": groups})


# --- random number generators --------------------------------------------------------------------------


def capture_rng(generators: dict[str, torch.Generator]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global torch/python/numpy RNG states plus named generators: tensors + JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    tensors.update({f"rng.{name}": g.get_state() for name, g in generators.items()})
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    meta = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
    }
    return tensors, meta


def restore_rng(generators: dict[str, torch.Generator], tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    for name, g in generators.items():
        g.set_state(tensors[f"rng.{name}"])
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
