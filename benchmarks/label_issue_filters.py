"""Which cleanlab filter finds flipped labels best? Re-scores a finished `label_issues` run (issue #11).

    .venv/bin/python benchmarks/label_issue_filters.py runs/label-efficiency/label-noise \
        --recipe recipes/fashion-mnist-label-noise.yaml

The stage's fold models are read back from a *copy* of its checkpoints (the run folder is not
written), the same out-of-fold probabilities are predicted again (same folds, same code:
frugalml.datawise.label_issues.out_of_fold_probabilities), and every `filter_by` of
cleanlab.filter.find_label_issues is scored against the labels the data flipped on purpose: found,
recall, precision; plus precision among the k most likely issues (ranked by self-confidence) for k =
the number of flipped labels. No training: about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_self_confidence", "low_normalized_margin")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a finished run folder with a label_issues stage and data.label_noise > 0")
    p.add_argument("--stage", default="clean", help="the label_issues stage's name (default: clean)")
    p.add_argument("--recipe", help="the recipe the run was made from (default: the run's recipe.yaml; runs "
                   "written before 2026-12-01 spelled unset stage overrides as null there: pass the original)")
    args = p.parse_args(argv)

    from frugalml.data import load_data
    from frugalml.datawise.label_issues import (
        find_issues,
        out_of_fold_probabilities,
        score_issues,
        stage_train_config,
    )
    from frugalml.recipe import load_recipe
    from frugalml.stages import StageContext

    run = Path(args.run)
    recipe, _ = load_recipe(args.recipe or str(run / "recipe.yaml"))
    cfg = next((s for s in recipe.stages if s.name == args.stage), None)
    if cfg is None or cfg.kind != "label_issues":
        sys.exit(f"{run}: no label_issues stage named {args.stage!r}")
    data = load_data(recipe.data)
    if data.y_train_true is None:
        sys.exit(f"{run}: the data flipped no labels (data.label_noise), so there is nothing to score against")
    spec = (cfg.model or recipe.model).spec(data.input_shape, data.num_classes)
    tcfg = stage_train_config(recipe.train, cfg, recipe.seed)
    tcfg = tcfg.model_copy(update={"epochs": cfg.fold_epochs or tcfg.epochs})
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(run / "stages" / cfg.name / "work", Path(tmp) / "work",
                        ignore=shutil.ignore_patterns("cleaned"))
        ctx = StageContext(data=data, model_spec=spec, stage_dir=Path(tmp), resume=True,
                           log=logging.getLogger("label_issue_filters"))
        probs = out_of_fold_probabilities(data, spec, tcfg, cfg.folds, recipe.seed, ctx)
    labels, truth = data.y_train.numpy(), data.y_train_true.numpy()
    flipped = labels != truth
    k = int(flipped.sum())
    rows = []
    for name in FILTERS:
        issues = find_issues(labels, probs, name)
        rows.append({"filter_by": name, "found": len(issues), **score_issues(issues, labels, truth),
                     "precision_top_k": float(flipped[issues[:k]].mean()) if len(issues) >= k else None})
    print(f"{run}: {k} of {len(labels)} labels flipped; "
          f"out-of-fold accuracy against the true labels {100 * (probs.argmax(1) == truth).mean():.2f}%")
    print(f"| filter_by | found | recall | precision | precision in the top k = {k} |")
    print("|---|---|---|---|---|")

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}%"

    for r in rows:
        print(f"| {r['filter_by']} | {r['found']} | {pct(r['recall'])} | {pct(r['precision'])} | {pct(r['precision_top_k'])} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
