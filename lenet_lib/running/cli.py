"""Command line: python -m lenet_lib report | notebooks | list (see --help of each)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from lenet_lib.running import decide
from lenet_lib.running.checks import PROFILES, ConfigError
from lenet_lib.running.commands import list_notebooks, refresh_notebooks
from lenet_lib.running.decide import DECIDE
from lenet_lib.running.executors import ExecutorError
from lenet_lib.running.runner import report


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lenet_lib", description="LeNet-5 experiment suite runner.")
    commands = parser.add_subparsers(dest="command", required=True)

    rep = commands.add_parser("report", help="run the params/ matrix (cached), then build outputs/report.html")
    rep.add_argument("--profile", choices=(*PROFILES, DECIDE), help="matrix size: quick, default (the default) "
                     "or full; or decide: seeds in stages until the claims are decided (needs --budget)")
    rep.add_argument("--budget", metavar="TIME", help="with --profile decide: the time it may take, e.g. 60m, "
                     "90s, 1h30m (a plain number is minutes); no stage starts that would not finish in it")
    rep.add_argument("--preset", help="a seed report's protocol (e.g. R1): only notebooks defining it run")
    rep.add_argument("--only", metavar="NB[,NB...]", help="run these notebooks only")
    rep.add_argument("--jobs", type=int, help="runs side by side (default: 1 with CUDA, else min(2, CPUs))")
    rep.add_argument("--threads", type=int, help="CPU threads per run (default: CPUs / jobs locally, 1 on "
                     "Dask); part of a run's identity, since float sums depend on it")
    rep.add_argument("--force", action="store_true", help="re-run finished runs and the summary")
    rep.add_argument("--outputs", metavar="DIR", help="outputs folder (default: outputs/ in the repository)")
    rep.add_argument("--executor", choices=("local", "dask"), help="local processes (default) or Dask")
    rep.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler, e.g. tcp://host:8786 "
                     "(default with --executor dask: a LocalCluster of --jobs processes)")
    rep.add_argument("--no-report", action="store_true", help="run the experiments, skip summary and report")
    rep.add_argument("--params", metavar="DIR", help="params folder (default: params/ in the repository)")
    rep.add_argument("--notebooks", metavar="DIR", help="notebooks folder (default: notebooks/)")

    nbs = commands.add_parser("notebooks", help="re-execute notebooks in place with their defaults "
                              "(the stored outputs nbval compares; summary.ipynb excluded)")
    nbs.add_argument("--only", metavar="NB[,NB...]")
    nbs.add_argument("--jobs", type=int)
    nbs.add_argument("--notebooks", metavar="DIR")

    lst = commands.add_parser("list", help="notebooks, their profiles and presets, and run counts")
    lst.add_argument("--params", metavar="DIR")
    lst.add_argument("--notebooks", metavar="DIR")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as a Ctrl-C: workers are stopped and their kernels shut down."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()    # signals go there only
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        if args.command == "report" and (args.profile == DECIDE or args.budget is not None):
            if args.profile != DECIDE:
                raise ConfigError(f"--budget needs --profile decide (got --profile {args.profile or 'default'})")
            if args.budget is None:
                raise ConfigError("--profile decide needs --budget, e.g. --budget 60m")
            return decide.report(args.budget, preset=args.preset, only=_names(args.only), jobs=args.jobs,
                                 force=args.force, outputs=args.outputs,
                                 executor=args.executor or ("dask" if args.scheduler else "local"),
                                 scheduler=args.scheduler, make_report=not args.no_report,
                                 params_dir=args.params, notebooks_dir=args.notebooks, threads=args.threads)
        if args.command == "report":
            return report(profile=args.profile, preset=args.preset, only=_names(args.only), jobs=args.jobs,
                          force=args.force, outputs=args.outputs,
                          executor=args.executor or ("dask" if args.scheduler else "local"),
                          scheduler=args.scheduler, make_report=not args.no_report,
                          params_dir=args.params, notebooks_dir=args.notebooks, threads=args.threads)
        if args.command == "notebooks":
            return refresh_notebooks(only=_names(args.only), jobs=args.jobs, notebooks_dir=args.notebooks)
        return list_notebooks(params_dir=args.params, notebooks_dir=args.notebooks)
    except (ConfigError, ExecutorError) as exc:
        # A user error: one clear line, no traceback.
        print(f"{args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        why, code = ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        print(f"\n{args.command}: {why}; finished runs are kept, the others run again next time", file=sys.stderr)
        return code
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)

