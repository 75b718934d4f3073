"""End-to-end: compression stages through `frugal run`; results.json carries what the issues promise."""

import json
from pathlib import Path

import pytest
import torch
import yaml

import frugalml
from frugalml.cli import main
from tests.conftest import tiny_recipe


def _run(tmp_path: Path, raw: dict) -> dict:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["run", str(p), "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def test_quantize_stage_reports_honest_baselines_and_reloads(tmp_path):
    raw = tiny_recipe(
        model={"name": "cnn", "kwargs": {"channels": [8, 16]}},
        stages=[
            {"kind": "train", "name": "baseline"},
            {"kind": "quantize", "name": "int8", "mode": "static", "backend": "torch",
             "calibration_batches": 2, "references": ["onnxruntime"]},
        ],
    )
    res = _run(tmp_path, raw)
    base, q = res["stages"]
    assert q["parent"] == "baseline" and q["kind"] == "quantize"
    m = q["metrics"]
    refs = m["reference_latency_ms"]
    assert "fp32-eager" in refs and len(refs) >= 2
    for name, lat in refs.items():
        assert lat["b64"]["median"] > 0, name
    assert m["runtime"] != "torch-eager"
    assert abs(m["accuracy"] - base["metrics"]["accuracy"]) < 0.1
    assert m["size_bytes"] < base["metrics"]["size_bytes"]
    loaded = frugalml.load(tmp_path / "run/stages/int8")
    x = torch.randn(2, 1, 8, 8)
    assert loaded(x).shape == (2, 4)
    md = (tmp_path / "run/report.md").read_text()
    assert "honest baselines" in md and "fp32-eager" in md


@pytest.mark.parametrize("method", ["structured", "unstructured"])
def test_prune_then_quantize_composes(tmp_path, method):
    raw = tiny_recipe(
        model={"name": "cnn", "kwargs": {"channels": [8, 16]}},
        stages=[
            {"kind": "train", "name": "baseline"},
            {"kind": "prune", "name": "pruned", "method": method, "ratio": 0.5, "finetune": {"epochs": 1}},
            {"kind": "quantize", "name": "int8", "mode": "static", "backend": "torch", "calibration_batches": 2,
             "references": []},
        ],
    )
    res = _run(tmp_path, raw)
    base, pruned, q = (s["metrics"] for s in res["stages"])
    if method == "structured":
        assert pruned["params"] < base["params"] and pruned["macs"] < base["macs"]
    else:
        assert pruned["nonzero_params"] < 0.6 * base["nonzero_params"]
        assert pruned["compressed_bytes"] < base["compressed_bytes"]
    assert q["accuracy"] > 0.5
    assert frugalml.load(tmp_path / "run/stages/int8") is not None


def test_quantized_artifact_loads_in_a_fresh_process(tmp_path):
    """`frugalml.load` finds the quantized format without the caller importing the technique."""
    import subprocess
    import sys

    raw = tiny_recipe(
        model={"name": "mlp", "kwargs": {"hidden": [16]}},
        stages=[{"kind": "train", "name": "baseline"},
                {"kind": "quantize", "name": "int8", "mode": "dynamic", "backend": "torch", "references": []}],
    )
    _run(tmp_path, raw)
    code = ("import frugalml, torch; m = frugalml.load(r'%s'); print(tuple(m(torch.randn(2, 1, 8, 8)).shape))"
            % (tmp_path / "run/stages/int8"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 4)"


def test_bad_prune_layer_name_fails_cleanly(tmp_path, capsys):
    raw = tiny_recipe(
        model={"name": "cnn", "kwargs": {"channels": [8, 16]}},
        stages=[{"kind": "train", "name": "baseline"},
                {"kind": "prune", "name": "p", "method": "structured", "ratio": 0.5, "ignore": ["no_such_layer"]}],
    )
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(raw))
    assert main(["run", str(p), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "no_such_layer" in last and last.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "run/stages/p").exists()  # nothing half-written for the failed stage
    res = json.loads((tmp_path / "run/results.json").read_text())
    assert [s["name"] for s in res["stages"]] == ["baseline"]


def test_export_and_sensitivity_commands(tmp_path, capsys):
    raw = tiny_recipe(model={"name": "cnn", "kwargs": {"channels": [8, 16]}})
    _run(tmp_path, raw)
    art = tmp_path / "run/stages/baseline"
    capsys.readouterr()
    assert main(["export", str(art), "--format", "onnx", "--data", "synthetic", "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "m.onnx").stat().st_size > 1000 and "top-1 agreement 100.00%" in out
    assert main(["sensitivity", str(art), "--data", "synthetic", "--ratios", "0.5", "--out", str(tmp_path / "sens")]) == 0
    table = json.loads((tmp_path / "sens/sensitivity.json").read_text())
    assert table and (tmp_path / "sens/sensitivity.png").is_file()
