"""Where runs execute: two executors behind one small interface, a local pool of worker processes and a
Dask cluster. Each calls the per-run function (executors.execute_run) on its tasks:

    with LocalExecutor(jobs, log_dir) as executor:      # or DaskExecutor(scheduler, jobs)
        for task, outcome in executor.imap(execute_run, tasks):
            ...                                         # outcome: fn(task)'s return value, or the
                                                        # exception that lost the run (worker killed, ...)

Dask is imported lazily.
"""
from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lenet_lib.base import files
from lenet_lib.running.executors import ExecutorError, describe_error

SCRATCH_ENV = "LENET_WORKER_SCRATCH"
STOP_SECONDS = 20          # how long stopped workers get to shut their kernels down before they are killed


# ---------------------------------------------------------------- the local pool of worker processes
class WorkerLost(RuntimeError):
    """A worker process ended without an answer (killed, out of memory, ...)."""


class LocalExecutor:
    """Runs side by side in `jobs` worker processes on this machine; each run starts its own kernel.

    Workers are plain subprocesses (`python -m lenet_lib.running.workers`), each in its own session: a worker
    and its kernel hear about a Ctrl-C or a SIGTERM from this process, which stops them and waits for them
    to shut their kernels down (so no connection files are left). No multiprocessing locks or semaphores,
    so a SIGKILL leaves nothing in /dev/shm; on Linux a worker whose parent dies is sent SIGTERM.
    Each worker's own output (the kernel's log lines among it) goes to log_dir, not the terminal.
    """
    name = "local"

    def __init__(self, jobs: int, log_dir: str | Path | None = None):
        self.jobs = jobs
        # without a log folder the workers' logs go to a temporary one, removed on exit (a lost worker's
        # log tail is kept in its WorkerLost message)
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="lenet-workers-"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        return False

    def describe(self) -> str:
        return f"local executor, {self.jobs} job(s)"

    def imap(self, fn, tasks):
        """Yield (task, outcome) as runs finish; fn(task) runs in a worker process."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        waiting, running = list(enumerate(tasks)), {}
        try:
            while waiting or running:
                while waiting and len(running) < self.jobs:
                    number, task = waiting.pop(0)
                    running[number] = (task, *self._start(fn, task, number))
                for number, (task, proc, job, answer, log) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    del running[number]
                    yield task, self._outcome(proc, answer, log)
                    for path in (job, answer):
                        path.unlink(missing_ok=True)
                time.sleep(0.05)
        finally:
            _stop([entry[1] for entry in running.values()])
            for _, _, job, answer, _ in running.values():
                job.unlink(missing_ok=True)
                answer.unlink(missing_ok=True)

    def _start(self, fn, task, number: int):
        job = self.log_dir / f"job-{os.getpid()}-{number}.pkl"
        answer, log = job.with_suffix(".answer"), self.log_dir / f"worker-{number}.log"
        job.write_bytes(pickle.dumps((fn, task)))
        # the worker's own temporary folder: jupyter_client writes kernel connection files to $TMPDIR,
        # and the worker removes the folder when it ends, however it ends
        scratch = Path(tempfile.mkdtemp(prefix=f"worker-{number}-", dir=self.log_dir))
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "lenet_lib.running.workers", str(job), str(answer),
                                     str(os.getpid())],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env={**os.environ, "TMPDIR": str(scratch),
                                                                 SCRATCH_ENV: str(scratch)})
        return proc, job, answer, log

    @staticmethod
    def _outcome(proc, answer: Path, log: Path):
        if proc.returncode == 0 and answer.exists():
            return pickle.loads(answer.read_bytes())      # fn's value, or the exception it raised
        tail = " ".join(log.read_text(errors="replace").split()[-40:]) if log.exists() else ""
        return WorkerLost(f"worker exited with code {proc.returncode}" + (f": ... {tail}" if tail else ""))


def _stop(procs: list) -> None:
    """SIGTERM each worker (it shuts its kernel down), then wait; SIGKILL what is left after STOP_SECONDS."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if hasattr(os, "killpg"):       # POSIX: the worker's session, its kernel included
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the runner dies, even by SIGKILL (nothing where prctl is missing)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except (ImportError, OSError, AttributeError):
        pass


def _worker_main(job: str, answer: str, parent: str) -> int:
    """A worker process: run the pickled (fn, task); pickle its result, or the exception it raised."""
    if sys.platform.startswith("linux"):
        _die_with_parent()
    if os.getppid() != int(parent):             # the runner died before this line
        return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)     # as a Ctrl-C: papermill cleans up
    fn, task = pickle.loads(Path(job).read_bytes())
    try:
        outcome = fn(task)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:        # noqa: BLE001 - any failure is the task's outcome
        outcome = exc
    finally:                        # kernel connection files among it; the kernel follows its worker out
        if os.environ.get(SCRATCH_ENV):
            shutil.rmtree(os.environ[SCRATCH_ENV], ignore_errors=True)
    files.atomic_write(answer, lambda tmp: Path(tmp).write_bytes(pickle.dumps(outcome)))
    return 0


# ---------------------------------------------------------------- Dask
def _run_on_worker(fn, task):
    return fn(task)


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
        """Yield (task, outcome) as runs finish; each task is fn(task) on some worker."""
        import distributed
        resources = {"GPU": 1} if self.gpus else None
        futures = {self.client.submit(_run_on_worker, fn, task, resources=resources,
                                      key=f"lenet-run-{task.notebook}-{task.run_id}"): task
                   for task in tasks}
        try:
            for future in distributed.as_completed(futures):
                yield futures[future], _outcome_of(future)
        finally:
            self.client.cancel(list(futures))


def _outcome_of(future):
    """The future's result, or the exception that lost it (a killed worker, a broken pool, ...)."""
    try:
        return future.result()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:    # asyncio's CancelledError is a BaseException
        return exc


if __name__ == "__main__":
    sys.exit(_worker_main(*sys.argv[1:4]))
