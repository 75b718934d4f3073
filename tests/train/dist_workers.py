"""What the distributed tests run in each of 2 processes (started by torchrun's agent through
frugalml.train.launch). Module-level functions, so the spawned processes can import them."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch
from train_helpers import make_bundle, make_model

from frugalml.errors import FrugalError
from frugalml.train import TrainConfig, Trainer
from frugalml.train.distributed import FIT_STATS

BASE = {"epochs": 3, "batch_size": 32, "lr": 0.05, "seed": 0}  # 192 training samples: 6 steps per epoch


def train(dist: dict | None = None, checkpoint_dir: str | None = None, resume: bool = False,
          callbacks: tuple = (), **over: Any) -> dict:
    """Train the toy conv net; its weights (CPU), the fit's stats and the final val accuracy."""
    torch.set_num_threads(1)
    # a short collective timeout: a test that goes wrong fails within a minute instead of hanging
    cfg = TrainConfig(**{**BASE, **over, "distributed": {"timeout": 60, **(dist or {})}})
    trainer = Trainer(make_model(), make_bundle(), cfg, callbacks=callbacks, checkpoint_dir=checkpoint_dir,
                      progress=False)
    result = trainer.fit(resume=resume)
    return {"weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "stats": FIT_STATS[-1], "val": result.history[-1]["val_accuracy"], "history": result.history}


def _error(fn: Any, *args: Any, **kw: Any) -> str:
    try:
        fn(*args, **kw)
    except FrugalError as e:
        return f"{type(e).__name__}: {e}"
    return "no error"


def scenarios(workdir: str) -> dict:
    """Every 2-process check that needs no crash, in one launch (spawning processes costs seconds)."""
    out = {
        "ddp": train(),
        "accum": train(batch_size=16, grad_accum=2),  # same steps as batch 32, half the samples per micro-step
        "fp16": train({"comm_hook": "fp16"}),
        "powersgd": train({"comm_hook": "powersgd", "powersgd": {"rank": 1, "warmup_steps": 2}}, epochs=8),
        "local_sgd": train({"local_sgd": {"period": 3}}),
        "fsdp": train({"sharding": "fsdp"}, checkpoint_dir=str(Path(workdir) / "fsdp-ckpt")),
        "bf16_error": _error(train, {"comm_hook": "bf16"}),
        "batch_error": _error(train, batch_size=33),
    }
    return out


class _DieAt:
    """Rank 1 kills itself (SIGKILL, no clean-up) at one optimizer step: a crashed machine."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        if step == self.step and trainer.dist.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)


def crash(checkpoint_dir: str, step: int) -> dict:
    return train(checkpoint_dir=checkpoint_dir, callbacks=(_DieAt(step),))


def resume(checkpoint_dir: str) -> dict:
    return train(checkpoint_dir=checkpoint_dir, resume=True)
