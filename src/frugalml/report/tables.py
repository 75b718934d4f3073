"""The numbers a report shows, as rows of strings (shared by the Markdown and HTML renderers)."""

from __future__ import annotations

from frugalml.report.compare import batch_key, big_batch, compare, lat, quality, quality_name, warnings_for

COLUMNS = [
    "stage", "kind", "parent", "accuracy", "Δacc (pts)", "params", "nonzero", "MACs", "size", "× vs fp32 weights",
    "× vs parent", "b1 ms", "b64 ms", "speedup b64", "vs best fp32 b64", "MAC ratio", "runtime",
    "energy mJ/sample (est.)",
]


def labelled(columns: list[str], stages: list[dict]) -> list[str]:
    """Column names with the run's large batch (e.g. b32) and quality metric (e.g. cosine) in them."""
    big, q = big_batch(stages), quality_name(stages)
    out = [c.replace("b64", big) for c in columns]
    if q != "accuracy":
        out = [c.replace("Δacc", f"Δ{q}").replace("accuracy", q) for c in out]
    return out


def _num(v: float | None, fmt: str = "{:.3g}") -> str:
    return "–" if v is None else fmt.format(v)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_count(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def root_of(stage: dict, by_name: dict[str, dict]) -> dict:
    """The stage a chain started from (no parent): what a stage's ratios and speedups are against."""
    seen = set()
    while stage.get("parent") in by_name and stage["name"] not in seen:
        seen.add(stage["name"])
        stage = by_name[stage["parent"]]
    return stage


def stage_rows(stages: list[dict]) -> list[list[str]]:
    if not stages:
        return []
    by_name = {s["name"]: s for s in stages}
    rows = []
    for st in stages:
        ref = root_of(st, by_name)
        m = st["metrics"]
        c = compare(st, ref, by_name.get(st.get("parent") or ""))
        energy = (m.get("energy_mj_per_sample") or {}).get("value")
        rows.append([
            st["name"], st["kind"], st.get("parent") or "–",
            _num(None if quality(m) is None else 100 * quality(m), "{:.2f}%"),  # type: ignore[operator]
            _num(c["accuracy_delta_pts"], "{:+.2f}") if st is not ref else "ref",
            human_count(m.get("params")), human_count(m.get("nonzero_params")), human_count(m.get("macs")),
            human_bytes(m.get("size_bytes")), _num(c["size_ratio_vs_fp32_weights"], "{:.1f}×"),
            _num(c.get("size_ratio_vs_parent"), "{:.2f}×"),
            _num(lat(m, "b1"), "{:.3f}"), _num(lat(m, "b64"), "{:.3f}"),
            _num(c["speedup_b64"], "{:.2f}×") if st is not ref else "ref",
            _num(c["speedup_b64_vs_best_fp32"], "{:.2f}×") + (f" ({c['best_fp32_runtime_b64']})" if st is ref
                                                              and c["best_fp32_runtime_b64"] else ""),
            _num(c["mac_ratio"], "{:.2f}×") if st is not ref else "ref",
            str(m.get("runtime", "–")), _num(energy, "{:.3g}"),
        ])
    return rows


def reference_rows(stages: list[dict]) -> list[list[str]]:
    """Honest baselines measured in the same run (quantized stages): stage, runtime, b1, b64, speedups."""
    rows = []
    for st in stages:
        m = st["metrics"]
        refs = m.get("reference_latency_ms") or {}
        for runtime, lt in refs.items():
            big = lt.get(batch_key(lt), {}).get("median")
            rows.append([
                st["name"], runtime, _num(lt.get("b1", {}).get("median"), "{:.3f}"), _num(big, "{:.3f}"),
                _num(_safe_div(lt.get("b1", {}).get("median"), lat(m, "b1")), "{:.2f}×"),
                _num(_safe_div(big, lat(m, "b64")), "{:.2f}×"),
            ])
    return rows


def candidate_rows(stages: list[dict]) -> list[list[str]]:
    rows = []
    for st in stages:
        for c in st["metrics"].get("candidates") or []:
            lt = c.get("latency_ms") or {}
            rows.append([
                st["name"], str(c.get("backend", "?")),
                _num(None if c.get("accuracy") is None else 100 * c["accuracy"], "{:.2f}%"),
                _num((lt.get("b1") or {}).get("median"), "{:.3f}"),
                _num((lt.get(batch_key(lt)) or {}).get("median"), "{:.3f}"),
                "yes" if c.get("chosen") else "" if c.get("error") is None else f"failed: {c['error']}",
            ])
    return rows


def _safe_div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def all_warnings(stages: list[dict]) -> list[str]:
    by_name = {s["name"]: s for s in stages}
    out = []
    for st in stages:
        for w in warnings_for(st, by_name.get(st.get("parent") or "")):
            out.append(f"{st['name']}: {w}")
        for w in st["metrics"].get("warnings") or []:
            out.append(f"{st['name']}: {w}")
    return out


def env_lines(results: dict) -> list[str]:
    env = results.get("env", {})
    keys = ("cpu", "cores", "threads", "isa", "torch", "python", "platform", "date")
    return [f"{k}: {env[k]}" for k in keys if k in env]


def method_lines(stages: list[dict]) -> list[str]:
    m = stages[0]["metrics"] if stages else {}
    big = big_batch(stages)
    b64 = (m.get("latency_ms") or {}).get(big, {})
    energy = (m.get("energy_mj_per_sample") or {}).get("method", "")
    return [
        ("accuracy: top-1 on the test split" if m.get("quality_metric", "accuracy") == "accuracy" else
         f"{m.get('quality_metric')}: the task's quality, {m.get('quality_metric')} to the reference model's outputs on the"
         " test split (×100)") + "; latency: inference mode, fixed threads, warm-up then the median"
        f" and p90 of at least {b64.get('iterations', '?')} timed iterations (real test inputs)"
        + ("" if big == "b64" else f"; {big}: the largest batch measured"),
        "MACs/FLOPs per sample: torch.utils.flop_counter on one sample; size: bytes of the artifact files"
        " frugalml.load reads back; × vs fp32 weights: 4 bytes per parameter of the chain's first model"
        " (how the literature counts) over that size; × vs parent: the parent stage's size over this one's",
        f"speedup {big}: the chain's first model's fp32 eager median over this stage's; vs best fp32: the fastest fp32"
        " runtime measured for the stage its chain started from (ONNX Runtime, torch.compile, eager) over this"
        " stage's",
        ("energy: estimated, not measured" if (m.get("energy_mj_per_sample") or {}).get("estimated", True)
         else "energy: measured") + (f" ({energy})" if energy else " from CPU time (no power meter)"),
        f"peak fp32 GEMM of this machine: {_num(m.get('peak_gemm_gflops'), '{:.1f}')} GFLOP/s",
    ]
