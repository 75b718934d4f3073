import pytest

from frugalml.measure import energy, environment
from frugalml.measure.energy import energy_per_sample


def test_environment_keys():
    env = environment(2)
    assert set(env) >= {
        "cpu",
        "cores",
        "physical_cores",
        "logical_cores",
        "available_cores",
        "threads",
        "torch",
        "python",
        "platform",
        "isa",
        "date",
    }
    assert env["threads"] == 2
    assert set(env["isa"]) == {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx"}
    assert env["available_cores"] >= 1 and env["date"].endswith("+00:00")


LATENCY = {"iterations": 10, "cpu_seconds": 0.064, "rapl_uj": None}


def test_energy_is_marked_as_estimate(monkeypatch, tmp_path):
    monkeypatch.setattr(energy, "RAPL_DIR", tmp_path / "none")
    e = energy_per_sample(LATENCY, 64, 15.0)
    assert e["estimated"] is True and "estimate" in e["method"] and "15 W/core" in e["method"]
    assert e["value"] == pytest.approx(0.064 / 640 * 15.0 * 1000)


def test_rapl_reading_gives_measured_value(monkeypatch, tmp_path):
    (tmp_path / "energy_uj").write_text("1000\n")
    (tmp_path / "max_energy_range_uj").write_text("5000\n")
    monkeypatch.setattr(energy, "RAPL_DIR", tmp_path)
    assert energy.read_rapl_uj() == 1000
    assert energy.rapl_delta_uj(4000, 1000) == 2000  # wrapped around
    e = energy_per_sample({**LATENCY, "rapl_uj": 64_000}, 64, 15.0)
    assert e["estimated"] is False and e["method"].startswith("RAPL package")
    assert e["value"] == pytest.approx(64_000 / 1000 / 640)
    assert e["cpu_time_estimate"]["value"] > 0
