"""The Dask executor (issue 7): real scheduler, real worker processes, real kernels."""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import pytest
from fixtures.runner_project import add_sleepy, args, make_project, run_dirs, staging_dirs

from lenet_lib.analysis import results
from lenet_lib.running import runner
from lenet_lib.running.cli import main

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def pinned_library_hash(monkeypatch):
    """An edit elsewhere in lenet_lib while a test runs must not change its run ids half-way."""
    value = runner.library_hash()
    monkeypatch.setattr(runner, "library_hash", lambda for_runs=False: value)


def _finished(outputs) -> set:
    index = json.loads((outputs / "index.json").read_text())
    return {(r["notebook"], r["run_id"], r["status"]) for r in index["runs"]}


def test_local_and_dask_give_the_same_runs(tmp_path, capsys):
    dirs = make_project(tmp_path, summary=False)
    local, on_dask = tmp_path / "out-local", tmp_path / "out-dask"
    base = args(dirs, "--profile", "quick", "--jobs", "2", "--no-report")

    assert main([*base, "--outputs", str(local)]) == 0
    # No --scheduler: the runner starts a LocalCluster of 2 worker processes, 1 thread each.
    assert main([*base, "--outputs", str(on_dask), "--executor", "dask"]) == 0
    assert "on the dask executor" in capsys.readouterr().err
    assert _finished(local) == _finished(on_dask)
    assert sorted(status for _, _, status in _finished(on_dask)) == ["diverged", "ok", "ok"]
    for run in run_dirs(on_dask, "tiny"):
        assert results.read_manifest(run)["parameters"]["output_dir"] == str(run)
        assert len(results.read_table(run / "results.parquet")) == 2

    # The same cache: nothing left to run, so no cluster starts.
    assert main([*base, "--outputs", str(on_dask), "--executor", "dask"]) == 0
    captured = capsys.readouterr()
    assert "2 ok (2 cached), 1 diverged" in captured.out and "dask executor" not in captured.err


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_killed_worker_leaves_run_undone_and_rerun_completes(tmp_path, capsys):
    dirs = make_project(tmp_path, summary=False)
    add_sleepy(dirs, seconds=4)
    only_sleepy = args(dirs, "--only", "sleepy", "--profile", "quick", "--no-report")
    # allowed-failures 0: the scheduler gives the run up as soon as its worker dies, instead of
    # retrying it elsewhere (the default, 3 retries, is what a real cluster wants).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR,
                                           resources={"GPU": 1})
    try:
        code = {}
        scheduler = ["--scheduler", cluster.scheduler_address]
        invocation = threading.Thread(target=lambda: code.update(first=main([*only_sleepy, *scheduler])))
        invocation.start()
        _wait_for(lambda: any((d / "started").exists() for d in staging_dirs(dirs["outputs"], "sleepy")),
                  120, "the sleepy notebook to start")
        with distributed.Client(cluster) as client:
            for pid in client.run(os.getpid).values():
                os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        invocation.join(120)
        captured = capsys.readouterr()
        assert code["first"] == 1, captured
        assert "GPU resources: 1 (one run per GPU)" in captured.err
        assert "report: 1 run: 0 ok (0 cached), 1 not finished: sleepy/" in captured.out
        assert "KilledWorker" in captured.out
        [staging] = staging_dirs(dirs["outputs"], "sleepy")
        assert run_dirs(dirs["outputs"], "sleepy") == []
        run = staging.with_name(staging.name[1:-len(".partial")])
        assert _finished(dirs["outputs"]) == {("sleepy", run.name, "missing")}
        # The kernel died with its worker: past its sleep, still no results and no manifest.
        time.sleep(max(0.0, killed_at + 6 - time.monotonic()))
        assert not (staging / "results.parquet").exists() and not (staging / "manifest.json").exists()

        # The nanny restarts the worker; the next invocation completes the run.
        assert main([*only_sleepy, *scheduler]) == 0
        assert results.read_manifest(run)["status"] == "ok"
        assert len(results.read_table(run / "results.parquet")) == 2
    finally:
        cluster.close()
