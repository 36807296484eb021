"""The runner: a checked matrix of papermill runs (params.py) -> cached run folders -> index -> report.

A run is done once its manifest exists (executors.execute_run writes it last) and every file it lists
has the size and SHA-256 it records; done runs are skipped, the rest (never run, killed, failed, damaged)
run. User errors raise ConfigError before the first kernel starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import nbformat
from filelock import FileLock, Timeout

from lenet_lib.base import datafiles, files, progress
from lenet_lib.base.validate import check_sizes
from lenet_lib.base.kernel_path import planned_kernel_path, why_no_c_kernels
from lenet_lib.analysis import results
from lenet_lib.running.checks import PROFILES, ConfigError, listing
from lenet_lib.running.executors import RunTask, cpu_count, describe_error, execute_run, run_papermill, \
    set_kernel_environment
from lenet_lib.running.index import _short, index_entries, protocols, summary_line, write_index
from lenet_lib.running.params import load_params, load_profiles, run_parameters, select
from lenet_lib.running.workers import DaskExecutor, LocalExecutor

LIBRARY_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = LIBRARY_DIR.parent
SUMMARY = "summary"
DONE = ("ok", "diverged")


# ---------------------------------------------------------------- planning: run ids and folders
# Which code can change what a notebook computes is decided by folder (CONTRIBUTING.md): everything in
# lenet_lib except the subpackages that plan, execute, summarize or benchmark runs. Editing those does not
# re-train anything (the summary's own cache still hashes the whole library).
NOT_IN_RUNS = ("running", "summary", "bench")


def library_hash(for_runs: bool = False) -> str:
    """The .py files and C kernels (.c, .h) of lenet_lib, path and bytes; for_runs leaves out NOT_IN_RUNS's folders."""
    h = hashlib.sha256()
    for path in sorted([*LIBRARY_DIR.rglob("*.py"), *LIBRARY_DIR.rglob("*.c"), *LIBRARY_DIR.rglob("*.h")]):
        relative = path.relative_to(LIBRARY_DIR)
        if for_runs and (relative.parts[0] in NOT_IN_RUNS or relative == Path("__main__.py")):
            continue
        h.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def notebook_source_hash(path: Path) -> str:
    """Cell sources only: stored outputs are regenerated and must not change a run's id."""
    nb = nbformat.read(str(path), as_version=4)
    text = json.dumps([[cell.cell_type, cell.source] for cell in nb.cells])
    return hashlib.sha256(text.encode()).hexdigest()


def make_run_id(notebook: str, parameters: dict, nb_hash: str, lib_hash: str, threads: int = 1,
                kernels: str = "c", protocol: str | None = None) -> str:
    """What a run's numbers depend on: its parameters, the code, CPU threads (float sums) and the kernel
    path (base/kernel_path.py: C kernels, PyTorch fallback or CUDA agree to float rounding only); and, for
    a preset's run, its protocol label, so each reading keeps its own runs (and manifest) even where two
    readings or an exploration plan the same parameters."""
    key = {"notebook": notebook, "parameters": parameters, "notebook_sources": nb_hash,
           "library": lib_hash, "threads": threads, "kernels": kernels}
    if protocol is not None:
        key["protocol"] = protocol
    key = json.dumps(key, sort_keys=True, default=repr)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def plan(selected, outputs: Path, profile, profiles, threads: int = 1, change=None) -> list[RunTask]:
    """One RunTask per run of every selected block (params.run_parameters), once per run id. A preset's
    runs carry its protocol label in their id (make_run_id): each reading is its own set of runs.
    change: parameters -> the parameters a run gets instead (decide.py's stages: their seeds)."""
    lib_hash, tasks, seen = library_hash(for_runs=True), [], set()
    # Kernels run elsewhere (another cwd, another machine): pin the data folder as an absolute path.
    try:
        env = {"LENET_DATA": str(datafiles.data_root(REPO_ROOT / "data"))}
    except datafiles.DataFolderError as exc:
        raise ConfigError(str(exc)) from None
    for nb, label in selected:
        nb_hash = notebook_source_hash(nb.path)
        block = nb.blocks[label]
        preset, reading, primary = block.get("preset"), block.get("reading"), block.get("primary")
        protocol = results.protocol_label(preset, reading, primary)
        for parameters in run_parameters(nb, label, profile, profiles):
            parameters = change(parameters) if change else parameters
            try:        # with the notebook's defaults: a batch_size left at its default meets a small train_size
                check_sizes({**nb.defaults, **parameters})
            except ValueError as exc:
                scale = f" at profile {profile}" if preset else ""
                raise ConfigError(f"{nb.file}: {label}{scale}: {exc}") from None
            kernels = planned_kernel_path(parameters.get("device", "auto"), {**os.environ, **env})
            run_id = make_run_id(nb.name, parameters, nb_hash, lib_hash, threads, kernels, protocol)
            if run_id in seen:
                continue
            seen.add(run_id)
            run_dir = (outputs / "runs" / nb.name / run_id).resolve()
            injected = {**parameters, "output_dir": str(run_dir), "run_id": run_id}
            tasks.append(RunTask(nb.name, str(nb.path.resolve()), run_id, str(run_dir), injected,
                                 profile, preset, env, threads, kernels,
                                 progress.parameter_images({**nb.defaults, **parameters}), reading, primary))
    return tasks


def longest_first(tasks: list[RunTask]) -> list[RunTask]:
    """tasks in the order to start them: most training images (the ETA's estimate, task.work) first, ties in
    plan order, so the workers finish together rather than one running the longest run last."""
    return sorted(tasks, key=lambda t: -t.work)


def damaged(task: RunTask) -> str | None:
    """Why a finished run's folder cannot be trusted (results.damage: a file missing or not the one its
    manifest lists), or None."""
    return results.checked_manifest(task.run_dir)[1]


def is_done(task: RunTask) -> bool:
    """Finished (ok or diverged) and every file it wrote is whole: its manifest's sizes and SHA-256 hold."""
    manifest, why = results.checked_manifest(task.run_dir)
    return manifest is not None and manifest.get("status") in DONE and why is None


# ---------------------------------------------------------------- the report command
def default_jobs() -> int:
    return 1 if planned_kernel_path() == "cuda" else min(2, cpu_count())


def kernel_threads(executor: str, jobs: int, threads: int | None) -> int:
    """CPU threads per kernel. Locally the cores are split between the jobs; on Dask, 1 unless asked.

    Float sums in torch's CPU kernels depend on the thread count, so it is part of a run's identity
    (make_run_id) and recorded in its manifest: two reports that split the cores alike share their runs.
    """
    if threads is not None:
        return threads
    return max(1, cpu_count() // jobs) if executor == "local" else 1


def make_executor(executor: str, jobs: int, scheduler: str | None, log_dir: Path):
    if executor == "dask":
        return DaskExecutor(scheduler, jobs)
    return LocalExecutor(jobs, log_dir)


def execute(tasks: list[RunTask], all_tasks: list[RunTask], cached: set, executor, out) -> dict:
    """Run tasks through the executor with a progress bar; {label: exception} for runs that were lost."""
    lost = {}
    print(f"report: {len(tasks)} run(s) to execute on the {executor.describe()}", file=out)
    bar = progress.ReportBar(all_tasks, cached, out)
    try:
        for task, outcome in executor.imap(execute_run, tasks):
            if isinstance(outcome, BaseException):
                lost[task.label] = outcome
            bar.run_finished(task, (results.read_manifest(task.run_dir) or {}).get("seconds"))
    finally:
        bar.close()
    return lost


def data_problems(tasks: list[RunTask]) -> dict[str, str]:
    """{run_id: why} for runs whose dataset is not in the data folder (checked once per dataset)."""
    root = tasks[0].env.get("LENET_DATA") if tasks else None
    verdict, problems = {}, {}
    for task in tasks:
        p = task.parameters
        for dataset in [p["dataset"]] if isinstance(p.get("dataset"), str) else list(p.get("datasets") or []):
            if dataset not in verdict:
                verdict[dataset] = datafiles.needs(dataset, root) if dataset in datafiles.LAYOUT else None
            if verdict[dataset]:
                problems[task.run_id] = verdict[dataset]
    return problems


def run_files_digest(index_text: str) -> str:
    """What the runs of an index hold: each run's manifest (its files' sizes and SHA-256) and whether its
    files still match it. A run file that changes changes the report's stamp."""
    h = hashlib.sha256()
    for entry in json.loads(index_text).get("runs", []):
        manifest, why = results.checked_manifest(entry["run_dir"])
        h.update(json.dumps([entry["run_dir"], manifest, why], sort_keys=True, default=str).encode())
    return h.hexdigest()


def build_report(summary_nb: Path, outputs: Path, profile, preset, force: bool) -> bool:
    """summary.ipynb -> outputs/summary.ipynb -> outputs/report.html; False when the cache was valid.

    The new report.html replaces the old one only once it is whole: a failed or interrupted summary
    leaves the previous report (and no stamp, so the next report rebuilds it)."""
    index_path, html_path, stamp_path = outputs / "index.json", outputs / "report.html", outputs / ".report.stamp"
    index_text = index_path.read_text()
    stamp = hashlib.sha256((index_text + run_files_digest(index_text) + notebook_source_hash(summary_nb)
                            + library_hash() + repr((profile, preset))).encode()).hexdigest()
    if not force and html_path.exists() and stamp_path.exists() and stamp_path.read_text() == stamp:
        return False
    stamp_path.unlink(missing_ok=True)
    running, executed = outputs / ".summary.running.ipynb", outputs / "summary.ipynb"
    parameters = {"index_path": str(index_path.resolve()), "profile": profile, "preset": preset}
    # In a worker process like the runs, so the kernel's own log lines stay out of the terminal.
    [(_, outcome)] = LocalExecutor(1, outputs / ".logs").imap(
        run_summary, [(str(summary_nb), str(running), parameters, str(outputs / "summary.log"))])
    if running.exists():
        os.replace(running, executed)
    if isinstance(outcome, BaseException):
        kept = f"; kept the previous {html_path.name}" if html_path.exists() else ""
        raise RuntimeError(f"the summary notebook failed: {describe_error(outcome)} (see {executed}){kept}")
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    html, _ = exporter.from_notebook_node(nbformat.read(str(executed), as_version=4),
                                          resources={"metadata": {"name": "LeNet-5 experiment report"}})
    files.atomic_write(html_path, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
    stamp_path.write_text(stamp)
    return True


def run_summary(job) -> None:
    """In a worker process: execute the summary notebook (its failure is raised to the runner)."""
    summary_nb, running, parameters, log_path = job
    set_kernel_environment(cpu_count())
    run_papermill(summary_nb, running, parameters, cwd=Path(summary_nb).parent, log_path=log_path)


def check_options(profile, executor, scheduler, jobs, threads) -> None:
    if profile not in PROFILES:
        raise ConfigError(f"profile {profile!r} is not valid; choose one of {listing(PROFILES)}")
    if executor not in ("local", "dask"):
        raise ConfigError(f"executor {executor!r} is not valid; choose local or dask")
    if scheduler and executor != "dask":
        raise ConfigError("--scheduler needs --executor dask")
    for name, value in (("--jobs", jobs), ("--threads", threads)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{name} {value!r} is not valid; expected a positive integer")


def writable_outputs(outputs: Path) -> None:
    """The outputs folder exists (made here) and takes a file; else a ConfigError naming it."""
    try:
        outputs.mkdir(parents=True, exist_ok=True)
        probe = outputs / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--outputs {outputs}: cannot write there ({exc.strerror or exc}); choose a folder "
                          f"you can write to") from None


@contextmanager
def outputs_lock(outputs: Path, out):
    """One report at a time per outputs folder: a second one says who holds it and waits for it."""
    # filelock: flock on POSIX, msvcrt on Windows; the holder's line has a file of its own (filelock's is its own)
    lock, holder = FileLock(outputs / ".lock"), outputs / ".lock-holder"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            who = holder.read_text().strip()
        except OSError:         # not written yet, or released since
            who = ""
        print(f"report: {outputs} is in use by {who or 'another report'}; waiting for it to finish", file=out,
              flush=True)
        lock.acquire()
    try:
        holder.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {results.now()} "
                          f"({' '.join(sys.argv[1:]) or 'report'})")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def report(profile: str | None = None, preset: str | None = None, only=None, jobs: int | None = None,
           force: bool = False, outputs=None, executor: str = "local", scheduler: str | None = None,
           make_report: bool = True, params_dir=None, notebooks_dir=None, out=None,
           threads: int | None = None) -> int:
    """The `report` command; returns the exit code (0 all done, 1 a run or the summary failed).

    Raises ConfigError (exit 2) before anything runs when the input is wrong.
    """
    out = out or sys.stderr
    params_dir = Path(params_dir or REPO_ROOT / "params")
    notebooks_dir = Path(notebooks_dir or REPO_ROOT / "notebooks")
    outputs = Path(outputs or REPO_ROOT / "outputs").resolve()
    profile = profile or "default"
    check_options(profile, executor, scheduler, jobs, threads)
    summary_nb = notebooks_dir / f"{SUMMARY}.ipynb"
    if make_report and not summary_nb.exists():
        raise ConfigError(f"{summary_nb} does not exist; the report needs it (or pass --no-report)")
    selected = select(load_params(params_dir, notebooks_dir), only, profile, preset)
    profiles = load_profiles(params_dir)
    jobs = jobs or (default_jobs() if executor == "local" else 2)
    tasks = plan(selected, outputs, profile, profiles, kernel_threads(executor, jobs, threads))
    fallback = [t for t in tasks if t.kernels == "pytorch"]
    why = fallback and why_no_c_kernels({**os.environ, **fallback[0].env})
    if why and "LENET_C_KERNELS=0" not in why:
        print(f"report: C kernels unavailable ({_short(why)}); {len(fallback)} run(s) take the PyTorch path, "
              f"and their run ids say so", file=out)
    skipped = data_problems(tasks)
    if skipped and len(skipped) == len(tasks):
        raise ConfigError("nothing can run: " + "; ".join(sorted(set(skipped.values()))))
    writable_outputs(outputs)

    with outputs_lock(outputs, out):
        runnable = [t for t in tasks if t.run_id not in skipped]
        rerun = {} if force else {t.run_id: why for t in runnable if (why := damaged(t))}
        cached = {t.run_id for t in runnable if not force and t.run_id not in rerun and is_done(t)}
        todo = longest_first([t for t in runnable if t.run_id not in cached])
        lost = {}
        if todo:
            with make_executor(executor, jobs, scheduler, outputs / ".logs") as ex:
                lost = execute(todo, runnable, cached, ex, out)
        entries = index_entries(tasks, lost, skipped, rerun)
        titles = {nb.name: nb.title for nb, _ in selected}
        index = {"profile": profile, "preset": preset, "verdicts": profiles[profile].verdicts,
                 "created": results.now(), "outputs": str(outputs), "notebooks": titles,
                 "protocols": protocols(selected), "runs": entries}
        write_index(outputs / "index.json", index)
        line = summary_line(entries, cached)
        code = 0 if all(e["status"] in DONE + ("skipped",) for e in entries) else 1
        if make_report:
            try:
                built = build_report(summary_nb, outputs, profile, preset, force)
                line += f"; {'wrote' if built else 'unchanged'} {outputs / 'report.html'}"
            except RuntimeError as exc:
                line, code = f"{line}; {exc}", 1
    print(line)
    return code

