"""How one run executes: the per-run function (papermill on one notebook, manifest written last), the
kernel it needs and the check that its rows took the planned kernel path. The executors that call it,
a local pool of worker processes and a Dask cluster, are in workers.py.

The runner decides what to run (cache, resume); this module only runs it.

A run executes into a staging folder next to its run folder and replaces it only once its manifest is
written, so an interrupted re-run (--force, then Ctrl-C) leaves the finished run as it was.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from lenet_lib.base import files, progress
from lenet_lib.base.kernel_path import why_no_c_kernels
from lenet_lib.analysis import results

KERNEL = "python3"
EXECUTED_FILE = "executed.ipynb"
LOG_FILE = "run.log"
# jupyter_client starts sys.executable for a kernelspec whose argv[0] is one of these.
_PYTHON_ALIASES = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


class ExecutorError(RuntimeError):
    """The executor could not start (dask missing, scheduler unreachable, no kernel): nothing ran."""


class NoResultsError(RuntimeError):
    """A notebook finished without writing results.parquet."""


class KernelPathMismatch(RuntimeError):
    """A run's rows were trained on another kernel path than the one its run id was planned for."""


@dataclass(frozen=True)
class RunTask:
    """One matrix cell: plain data, so it pickles to worker processes and Dask workers."""
    notebook: str
    notebook_path: str              # absolute; workers on other machines need the same path
    run_id: str
    run_dir: str                    # absolute
    parameters: dict                # as injected: output_dir and run_id included
    profile: str | None = None
    preset: str | None = None
    env: dict = field(default_factory=dict)     # set for the kernel, e.g. LENET_DATA as an absolute path
    threads: int = 1                # CPU threads of the kernel: part of the run's identity (see runner)
    kernels: str = "c"              # the kernel path planned (base/kernel_path.py): also part of it
    work: float = 0.0               # training images its parameters imply (progress.parameter_images): the ETA
    reading: str | None = None      # the preset's reading this run belongs to (params.py)
    primary: bool | None = None     # whether that reading is the preset's primary one

    @property
    def label(self) -> str:
        return f"{self.notebook}/{self.run_id}"

    @property
    def staging_dir(self) -> Path:
        """Where the run executes before it replaces run_dir (a hidden sibling)."""
        return Path(self.run_dir).with_name(f".{self.run_id}.partial")


@dataclass(frozen=True)
class Outcome:
    status: str                     # ok, diverged or failed (a manifest says so)
    error: str | None
    seconds: float


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not Linux
        return os.cpu_count() or 1


def describe_error(exc: BaseException) -> str:
    """'Name: message', with the kernel's exception (not papermill's wrapper) for a failing cell."""
    if hasattr(exc, "ename") and hasattr(exc, "evalue"):    # papermill.PapermillExecutionError
        return f"{exc.ename}: {exc.evalue}"
    return f"{type(exc).__name__}: {exc}"


def ensure_kernel() -> str:
    """Make kernel "python3" start this interpreter, so kernels import this environment's lenet_lib.

    A venv's own spec comes first (jupyter_core prefers it); when the spec is missing, or a user-level
    one would start another Python, install the environment's spec into sys.prefix (idempotent).
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def here(spec) -> bool:
        exe = spec.argv[0]
        return exe in _PYTHON_ALIASES or os.path.abspath(exe) == os.path.abspath(sys.executable)

    try:
        if here(KernelSpecManager().get_kernel_spec(KERNEL)):
            return KERNEL
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install
    os.environ["JUPYTER_PREFER_ENV_PATH"] = "1"     # the environment's spec over a user-level one
    install(kernel_name=KERNEL, prefix=sys.prefix)
    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    if not here(spec):
        raise ExecutorError(f"kernel {KERNEL!r} ({spec.resource_dir}) starts {spec.argv[0]}, not "
                            f"{sys.executable}; remove that kernelspec or run "
                            f"`{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL}`")
    return KERNEL


def set_kernel_environment(threads: int, env: dict | None = None) -> None:
    """Kernels inherit this process's environment: one BLAS/OpenMP pool of `threads` per kernel.

    Not restored afterwards: on a Dask worker several runs may start at once, and every one sets the
    same values, so leaving them in place is what keeps them right.
    """
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def run_papermill(notebook, output, parameters: dict | None, cwd, log_path) -> nbformat.NotebookNode:
    """Execute `notebook` into `output` (None: not written); the kernel's stdout/stderr go to log_path."""
    import papermill
    logging.getLogger("papermill").setLevel(logging.ERROR)   # its INFO lines and the "Black" warning
    with open(log_path, "w") as log:
        return papermill.execute_notebook(
            str(notebook), None if output is None else str(output), parameters=parameters,
            kernel_name=ensure_kernel(), progress_bar=False, stdout_file=log, stderr_file=log,
            # The kernel's working folder, set through nbclient: papermill's cwd= chdirs this whole
            # process, which races between the threads of a Dask worker.
            resources={"metadata": {"path": str(cwd)}},
            # ipykernel warns on every start that local TCP is unencrypted, and logs the interrupt that
            # jupyter_client sends every kernel it shuts down: keep terminals readable.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"])


def results_status(run_dir: Path) -> str:
    path = run_dir / results.RESULTS_FILE
    if not path.exists():
        raise NoResultsError(f"the notebook finished without writing {path.name}; it must call "
                             f"save_results(..., output_dir, ...) with the injected output_dir")
    statuses = results.read_table(path)["status"]
    return "diverged" if (statuses == "diverged").any() else "ok"


def kernels_taken(run_dir: Path) -> list[str]:
    """The kernel paths the run's rows say trained them (base/kernel_path.py), the NumPy network's aside."""
    table = results.read_table(run_dir / results.RESULTS_FILE)
    if "kernels" not in table:
        return []
    return sorted(set(table["kernels"].dropna().astype(str)) - {"numpy"})


def check_kernels(task: RunTask, taken: list[str]) -> None:
    """The run trained on the path its id was planned for, or it fails: a run id must say the path it took.
    Rows of torch's own layers ("torch": a notebook's TrainSpec(fast=False), e.g. numpy_vs_torch) fit any CPU path."""
    if [k for k in taken if k != task.kernels and not (k == "torch" and task.kernels in ("c", "pytorch"))]:
        why = why_no_c_kernels({**os.environ, **task.env}) if task.kernels == "c" else None
        raise KernelPathMismatch(
            f"planned on the {task.kernels!r} kernel path (its run id says so), but its rows were trained on "
            f"{', '.join(map(repr, taken))}" + (f": {why}" if why else "")
            + "; fix the kernels (fast/c_kernels.describe() says why) or run with LENET_C_KERNELS=0")


def _remove(path: Path) -> None:
    """A file or a folder, whichever is there (a run folder may have been replaced by a file)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def execute_run(task: RunTask) -> Outcome:
    """Execute one matrix cell into its staging folder, write its manifest there (last, atomically: what
    marks a run done), then put it in place of the run folder. A run killed before that leaves the run
    folder as it was (finished or absent) and runs again next time.

    The manifest lists every file the run wrote with its size and SHA-256 (a run whose files differ is not
    done: results.damage) and the kernel path its rows took; a path other than the planned one fails it."""
    run_dir, staging = Path(task.run_dir), task.staging_dir
    previous = run_dir.with_name(f".{task.run_id}.previous")
    if previous.exists() and not run_dir.exists():     # killed between the two renames below
        previous.rename(run_dir)
    for leftover in (staging, previous):
        _remove(leftover)
    staging.mkdir(parents=True)
    taken = []
    started, clock = results.now(), time.perf_counter()
    error = None
    try:
        set_kernel_environment(task.threads, {**task.env, progress.ENV: str(staging / progress.FILE)})
        run_papermill(task.notebook_path, staging / EXECUTED_FILE, {**task.parameters, "output_dir": str(staging)},
                      cwd=Path(task.notebook_path).parent, log_path=staging / LOG_FILE)
        status = results_status(staging)
        taken = kernels_taken(staging)
        check_kernels(task, taken)
    except Exception as exc:        # the run failed; KeyboardInterrupt and friends leave it undone
        status, error = "failed", describe_error(exc)
    seconds = time.perf_counter() - clock
    manifest = results.make_manifest(task.parameters, status, started, results.now(), seconds,
                                     profile=task.profile, preset=task.preset, error=error,
                                     reading=task.reading, primary=task.primary,
                                     notebook=task.notebook, run_id=task.run_id, threads=task.threads,
                                     kernels=task.kernels)
    manifest.update(kernels_taken=taken, files=results.file_checksums(staging))
    files.write_json(manifest, staging / results.MANIFEST_FILE)
    if run_dir.exists() or run_dir.is_symlink():
        run_dir.rename(previous)
    staging.rename(run_dir)
    _remove(previous)
    return Outcome(status, error, round(seconds, 3))


def refresh_notebook(path: str, threads: int) -> Outcome:
    """Execute a notebook in place with its own defaults (the stored outputs nbval compares).

    Written only on success, atomically, without papermill's and nbclient's timing metadata, so an
    unchanged notebook gives an unchanged file.
    """
    path = Path(path)
    clock = time.perf_counter()
    try:
        set_kernel_environment(threads)
        nb = run_papermill(path, None, None, cwd=path.parent, log_path=os.devnull)
    except Exception as exc:
        return Outcome("failed", describe_error(exc), round(time.perf_counter() - clock, 3))
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    files.atomic_write(path, lambda tmp: nbformat.write(nb, tmp))
    return Outcome("ok", None, round(time.perf_counter() - clock, 3))

