"""Label-efficiency benchmark (issue #11), runnable in pieces; every piece skips what is already done.

    .venv/bin/python benchmarks/label_efficiency.py curve --methods supervised,augmented --budgets 10,30
    .venv/bin/python benchmarks/label_efficiency.py autolabel      # label the 60-per-class pool at 0.99
    .venv/bin/python benchmarks/label_efficiency.py active         # entropy/margin/least-confidence/random
    .venv/bin/python benchmarks/label_efficiency.py noise          # 5% flipped labels, cleanlab, retrain
    .venv/bin/python benchmarks/label_efficiency.py summary        # table, plot, acceptance checks

`curve` runs one method of recipes/fashion-mnist-labels.yaml (its stage and the stages it starts from)
per label budget and seed, into runs/label-efficiency/<method>/lpc<B>-seed<S>; the seed changes both
the labelled subset (data.seed) and training (seed). Budgets above 60 labels per class run seed 0
only unless --all-seeds. `--quick` shrinks everything to a smoke test (minutes, meaningless numbers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fashion-mnist-labels.yaml"
METHODS = ("supervised", "augmented", "probe", "finetune", "finetune96", "fixmatch", "fixmatch-ema", "fixmatch-long",
           "fixmatch-transfer")
BUDGETS = (10, 30, 60, 100, 600)
# epochs of from-scratch training per budget: ~800 to ~5,600 optimizer steps at batch 32
SCRATCH_EPOCHS = {10: 200, 30: 150, 60: 100, 100: 80, 600: 30}
# epochs of each unfrozen fine-tuning phase per budget (the cached-feature probe phase is cheap)
FINETUNE_EPOCHS = {10: 30, 30: 20, 60: 15, 100: 12, 600: 5}
QUICK = ["data.limit=1500", "measure.iters=3", "measure.min_seconds=0", "measure.warmup_iters=1",
         "measure.warmup_seconds=0"]


def _stages_for(recipe, method: str) -> list:
    by_name = {s.name: s for s in recipe.stages}
    chain, name = [], method
    while name is not None:
        chain.insert(0, by_name[name])
        name = by_name[name].parent
    return chain


def _overrides(method: str, budget: int, seed: int, quick: bool) -> list[str]:
    sets = [f"data.labels_per_class={budget}", f"data.seed={seed}", f"seed={seed}"]
    epochs = 1 if quick else SCRATCH_EPOCHS.get(budget, 30)
    sets.append(f"train.epochs={epochs}")
    return sets + (QUICK if quick else [])


def _scale(stages: list, budget: int, quick: bool) -> None:
    """Budget-dependent epochs for the fine-tuning phases; a quick run trains everything for 1 epoch."""
    for st in stages:
        for i, phase in enumerate(getattr(st, "phases", []) or []):
            if quick:
                phase.epochs = 1
            elif i > 0:
                phase.epochs = FINETUNE_EPOCHS.get(budget, 5)
        if quick and st.kind == "semisup":
            st.epochs, st.unlabelled_per_epoch = 1, 192


def run_curve(args: argparse.Namespace) -> None:
    from frugalml.pipeline import run_recipe
    from frugalml.recipe import load_recipe

    out = Path(args.out)
    for method in args.methods.split(","):
        for budget in (int(b) for b in args.budgets.split(",")):
            seeds = [int(s) for s in args.seeds.split(",")]
            for seed in seeds if budget <= 60 or args.all_seeds else seeds[:1]:
                run_dir = out / method / f"lpc{budget}-seed{seed}"
                if (run_dir / "results.json").is_file() and (run_dir / "report.md").is_file():
                    print(f"done already: {run_dir}")
                    continue
                recipe, source = load_recipe(str(RECIPE), _overrides(method, budget, seed, args.quick))
                recipe.stages = _stages_for(recipe, method)
                _scale(recipe.stages, budget, args.quick)
                recipe.name = f"labels-{method}-lpc{budget}-seed{seed}"
                resume = (run_dir / "state.json").is_file()
                print(f"running {run_dir}{' (resuming)' if resume else ''}", flush=True)
                run_recipe(recipe, run_dir, resume=resume, source=source)


def run_autolabel(args: argparse.Namespace) -> None:
    """Train `--method` at `--budget` labels per class with a 10% val split, then label the pool."""
    from frugalml.data import DataConfig
    from frugalml.datawise.autolabel import label_pool
    from frugalml.pipeline import run_recipe
    from frugalml.recipe import load_recipe

    run_dir = Path(args.out) / "autolabel" / f"{args.method}-lpc{args.budget}"
    sets = _overrides(args.method, args.budget, 0, args.quick) + [f"data.val_fraction={args.val_fraction}"]
    recipe, source = load_recipe(str(RECIPE), sets)
    recipe.stages = _stages_for(recipe, args.method)
    _scale(recipe.stages, args.budget, args.quick)
    if not (run_dir / "results.json").is_file():
        run_recipe(recipe, run_dir, resume=(run_dir / "state.json").is_file(), source=source)
    data_cfg = DataConfig.model_validate(recipe.data.model_dump())
    summary = label_pool(run_dir / "stages" / args.method, data_cfg, run_dir / "labels.csv", args.target)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "thresholds"}, indent=2))


def run_active(args: argparse.Namespace) -> None:
    from frugalml.datawise.active import ActiveConfig, active_learning, write_active

    cfg = ActiveConfig.model_validate({
        "data": {"name": "fashion-mnist", "val_fraction": 0.02, **({"limit": 3000} if args.quick else {})},
        "model": {"name": "cnn", "kwargs": {"channels": [32, 48, 64, 96]}},
        "train": {"epochs": 2 if args.quick else 30, "batch_size": 32, "lr": 0.05, "schedule": "onecycle",
                  "channels_last": True, "bf16": "auto"},
        "initial": 100, "batch": 100, "rounds": 2 if args.quick else 8,
        "candidates": 1000 if args.quick else 10000, "seed": 0,
    })
    paths = write_active(Path(args.out) / "active", active_learning(cfg))
    print(f"active learning: {paths['png']}")


def run_noise(args: argparse.Namespace) -> None:
    from frugalml.pipeline import run_recipe
    from frugalml.recipe import load_recipe

    sets = ["train.epochs=1", "stages.1.fold_epochs=1", "data.limit=3000", *QUICK[1:]] if args.quick else []
    recipe, source = load_recipe(str(ROOT / "recipes" / "fashion-mnist-label-noise.yaml"), sets)
    run_dir = Path(args.out) / "label-noise"
    if not (run_dir / "results.json").is_file():
        run_recipe(recipe, run_dir, resume=(run_dir / "state.json").is_file(), source=source)
    print(f"label noise: {run_dir / 'report.md'}")


def _accuracy(run_dir: Path, stage: str) -> float | None:
    p = run_dir / "results.json"
    if not p.is_file():
        return None
    res = json.loads(p.read_text())
    return next((s["metrics"]["accuracy"] for s in res["stages"] if s["name"] == stage), None)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(args: argparse.Namespace) -> None:
    from frugalml.report.label_plots import label_efficiency_plot

    out = Path(args.out)
    table: dict[str, dict[int, tuple[float, float, int]]] = {}
    for method in METHODS:
        for budget in BUDGETS:
            accs = [a for d in sorted((out / method).glob(f"lpc{budget}-seed*")) if (a := _accuracy(d, method)) is not None]
            if accs:
                m, s = _mean_std([100 * a for a in accs])
                table.setdefault(method, {})[budget] = (m, s, len(accs))
    lines = ["| method | " + " | ".join(f"{b}/class" for b in BUDGETS) + " |", "|---" * (len(BUDGETS) + 1) + "|"]
    for method, row in table.items():
        cells = [f"{row[b][0]:.2f} ± {row[b][1]:.2f} (n={row[b][2]})" if b in row else "–" for b in BUDGETS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    series = {m: [(10 * b, v[0], v[1]) for b, v in sorted(row.items())] for m, row in table.items()}
    (out / "label-efficiency.png").write_bytes(label_efficiency_plot(series, "Fashion-MNIST: accuracy against labels"))
    checks = _checks(out, table)
    text = "\n".join(["## label efficiency (test accuracy %, mean ± std over seeds)", "", *lines, "",
                      "## acceptance", "", *[f"- {c}" for c in checks], ""])
    (out / "summary.md").write_text(text)
    print(text)


def _checks(out: Path, table: dict) -> list[str]:
    lines = []

    def at(method: str, budget: int) -> float | None:
        return table.get(method, {}).get(budget, (None,))[0]

    sup60, best60 = at("supervised", 60), max((at(m, 60) or 0.0, m) for m in METHODS)
    if sup60 is not None and best60[0]:
        gain = best60[0] - sup60
        lines.append(f"60/class: best {best60[1]} {best60[0]:.2f}% vs supervised {sup60:.2f}%: "
                     f"{gain:+.2f} points (goal >= +6); goal >= 83.9%: {'met' if best60[0] >= 83.9 else 'missed by %.2f' % (83.9 - best60[0])}")
    sup10 = at("supervised", 10)
    tr10 = max((at(m, 10) or 0.0, m) for m in ("probe", "finetune", "finetune96"))
    if sup10 is not None and tr10[0]:
        lines.append(f"10/class: {tr10[1]} {tr10[0]:.2f}% vs scratch {sup10:.2f}%: {tr10[0] - sup10:+.2f} points (goal >= +5)")
    for summary in sorted((out / "autolabel").glob("*/summary.json")):
        s = json.loads(summary.read_text())
        lines.append(f"auto-labelling ({summary.parent.name}) at {s['target_precision']}: {100 * s['coverage']:.1f}% of "
                     f"the pool labelled (goal >= 50%) at measured precision {'n/a' if s.get('precision') is None else '%.2f%%' % (100 * s['precision'])} (goal >= 98.5%)")
    active = out / "active" / "active.json"
    if active.is_file():
        auc = {k: v["auc"] for k, v in json.loads(active.read_text())["strategies"].items()}
        lines.append("active learning AUC: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in auc.items())
                     + f" (goal: entropy or margin > random: {max(auc.get('entropy', 0), auc.get('margin', 0)) > auc.get('random', 1)})")
    noise = out / "label-noise" / "results.json"
    clean = _accuracy(ROOT / "runs" / "fm-baseline", "baseline")
    if noise.is_file():
        res = {s["name"]: s["metrics"] for s in json.loads(noise.read_text())["stages"]}
        li, noisy, cleaned = res["clean"]["label_issues"], res["noisy"]["accuracy"], res["clean"]["accuracy"]
        won = "n/a (run the trunk baseline into runs/fm-baseline)" if clean is None else \
            f"{(cleaned - noisy) / (clean - noisy):.2f} of the {100 * (clean - noisy):.2f} points lost (goal >= 0.5)"
        lines.append(f"label noise 5%: recall {100 * li['recall']:.1f}% precision {100 * li['precision']:.1f}% "
                     f"(goals >= 70%); accuracy noisy {100 * noisy:.2f}% -> cleaned {100 * cleaned:.2f}%: won back {won}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in (("curve", run_curve), ("autolabel", run_autolabel), ("active", run_active),
                     ("noise", run_noise), ("summary", summarize)):
        s = sub.add_parser(name)
        s.add_argument("--out", default=str(ROOT / "runs" / "label-efficiency"))
        s.add_argument("--quick", action="store_true", help="tiny settings: checks the script, not the numbers")
        s.set_defaults(fn=fn)
        if name == "curve":
            s.add_argument("--methods", default=",".join(METHODS))
            s.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
            s.add_argument("--seeds", default="0,1,2")
            s.add_argument("--all-seeds", action="store_true", help="every seed at every budget")
        if name == "autolabel":
            s.add_argument("--method", default="fixmatch-transfer", choices=METHODS)
            s.add_argument("--budget", type=int, default=60)
            s.add_argument("--target", type=float, default=0.99)
            s.add_argument("--val-fraction", type=float, default=0.1)
    args = p.parse_args(argv)
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
