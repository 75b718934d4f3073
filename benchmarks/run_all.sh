#!/usr/bin/env bash
# Produces every number in BENCHMARKS.md. Run on an otherwise idle machine: `make bench`.
# The Fashion-MNIST baseline is trained once; the technique recipes extend its recipe and load its model.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/frugal
$F run --out runs/bench-default --force
$F run recipes/fashion-mnist-baseline.yaml --out runs/fm-baseline --force
for r in recipes/fashion-mnist-prune.yaml recipes/fashion-mnist-quantize.yaml recipes/fashion-mnist-storage.yaml; do
  $F run "$r" --out "runs/$(basename "$r" .yaml)" --force
done
echo "done: see runs/*/report.md"
