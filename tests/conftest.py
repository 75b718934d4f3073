import os

import pytest
import torch

# Tests run on tiny models; one thread keeps them stable on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # the peak-GEMM roofline cache must not leak between test runs or into ~/.cache
    monkeypatch.setenv("FRUGALML_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    yield


# tiny and quick; no fp32 runtime references (torch.compile costs seconds): tests that need them ask
FAST_MEASURE = {"warmup_iters": 2, "warmup_seconds": 0.0, "iters": 3, "min_seconds": 0.0, "threads": 1,
                "references": []}


@pytest.fixture
def fast_measure():
    return dict(FAST_MEASURE)


def tiny_recipe(**over) -> dict:
    """A recipe that runs in seconds: synthetic data, small MLP, 2 epochs."""
    recipe = {
        "name": "tiny",
        "seed": 0,
        "data": {"name": "synthetic"},
        "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "measure": dict(FAST_MEASURE),
        "stages": [{"kind": "train", "name": "baseline"}],
    }
    recipe.update(over)
    return recipe


os.environ.setdefault("MPLBACKEND", "Agg")
