#!/usr/bin/env bash
# The distillation / low-rank / ensemble / student-size numbers of BENCHMARKS.md (issue #10).
# Needs the Fashion-MNIST baseline run (runs/fm-baseline, made by run_all.sh or:
#   .venv/bin/frugal run recipes/fashion-mnist-baseline.yaml --out runs/fm-baseline).
# Run on an otherwise idle machine; then: .venv/bin/python benchmarks/summarize_distill.py --seeds 'fm-distill-short-s*'
# Default: the short protocol (20 epochs, no augmentation, teacher cache), ~2.5 h on the 2-core VM.
# FULL=1 also runs the 38-epoch protocol with augmentation (fashion-mnist-distill.yaml, ~1 h per seed)
# and the baseline-sized ensemble (fashion-mnist-ensemble.yaml, ~2.5 h).
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/frugal
test -f runs/fm-baseline/stages/baseline/model.json || { echo "run the baseline first (see above)"; exit 2; }
for seed in 0 1 2; do  # mean and spread over the students' seeds; the teacher is the one baseline
  $F run recipes/fashion-mnist-distill-short.yaml --out "runs/fm-distill-short-s$seed" --set seed=$seed --force
done
$F run recipes/fashion-mnist-ensemble-small.yaml --out runs/fashion-mnist-ensemble-small --force
$F run recipes/fashion-mnist-ensemble-dist.yaml --out runs/fashion-mnist-ensemble-dist2 --force
# the same students from a teacher trained without label smoothing (~15 min teacher + ~12 min per seed)
$F run recipes/fashion-mnist-baseline.yaml --set train.label_smoothing=0 --out runs/fm-baseline-nols --force
for seed in 0 1 2; do
  $F run recipes/fashion-mnist-distill-short-nols.yaml --out "runs/fm-distill-nols-s$seed" --set seed=$seed --force
done
for r in lowrank students; do
  $F run "recipes/fashion-mnist-$r.yaml" --out "runs/fashion-mnist-$r" --force
done
if [ "${FULL:-0}" = 1 ]; then
  for seed in 0 1 2; do
    $F run recipes/fashion-mnist-distill.yaml --out "runs/fm-distill-s$seed" --set seed=$seed --force
  done
  $F run recipes/fashion-mnist-ensemble.yaml --out runs/fashion-mnist-ensemble --force
  .venv/bin/python benchmarks/summarize_distill.py
fi
.venv/bin/python benchmarks/summarize_distill.py --seeds 'fm-distill-short-s*'
.venv/bin/python benchmarks/summarize_distill.py --seeds 'fm-distill-nols-s*' --control 'fm-distill-short-s*'
