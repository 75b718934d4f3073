"""Tables and acceptance checks of issue #10 (distillation, low-rank, ensembles, small students) from
the run directories that benchmarks/run_distill.sh writes; no figure is typed by hand.

    .venv/bin/python benchmarks/summarize_distill.py [--runs runs] [--seeds 'fm-distill-short-s*']
    .venv/bin/python benchmarks/summarize_distill.py --seeds 'fm-distill-nols-s*' --control 'fm-distill-short-s*'
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _stages(run: Path) -> dict[str, dict]:
    res = json.loads((run / "results.json").read_text())
    return {s["name"]: s["metrics"] for s in res["stages"]}


def _lat(m: dict, b: str) -> float | None:
    return ((m.get("latency_ms") or {}).get(b) or {}).get("median")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _check(ok: bool, text: str) -> str:
    return f"- {'PASS' if ok else 'FAIL'}: {text}"


def distill(runs: list[Path], control: list[Path] | None = None) -> list[str]:
    """The seed runs' arms against their teacher (each run's first stage) and the student trained alone:
    the runs' own `student-alone` arm, else the same arm of the `control` runs (e.g. the same seeds of
    another recipe whose students train the same way but learn from another teacher)."""
    per_run = [_stages(r) for r in runs]
    teacher_name = next(iter(per_run[0]))
    if "student-alone" not in per_run[0] and control:
        for stages, c in zip(per_run, control, strict=True):
            stages["student-alone"] = _stages(c)["student-alone"]
    names = list(per_run[0])
    acc = {n: [100 * s[n]["accuracy"] for s in per_run] for n in names}
    out = [f"### Distillation ({len(runs)} seeds: {', '.join(r.name for r in runs)})", "",
           "| stage | params | MACs | test accuracy (mean ± sd, %) | seeds | teacher cache |", "|---|---|---|---|---|---|"]
    for n in names:
        m = per_run[0][n]
        cache = ((m.get("distillation") or {}).get("teacher_cache") or {})
        note = (f"used: {cache.get('teacher_forward_samples_saved'):,} teacher passes saved (~{cache.get('estimated_seconds_saved')} s)"
                if cache.get("used") else cache.get("reason", "–"))
        mean, sd = _mean_sd(acc[n])
        out.append(f"| {n} | {m['params']:,} | {m['macs']:.3g} | {mean:.2f} ± {sd:.2f} | "
                   f"{', '.join(f'{a:.2f}' for a in acc[n])} | {note} |")
    teacher = statistics.mean(acc[teacher_name])
    alone = statistics.mean(acc["student-alone"])
    methods = {n: statistics.mean(acc[n]) for n in ("student-kd", "student-dkd", "student-dist") if n in acc}
    best = max(methods, key=methods.__getitem__)
    ratio = per_run[0][teacher_name]["params"] / per_run[0][best]["params"]
    better = max((n for n in ("student-dkd", "student-dist") if n in methods), key=methods.__getitem__)
    out += ["", _check(ratio >= 10, f"student has 1/{ratio:.1f} of the teacher's parameters (need >= 10)"),
            _check(methods[best] - alone >= 0.5, f"{best} gains {methods[best] - alone:+.3f} pts over student-alone (need >= 0.5)"),
            _check(teacher - methods[best] <= 1.5, f"{best} ends {teacher - methods[best]:.3f} pts below the teacher (need <= 1.5)"),
            (_check(True, f"{better} beats plain KD by {methods[better] - methods['student-kd']:+.2f} pts")
             if methods[better] > methods["student-kd"] else
             f"- NOTE: the better of DKD/DIST ({better}) did not beat plain KD: {methods[better] - methods['student-kd']:+.2f} pts")]
    return out


def lowrank(run: Path) -> list[str]:
    st = _stages(run)
    ref = st["mlp"]
    out = ["### Low-rank MLP", "", "| stage | params | param ratio | accuracy | Δ (pts) | b1 ms | b64 ms | b64 speedup | slower layers |",
           "|---|---|---|---|---|---|---|---|---|"]
    checks = []
    for n, m in st.items():
        r = ref["params"] / m["params"]
        d = 100 * (m["accuracy"] - ref["accuracy"])
        sp = _lat(ref, "b64") / _lat(m, "b64") if _lat(m, "b64") else None
        slow = ", ".join((m.get("lowrank") or {}).get("slower_layers", [])) or "–"
        out.append(f"| {n} | {m['params']:,} | {r:.2f}× | {100 * m['accuracy']:.2f}% | {d:+.2f} | {_lat(m, 'b1'):.3f} | "
                   f"{_lat(m, 'b64'):.3f} | {sp:.2f}× | {slow} |")
        if n != "mlp":
            checks.append(_check(r >= 2 and d >= -0.5, f"{n}: {r:.2f}x fewer parameters (need >= 2) at {d:+.2f} pts "
                                 f"(need >= -0.5); b64 {_lat(m, 'b64'):.3f} ms vs {_lat(ref, 'b64'):.3f} ms"))
    return out + [""] + checks


def ensemble(run: Path) -> list[str]:
    res = json.loads((run / "results.json").read_text())
    st = {s["name"]: s["metrics"] for s in res["stages"]}
    ens_name = next((s["name"] for s in res["stages"] if s["kind"] == "ensemble"), None)
    fused = [s["name"] for s in res["stages"] if s["kind"] == "distill" and s["config"].get("teacher") == ens_name]
    if ens_name is None or not fused:
        return [f"### Ensemble ({run.name}): no ensemble and distilled student in results.json yet"]
    info = st[ens_name]["ensemble"]  # the members' accuracies, as the ensemble stage measured them
    best = info["best_member"]
    b, e = 100 * info["best_member_test_accuracy"], 100 * st[ens_name]["accuracy"]
    out = [f"### Ensemble, its distilled student, weight averaging ({run.name})", "",
           "| stage | params | MACs | accuracy | b64 ms |", "|---|---|---|---|---|"]
    out += [f"| {n} | {m['params']:,} | {m['macs']:.3g} | {100 * m['accuracy']:.2f}% | {_lat(m, 'b64'):.3f} |" for n, m in st.items()]
    gain = e - b
    out += ["", _check(gain >= 0.3, f"{ens_name} beats its best member ({best}) by {gain:+.2f} pts (need >= 0.3)")]
    for name in fused:  # every single student distilled from the ensemble
        f = 100 * st[name]["accuracy"]
        out.append(_check(f - b >= 0.5 * gain and gain > 0, f"{name} keeps {f - b:+.2f} of that gain (need >= {0.5 * gain:.2f})"))
    return out


def students(run: Path) -> list[str]:
    st = _stages(run)
    out = ["### Prune the big one or train a small one? (equal MACs)", "",
           "| stage | params | MACs | accuracy | b1 ms | b64 ms |", "|---|---|---|---|---|---|"]
    return out + [f"| {n} | {m['params']:,} | {m['macs']:.3g} | {100 * m['accuracy']:.2f}% | {_lat(m, 'b1'):.3f} | "
                  f"{_lat(m, 'b64'):.3f} |" for n, m in st.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs", help="folder holding the run directories")
    p.add_argument("--seeds", default="fm-distill-s*",
                   help="glob (under --runs) of the distillation seed runs, e.g. 'fm-distill-short-s*'")
    p.add_argument("--control", default=None,
                   help="glob of runs whose `student-alone` arm is the control when the --seeds runs have none, "
                        "e.g. --seeds 'fm-distill-nols-s*' --control 'fm-distill-short-s*' (same seeds, in order)")
    args = p.parse_args()
    root = Path(args.runs)

    def finished(pattern: str) -> list[Path]:
        return sorted(r for r in root.glob(pattern) if (r / "results.json").is_file())

    seeds = finished(args.seeds)
    parts = [distill(seeds, finished(args.control) if args.control else None)] if seeds else []
    for name, fn in (("lowrank", lowrank), ("ensemble", ensemble), ("ensemble-small", ensemble), ("ensemble-dist", ensemble), ("ensemble-dist2", ensemble),
                     ("students", students)):
        run = root / f"fashion-mnist-{name}"
        if (run / "results.json").is_file():
            parts.append(fn(run))
    print("\n\n".join("\n".join(p) for p in parts) or f"no runs found under {root}")


if __name__ == "__main__":
    main()
