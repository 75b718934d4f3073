"""Output paths: a folder where a file is expected, a file where a folder is expected, an unwritable
or full location — one line, found before minutes of measuring are spent, nothing else touched."""

from __future__ import annotations

import errno
import json

import pytest

from frugalml import _io
from tests.reliability.conftest import assert_clean_error, save_tiny_artifact, snapshot


@pytest.fixture
def art(tmp_path):
    return save_tiny_artifact(tmp_path / "art")


@pytest.fixture
def no_measuring(monkeypatch):
    """Fail the test if measuring starts: output checks must come first."""
    import frugalml.pipeline

    def boom(*a, **k):
        raise AssertionError("measured before checking the output path")

    monkeypatch.setattr(frugalml.pipeline, "measure_stage", boom)


def check_case(tmp_path, art, cli, *args, needles):
    before = snapshot(tmp_path)
    assert_clean_error(cli(*args), *needles)
    assert snapshot(tmp_path) == before


def test_measure_out_is_a_folder(tmp_path, art, cli, no_measuring):
    (tmp_path / "outdir").mkdir()
    check_case(tmp_path, art, cli, "measure", art, "--data", "synthetic", "--out", tmp_path / "outdir",
          needles=["outdir", "is a folder"])


def test_measure_out_under_a_file(tmp_path, art, cli, no_measuring):
    (tmp_path / "afile").write_text("x")
    check_case(tmp_path, art, cli, "measure", art, "--data", "synthetic", "--out", tmp_path / "afile" / "m.json",
          needles=["afile", "is a file"])


def test_export_out_is_a_folder(tmp_path, art, cli):
    (tmp_path / "outdir").mkdir()
    check_case(tmp_path, art, cli, "export", art, "--format", "onnx", "--out", tmp_path / "outdir",
          needles=["outdir", "is a folder"])


def test_export_out_inside_the_artifact(tmp_path, art, cli):
    check_case(tmp_path, art, cli, "export", art, "--format", "onnx", "--out", art / "m.onnx",
          needles=["inside the artifact directory"])


def test_export_unknown_format_is_an_argparse_error(tmp_path, art, capsys):
    from frugalml.cli import main

    with pytest.raises(SystemExit) as e:
        main(["export", str(art), "--format", "tflite"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_sensitivity_out_is_a_file(tmp_path, art, cli):
    (tmp_path / "afile").write_text("x")
    check_case(tmp_path, art, cli, "sensitivity", art, "--data", "synthetic", "--out", tmp_path / "afile",
          needles=["afile", "is a file"])


@pytest.mark.parametrize("ratios", ["a,b", "0.5,1.5", "0", ""])
def test_sensitivity_bad_ratios(ratios, tmp_path, art, cli):
    check_case(tmp_path, art, cli, "sensitivity", art, "--data", "synthetic", "--ratios", ratios, needles=["--ratios"])


def test_full_disk_is_one_line(tmp_path, art, cli, monkeypatch):
    """A write that fails (full disk) names the file; the half-written temporary file is removed."""
    real_fsync = _io.os.fsync

    def full(fd):
        real_fsync(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io.os, "fsync", full)
    out = tmp_path / "m.json"
    res = cli("measure", art, "--data", "synthetic", "--threads", "1", "--out", out)
    assert_clean_error(res, "m.json", "No space left on device")
    assert not out.exists() and not list(tmp_path.glob(".m.json.*"))


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs Linux /proc (read-only for mkdir)")
def test_unwritable_run_location(tmp_path, cli):
    """A place where no folder can be made, even as root: /proc."""
    from tests.conftest import tiny_recipe
    from tests.reliability.conftest import write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe())
    assert_clean_error(cli("run", recipe, "--out", "/proc/frugal-run"), "/proc")


@pytest.mark.parametrize("content,needles", [
    ("{bad", ["results.json", "not JSON"]),
    ('{"schema": 99, "stages": []}', ["results.json", "schema 99 is newer"]),
    ('{"schema": 1}', ["results.json", "stages"]),
    ('{"schema": 1, "stages": [{"name": "a"}]}', ["results.json", "stages.0.kind"]),
    ('{"schema": 1, "stages": [{"name": "a", "kind": "train", "metrics": {"latency_ms": {"b64": 3}}}]}',
     ["results.json", "stages.0.metrics.latency_ms.b64"]),
])
def test_report_on_bad_results(content, needles, tmp_path, cli):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(content)
    check_case(tmp_path, None, cli, "report", tmp_path / "run", needles=needles)


def test_report_on_a_folder_that_is_not_a_run(tmp_path, cli):
    (tmp_path / "x").mkdir()
    check_case(tmp_path, None, cli, "report", tmp_path / "x", needles=["not a frugalml run directory"])


def test_report_of_a_good_run_still_works(tmp_path, cli):
    from tests.conftest import tiny_recipe
    from tests.reliability.conftest import write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe())
    assert cli("run", recipe, "--out", tmp_path / "run").code == 0
    assert cli("report", tmp_path / "run").code == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["schema"] == 1
