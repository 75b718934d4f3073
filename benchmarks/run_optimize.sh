#!/usr/bin/env bash
# Issue #13 acceptance: `frugal optimize` on the Fashion-MNIST baseline CNN, 1 hour per objective (latency at
# batch 64, then stored size), each best.yaml reproduced with `frugal run`, then the BENCHMARKS.md tables.
# Run on an otherwise idle machine (about 2 h 20 min on 2 cores). BUDGET=30m shortens both searches.
# Reuses runs/fm-baseline (trained if missing) and compares with the hand-written pruning, quantization and
# storage runs found under runs/ (benchmarks/run_all.sh makes them).
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/frugal
BUDGET=${BUDGET:-1h}
[ -f runs/fm-baseline/stages/baseline/model.json ] || $F run recipes/fashion-mnist-baseline.yaml --out runs/fm-baseline
compare=()
for r in runs/fm-prune runs/fashion-mnist-prune runs/fm-quantize runs/fashion-mnist-quantize runs/fm-storage runs/fm-storage-85 runs/fm-prune-int8 \
         runs/fashion-mnist-storage; do
  if [ -f "$r/results.json" ]; then compare+=("$r"); fi
done
for objective in latency-b64 size; do
  out="runs/fm-optimize-$objective"
  $F optimize recipes/fashion-mnist-optimize.yaml --objective "$objective" --max-drop 1.0 --budget "$BUDGET" \
    --out "$out" --force ${compare[@]+--compare "${compare[@]}"}
  $F run "$out/best.yaml" --out "$out-best" --force
done
.venv/bin/python benchmarks/summarize_optimize.py runs/fm-optimize-latency-b64 runs/fm-optimize-size
