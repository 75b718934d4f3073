"""`frugal` command line: one function per subcommand, no logic beyond parsing and calling the API."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from frugalml.errors import FrugalError

EPILOG = "Every number in a report is measured on this machine; see BENCHMARKS.md for the methods."


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    log = logging.getLogger("frugalml")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.propagate = False


def cmd_run(args: argparse.Namespace) -> int:
    from frugalml.pipeline import run_recipe
    from frugalml.recipe import load_recipe
    from frugalml.train.distributed import shutdown, world

    recipe, source = load_recipe(args.recipe, args.set)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    if args.nproc > 1 or args.nnodes > 1:
        return _launch_run(args, recipe, out)
    rank, _, nprocs = world()  # set by torchrun when this is one of several processes
    if rank:
        logging.getLogger("frugalml").setLevel(logging.WARNING)  # rank 0 logs
    try:
        results = run_recipe(recipe, out, resume=args.resume, force=args.force, source=source,
                             trust_code=args.trust_code)
    except FrugalError as e:
        if nprocs > 1:
            e.args = (f"rank {rank}: {e}",)
        raise
    finally:
        shutdown()
    if nprocs == 1:
        _print_results(results, out)
    return 0


def _launch_run(args: argparse.Namespace, recipe, out: Path) -> int:  # noqa: ANN001 - a Recipe
    """`--nproc N`: the same `frugal run` in N processes per machine, started by torchrun's agent."""
    from frugalml.errors import ConfigError
    from frugalml.pipeline import check_output_dir, recipe_hash
    from frugalml.train.launch import check_batch_sizes, launch

    if args.nproc < 1 or args.nnodes < 1:
        raise ConfigError("--nproc and --nnodes must be at least 1")
    procs = args.nproc * args.nnodes
    check_batch_sizes(recipe.model_dump(mode="json"), procs)
    if args.node_rank == 0:
        check_output_dir(out, args.resume, args.force)  # user errors once, before any process starts
    flags = [f for f, on in (("--resume", args.resume), ("--force", args.force), ("--trust-code", args.trust_code)) if on]
    worker = ["-u", "-m", "frugalml.cli", *(["-v"] if args.verbose else []), "run",
              *([args.recipe] if args.recipe else []), "--out", str(out),
              *[a for s in args.set for a in ("--set", s)], *flags]
    launch(sys.executable, worker, nproc=args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
           rdzv_endpoint=args.rdzv_endpoint, run_id=f"frugal-{recipe_hash(recipe)}",
           threads=recipe.measure.threads, timeout=recipe.train.distributed.timeout,
           hint="; continue the run with the same command and --resume")
    if args.node_rank == 0:
        _print_results(json.loads((out / "results.json").read_text()), out)
    return 0


def _print_results(results: dict, out: Path) -> None:
    for st in results["stages"]:
        m = st["metrics"]
        b64 = (m.get("latency_ms") or {}).get("b64", {}).get("median")
        print(f"{st['name']:<16} accuracy {100 * (m.get('accuracy') or 0):6.2f}%  params {m.get('params')}"
              f"  b64 {b64:.3f} ms" if b64 is not None else f"{st['name']}")
    print(f"report: {out / 'report.html'}  (also report.md, results.json)")


def _data(args: argparse.Namespace):  # noqa: ANN202 - a DataBundle
    from frugalml.data import DataConfig, load_data

    return load_data(DataConfig.checked("--data", name=args.data, root=args.root))


def cmd_measure(args: argparse.Namespace) -> int:
    from frugalml import artifact
    from frugalml._io import atomic_write_text, check_output_file
    from frugalml.measure import MeasureConfig
    from frugalml.pipeline import measure_stage

    if args.out:
        check_output_file(args.out)  # before minutes of measuring
    info = artifact.read_info(args.artifact)
    data = _data(args)
    data.check_fits(info["spec"], f"artifact {args.artifact}")
    model = artifact.load(args.artifact, trust_code=args.trust_code)
    cfg = MeasureConfig.checked("--threads", threads=args.threads) if args.threads else MeasureConfig()
    metrics = measure_stage(model, data, cfg, Path(args.artifact))
    text = json.dumps(metrics, indent=2, default=str)
    if args.out:
        atomic_write_text(args.out, text + "\n")
        print(f"metrics written to {args.out}")
    else:
        print(text)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from frugalml.models import list_models

    for name in list_models():
        print(name)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from frugalml.data import list_datasets

    for name, desc in list_datasets():
        print(f"{name:<16} {desc}")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from frugalml.stages import stage_kinds

    for kind in stage_kinds().values():
        for cls in kind.members():
            variant = f" {kind.variant_key}: {cls.model_fields[kind.variant_key].default}" if kind.variant_key else ""
            label = kind.kind + variant
            fields = ", ".join(f for f in cls.model_fields if f not in ("kind", "name", "parent", kind.variant_key))
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            print(f"{label}\n    {doc}\n    options: {fields}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from frugalml.report import load_results, write_reports

    runs = [(Path(d).name, load_results(d)) for d in args.run_dirs]
    if len(runs) == 1 and not args.out:
        paths = write_reports(args.run_dirs[0], runs[0][1])
    else:
        paths = write_reports(args.out or "runs/comparison", runs)
    print(f"report: {paths['html']}  (also {paths['md']})")
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from frugalml.compress.prune import run_sensitivity
    from frugalml.data import DataConfig
    from frugalml.errors import ConfigError

    try:
        ratios = [float(r) for r in args.ratios.split(",")]
    except ValueError:
        raise ConfigError(f"--ratios {args.ratios!r}: expected comma-separated numbers, e.g. 0.25,0.5,0.75") from None
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ConfigError(f"--ratios {args.ratios!r}: every ratio must lie strictly between 0 and 1")
    out = run_sensitivity(args.artifact, DataConfig.checked("--data", name=args.data, root=args.root),
                          Path(args.out or Path(args.artifact) / "sensitivity"), ratios, trust_code=args.trust_code)
    print(f"sensitivity table and plot: {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from frugalml.export import export

    data = _data(args) if args.data else None
    rep = export(args.artifact, args.format, out=args.out, data=data, trust_code=args.trust_code)
    print(f"exported {rep.path}: max abs difference {rep.max_abs_diff:.3g}, top-1 agreement {100 * rep.top1_agreement:.2f}%")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from frugalml.data import DataConfig
    from frugalml.datawise.autolabel import label_pool

    data_cfg = DataConfig.checked("--data", name=args.data, root=args.root, labels_per_class=args.labels_per_class,
                                  seed=args.seed, val_fraction=args.val_fraction)
    s = label_pool(args.artifact, data_cfg, args.out, args.target_precision, args.unlabelled, args.trust_code)
    measured = f", measured precision {100 * s['precision']:.2f}%" if s.get("precision") is not None else ""
    print(f"labelled {s['auto_labelled']} of {s['samples']} samples ({100 * s['coverage']:.1f}%) at target precision "
          f"{s['target_precision']}{measured}; {s['samples'] - s['auto_labelled']} for a person: {s['review_csv']}")
    if "test_split" in s and s["test_split"]["precision"] is not None:
        t = s["test_split"]
        print(f"same thresholds on the test split: {100 * t['coverage']:.1f}% labelled at {100 * t['precision']:.2f}% precision")
    print(f"labels: {s['csv']}")
    return 0


def cmd_active(args: argparse.Namespace) -> int:
    from frugalml.datawise.active import ActiveConfig, active_learning, write_active

    cfg = ActiveConfig.checked("active", {
        "data": {"name": args.data, "root": args.root, "limit": args.limit, "seed": args.seed},
        "model": {"name": args.model}, "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr},
        "strategies": args.strategies.split(","), "initial": args.initial, "batch": args.batch,
        "rounds": args.rounds, "candidates": args.candidates, "seed": args.seed,
    })
    paths = write_active(args.out, active_learning(cfg))
    print(f"active learning curves: {paths['png']}  (also {paths['json'].name}, {paths['csv'].name})")
    return 0


def _trust(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-code", action="store_true",
                   help="allow artifacts to import the user code (package.module:factory) their model.json names")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="frugal", description="Make neural networks cheaper, and measure it honestly.", epilog=EPILOG
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a recipe (no RECIPE: the built-in default on digits)",
                       description="Train/load a model, apply the recipe's stages, measure each stage the same "
                       "way, and write results.json, report.md, report.html and one artifact per stage.")
    r.add_argument("recipe", nargs="?", help="recipe YAML file; omitted: the built-in default on 'digits'")
    r.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    r.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=3 --set stages.1.ratio=0.5")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    r.add_argument("--force", action="store_true",
                   help="replace an existing run directory (only a frugalml run, or an empty folder)")
    _trust(r)
    d = r.add_argument_group("several processes (torchrun's machinery; recipe train.distributed)")
    d.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="training processes on this machine: gloo on CPU, nccl on GPUs; the machine's thread "
                   "budget (measure.threads, else all cores) is split across them; train.batch_size stays the "
                   "global batch")
    d.add_argument("--nnodes", type=int, default=1, metavar="M", help="machines in the run; each runs this command")
    d.add_argument("--node-rank", type=int, default=0, metavar="R",
                   help="this machine's rank; 0 listens at --rdzv-endpoint and writes the run folder")
    d.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="machine 0's address (with --nnodes > 1)")
    r.set_defaults(fn=cmd_run)

    m = sub.add_parser("measure", help="measure a saved artifact on a dataset")
    m.add_argument("artifact", help="artifact directory (e.g. runs/default/stages/baseline)")
    m.add_argument("--data", required=True, help="dataset spec: digits, fashion-mnist, idx:DIR, folder:DIR, synthetic")
    m.add_argument("--root", help="dataset directory for fashion-mnist")
    m.add_argument("--threads", type=int, help="threads for latency (default: all cores)")
    m.add_argument("--out", help="write the metrics JSON here instead of stdout")
    _trust(m)
    m.set_defaults(fn=cmd_measure)

    sub.add_parser("models", help="list the model zoo").set_defaults(fn=cmd_models)
    sub.add_parser("datasets", help="list dataset specs").set_defaults(fn=cmd_datasets)
    sub.add_parser("stages", help="list stage kinds and their options").set_defaults(fn=cmd_stages)

    rp = sub.add_parser("report", help="re-render reports; several runs side by side")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", help="directory for a comparison report (default: runs/comparison for several runs)")
    rp.set_defaults(fn=cmd_report)

    s = sub.add_parser("sensitivity", help="per-layer pruning sensitivity table and plot")
    s.add_argument("artifact")
    s.add_argument("--data", required=True, help="dataset spec")
    s.add_argument("--root", help="dataset directory for fashion-mnist")
    s.add_argument("--ratios", default="0.25,0.5,0.75", help="comma-separated pruning ratios")
    s.add_argument("--out", help="output directory (default: ARTIFACT/sensitivity)")
    _trust(s)
    s.set_defaults(fn=cmd_sensitivity)

    e = sub.add_parser("export", help="export an artifact to ONNX or a torch.export .pt2 and check it")
    e.add_argument("artifact")
    e.add_argument("--format", required=True, choices=["onnx", "pt2"])
    e.add_argument("--out", help="output file (default: next to the artifact)")
    e.add_argument("--data", help="dataset spec for the check batch (default: the artifact's input shape, random)")
    e.add_argument("--root", help="dataset directory for fashion-mnist")
    _trust(e)
    e.set_defaults(fn=cmd_export)

    lb = sub.add_parser("label", help="label an unlabelled pool automatically at a target precision",
                        description="Predict a label and confidence for every unlabelled sample; per-class thresholds "
                        "calibrated on the data's validation split reach the target precision; the rest is listed "
                        "for a person (OUT.review.csv).")
    lb.add_argument("artifact")
    lb.add_argument("--data", required=True, help="dataset spec the model was trained on (its val split calibrates)")
    lb.add_argument("--root", help="dataset directory for fashion-mnist")
    lb.add_argument("--unlabelled", metavar="DIR", help="folder of images to label (default: the data's unlabelled pool)")
    lb.add_argument("--labels-per-class", type=int, help="keep N labels per class; the rest of train is the pool")
    lb.add_argument("--seed", type=int, default=0, help="split seed of the data (as in the recipe)")
    lb.add_argument("--val-fraction", type=float, default=0.1, help="val split of the data (as in the recipe)")
    lb.add_argument("--target-precision", type=float, default=0.99)
    lb.add_argument("--out", required=True, help="CSV of labels (the review list goes next to it)")
    _trust(lb)
    lb.set_defaults(fn=cmd_label)

    a = sub.add_parser("active", help="simulate active learning on a labelled dataset and plot the curves",
                       description="Start from a small random labelled pool; each round train a fresh model, let "
                       "each strategy pick K samples, reveal their labels; plot accuracy against labels used.")
    a.add_argument("--data", required=True, help="dataset spec (its training labels are revealed on demand)")
    a.add_argument("--root", help="dataset directory for fashion-mnist")
    a.add_argument("--limit", type=int, help="cap on the training split (the pool)")
    a.add_argument("--model", default="cnn", help="zoo model trained each round")
    a.add_argument("--epochs", type=int, default=10)
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--lr", type=float, default=0.05)
    a.add_argument("--strategies", default="entropy,margin,least_confidence,random")
    a.add_argument("--initial", type=int, default=100, help="labelled samples to start from")
    a.add_argument("--batch", type=int, default=100, help="samples labelled per round (K)")
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--candidates", type=int, help="score a random subset of the pool each round")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", required=True, help="output folder (active.json, active.csv, active.png)")
    a.set_defaults(fn=cmd_active)

    from frugalml.optimize.cli import add_parser as add_optimize

    add_optimize(sub, _trust)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.fn(args)
    except FrugalError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; continue with `frugal run ... --resume`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
