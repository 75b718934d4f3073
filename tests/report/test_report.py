"""Reports: derived ratios, 'not faster' warnings, Pareto front, self-contained HTML, several runs."""

import json

import pytest

from frugalml.cli import main
from frugalml.errors import ArtifactError
from frugalml.report import compare, load_results, pareto_front, warnings_for, write_reports


def _stage(name, kind, parent, acc, macs, b64, p90=None, size=1000, nnz=100):
    return {
        "name": name, "kind": kind, "parent": parent,
        "metrics": {
            "accuracy": acc, "macs": macs, "params": 100, "nonzero_params": nnz, "size_bytes": size,
            "compressed_bytes": size // 2, "runtime": "torch-eager",
            "latency_ms": {"b1": {"median": b64 / 10, "p90": b64 / 9}, "b64": {"median": b64, "p90": p90 or b64 * 1.1}},
            "energy_mj_per_sample": {"value": 0.1, "estimated": True, "method": "cpu-time x 15 W/core"},
        },
    }


def _results(*stages):
    return {"schema": 1, "recipe": "t", "env": {"cpu": "x", "threads": 1, "torch": "2", "date": "d"},
            "stages": list(stages)}


def test_compare_ratios_against_reference_and_parent():
    base = _stage("base", "train", None, 0.90, 1000, 10.0, size=4000)
    pr = _stage("pr", "prune", "base", 0.89, 400, 5.0, size=1000)
    c = compare(pr, base, base)
    assert c["accuracy_delta_pts"] == pytest.approx(-1.0)
    assert c["speedup_b64"] == pytest.approx(2.0) and c["mac_ratio"] == pytest.approx(2.5)
    assert c["size_ratio"] == pytest.approx(4.0) and c["speedup_b64_vs_parent"] == pytest.approx(2.0)


def test_warns_when_fewer_macs_but_not_faster():
    base = _stage("base", "train", None, 0.9, 1000, 10.0)
    slow = _stage("pr", "prune", "base", 0.9, 400, 9.9)
    fast = _stage("pr", "prune", "base", 0.9, 400, 5.0, p90=5.5)
    w = warnings_for(slow, base)
    assert w and "fewer MACs" in w[-1] and "not measurably faster" in w[-1]
    assert "less than 5% faster" in w[-1]  # names the statistic that triggered it
    assert warnings_for(fast, base) == []
    # overlapping spread: median faster but p90 above the parent's median is not "measurably" faster,
    # and the warning says so instead of implying the stage is slow
    noisy = _stage("pr", "prune", "base", 0.9, 400, 4.5, p90=11.0)
    w = warnings_for(noisy, base)
    assert w and "2.22x faster" in w[-1] and "p90 (11.000 ms) overlaps" in w[-1]


def test_unstructured_sparsity_without_speed_is_called_out():
    base = _stage("base", "train", None, 0.9, 1000, 10.0, nnz=1000)
    sparse = _stage("sp", "prune", "base", 0.9, 1000, 10.0, nnz=100)
    assert any("sparser" in w for w in warnings_for(sparse, base))


def test_pareto_front_minimises_cost_maximises_accuracy():
    pts = [(1.0, 90.0), (2.0, 95.0), (3.0, 94.0), (0.5, 80.0), (2.0, 90.0)]
    assert sorted(pareto_front(pts)) == [0, 1, 3]


def test_write_reports_single_and_side_by_side(tmp_path):
    res = _results(_stage("base", "train", None, 0.9, 1000, 10.0), _stage("pr", "prune", "base", 0.88, 400, 9.9))
    paths = write_reports(tmp_path, res)
    md = paths["md"].read_text()
    html = paths["html"].read_text()
    assert "| base |" in md and "| pr |" in md and "not measurably faster" in md
    assert "estimated" in md  # energy is labelled as an estimate
    assert html.count("data:image/png;base64,") == 2 and "<script" not in html
    for name in ("accuracy-vs-latency.png", "accuracy-vs-size.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    # two runs side by side through the CLI
    for d in ("r1", "r2"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "results.json").write_text(json.dumps(res))
    assert main(["report", str(tmp_path / "r1"), str(tmp_path / "r2"), "--out", str(tmp_path / "cmp")]) == 0
    cmp_md = (tmp_path / "cmp/report.md").read_text()
    assert "r1: stages" in cmp_md and "r2: stages" in cmp_md


def test_report_on_non_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="no results.json"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt results.json"):
        load_results(tmp_path)
    assert main(["report", str(tmp_path)]) == 2


def test_ratios_against_the_chain_start_and_the_parent_and_a_larger_artifact_is_called_out():
    from frugalml.report.tables import root_of

    base = _stage("base", "train", None, 0.9, 1000, 10.0, size=4000)
    base["metrics"]["params"] = 1000  # 4,000 bytes of fp32 weights
    base["metrics"]["reference_latency_ms"] = {"fp32-eager": {"b64": {"median": 10.0}},
                                               "fp32-onnxruntime": {"b64": {"median": 4.0}}}
    q = _stage("q", "quantize", "base", 0.9, 1000, 2.0, size=100)
    big = _stage("big", "quantize", "q", 0.9, 1000, 2.0, size=200)
    c = compare(q, base, base)
    assert c["size_ratio_vs_fp32_weights"] == pytest.approx(40.0)
    assert c["speedup_b64_vs_best_fp32"] == pytest.approx(2.0) and c["best_fp32_runtime_b64"] == "fp32-onnxruntime"
    assert compare(big, base, q)["size_ratio_vs_parent"] == pytest.approx(0.5)
    assert any("larger than q's" in w for w in warnings_for(big, q))
    other = _stage("mlp", "train", None, 0.8, 10, 1.0)
    by_name = {s["name"]: s for s in (base, q, big, other)}
    assert root_of(big, by_name) is base and root_of(other, by_name) is other


def test_an_embedding_run_at_batch_32_is_labelled_with_its_batch_and_metric(tmp_path):
    """A transformer run measures b1 and b32 and its quality is cosine: the tables say so in their column
    names, and the fp32 references' b32 medians appear (they were shown as '–' under a b64 header)."""

    def stage(name, parent, cos, b32, refs=None):
        m = {"quality": cos, "quality_metric": "cosine", "cosine": cos, "macs": 1000, "params": 100,
             "nonzero_params": 100, "size_bytes": 1000, "runtime": "onnxruntime-int8",
             "latency_ms": {"b1": {"median": b32 / 30, "p90": b32 / 29}, "b32": {"median": b32, "p90": b32 * 1.05}}}
        if refs:
            m["reference_latency_ms"] = {k: {"b1": {"median": v / 30}, "b32": {"median": v}} for k, v in refs.items()}
            m["candidates"] = [{"backend": "onnxruntime", "chosen": True, "accuracy": cos,
                                "latency_ms": {"b1": {"median": b32 / 30}, "b32": {"median": b32}}}]
        return {"name": name, "kind": "train" if parent is None else "quantize", "parent": parent, "metrics": m}

    res = _results(stage("teacher", None, 1.0, 600.0),
                   stage("int8", "teacher", 0.9976, 245.0, refs={"fp32-eager": 677.0, "fp32-onnxruntime": 328.0}))
    md = write_reports(tmp_path, res)["md"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| stage | kind |"))
    assert "b32 ms" in header and "speedup b32" in header and "cosine" in header and "b64" not in header
    assert "accuracy" not in header and "Δcosine" in header
    assert "| int8 | fp32-onnxruntime | 10.933 | 328.000 | " in md  # the reference's b32 median, not '–'
    assert "| int8 | onnxruntime | 99.76% | 8.167 | 245.000 | yes |" in md
    assert "b32: the largest batch measured" in md and "b64" not in md.split("## machine")[0]
