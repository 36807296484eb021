"""`python -m lenet_lib report --profile decide --budget 60m`: each preset's primary reading gets its seeds in
stages until its claims are decided, with each claim's error rate kept (summary/sequential.py).

The design lives in params/profiles.yaml (`decide:`): the looks (seeds per variant, e.g. 3, 6, 12, 24), the
cap, the alpha-spending function (`spending`: pocock or obf, summary/sequential.py), and the profile whose
scale the first stage takes (`base`, default: its runs are reused as they are).
Stage k runs the new seeds of look k (seeds 3..5 at the second look) as runs of their own, split so every
job has one (at most the base's seed count a run): every cached seed is reused and a stage's runs have ids of
their own. Time claims get timing rounds in stages the same way: look k has the base's rounds per first-look
seed times look k's seeds, so a time part's information fraction is its look's, as for seeds. Where the
notebook can time without training (a `train` parameter: R1's and R4's), the rounds come from a timing-only
run of their own (`train: false`) and the seed runs skip the timing, so a time claim's next look costs a
minute, not a stage of training; elsewhere a seed run's rounds grow with its seeds. After each stage every open
claim is judged, its seed parts at their seed look and its time parts at their timing look (summary/staged.py);
a claim once decided stays decided, and a preset stops getting seeds (rounds) when none of its claims needs
them. Only the primary readings' blocks that some claim judges run (a claim judges nothing else); a block
without seeds to add (numpy_vs_torch) runs once and its claim gets one look at the 5 % level.

The budget: a preset's next stage of seeds (or of rounds) starts only if it fits what is left (fit_budget: its
runs' training images at its own earlier seconds per image, timing rounds at earlier timing runs' seconds per
round, the jobs splitting them), cheapest first; what does not fit stops at its last look while the rest go on;
a run that is running when the budget is spent is let finish, and is stopped only once the budget is exceeded by
GRACE (a quarter of it), so an estimate that was a little short costs no work. The report is then written from
what finished: a stage cut short is not judged (its look never happened), and its claims stay as the last
complete look left them.
"""
from __future__ import annotations

import math
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lenet_lib.analysis import results
from lenet_lib.summary.sequential import DEFAULT_SPENDING, check_looks, check_spending
from lenet_lib.analysis.tidy import TABLES, Tables
from lenet_lib.base import progress
from lenet_lib.running import runner
from lenet_lib.running.checks import PROFILES, ConfigError, listing
from lenet_lib.running.index import index_entries, protocols, summary_line, write_index
from lenet_lib.running.params import PROFILES_FILE, load_params, load_profiles, read_yaml, select
from lenet_lib.summary import staged
from lenet_lib.summary.verdicts import CLAIMS

DECIDE = "decide"
DESIGN_KEYS = ("base", "looks", "cap", "spending")
SEEDS, TIMING = "seeds", "timing"     # a staged block's runs after stage 1: seeds trained, or rounds timed
GRACE = 0.25            # a running run is stopped only when the budget is exceeded by this fraction of it
BUDGET_UNITS = {"s": 1, "m": 60, "h": 3600}


class BudgetSpent(Exception):
    """The budget plus its grace ran out while runs were running."""


@dataclass(frozen=True)
class Design:
    looks: tuple            # seeds per variant at each look; the last is the cap
    base: str               # the profile whose preset runs are the first stage
    spending: str = DEFAULT_SPENDING    # the alpha-spending function (summary/sequential.py's SPENDING)


def parse_budget(text) -> float:
    """"60m", "90s", "1h", "1h30m" or a number of minutes -> seconds (> 0); else a ConfigError."""
    raw = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        seconds = float(raw) * 60
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise ConfigError(f"--budget {text!r} is not valid; expected a duration such as 60m, 90s, 1h or "
                              f"1h30m (a plain number is minutes)")
        seconds = sum(float(n) * BUDGET_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"--budget {text!r} is not valid; expected a duration above zero, such as 60m")
    return seconds


def load_design(params_dir: Path) -> Design:
    """params/profiles.yaml's `decide:` block, checked: base (a profile), looks (increasing, each >= 2), cap,
    spending (a SPENDING name)."""
    path = Path(params_dir) / PROFILES_FILE
    block = read_yaml(path).get(DECIDE) if path.exists() else None
    where = f"{path}: {DECIDE}"
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: missing; --profile decide needs a mapping with keys {listing(DESIGN_KEYS)}, "
                          f"e.g. {{base: default, looks: [3, 6, 12, 24], cap: 24, spending: pocock}}")
    unknown = [k for k in block if k not in DESIGN_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {listing(unknown)}; valid keys: {listing(DESIGN_KEYS)}")
    base, looks, cap = block.get("base", "default"), block.get("looks"), block.get("cap")
    try:
        spending = check_spending(block.get("spending", DEFAULT_SPENDING))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if base not in PROFILES:
        raise ConfigError(f"{where}: base={base!r} is not valid; choose one of {listing(PROFILES)}")
    if not isinstance(looks, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in looks):
        raise ConfigError(f"{where}: looks={looks!r} is not valid; expected a list of seed counts, e.g. [3, 6, 12, 24]")
    try:
        looks = check_looks(looks)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < looks[0]:
        raise ConfigError(f"{where}: cap={cap!r} is not valid; expected a seed count >= the first look ({looks[0]})")
    if looks[-1] > cap:
        raise ConfigError(f"{where}: looks {listing(n for n in looks if n > cap)} lie past the cap {cap}; "
                          f"the cap is the last look")
    return Design(looks if looks[-1] == cap else looks + (cap,), base, spending)


def stage_seeds(looks, stage: int) -> list[int]:
    """The new seeds of stage `stage` (1-based): those between the look before and this one."""
    return list(range(looks[stage - 2] if stage > 1 else 0, looks[stage - 1]))


def staged_changes(looks, stage: int, base_seeds: int, jobs: int = 1, kind: str = SEEDS,
                   timed_apart: bool = False, defaults=None) -> list:
    """runner.plan's `change`s, one per run of a staged block at this stage (stage 1 at the base's seeds is the
    base run). SEEDS: the new seeds in `jobs` runs (at most base_seeds each), so every job has one and a
    cut-short stage loses little; with timed_apart they skip the timing, else each times rounds in proportion
    to its seeds (the base run's rounds per seed, rounded up). TIMING: one run that trains nothing and times
    the new seeds' share of rounds (its seeds name it and seed its timed models). defaults: the notebook's
    parameters, for the rounds a run leaves at their default."""
    seeds = stage_seeds(looks, stage)
    if kind == TIMING:
        return [_change(seeds, base_seeds, defaults or {}, train=False)]
    size = min(base_seeds, math.ceil(len(seeds) / max(jobs, 1)))
    return [_change(seeds[i:i + size], base_seeds, defaults or {}, timed=not timed_apart)
            for i in range(0, len(seeds), size)]


def _change(seeds: list[int], base_seeds: int, defaults: dict, train: bool = True, timed: bool = True):
    def change(parameters: dict) -> dict:
        out = {**parameters, "seeds": seeds}
        if not train:
            out["train"] = False
        rounds = parameters.get("timing_rounds", defaults.get("timing_rounds"))
        if rounds is not None and (not train or not timed or len(seeds) != base_seeds):    # stated: the ETA reads it
            out["timing_rounds"] = math.ceil(rounds * len(seeds) / base_seeds) if timed else 0
        if parameters.get("epoch_timing_rounds", defaults.get("epoch_timing_rounds")) and (not timed or not train):
            out["epoch_timing_rounds"] = 0      # whole epochs are the scorecard's, not a claim's
        return out
    return change


def timed_apart(nb) -> bool:
    """Whether a notebook can time without training (a `train` parameter): its time claims then get timing-only
    runs after stage 1, and its seed runs skip the timing."""
    return "train" in nb.defaults and "timing_rounds" in nb.defaults


def kind_of(scale: str, apart: bool) -> str:
    """The runs a claim's part needs more of: a time part ("ratio") timing runs where its notebook times apart."""
    return TIMING if apart and scale == "ratio" else SEEDS


def is_staged(nb, label: str) -> bool:
    """A block gets seeds in stages when its notebook takes a list of seeds (not a matrix of them)."""
    return "seeds" in nb.defaults and "seeds" not in nb.blocks[label]["matrix"]


def judged_blocks(params, only, base: str, preset: str | None, claims) -> list:
    """(notebook, label) of the primary readings that some claim judges."""
    judged = {(c.notebook, c.protocol) for c in claims}
    return [(nb, label) for nb, label in select(params, only, base, preset)
            if nb.blocks[label].get("primary") and (nb.name, nb.blocks[label]["preset"]) in judged]


def timing_only_rounds(task) -> int:
    """The rounds a timing-only run (`train: false`) times; 0 for a run that trains."""
    return task.parameters.get("timing_rounds", 0) if task.parameters.get("train") is False else 0


def seconds_per_image(earlier) -> dict:
    """Seconds per training image of `earlier` (finished runs, their manifests' seconds), keyed by
    (notebook, preset), by notebook and by None (all runs), and seconds per round of timing-only runs, keyed by
    (TIMING, notebook, preset): estimate_seconds' rates, read once a stage."""
    pooled = {}
    for task in earlier:
        seconds = (results.read_manifest(task.run_dir) or {}).get("seconds")
        rounds = timing_only_rounds(task)
        keys = ([((TIMING, task.notebook, task.preset), rounds)] if rounds else
                [(key, task.work) for key in ((task.notebook, task.preset), task.notebook, None)] if task.work else [])
        for key, amount in keys if seconds else []:
            pooled.setdefault(key, []).append((seconds, amount))
    return {key: sum(s for s, _ in xs) / sum(w for _, w in xs) for key, xs in pooled.items()}


def estimate_seconds(tasks, rates: dict, jobs: int) -> float:
    """A stage's wall seconds: each run's training images at its own preset's rate (seconds_per_image), else
    its notebook's, else all runs'; a timing-only run's rounds at its preset's earlier timing runs' rate (none
    yet: counted free, it is a minute); `jobs` at a time (never less than its longest run)."""
    if not rates:
        return 0.0
    def seconds(task) -> float:
        rounds = timing_only_rounds(task)
        if rounds:
            return rounds * rates.get((TIMING, task.notebook, task.preset), 0.0)
        return task.work * rates.get((task.notebook, task.preset), rates.get(task.notebook, rates.get(None, 0.0)))
    each = [seconds(t) for t in tasks]
    return max(max(each, default=0.0), sum(each) / max(jobs, 1))


def fit_budget(pending: dict, rates: dict, jobs: int, left: float) -> tuple[list, dict]:
    """The blocks of a stage that fit `left` seconds, cheapest first (pending: {(notebook, preset): its runs
    still to execute}); returns (the keys kept, {key: estimated seconds} of those left out). A preset left out
    stops at its last look: its claims' error rates hold, since a design may always stop a claim early."""
    cost = {key: estimate_seconds(tasks, rates, 1) for key, tasks in pending.items()}
    kept, over = [], {}
    for key in sorted(pending, key=lambda k: cost[k]):
        trial = [t for k in [*kept, key] for t in pending[k]]
        if estimate_seconds(trial, rates, jobs) <= left:
            kept.append(key)
        else:
            over[key] = cost[key]
    return kept, over


def read_tables(tasks) -> Tables:
    run_dirs = [t.run_dir for t in tasks]
    tidy, _ = results.read_runs(run_dirs)
    return Tables(tidy, *(results.read_tables(run_dirs, name) for name in TABLES))


def run_stage(tasks, all_tasks, cached, executor, out, note: str, deadline: float | None) -> dict:
    """Run a stage's tasks with the bar; {label: exception} of lost runs. Past `deadline` (time.monotonic),
    the runs still running are stopped (BudgetSpent), where signals can reach this thread."""
    lost = {}
    print(f"report: {note}: {len(tasks)} run(s) to execute on the {executor.describe()}", file=out)
    alarm = deadline is not None and threading.current_thread() is threading.main_thread()
    if alarm:
        previous = signal.signal(signal.SIGALRM, _budget_spent)
        signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.01))
    bar = StageBar(all_tasks, cached, out, note=note)
    try:
        for task, outcome in executor.imap(runner.execute_run, tasks):
            if isinstance(outcome, BaseException):
                lost[task.label] = outcome
            bar.run_finished(task, (results.read_manifest(task.run_dir) or {}).get("seconds"))
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        bar.close()
    return lost


class StageBar(progress.ReportBar):
    """The report bar, its second line led by the stage and the claims still open. (A subclass here, not an
    edit of base/progress.py: base's source is part of every run's id, and editing it re-runs every run.)"""

    def __init__(self, tasks, cached, out, note: str = ""):
        self.note = note
        super().__init__(tasks, cached, out)
        self.bar.set_description_str(note.split(";")[0], refresh=False)

    def refresh(self) -> None:
        super().refresh()
        self.line.set_description_str(f"  {self.note} · {self.line.desc.strip()}")


def _budget_spent(signum, frame):
    raise BudgetSpent()


def report(budget, preset: str | None = None, only=None, jobs: int | None = None, force: bool = False,
           outputs=None, executor: str = "local", scheduler: str | None = None, make_report: bool = True,
           params_dir=None, notebooks_dir=None, out=None, threads: int | None = None, claims=CLAIMS) -> int:
    """The `report --profile decide` command; returns the exit code (0: done, or stopped by the budget;
    1: a run failed or the summary did). Raises ConfigError before anything runs when the input is wrong."""
    out = out or sys.stderr
    seconds = parse_budget(budget)
    params_dir = Path(params_dir or runner.REPO_ROOT / "params")
    notebooks_dir = Path(notebooks_dir or runner.REPO_ROOT / "notebooks")
    outputs = Path(outputs or runner.REPO_ROOT / "outputs").resolve()
    design = load_design(params_dir)
    runner.check_options(design.base, executor, scheduler, jobs, threads)
    summary_nb = notebooks_dir / f"{runner.SUMMARY}.ipynb"
    if make_report and not summary_nb.exists():
        raise ConfigError(f"{summary_nb} does not exist; the report needs it (or pass --no-report)")
    params = load_params(params_dir, notebooks_dir)
    blocks = judged_blocks(params, only, design.base, preset, claims)
    if not blocks:
        raise ConfigError("nothing to decide: no claim judges the selected presets' primary readings "
                          f"(claims judge {listing(sorted({c.protocol for c in claims}))})")
    profiles = load_profiles(params_dir)
    jobs = jobs or (runner.default_jobs() if executor == "local" else 2)
    threads = runner.kernel_threads(executor, jobs, threads)
    staged_at = {(nb.name, nb.blocks[label]["preset"]): is_staged(nb, label) for nb, label in blocks}
    apart = {(nb.name, nb.blocks[label]["preset"]): timed_apart(nb) for nb, label in blocks}
    block_of = {(nb.name, nb.blocks[label]["preset"]): (nb, label) for nb, label in blocks}
    states = {id(c): staged.new_state(c, claims, staged_at[(c.notebook, c.protocol)])
              for c in claims if (c.notebook, c.protocol) in staged_at}
    chosen = [c for c in claims if id(c) in states]
    base_seeds = {}
    for nb, label in blocks:
        planned = runner.run_parameters(nb, label, design.base, profiles)
        base_seeds[(nb.name, label)] = max(len(planned[0].get("seeds") or []), 1)
    skipped = runner.data_problems(runner.plan(blocks, outputs, design.base, profiles, threads))
    runner.writable_outputs(outputs)

    def needs(claim) -> set:
        """The (block, kind) runs an open claim still needs, less the kinds the budget stopped for it."""
        key = (claim.notebook, claim.protocol)
        return {(key, kind_of(scale, apart[key])) for scale in staged.open_scales(states[id(claim)])} - stopped_for[
            id(claim)]

    with runner.outputs_lock(outputs, out):
        start, deadline = time.monotonic(), time.monotonic() + seconds * (1 + GRACE)
        every, stages, lost, stopped, stopped_by, was_cached = [], [], {}, "", set(), set()
        stopped_for = {id(c): set() for c in chosen}   # (block, kind)s the budget or a lost run stopped a claim's
        budget_notes = {}   # a claim's why, kept past its later looks (of the kind the budget left it)
        done_looks = {key: {SEEDS: 0, TIMING: 0} for key in block_of}   # each block's last look of each kind
        by_block = {}       # (block, kind) -> its tasks of every stage so far, skipped ones included
        with runner.make_executor(executor, jobs, scheduler, outputs / ".logs") as ex:
            for stage in range(1, len(design.looks) + 1):
                if stage == 1:
                    todo_keys = {(key, SEEDS) for key in block_of}
                else:
                    todo_keys = {need for c in chosen if staged_at[(c.notebook, c.protocol)] for need in needs(c)}
                if not todo_keys:
                    stopped = f"no claim left open to stage {stage}"
                    break
                planned = {}
                for key, kind in sorted(todo_keys):
                    nb, label = block_of[key]
                    if not staged_at[key]:
                        changes = [None]
                    elif stage == 1:    # the base's runs as they are (cached by a default report), and the
                        #               seeds look 1 has beyond them (R2 part I: its seed 2) as runs of their own
                        changes = staged_changes(design.looks, 1, base_seeds[(nb.name, label)], defaults=nb.defaults)
                    else:
                        changes = staged_changes(design.looks, stage, base_seeds[(nb.name, label)], jobs, kind,
                                                 apart[key], nb.defaults)
                    planned[(key, kind)] = [t for change in changes for t in runner.plan(
                        [(nb, label)], outputs, design.base, profiles, threads, change)]
                left, rates = seconds - (time.monotonic() - start), seconds_per_image(every)
                pending = {key: [t for t in ts if t.run_id not in skipped and (force or not runner.is_done(t))]
                           for key, ts in planned.items()}
                if stage > 1:       # the blocks' seeds (rounds) that fit what is left, cheapest first
                    kept, over = fit_budget(pending, rates, jobs, left)
                    planned = {key: planned[key] for key in kept}
                    for claim in chosen:
                        for need in needs(claim) & set(over):
                            what = f"{design.looks[stage - 1]} seeds" if need[1] == SEEDS else "its timing rounds"
                            budget_notes[id(claim)] = (
                                f"budget: its stage {stage} ({what}) would take about {over[need] / 60:.0f} min, "
                                f"{max(left, 0) / 60:.0f} min left")
                            states[id(claim)]["note"] = budget_notes[id(claim)]
                            stopped_for[id(claim)].add(need)
                    if not planned:
                        stopped = (f"budget: stage {stage} ({design.looks[stage - 1]} seeds) of the cheapest open "
                                   f"preset would take about {min(over.values()) / 60:.0f} min, "
                                   f"{max(left, 0) / 60:.0f} min left")
                        break
                tasks = [t for ts in planned.values() for t in ts if t.run_id not in skipped]
                todo = runner.longest_first([t for key in planned for t in pending[key]])
                cached = {t.run_id for t in tasks} - {t.run_id for t in todo}
                guess = estimate_seconds(todo, rates, jobs)
                was_cached |= cached
                for key, ts in planned.items():
                    by_block.setdefault(key, []).extend(ts)
                open_keys = [states[id(c)]["key"] for c in chosen if staged.is_open(states[id(c)])]
                note = (f"stage {stage}/{len(design.looks)} ({design.looks[stage - 1]} seeds); open: "
                        f"{', '.join(open_keys) or 'none'}")
                began = time.monotonic()
                try:
                    lost.update(run_stage(todo, tasks, cached, ex, out, note, deadline) if todo else {})
                except BudgetSpent:
                    stopped_by = {t.run_id for t in todo if not runner.is_done(t)}
                    stopped = f"budget: stage {stage} stopped {GRACE:.0%} past the budget; it is not judged"
                every += tasks
                stages.append({"stage": stage, "n": design.looks[stage - 1], "runs": len(tasks),
                               "executed": len(todo), "seconds": round(time.monotonic() - began, 1),
                               "estimated_seconds": round(guess, 1), "open_before": open_keys,
                               "timing_only_runs": sum(1 for t in tasks if timing_only_rounds(t))})
                if stopped_by:
                    break
                for (key, kind), ts in planned.items():     # a look with a lost run never happened
                    if all(runner.is_done(t) for t in ts if t.run_id not in skipped):
                        done_looks[key][kind] = stage
                        if stage == 1 or not apart[key]:    # these seed runs timed their rounds too
                            done_looks[key][TIMING] = stage
                for claim in chosen:
                    key = (claim.notebook, claim.protocol)
                    state = states[id(claim)]
                    if not any(k == key for k, _ in planned) or not staged.is_open(state):
                        continue
                    block = [t for kind in (SEEDS, TIMING) for t in by_block.get((key, kind), [])]
                    runnable = [t for t in block if t.run_id not in skipped]
                    if not runnable:
                        state["note"] = "; ".join(sorted({skipped[t.run_id] for t in block})) or "no runs"
                        stopped_for[id(claim)] |= {(key, SEEDS), (key, TIMING)}
                    elif not all(runner.is_done(t) for t in runnable):
                        state["note"] = f"a run of stage {stage} did not finish; no later look judges it"
                        stopped_for[id(claim)] |= {(key, SEEDS), (key, TIMING)}
                    elif stage == 1 or state["staged"]:
                        states[id(claim)] = staged.judge_at_look(
                            claim, state, read_tables(runnable), stage, design.looks, design.spending,
                            seed_look=done_looks[key][SEEDS], timing_look=done_looks[key][TIMING])
                        if staged.is_open(states[id(claim)]) and id(claim) in budget_notes:
                            states[id(claim)]["note"] = budget_notes[id(claim)]
            else:
                stopped = f"reached the cap ({design.looks[-1]} seeds)"
        all_tasks = [t for ts in by_block.values() for t in ts]
        entries = index_entries(all_tasks, lost, skipped)
        for entry in entries:
            if entry["run_id"] in stopped_by:
                entry.update(status="stopped", error="stopped: the time budget was spent")
        record = {"looks": list(design.looks), "cap": design.looks[-1], "spending": design.spending,
                  "base": design.base, "budget_s": seconds,
                  "grace": GRACE, "elapsed_s": round(time.monotonic() - start, 1), "stages_run": len(stages),
                  "stopped": stopped, "stages": stages, "claims": [states[id(c)] for c in chosen]}
        index = {"profile": DECIDE, "preset": preset, "verdicts": True, "created": results.now(),
                 "outputs": str(outputs), "notebooks": {nb.name: nb.title for nb, _ in blocks},
                 "protocols": protocols(blocks), "runs": entries, "decide": record}
        write_index(outputs / "index.json", index)
        line = summary_line(entries, was_cached).replace("report:", "decide:", 1)
        code = 0 if all(e["status"] in runner.DONE + ("skipped", "stopped") for e in entries) else 1
        if make_report:
            try:
                built = runner.build_report(summary_nb, outputs, DECIDE, preset, force)
                line += f"; {'wrote' if built else 'unchanged'} {outputs / 'report.html'}"
            except RuntimeError as exc:
                line, code = f"{line}; {exc}", 1
    print(decisions(record), file=out)
    print(line)
    return code


def decisions(record: dict) -> str:
    """What the design decided, one line a claim, and why it stopped."""
    lines = [f"decide: {record['stages_run']} stage(s) in {record['elapsed_s'] / 60:.1f} min; {record['stopped']}"]
    for state in record["claims"]:
        where = (f"stage {state['stage']}" if state["stage"] and state["staged"] else
                 "one look" if not state["staged"] else "open")
        lines.append(f"  {state['key']} {state['verdict']} ({where}; {state['size'] or 'no runs'}): {state['claim']}")
    return "\n".join(lines)
