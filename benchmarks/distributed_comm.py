"""Data-parallel training on one machine with 2 processes: bytes communicated per step for each DDP
communication setting, PowerSGD's accuracy cost, local SGD's all-reduces saved, samples/s for 1 and
2 processes. Prints the BENCHMARKS.md tables and checks the acceptance targets.

    .venv/bin/python benchmarks/distributed_comm.py            # runs everything (≈ 25 min on 2 cores)
    .venv/bin/python benchmarks/distributed_comm.py --quick    # smoke test: 1/10 of the data, 1 epoch
    .venv/bin/python benchmarks/distributed_comm.py --summarize-only

Every run is `frugal run RECIPE --nproc N` (recipes written next to the runs, under runs/distributed/);
the numbers are read back from results.json (`stages[0].metrics.distributed`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "distributed"
MEASURE = {"threads": 2, "batch_sizes": [64], "warmup_iters": 5, "warmup_seconds": 0.0, "iters": 10,
           "min_seconds": 0.0, "roofline": False, "references": []}  # accuracy is what matters here
BASE = {"seed": 0, "data": {"name": "fashion-mnist", "val_fraction": 0.1}, "measure": MEASURE,
        "stages": [{"kind": "train", "name": "baseline"}]}
MLP = {**BASE, "name": "dist-mlp", "model": {"name": "mlp", "kwargs": {"hidden": [1024, 1024]}},
       "train": {"epochs": 3, "batch_size": 128, "lr": 0.05, "schedule": "onecycle", "weight_decay": 5e-4}}
CNN = {**BASE, "name": "dist-cnn", "model": {"name": "cnn", "kwargs": {"channels": [32, 48, 64, 96]}},
       "train": {"epochs": 1, "batch_size": 128, "lr": 0.1, "label_smoothing": 0.1, "bf16": "auto",
                 "channels_last": True}}
POWERSGD_WARMUP = 50  # optimizer steps of plain all-reduce first (≈ 4% of the MLP's 1,266 steps)
SETTINGS = {  # name -> train.distributed
    "none": {},
    "fp16": {"comm_hook": "fp16"},
    **{f"powersgd-r{r}": {"comm_hook": "powersgd", "powersgd": {"rank": r, "warmup_steps": POWERSGD_WARMUP}}
       for r in (1, 2, 4)},
}
LOCAL_SGD = {f"local-sgd-h{h}": {"local_sgd": {"period": h}} for h in (4, 8)}


def runs(quick: bool) -> list[tuple[str, dict, int]]:
    """(run name, recipe, processes)."""
    out = []
    for model, recipe, settings in (("mlp", MLP, {**SETTINGS, **LOCAL_SGD}), ("cnn", CNN, SETTINGS)):
        r = json.loads(json.dumps(recipe))
        if quick or model == "cnn":  # the CNN's bytes per step do not depend on how long it trains
            r["data"]["limit"] = 6000 if quick else 12800
            r["train"]["epochs"] = 1
        out.append((f"{model}-1proc", r, 1))
        for name, dist in settings.items():
            out.append((f"{model}-{name}", {**r, "train": {**r["train"], "distributed": dist}}, 2))
    return out


def run_all(quick: bool) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, recipe, nproc in runs(quick):
        path = OUT / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        cmd = [str(ROOT / ".venv/bin/frugal"), "run", str(path), "--out", str(OUT / name), "--force",
               "--nproc", str(nproc)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)


def _fit(run: str) -> tuple[dict, dict]:
    res = json.loads((OUT / run / "results.json").read_text())
    m = res["stages"][0]["metrics"]
    return m, m["distributed"][0]


def summarize() -> int:
    ok = True
    for model in ("mlp", "cnn"):
        names = [n for n, _, _ in runs(False) if n.startswith(f"{model}-") and (OUT / n / "results.json").is_file()]
        if not names:
            continue
        print(f"\n### {model} (2 processes, gloo, 1 thread each)\n")
        print("| setting | bytes/step (mean) | bytes/step after warm-up | vs none | all-reduces/step | "
              "expected = measured | test accuracy | samples/s |")
        print("|---|---|---|---|---|---|---|---|")
        plain = _fit(f"{model}-none")[1]["communication"]["bytes_per_step_after_warmup"] \
            if f"{model}-none" in names else None
        for n in names:
            m, f = _fit(n)
            c = f.get("communication") or {}
            after = c.get("bytes_per_step_after_warmup")
            ratio = f"{plain / after:.1f}×" if plain and after else "–"
            print(f"| {n.removeprefix(model + '-')} ({f['processes']} proc) | {c.get('bytes_per_step', 0):,} | "
                  f"{after or 0:,} | {ratio} | {c.get('collectives_per_step', '–')} | "
                  f"{c.get('cross_check', '–')} | {100 * m['accuracy']:.2f}% | {f['samples_per_second']:,.0f} |")
            if "local_sgd" in f:
                ls = f["local_sgd"]
                print(f"|   ↳ all-reduces {ls['all_reduces']:,} vs {ls['all_reduces_plain_ddp']:,} for DDP "
                      f"(saved {ls['all_reduces_saved']:,}, {ls['all_reduces_plain_ddp'] / max(ls['all_reduces'], 1):.1f}×"
                      f" fewer); bytes saved {ls['bytes_saved']:,} | | | | | | | |")
        if model == "mlp" and {"mlp-none", "mlp-powersgd-r4"} <= set(names):
            (m0, f0), (m4, f4) = _fit("mlp-none"), _fit("mlp-powersgd-r4")
            fewer = f0["communication"]["bytes_per_step_after_warmup"] / f4["communication"]["bytes_per_step_after_warmup"]
            drop = 100 * (m0["accuracy"] - m4["accuracy"])
            good = fewer >= 20 and abs(drop) <= 1
            ok &= good
            print(f"\nPowerSGD rank 4 on the MLP: {fewer:.1f}× fewer bytes per step than no compression (target ≥ 20×), "
                  f"test accuracy {100 * m4['accuracy']:.2f}% vs {100 * m0['accuracy']:.2f}% (drop {drop:.2f} point; "
                  f"target within 1) after the same {f4['communication']['steps']} steps: {'PASS' if good else 'FAIL'}")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1/10 of the data, 1 epoch: checks the script, not the targets")
    p.add_argument("--summarize-only", action="store_true")
    args = p.parse_args()
    if not args.summarize_only:
        run_all(args.quick)
    return summarize()


if __name__ == "__main__":
    sys.exit(main())
