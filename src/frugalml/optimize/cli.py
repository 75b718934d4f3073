"""The `frugal optimize` subcommand: its arguments and handler (imports neither torch nor optuna
until it runs)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def cmd_optimize(args: argparse.Namespace) -> int:
    from frugalml.optimize import optimize
    from frugalml.optimize.run import print_summary

    flags = {"objective": args.objective, "also": args.also, "max_drop": args.max_drop,
             "select_margin": args.select_margin, "drop_as": args.drop_as, "budget": args.budget,
             "trials": args.trials, "seed": args.seed, "sampler": args.sampler, "compare": args.compare}
    summary = optimize(args.source, data=args.data, root=args.root, overrides=args.set, search=flags, out=args.out,
                       storage=args.storage, resume=args.resume, force=args.force, trust_code=args.trust_code)
    print_summary(summary, args.out)
    return 0


def add_parser(sub: argparse._SubParsersAction, trust: Callable[[argparse.ArgumentParser], None]) -> None:
    o = sub.add_parser("optimize", help="search for the cheapest pipeline within an accuracy budget, by measurement",
                       description="Search stage chains (pruning, low rank, quantization, runtimes) with Optuna for "
                       "the cheapest pipeline whose val accuracy drop stays within --max-drop; every trial is a run "
                       "folder, best.yaml and front.json are rewritten after each. The test split is read only at "
                       "the end, to report the final front.")
    o.add_argument("source", metavar="RECIPE|ARTIFACT",
                   help="a recipe (its last stage, or search.base, is the base model; `search:` configures the "
                   "search) or an artifact folder with --data")
    o.add_argument("--data", help="dataset spec for an ARTIFACT (digits, fashion-mnist, idx:DIR, ...)")
    o.add_argument("--root", help="dataset directory for fashion-mnist (with --data)")
    o.add_argument("--objective", help="what to minimise: latency-b64 (default), latency-b1, size, size-zstd, macs, "
                   "params, energy")
    o.add_argument("--also", action="append", metavar="OBJECTIVE", help="another objective (repeatable)")
    o.add_argument("--max-drop", type=float, metavar="POINTS", help="allowed val accuracy drop vs the base (default 1.0)")
    o.add_argument("--select-margin", type=float, metavar="POINTS",
                   help="choose only pipelines whose val drop is at most max-drop minus this (default 0): val "
                   "drops of retrained pipelines tend to under-estimate their test drops")
    o.add_argument("--drop-as", choices=["objective", "constraint"],
                   help="objective (default): the sampler minimises the accuracy drop with the costs (a front); "
                   "constraint: it minimises the costs among pipelines within max-drop minus select-margin")
    o.add_argument("--budget", help="wall-clock budget: 90s, 30m, 1h")
    o.add_argument("--trials", type=int, metavar="N", help="stop once the study has N trials (all workers)")
    o.add_argument("--sampler", choices=["tpe", "nsga2"])
    o.add_argument("--seed", type=int)
    o.add_argument("--compare", nargs="+", metavar="RUN_DIR",
                   help="hand-written runs whose stages the report compares the chosen pipeline with")
    o.add_argument("--storage", metavar="URL",
                   help="Optuna storage shared by workers: journal:PATH (a file on a shared folder) or an RDB URL "
                   "(postgresql://...); default: sqlite in --out. Start the same command on each machine.")
    o.add_argument("--out", help="search folder (default: runs/<recipe name>-optimize)")
    o.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a recipe value, e.g. --set search.space.prune.none=null")
    o.add_argument("--resume", action="store_true", help="continue a search in --out (no finished trial is lost)")
    o.add_argument("--force", action="store_true", help="replace a search folder (only one frugal optimize wrote)")
    trust(o)
    o.set_defaults(fn=cmd_optimize)
