"""What structured pruning keeps before any fine-tuning: the val quality of a recipe's model pruned
one-shot with each importance, with and without least-squares reconstruction (issue #14).

    .venv/bin/python benchmarks/prune_start_quality.py recipes/minilm-fortunes.yaml --ratio 0.25 \\
        --configs l1,activation+reconstruct,activation+reconstruct-plain [--calibration-batches 32]
    .venv/bin/python benchmarks/prune_start_quality.py recipes/fashion-mnist-baseline.yaml \\
        --artifact runs/fm-baseline/stages/baseline --macs-budget 0.5 --round-to 8 --configs l1,taylor,activation

A config is an importance, `+reconstruct` for the refit to the unpruned model's outputs, and
`-plain` to refit to the unpruned layer's outputs only (no residual correction in post-norm
blocks, as before 2026-12-03). Quality is the data's task metric on the val split against the
unpruned model (for embeddings: mean cosine). The model is the recipe's `model` as built (for
hf: sources the pretrained weights) or a trained `--artifact`; for embeddings the training split's
targets are not computed (pruning reads inputs only). Prints one row per config and the per-layer
refit report as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from unittest import mock

import torch

from frugalml import artifact
from frugalml.compress.prune import StructuredPrune, _calibrate, prune_with_metrics
from frugalml.data import load_data
from frugalml.measure.task import outputs, task_of
from frugalml.models import build_model
from frugalml.recipe import load_recipe
from frugalml.train.evaluate import eval_mode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--macs-budget", type=float, help="prune to this share of the MACs instead of --ratio "
                    "(channel counts rounded to --round-to, as the CNN recipes and frugal optimize do)")
    ap.add_argument("--round-to", type=int)
    ap.add_argument("--configs", default="l1,activation,activation+reconstruct")
    ap.add_argument("--calibration-batches", type=int, default=32)
    ap.add_argument("--artifact", help="prune this trained artifact (e.g. runs/fm-baseline/stages/baseline) "
                    "instead of the recipe's model as built")
    args = ap.parse_args()
    recipe, _ = load_recipe(args.recipe)
    if recipe.measure.threads:
        torch.set_num_threads(recipe.measure.threads)
    data = load_data(recipe.data)
    spec = recipe.model.spec(data.input_shape, data.num_classes)
    model = artifact.load(args.artifact).eval() if args.artifact else \
        build_model(spec["name"], tuple(spec["input_shape"]), spec["num_classes"], **spec["kwargs"]).eval()
    task = task_of(data)
    if task.name != "classification":  # reference targets: val from the unpruned model, the rest unused
        with eval_mode(model), torch.no_grad():
            data.y_val = outputs(model, data.x_val, 64, trim=True)
        width = data.y_val.shape[-1]
        data.y_train, data.y_test = torch.zeros(len(data.x_train), width), torch.zeros(len(data.x_test), width)
        data.num_classes = width
    print(f"| config | val {task.name} quality | seconds |\n|---|---|---|")
    reports = {}
    for config in args.configs.split(","):
        importance, _, rest = config.partition("+")
        amount = {"macs_budget": args.macs_budget} if args.macs_budget else {"ratio": args.ratio}
        cfg = StructuredPrune(**amount, round_to=args.round_to, importance=importance,
                              reconstruct=rest.startswith("reconstruct"), calibration_batches=args.calibration_batches)
        t0 = time.perf_counter()
        plain = mock.patch.object(_calibrate, "residual_block", lambda *_: None) if rest.endswith("-plain") \
            else contextlib.nullcontext()
        with plain:
            pruned, metrics = prune_with_metrics(copy.deepcopy(model), cfg, data, seed=recipe.seed)
        with eval_mode(pruned), torch.no_grad():
            quality = float(task.evaluate(pruned, data.x_val, data.y_val, data.num_classes)["quality"])
        print(f"| {config} | {quality:.4f} | {time.perf_counter() - t0:.0f} |", flush=True)
        reports[config] = metrics["steps"][0].get("reconstructed")
    print(json.dumps(reports))


if __name__ == "__main__":
    main()
