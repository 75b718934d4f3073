"""Ensembles: output shapes and combination rules, cost as the sum of the members, artifacts that load
back (mixed, factorized members included), and one-line errors; then a full run that distils one."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from frugalml import artifact
from frugalml.compress.ensemble import FORMAT, Ensemble, EnsembleStage, ensemble
from frugalml.compress.lowrank import LowRankStage, lowrank
from frugalml.data import DataConfig, load_data
from frugalml.errors import ConfigError, FrugalError
from frugalml.measure import count_flops, count_params
from frugalml.models import build_model


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(name="synthetic", synthetic_samples=160, synthetic_classes=4, synthetic_shape=(1, 8, 8)))


def _members(data) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    a = build_model("mlp", data.input_shape, data.num_classes, hidden=[32])
    b = build_model("cnn", data.input_shape, data.num_classes, width=4)
    c = lowrank(build_model("mlp", data.input_shape, data.num_classes, hidden=[64]), LowRankStage(ratio=0.25, epochs=0), data)
    return [m.eval() for m in (a, b, c)]


def test_outputs_average_probabilities_or_logits(data):
    members = _members(data)
    x = data.sample_input(5)
    with torch.no_grad():
        outs = torch.stack([m(x) for m in members])
        probs = ensemble(members)(x)
        logits = ensemble(members, combine="logits")(x)
    assert probs.shape == logits.shape == (5, data.num_classes)
    assert torch.allclose(probs.softmax(1), outs.softmax(-1).mean(0), atol=1e-6)
    assert torch.allclose(probs, outs.softmax(-1).mean(0).log(), atol=1e-5)
    assert torch.allclose(logits, outs.mean(0), atol=1e-6)


def test_cost_is_the_sum_of_the_members(data):
    members = _members(data)
    ens = ensemble(members)
    assert count_params(ens)[0] == sum(count_params(m)[0] for m in members)
    x = data.sample_input(1)
    member_macs = sum(count_flops(m, x)["macs"] for m in members)
    assert count_flops(ens, x)["macs"] == pytest.approx(member_macs, rel=0.01)


def test_artifact_round_trip_with_mixed_and_factorized_members(tmp_path, data):
    ens = ensemble(_members(data))
    artifact.save_any(ens, tmp_path / "e", {}, {"format": FORMAT})
    info = artifact.read_info(tmp_path / "e")
    assert info["format"] == FORMAT and len(info["members"]) == 3 and info["members"][2]["spec"]["lowrank"]
    loaded = artifact.load(tmp_path / "e")
    assert isinstance(loaded, Ensemble) and [type(m) for m in loaded.members] == [type(m) for m in ens.members]
    x = data.sample_input(6)
    with torch.no_grad():
        assert torch.equal(loaded(x), ens(x))
    assert [p.name for p in artifact.artifact_files(tmp_path / "e")] == ["model.json", "model.safetensors"]


def test_a_corrupt_member_record_is_an_artifact_error(tmp_path, data):
    artifact.save_any(ensemble(_members(data)[:2]), tmp_path / "e", {}, {"format": FORMAT})
    path = tmp_path / "e" / "model.json"
    info = json.loads(path.read_text())
    info["members"][1]["spec"]["num_classes"] = 9
    path.write_text(json.dumps(info))
    with pytest.raises(FrugalError, match="members.1 takes other inputs or classes"):
        artifact.load(tmp_path / "e")


def test_an_ensemble_of_one_is_refused():
    with pytest.raises(ConfigError, match=r"stages.e.members: an ensemble needs at least 2 members, got 1 \(base\)"):
        EnsembleStage.checked("stages.e", {"members": ["base"]})
    with pytest.raises(ConfigError, match="listed twice"):
        EnsembleStage.checked("stages.e", {"members": ["a", "a"]})
    with pytest.raises(ConfigError, match="at least 2 models"):
        ensemble([torch.nn.Linear(2, 2)])


def test_a_run_ensembles_stages_and_distils_the_ensemble(tmp_path, fast_measure):
    from frugalml.pipeline import run_recipe
    from frugalml.recipe import Recipe

    recipe = Recipe.model_validate({
        "data": {"name": "synthetic", "synthetic_samples": 160, "synthetic_classes": 4, "synthetic_shape": [1, 8, 8]},
        "model": {"name": "mlp", "kwargs": {"hidden": [32]}}, "train": {"epochs": 2, "batch_size": 32},
        "measure": fast_measure,
        "stages": [
            {"kind": "train", "name": "a"},
            {"kind": "train", "name": "b", "init": "fresh", "train": {"seed": 1}},
            {"kind": "lowrank", "name": "c", "parent": "a", "ratio": 0.5, "epochs": 1},
            {"kind": "ensemble", "name": "ens", "members": ["a", "b", "c"]},
            {"kind": "distill", "name": "fused", "teacher": "ens", "model": {"name": "mlp", "kwargs": {"hidden": [16]}}},
            {"kind": "distill", "name": "again", "parent": "c", "teacher": "ens", "epochs": 1},
            {"kind": "ensemble", "name": "bad", "members": ["a", "nope"]},
        ],
    })
    with pytest.raises(ConfigError, match=r"stages.bad.members.1: 'nope' is neither an earlier stage \(earlier: a, b, c, "):
        run_recipe(recipe, tmp_path / "run")
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    m = {s["name"]: s["metrics"] for s in res["stages"]}
    assert m["ens"]["params"] == m["a"]["params"] + m["b"]["params"] + m["c"]["params"]
    assert m["ens"]["ensemble"]["best_member"] in ("a", "b", "c")
    assert m["fused"]["distillation"]["teacher"] == "ens" and m["fused"]["params"] < m["a"]["params"]
    for name, fmt in (("ens", FORMAT), ("fused", "torch-fp32"), ("again", "torch-fp32"), ("c", "torch-fp32")):
        d = tmp_path / "run" / "stages" / name
        assert artifact.read_info(d)["format"] == fmt
        assert bool(artifact.read_info(d)["spec"].get("lowrank")) == (name in ("again", "c"))  # factorized
        with torch.no_grad():
            out = artifact.load(d)(torch.zeros(2, 1, 8, 8))
        assert out.shape == (2, 4) and not math.isnan(float(out.sum()))
    with torch.no_grad():
        total = float(F.softmax(artifact.load(tmp_path / "run" / "stages" / "ens")(torch.zeros(1, 1, 8, 8)), 1).sum())
    assert total == pytest.approx(1.0)
