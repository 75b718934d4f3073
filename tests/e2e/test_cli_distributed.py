"""End-to-end: `frugal run --nproc 2` trains through torchrun's agent, rank 0 writes the run folder
(with the bytes each process sent per step), and a user error in the workers is one line."""

import json
from pathlib import Path

import yaml
from safetensors import safe_open

from frugalml.cli import main
from tests.conftest import tiny_recipe


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_run_with_two_processes_writes_the_run_and_its_communication(tmp_path, capsys):
    out = tmp_path / "run"
    recipe = tiny_recipe(train={"epochs": 2, "batch_size": 32, "lr": 0.05, "distributed": {"comm_hook": "fp16"}},
                         stages=[{"kind": "train", "name": "baseline"},  # int8: built and timed by rank 0 alone
                                 {"kind": "quantize", "name": "int8", "mode": "dynamic", "backend": "torch"}])
    assert main(["run", str(_write(tmp_path, recipe)), "--out", str(out), "--nproc", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["env"]["processes"] == 2 and (out / "report.html").is_file()
    m = res["stages"][0]["metrics"]
    assert m["accuracy"] > 0.5
    (fit,) = m["distributed"]
    assert fit["processes"] == 2 and fit["comm_hook"] == "fp16" and fit["samples_per_second"] > 0
    assert fit["communication"]["bytes_per_step"] == fit["uncompressed_grad_bytes"] // 2
    assert fit["communication"]["cross_check"] == "expected == measured"
    assert "report:" in capsys.readouterr().out
    q = res["stages"][1]
    assert q["name"] == "int8" and q["metrics"]["accuracy"] > 0.5 and "distributed" not in q["metrics"]
    # rank 0 wrote the checkpoint, with each process's random state for an exact resume
    with safe_open(str(out / "stages/baseline/work/checkpoint/optimizer.safetensors"), "pt") as f:
        assert {"rank0.rng.torch", "rank1.rng.torch"} <= set(f.keys())


def test_user_errors_are_found_before_any_process_starts(tmp_path, capsys):
    recipe = _write(tmp_path, tiny_recipe(train={"epochs": 1, "batch_size": 33}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--nproc", "2"]) == 2
    assert "train.batch_size: 33 is the global batch and must divide by the 2 processes" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    # a stage's own batch size too: found here, not in the workers after the earlier stages ran
    recipe = _write(tmp_path, tiny_recipe(train={"epochs": 1, "batch_size": 32}, stages=[
        {"kind": "train", "name": "baseline"},
        {"kind": "prune", "name": "p", "method": "unstructured", "ratio": 0.5,
         "finetune": {"epochs": 1, "overrides": {"batch_size": 15}}}]))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--nproc", "2"]) == 2
    assert "stages.1.finetune.overrides.batch_size: 15 is the global batch" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("not a run")
    recipe = _write(tmp_path, tiny_recipe(train={"epochs": 1, "batch_size": 32}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "taken"), "--nproc", "2"]) == 2
    assert "is not a frugalml run" in capsys.readouterr().err
