"""Load several artifacts into one process and time them in alternating rounds, the way `frugal optimize`
re-times its candidates; prints each round's median and how many times each compiled runner compiled.
Used to find (and to check the fix of) compiled graphs lost to `torch._dynamo.reset()`, which strict
`torch.export` calls: BENCHMARKS.md, issue #13.

    .venv/bin/python benchmarks/time_loaded.py [--batch 64] [--rounds 3] [--load-all-first] ARTIFACT_DIR...

By default each artifact is loaded and called once before the next is loaded (as the re-timing does);
`--load-all-first` loads every artifact before the first call.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from frugalml import artifact
from frugalml.measure.config import MeasureConfig
from frugalml.measure.core import _model_runner
from frugalml.measure.latency import measure_latency


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load-all-first", action="store_true")
    args = ap.parse_args()

    def runner(d: str):
        m = artifact.load(d)
        info = artifact.read_info(d)
        x = torch.randn(args.batch, *info["spec"]["input_shape"])
        return (m if getattr(m, "frugal_runtime", None) is not None else _model_runner(m)), x, m

    loaded = {}
    if args.load_all_first:
        loaded = {d: runner(d) for d in args.dirs}
    for d in args.dirs:
        if d not in loaded:
            loaded[d] = runner(d)
        run, x, _ = loaded[d]
        with torch.inference_mode():
            run(x)
    times: dict[str, list[float]] = {d: [] for d in args.dirs}
    for r in range(args.rounds):
        for d in args.dirs[r % len(args.dirs):] + args.dirs[: r % len(args.dirs)]:
            run, x, _ = loaded[d]
            times[d].append(measure_latency(run, x, MeasureConfig())["median"])
    print(f"b{args.batch} ms, {args.rounds} alternating rounds, threads {torch.get_num_threads()}")
    for d in args.dirs:
        compiles = getattr(getattr(loaded[d][2], "_runner", None), "compiles", None)
        rounds = " / ".join(f"{t:.3f}" for t in times[d])
        print(f"{d}: {rounds}  median {statistics.median(times[d]):.3f}"
              + (f"  (compiled {compiles}x)" if compiles is not None else ""))


if __name__ == "__main__":
    main()
