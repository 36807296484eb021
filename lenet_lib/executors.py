"""How runs execute: one per-run function (papermill on one notebook, manifest written last) and two
executors that call it, a local process pool and a Dask cluster, behind the same small interface:

    with LocalExecutor(jobs) as executor:            # or DaskExecutor(scheduler, jobs)
        for task, outcome in executor.imap(execute_run, tasks):
            ...                                      # outcome: the function's return value, or the
                                                     # exception that lost the run (worker killed, ...)

The runner decides what to run (cache, resume); this module only runs it. Dask is imported lazily.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import nbformat

from . import results

KERNEL = "python3"
EXECUTED_FILE = "executed.ipynb"
LOG_FILE = "run.log"
# jupyter_client starts sys.executable for a kernelspec whose argv[0] is one of these.
_PYTHON_ALIASES = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


class ExecutorError(RuntimeError):
    """The executor could not start (dask missing, scheduler unreachable, no kernel): nothing ran."""


class NoResultsError(RuntimeError):
    """A notebook finished without writing results.parquet."""


@dataclass(frozen=True)
class RunTask:
    """One matrix cell: plain data, so it pickles to pool processes and Dask workers."""
    notebook: str
    notebook_path: str              # absolute; workers on other machines need the same path
    run_id: str
    run_dir: str                    # absolute
    parameters: dict                # as injected: output_dir and run_id included
    profile: str | None = None
    preset: str | None = None
    env: dict = field(default_factory=dict)     # set for the kernel, e.g. LENET_DATA as an absolute path

    @property
    def label(self) -> str:
        return f"{self.notebook}/{self.run_id}"


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


@functools.lru_cache(maxsize=None)
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
            # ipykernel warns on every start that local TCP is unencrypted; keep terminals readable.
            extra_arguments=["--IPKernelApp.log_level=ERROR"])


def results_status(run_dir: Path) -> str:
    path = run_dir / results.RESULTS_FILE
    if not path.exists():
        raise NoResultsError(f"the notebook finished without writing {path.name}; it must call "
                             f"save_results(..., output_dir, ...) with the injected output_dir")
    statuses = results.read_table(path)["status"]
    return "diverged" if (statuses == "diverged").any() else "ok"


def execute_run(task: RunTask, threads: int) -> Outcome:
    """Execute one matrix cell into its run folder. The manifest, written last and atomically, is what
    marks the run done; a run killed before it leaves no manifest and is re-run next time."""
    run_dir = Path(task.run_dir)
    # The runner only hands out runs that are not done, so whatever is here is a killed or failed attempt.
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    started, clock = results.now(), time.perf_counter()
    error = None
    try:
        set_kernel_environment(threads, task.env)
        run_papermill(task.notebook_path, run_dir / EXECUTED_FILE, task.parameters,
                      cwd=Path(task.notebook_path).parent, log_path=run_dir / LOG_FILE)
        status = results_status(run_dir)
    except Exception as exc:        # the run failed; KeyboardInterrupt and friends leave it undone
        status, error = "failed", describe_error(exc)
    seconds = time.perf_counter() - clock
    manifest = results.make_manifest(task.parameters, status, started, results.now(), seconds,
                                     profile=task.profile, preset=task.preset, error=error,
                                     notebook=task.notebook, run_id=task.run_id)
    results.write_json(manifest, run_dir / results.MANIFEST_FILE)
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
    results.atomic_write(path, lambda tmp: nbformat.write(nb, tmp))
    return Outcome("ok", None, round(time.perf_counter() - clock, 3))


def _outcome_of(future):
    """The future's result, or the exception that lost it (a killed worker, a broken pool, ...)."""
    try:
        return future.result()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:    # asyncio's CancelledError is a BaseException
        return exc


class LocalExecutor:
    """Runs side by side in `jobs` processes on this machine; each run starts its own kernel."""
    name = "local"

    def __init__(self, jobs: int):
        self.jobs = jobs

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def describe(self) -> str:
        return f"local executor, {self.jobs} job(s)"

    def imap(self, fn, tasks):
        """Yield (task, outcome) as runs finish; fn(task, threads) runs in a pool process."""
        workers = max(1, min(self.jobs, len(tasks)))
        threads = max(1, cpu_count() // workers)
        # spawn: a forked child would inherit this process's threads and locks (tqdm, zmq).
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
        try:
            futures = {pool.submit(fn, task, threads): task for task in tasks}
            for future in as_completed(futures):
                yield futures[future], _outcome_of(future)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_on_worker(fn, task, slots_by_host: dict):
    """On a Dask worker: split the machine's cores between the runs that may share it, then run."""
    from distributed import get_worker
    worker = get_worker()
    slots = slots_by_host.get(_host(worker.address), worker.state.nthreads)
    return fn(task, max(1, cpu_count() // max(1, slots)))


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0]      # "tcp://10.0.0.5:40123" -> "tcp://10.0.0.5"


class DaskExecutor:
    """Runs as Dask tasks: on the cluster at `scheduler`, or on a LocalCluster of `jobs` processes.

    Every worker must see the repository and the outputs folder at the same paths as this machine
    (a shared filesystem) and have the same lenet_lib installed. Workers started with
    `--resources GPU=1` get one run per GPU at a time.
    """
    name = "dask"

    def __init__(self, scheduler: str | None = None, jobs: int = 1, connect_timeout: float = 30):
        try:
            import distributed
        except ImportError:
            raise ExecutorError("--executor dask needs dask.distributed: pip install -e '.[dask]'") from None
        self.cluster = None
        try:
            if scheduler:
                self.client = distributed.Client(scheduler, timeout=connect_timeout)
            else:
                self.cluster = distributed.LocalCluster(
                    n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                    silence_logs=logging.ERROR)
                self.client = distributed.Client(self.cluster)
            self.client.wait_for_workers(1, timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ExecutorError(f"could not reach a Dask scheduler with workers at "
                                f"{scheduler or 'a LocalCluster'}: {describe_error(exc)}") from None
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        self.gpus = sum(w.get("resources", {}).get("GPU", 0) for w in workers.values())
        # How many runs one machine may hold at once: its GPUs when runs take one each, else its threads.
        self.slots_by_host = {}
        for address, w in workers.items():
            slots = w.get("resources", {}).get("GPU", 0) if self.gpus else w["nthreads"]
            self.slots_by_host[_host(address)] = self.slots_by_host.get(_host(address), 0) + slots
        self.address = self.client.scheduler.address
        self.n_workers = len(workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def describe(self) -> str:
        gpu = f", GPU resources: {self.gpus:g} (one run per GPU)" if self.gpus else ""
        return f"dask executor at {self.address}, {self.n_workers} worker(s){gpu}"

    def imap(self, fn, tasks):
        """Yield (task, outcome) as runs finish; each task is fn(task, threads) on some worker."""
        import distributed
        resources = {"GPU": 1} if self.gpus else None
        futures = {self.client.submit(_run_on_worker, fn, task, self.slots_by_host, resources=resources,
                                      key=f"lenet-run-{task.notebook}-{task.run_id}"): task
                   for task in tasks}
        try:
            for future in distributed.as_completed(futures):
                yield futures[future], _outcome_of(future)
        finally:
            self.client.cancel(list(futures))
