#!/usr/bin/env bash
# The distillation / low-rank / ensemble / student-size numbers of BENCHMARKS.md (issue #10).
# Needs the Fashion-MNIST baseline run (runs/fm-baseline, made by run_all.sh or:
#   .venv/bin/frugal run recipes/fashion-mnist-baseline.yaml --out runs/fm-baseline).
# Run on an otherwise idle machine; then: .venv/bin/python benchmarks/summarize_distill.py
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/frugal
test -f runs/fm-baseline/stages/baseline/model.json || { echo "run the baseline first (see above)"; exit 2; }
for seed in 0 1 2; do  # mean and spread over the students' seeds; the teacher is the one baseline
  $F run recipes/fashion-mnist-distill.yaml --out "runs/fm-distill-s$seed" --set seed=$seed --force
done
for r in lowrank ensemble students; do
  $F run "recipes/fashion-mnist-$r.yaml" --out "runs/fashion-mnist-$r" --force
done
.venv/bin/python benchmarks/summarize_distill.py
