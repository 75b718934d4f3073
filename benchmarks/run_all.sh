#!/usr/bin/env bash
# Produces every number in BENCHMARKS.md. Run on an otherwise idle machine: `make bench` (many hours on
# 2 cores; each line can be run on its own, in this order: later recipes load earlier runs' models).
# The Fashion-MNIST baseline is trained once; the technique recipes extend its recipe and load its model.
set -euo pipefail
cd "$(dirname "$0")/.."
F=.venv/bin/frugal
$F run --out runs/bench-default --force
$F run recipes/fashion-mnist-baseline.yaml --out runs/fm-baseline --force
# pruning, quantization, storage (issue #9: the 85% chain and its second attempts, the prune -> int8 chain)
for r in prune quantize; do  # storage = its two halves below (storage-85, storage-95)
  $F run "recipes/fashion-mnist-$r.yaml" --out "runs/fashion-mnist-$r" --force
done
$F run recipes/fashion-mnist-storage-85.yaml --out runs/fm-storage-85 --force
$F run recipes/fashion-mnist-storage-95.yaml --out runs/fm-storage-95 --force
$F run recipes/fashion-mnist-storage-attempts.yaml --out runs/fm-storage-attempts --force
$F run recipes/fashion-mnist-prune-int8.yaml --out runs/fm-prune-int8 --force
# distillation (3 seeds, short protocol; FULL=1 for the 38-epoch one), small-student ensemble, low-rank, students (issue #10)
bash benchmarks/run_distill.sh
# data efficiency (issue #11)
L=benchmarks/label_efficiency.py
.venv/bin/python $L curve --methods supervised,augmented,probe,finetune --budgets 10,60  # 3 seeds each
.venv/bin/python $L curve --methods finetune96 --budgets 10                           # 96-px fine-tune, ~15 min per seed
.venv/bin/python $L curve --methods fixmatch --budgets 60
.venv/bin/python $L autolabel --method finetune
.venv/bin/python $L active
.venv/bin/python $L noise      # recipes/fashion-mnist-label-noise.yaml into runs/label-efficiency/label-noise
.venv/bin/python benchmarks/label_issue_filters.py runs/label-efficiency/label-noise
.venv/bin/python $L summary
# transformers (issue #14), distributed training (issue #12), pipeline search (issue #13)
$F run recipes/minilm-fortunes.yaml --out runs/minilm-fortunes --force
$F run recipes/minilm-fortunes-distill.yaml --out runs/minilm-fortunes-distill --force
.venv/bin/python benchmarks/distributed_comm.py
bash benchmarks/run_optimize.sh
echo "done: see runs/*/report.md"
