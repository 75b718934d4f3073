"""End-to-end: `frugal run` on a tiny recipe writes the run directory contract; errors exit 2."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from frugalml.cli import main
from tests.conftest import tiny_recipe

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, raw: dict, name="r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def test_run_writes_contract_files_with_sane_values(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, tiny_recipe())), "--out", str(out)]) == 0
    for f in ("results.json", "report.md", "report.html", "recipe.yaml", "run.log", "state.json",
              "stages/baseline/model.json", "stages/baseline/model.safetensors", "stages/baseline/metrics.json"):
        assert (out / f).is_file(), f
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == 1 and res["recipe"] == "tiny"
    assert {"cpu", "threads", "torch", "date"} <= set(res["env"])
    st = res["stages"][0]
    assert st["name"] == "baseline" and st["kind"] == "train" and st["parent"] is None
    assert st["artifact"] == "stages/baseline"
    m = st["metrics"]
    assert 0.5 < m["accuracy"] <= 1.0  # synthetic data is learnable: well above 1/num_classes
    assert m["params"] > 0 and 0 < m["nonzero_params"] <= m["params"]
    assert m["macs"] > 0 and m["flops"] == pytest.approx(2 * m["macs"], rel=0.01)
    assert m["size_bytes"] > 4 * m["params"] * 0.9
    assert 0 < m["compressed_bytes"] <= m["size_bytes"]
    for b in ("b1", "b64"):
        assert 0 < m["latency_ms"][b]["median"] <= m["latency_ms"][b]["p90"]
    assert m["energy_mj_per_sample"]["estimated"] is True
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "baseline" in html
    assert "report:" in capsys.readouterr().out


def test_artifact_loads_and_measure_command_reproduces_accuracy(tmp_path, capsys):
    import frugalml

    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, tiny_recipe())), "--out", str(out)]) == 0
    model = frugalml.load(out / "stages/baseline")
    assert not model.training
    capsys.readouterr()
    assert main(["measure", str(out / "stages/baseline"), "--data", "synthetic", "--threads", "1",
                 "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    ref = json.loads((out / "results.json").read_text())["stages"][0]["metrics"]
    assert m["accuracy"] == ref["accuracy"] and m["params"] == ref["params"]


def test_existing_run_dir_needs_resume_or_force(tmp_path, capsys):
    out = tmp_path / "run"
    r = _write(tmp_path, tiny_recipe())
    assert main(["run", str(r), "--out", str(out)]) == 0
    assert main(["run", str(r), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["run", str(r), "--out", str(out), "--resume"]) == 0  # already complete: no-op
    assert main(["run", str(r), "--out", str(out), "--resume", "--set", "train.epochs=3"]) == 2
    assert "different recipe" in capsys.readouterr().err
    assert main(["run", str(r), "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda r: r["train"].update(lr=-1), "train.lr"),
        (lambda r: r["model"].update(name="nope"), "nope"),
        (lambda r: r["data"].update(name="idx:/no/such/dir"), "/no/such/dir"),
        (lambda r: r.update(stages=[{"kind": "train", "bogus": 1}]), "stages.0.bogus"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, mutate, expect):
    raw = tiny_recipe()
    mutate(raw)
    p = _write(tmp_path, raw)
    proc = subprocess.run(
        [sys.executable, "-m", "frugalml.cli", "run", str(p), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expect in proc.stderr and proc.stderr.startswith("error: ")


def test_help_everywhere():
    for cmd in ([], ["run"], ["measure"], ["report"], ["models"], ["datasets"], ["export"], ["sensitivity"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0


def test_kill_mid_training_then_resume_gives_identical_result(tmp_path):
    """An interrupted run resumes: same number of epochs, no lost stage, same weights as uninterrupted."""
    raw = tiny_recipe(
        data={"name": "synthetic", "synthetic_samples": 3000},
        train={"epochs": 6, "batch_size": 16, "lr": 0.05},
        stages=[{"kind": "train", "name": "baseline"}, {"kind": "train", "name": "finetune", "init": "parent", "epochs": 1}],
    )
    p = _write(tmp_path, raw)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "frugalml.cli", "run", str(p), "--out", str(tmp_path / "a")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "a/stages/baseline/work/checkpoint/state.json"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be interrupted; make the recipe longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "a/results.json").exists() or len(
        json.loads((tmp_path / "a/results.json").read_text())["stages"]) < 2
    assert main(["run", str(p), "--out", str(tmp_path / "a"), "--resume"]) == 0
    assert main(["run", str(p), "--out", str(tmp_path / "b")]) == 0
    ra, rb = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("a", "b"))
    assert [s["name"] for s in ra["stages"]] == ["baseline", "finetune"]
    assert ra["stages"][0]["metrics"]["training"]["epochs_run"] == 6
    for stage in ("baseline", "finetune"):
        wa = load_file(str(tmp_path / "a/stages" / stage / "model.safetensors"))
        wb = load_file(str(tmp_path / "b/stages" / stage / "model.safetensors"))
        assert wa.keys() == wb.keys()
        assert all((wa[k] == wb[k]).all() for k in wa), f"{stage}: resumed weights differ"


def test_a_stage_that_trains_a_new_model_has_no_parent(tmp_path):
    raw = tiny_recipe(stages=[
        {"kind": "train", "name": "baseline"},
        {"kind": "train", "name": "other", "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "epochs": 1},
        {"kind": "train", "name": "tuned", "init": "parent", "epochs": 1},
    ])
    assert main(["run", str(_write(tmp_path, raw)), "--out", str(tmp_path / "run")]) == 0
    res = json.loads((tmp_path / "run/results.json").read_text())
    assert [(s["name"], s["parent"]) for s in res["stages"]] == [
        ("baseline", None), ("other", None), ("tuned", "other")]
    assert res["stages"][1]["metrics"]["params"] < res["stages"][0]["metrics"]["params"]
