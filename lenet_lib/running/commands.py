"""The `notebooks` and `list` commands: re-execute the notebooks in place with their defaults (the stored
outputs nbval compares), and list every notebook's runs per profile and preset and each preset's readings."""
from __future__ import annotations

import functools
import sys
import threading
from pathlib import Path

from lenet_lib.running.checks import PROFILES, ConfigError, did_you_mean, expand, listing
from lenet_lib.running.executors import describe_error, refresh_notebook
from lenet_lib.running.index import _short
from lenet_lib.running.params import load_params
from lenet_lib.running.runner import REPO_ROOT, SUMMARY, default_jobs, kernel_threads
from lenet_lib.running.workers import LocalExecutor


def refresh_notebooks(only=None, jobs: int | None = None, notebooks_dir=None, out=None) -> int:
    """Execute every notebook (but the summary) in place with its defaults; 1 if any failed."""
    from tqdm import tqdm
    out = out or sys.stderr
    notebooks_dir = Path(notebooks_dir or REPO_ROOT / "notebooks")
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"--jobs {jobs!r} is not valid; expected a positive integer")
    paths = {p.stem: p for p in sorted(notebooks_dir.glob("*.ipynb")) if p.stem != SUMMARY}
    for name in only or []:
        if name not in paths:
            raise ConfigError(f"unknown notebook {name!r} in --only{did_you_mean(name, paths)}; "
                              f"valid: {listing(paths)}")
    chosen = [str(p.resolve()) for n, p in paths.items() if not only or n in only]
    failed = []
    jobs = jobs or default_jobs()
    tqdm.set_lock(threading.RLock())        # not tqdm's multiprocessing lock: it leaves a semaphore behind
    refresh = functools.partial(refresh_notebook, threads=kernel_threads("local", jobs, None))
    with LocalExecutor(jobs) as ex, tqdm(total=len(chosen), unit="notebook", desc="notebooks", file=out) as bar:
        for path, outcome in ex.imap(refresh, chosen):
            if isinstance(outcome, BaseException) or outcome.status != "ok":
                error = describe_error(outcome) if isinstance(outcome, BaseException) else outcome.error
                failed.append(f"{Path(path).stem} ({_short(error)})")
            bar.update()
    print(f"notebooks: {len(chosen)} executed, {len(failed)} failed" + (": " + ", ".join(failed) if failed else ""))
    return 1 if failed else 0


def list_notebooks(params_dir=None, notebooks_dir=None) -> int:
    """Every notebook: runs per profile and preset, then each preset's readings (* marks the primary)."""
    params = load_params(Path(params_dir or REPO_ROOT / "params"), Path(notebooks_dir or REPO_ROOT / "notebooks"))
    header = ["notebook", *PROFILES, "presets", "title"]
    rows, readings = [], []
    for nb in params.values():
        counts = {label: len(expand(block["matrix"])) for label, block in nb.blocks.items()}
        presets = " ".join(f"{name}:{sum(n for label, n in counts.items() if nb.blocks[label].get('preset') == name)}"
                           for name in nb.presets)      # runs of every reading
        rows.append([nb.name, *(str(counts[f"profile {p}"]) for p in PROFILES), presets or "-", nb.title])
        for label, block in nb.blocks.items():
            if "preset" in block:
                mark = "*" if block["primary"] else " "
                where = "" if block["run_at"] == list(PROFILES) else f", {' and '.join(block['run_at'])} profiles only"
                readings.append(f"  {block['preset']} ({nb.name}): {mark} {block['reading']}: {counts[label]} "
                                f"run{'' if counts[label] == 1 else 's'}, protocol {label.split(' ', 1)[1]}{where}")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    print("runs per profile/preset (all its readings); run one with: python -m lenet_lib report --profile "
          "quick|default|full or --preset NAME (NAME:READING for one reading)")
    if readings:
        print("readings (* primary, declared before any run):")
        print("\n".join(readings))
    return 0
