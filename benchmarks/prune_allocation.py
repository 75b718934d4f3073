"""How each unstructured scope spreads one sparsity over a trained model's layers, what that costs
before any fine-tuning, and what the artifact of each choice weighs (issue #9).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_allocation.py runs/fm-baseline/stages/baseline \
        [--ratios 0.85,0.9,0.93] [--bits 3,4,5] [--data fashion-mnist]

Per scope (global magnitude, the same ratio per layer, LAMP) and ratio: the kept fraction of each
layer, the val accuracy after one-shot pruning with BatchNorm statistics re-estimated on 20,000
training images (`frugalml.compress.average.recompute_bn`; without it every model at these ratios
reads ~10-40%, a measure of stale statistics rather than of the allocation), and the bytes of the
artifact folder that the codebook stage writes for each code width (k-means codes fitted, not fine-tuned:
what the size will roughly be after fine-tuning). One-shot accuracy is a proxy for which allocation
fine-tuning will recover from best, not the accuracy a recipe ends at.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import frugalml
from frugalml.artifact import artifact_files
from frugalml.compress.average import recompute_bn
from frugalml.compress.prune._layers import weight_params
from frugalml.compress.prune.unstructured import MagnitudeMasks
from frugalml.compress.quantize import QuantizeStage
from frugalml.train.evaluate import evaluate


def _bytes(directory: Path) -> int:
    """The artifact's bytes: the files the report's `size_bytes` counts."""
    return sum(f.stat().st_size for f in artifact_files(directory))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--ratios", default="0.85,0.9,0.93")
    ap.add_argument("--bits", default="3,4,5")
    ap.add_argument("--data", default="fashion-mnist")
    args = ap.parse_args()
    base = frugalml.load(args.artifact).eval()
    data = frugalml.load_data(frugalml.DataConfig(name=args.data, val_fraction=0.1))
    print(f"dense: val {evaluate(base, data.x_val, data.y_val):.4f}")
    print("| scope | ratio | kept per layer | val, one-shot + BN re-estimated | bytes at " +
          " / ".join(f"{b}-bit" for b in args.bits.split(",")) + " |")
    print("|---|---|---|---|---|")
    for ratio in (float(r) for r in args.ratios.split(",")):
        for scope in ("global", "layer", "lamp"):
            model = copy.deepcopy(base)
            params = weight_params(model, None, [])
            masks = MagnitudeMasks(params, scope)
            masks.set_sparsity(ratio)
            masks.bake()
            kept = [float((getattr(m, p) != 0).float().mean()) for _, m, p in params]
            recompute_bn(model, data, batch_size=500, max_batches=40)
            acc = evaluate(model, data.x_val, data.y_val)
            sizes = []
            for bits in (int(b) for b in args.bits.split(",")):
                q = frugalml.quantize(model, QuantizeStage(kind="quantize", mode="codebook", bits=bits, backend="torch"))
                with tempfile.TemporaryDirectory() as tmp:
                    sizes.append(_bytes(frugalml.save(q, Path(tmp) / "a")))
            print(f"| {scope} | {ratio} | {', '.join(f'{k:.3f}' for k in kept)} | {acc:.4f} | "
                  f"{' / '.join(f'{s:,}' for s in sizes)} |", flush=True)


if __name__ == "__main__":
    main()
