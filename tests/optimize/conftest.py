"""A tiny search on digits: an 8-epoch CNN base on 500 images, pipelines of seconds each."""

from pathlib import Path

import yaml

from tests.conftest import FAST_MEASURE

SPACE = {
    "prune": {
        "none": {},
        "structured": {"kind": "prune", "method": "structured", "macs_budget": {"low": 0.4, "high": 0.8, "step": 0.2},
                       "finetune": {"epochs": 2, "lr": 0.02}},
    },
    "quantize": {
        "none": {},
        "int8": {"kind": "quantize", "mode": "static", "backend": "torch", "calibration_batches": 1,
                 "references": {"fixed": []}},
    },
}


def search_recipe(tmp_path: Path, name: str = "search.yaml", **search) -> Path:
    raw = {
        "name": "tiny-search",
        "seed": 0,
        "data": {"name": "digits", "limit": 500},
        "model": {"name": "cnn", "kwargs": {"channels": [8, 16]}},
        "train": {"epochs": 8, "batch_size": 32, "lr": 0.1},
        "measure": {**FAST_MEASURE, "roofline": False},
        "stages": [{"kind": "train", "name": "baseline"}],
        "search": {"objective": "latency-b64", "max_drop": 5.0, "trials": 3, "startup_trials": 2,
                   "default_space": False, "space": SPACE, **search},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
