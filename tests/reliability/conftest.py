"""The reliability battery's tools: run the CLI in-process, snapshot a folder tree, tiny artifacts."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from frugalml import artifact
from frugalml.cli import main
from frugalml.models import build_model
from tests.conftest import tiny_recipe


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """`cli(*args)` runs `frugal ARGS` in this process and returns its exit code and output."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with a hash of its bytes (folders: 'dir')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_clean_error(res: Result, *needles: str) -> None:
    """Exit 2, no traceback, one `error:` message that names what is wrong."""
    assert res.code == 2, (res.code, res.err)
    assert "Traceback" not in res.err and "Traceback" not in res.out
    errors = [i for i, line in enumerate(res.err.splitlines()) if line.startswith("error: ")]
    assert len(errors) == 1, res.err  # log lines may come first; then one error message
    message = "\n".join(res.err.splitlines()[errors[0]:])
    for needle in needles:
        assert needle in message, (needle, message)


def write_recipe(path: Path, raw: dict | str) -> Path:
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


@pytest.fixture
def tiny():
    return tiny_recipe


def save_tiny_artifact(path: Path, name: str = "mlp", **kwargs) -> Path:
    """An untrained zoo MLP on the synthetic data's shape (1, 8, 8), 4 classes."""
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 4, **({"hidden": [8]} | kwargs))
    return artifact.save(model, path)
