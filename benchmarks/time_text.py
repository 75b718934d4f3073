"""Time a text run's artifacts against its teacher's fp32 runtimes on real test inputs, in alternating
rounds in one process (the pipeline times each stage once, minutes apart; this repeats the comparison
back to back). Prints each round's b32 median and the ratios of the medians.

    .venv/bin/python benchmarks/time_text.py RUN_DIR [--teacher teacher] [--stages int8,int8-smooth] \\
        [--batch 32] [--rounds 3]

The artifacts are loaded with trust_code=True (hf: models from your own run). The teacher is timed as fp32 eager, torch.compile and ONNX Runtime fp32; each stage as loaded. Inputs:
the first `batch` texts of the recipe's test split (padded to its max_length); threads = measure.threads.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from frugalml import artifact
from frugalml.compress.quantize.select import REFERENCES
from frugalml.data.load import load_data
from frugalml.measure.core import _model_runner
from frugalml.measure.latency import measure_latency
from frugalml.recipe import load_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--teacher", default="teacher")
    ap.add_argument("--stages", default="int8,int8-smooth")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    run = Path(args.run)
    recipe, _ = load_recipe(run / "recipe.yaml")
    torch.set_num_threads(recipe.measure.threads or torch.get_num_threads())
    data = load_data(recipe.data)
    x = data.x_test[: args.batch]
    teacher = artifact.load(run / "stages" / args.teacher, trust_code=True).eval()
    runners = {
        "teacher fp32 eager": _model_runner(teacher),
        "teacher torch.compile": REFERENCES["torch-compile"](teacher, data),
        "teacher ONNX Runtime fp32": REFERENCES["onnxruntime"](teacher, data),
    }
    for name in filter(None, args.stages.split(",")):
        runners[name] = artifact.load(run / "stages" / name, trust_code=True)
    cfg = recipe.measure  # warm-up and iterations as the run timed its stages
    times: dict[str, list[float]] = {k: [] for k in runners}
    names = list(runners)
    with torch.inference_mode():
        for fn in runners.values():
            fn(x)
        for r in range(args.rounds):
            for k in names[r % len(names):] + names[: r % len(names)]:
                times[k].append(measure_latency(runners[k], x, cfg)["median"])
    med = {k: statistics.median(v) for k, v in times.items()}
    best = min((k for k in med if k.startswith("teacher")), key=med.__getitem__)
    print(f"b{args.batch} x {x['input_ids'].shape[1]} tokens, {args.rounds} alternating rounds, "
          f"threads {torch.get_num_threads()}; best fp32: {best}")
    for k, v in times.items():
        print(f"{k}: {' / '.join(f'{t:.1f}' for t in v)}  median {med[k]:.1f} ms  "
              f"x{med['teacher fp32 eager'] / med[k]:.2f} vs eager, x{med[best] / med[k]:.2f} vs best fp32")


if __name__ == "__main__":
    main()
