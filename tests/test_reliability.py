"""A report run you can trust (issue 14): each problem reproduced with real subprocesses, real kernels and
real signals, and what happens now."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fixtures.runner_project import add_broken, add_sleepy, make_project, run_dirs, staging_dirs

from lenet_lib.base import datafiles
from lenet_lib.base.kernel_path import cpu_kernel_path, planned_kernel_path
from lenet_lib.analysis import results
from lenet_lib.running.checks import ConfigError
from lenet_lib.running.params import load_params, load_profiles, select
from lenet_lib.running.runner import plan

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ["LENET_DATA"])
pytestmark = pytest.mark.slow

# A real notebook on a few hundred images, one seed: its parameters where a test changes them.
GRID_YAML = """\
notebook: bn_dropout_grid
profiles:
  quick: {{matrix: {{dataset: [mnist]}}, parameters: {{seeds: [0], epochs: 2, train_size: 256, val_size: 64,
          test_size: 128, timing_rounds: 1, timing_calls: 1{extra}}}}}
  default: {{}}
  full: {{}}
"""


def real_project(tmp_path, extra="", summary=True) -> dict:
    """params/ (profiles.yaml and a small bn_dropout_grid.yaml) beside the real notebooks."""
    params = tmp_path / "params"
    params.mkdir()
    shutil.copy(REPO / "params" / "profiles.yaml", params)
    (params / "bn_dropout_grid.yaml").write_text(GRID_YAML.format(extra=extra))
    return {"params": params, "notebooks": REPO / "notebooks", "outputs": tmp_path / "out"}


def start(dirs, *extra, env=None) -> subprocess.Popen:
    """The CLI in its own process, as a user starts it."""
    argv = [sys.executable, "-m", "lenet_lib", "report", "--params", str(dirs["params"]), "--notebooks",
            str(dirs["notebooks"]), "--outputs", str(dirs["outputs"]), *extra]
    # As from a terminal: Ctrl-C delivered. A test run started in the background (nohup, `cmd &` in a
    # script) inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt.
    return subprocess.Popen(argv, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(proc, timeout=300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(predicate, timeout=120, what="it"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def started(dirs, notebook="sleepy") -> bool:
    return any((d / "started").exists() for d in staging_dirs(dirs["outputs"], notebook))


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains text (no psutil needed)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


# 1 divergence is a result; 10 progress; 6 threads recorded; 9 a green run prints no kernel noise
def test_diverged_models_are_recorded_shown_and_the_run_goes_on(tmp_path):
    dirs = real_project(tmp_path, extra=", lr: 1000.0, momentum: 0.0")
    code, out, err = finish(start(dirs, "--profile", "quick", "--only", "bn_dropout_grid"))
    assert code == 0, (out, err)
    index = json.loads((dirs["outputs"] / "index.json").read_text())
    [entry] = index["runs"]
    assert entry["status"] == "diverged"
    assert "1 diverged" in out and "wrote" in out
    [run] = run_dirs(dirs["outputs"], "bn_dropout_grid")
    table = results.read_table(run / "results.parquet")
    assert (table["status"] == "diverged").any()
    html = (dirs["outputs"] / "report.html").read_text()
    assert "diverged" in html and entry["run_id"] in html        # listed in the report's problems table
    # the progress the kernel reported, and the bar that showed it
    recorded = json.loads((run / "progress.json").read_text())
    assert recorded["planned"] == 8 and 4 <= recorded["done"] <= 8   # 4 models x 2 epochs; diverged ones stop
    assert "model-epoch" in err and "now:" in err
    manifest = results.read_manifest(run)
    assert manifest["threads"] >= 1 and manifest["parameters"]["output_dir"] == str(run)
    # which kernels trained it: planned in the manifest, as run in every row (this machine: the C kernels)
    assert manifest["kernels"] == planned_kernel_path() and set(table["kernels"]) == {manifest["kernels"]}
    assert "KeyboardInterrupt" not in err and "Traceback" not in err


# 1, every notebook: a learning rate of 1000 in each notebook's quick block, as a user would set it
SMALL = {"train_size": 256, "val_size": 64, "test_size": 128, "epochs": 2}
DIVERGING = {
    "bn_dropout_grid": {**SMALL, "seeds": [0], "lr": 1000.0, "timing_rounds": 1, "timing_calls": 1},
    "dropout_sweep": {**SMALL, "seeds": [0], "lr": 1000.0, "dropouts": [0.5], "timing_rounds": 1,
                      "timing_calls": 1},
    "batch_size": {**SMALL, "seeds": [0], "lr": 1000.0, "batch_sizes": [32, 64], "claimed_best": 64},
    "optimizers": {**SMALL, "seeds": [0], "optimizers": ["gd", "adam"], "tune": False, "lr_factors": [1e4]},
    "inside_lenet": {**SMALL, "seeds": [0], "lr": 1000.0, "mlp_lr": 1000.0, "tsne_points": 64},
    "numpy_vs_torch": {**SMALL, "lr": 1000.0, "timing_repeats": 1, "optimizers": ["gd", "adam"],
                       "r2_train_size": 256, "r2_epochs": 1},
}


def test_every_notebook_records_divergence_and_goes_on(tmp_path):
    params = tmp_path / "params"
    params.mkdir()
    shutil.copy(REPO / "params" / "profiles.yaml", params)
    for notebook, parameters in DIVERGING.items():
        spec = yaml.safe_load((REPO / "params" / f"{notebook}.yaml").read_text())
        spec.pop("presets", None)                # the notebooks' own quick blocks only
        spec["profiles"]["quick"] = {"matrix": spec["profiles"]["quick"]["matrix"], "parameters": parameters}
        (params / f"{notebook}.yaml").write_text(yaml.safe_dump(spec))
    dirs = {"params": params, "notebooks": REPO / "notebooks", "outputs": tmp_path / "out"}
    code, out, err = finish(start(dirs, "--profile", "quick"), timeout=900)
    assert code == 0, (out, err[-3000:])
    index = json.loads((dirs["outputs"] / "index.json").read_text())
    statuses = {e["notebook"]: e["status"] for e in index["runs"]}
    assert statuses == {notebook: "diverged" for notebook in DIVERGING}, statuses
    html = (dirs["outputs"] / "report.html").read_text()
    for notebook in DIVERGING:
        [run] = run_dirs(dirs["outputs"], notebook)
        table = results.read_table(run / "results.parquet")
        assert (table["status"] == "diverged").any(), notebook      # the diverged rows are kept
    assert all(e["run_id"] in html for e in index["runs"])           # and listed in the report


def test_gd_at_a_huge_learning_rate_diverges(mnist_small):
    from lenet_lib.core.specs import TrainSpec
    from lenet_lib.core.train import train
    result = train(TrainSpec(optimizer="gd", lr=1000.0, epochs=3), mnist_small, progress=False)
    assert result.status == "diverged" and result.history["status"].iloc[-1] == "diverged"


def test_a_huge_finite_loss_is_divergence():
    """Only NaN/inf counted once: gd at lr 1e3 sat at a finite 3.8e21 with status ok."""
    from lenet_lib.base.choices import diverged
    assert diverged(3.8e21) and diverged(float("nan")) and diverged(float("inf"))
    assert diverged(100 * math.log(10) + 1) and not diverged(100 * math.log(10) - 1)
    assert not diverged(2.3) and not diverged(0.0)
    assert diverged(100 * math.log(100) + 1, num_classes=100) is True


# 2 no results at all: the real summary still writes a report
def test_the_summary_reports_runs_that_all_failed(tmp_path):
    dirs = make_project(tmp_path, summary=False)
    for name in ("tiny.yaml",):
        (dirs["params"] / name).unlink()
    add_broken(dirs, tmp_path / "no-data")
    shutil.copy(REPO / "notebooks" / "summary.ipynb", dirs["notebooks"])
    code, out, err = finish(start(dirs, "--profile", "quick"))
    assert code == 1 and "1 failed: broken/" in out and "wrote" in out, (out, err)
    html = (dirs["outputs"] / "report.html").read_text()
    assert "Reproduction scorecard" in html and "No preset ran in this report" in html
    assert "DataMissingError" in html                            # the failure, listed


# 3 missing or damaged data: found once, before any kernel, naming the file; nothing created
def test_empty_data_folder_is_one_error_before_any_work(tmp_path):
    dirs = real_project(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    clock = time.perf_counter()
    code, out, err = finish(start(dirs, "--profile", "quick", env={"LENET_DATA": str(empty)}))
    assert code == 2 and time.perf_counter() - clock < 30
    assert "nothing can run: needs MNIST (mnist):" in err and str(empty) in err and "Traceback" not in err
    assert list(empty.iterdir()) == [] and not dirs["outputs"].exists()


def _copy_mnist(root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in datafiles.LAYOUT["mnist"][1]:
        shutil.copy(DATA / "MNIST" / "raw" / name, raw / name)
    return raw


def test_truncated_or_altered_files_are_named(tmp_path):
    raw = _copy_mnist(tmp_path / "data")
    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:1000])
    problem = datafiles.needs("mnist", tmp_path / "data")
    assert f"{labels}: 1000 bytes, expected 60008" in problem
    shutil.copy(DATA / "MNIST" / "raw" / labels.name, labels)
    images = raw / "train-images-idx3-ubyte"
    pixels = bytearray(images.read_bytes())
    pixels[5000:5010] = bytes([255]) * 10                        # overwritten pixels, same size
    images.write_bytes(bytes(pixels))
    problem = datafiles.needs("mnist", tmp_path / "data")
    assert f"{images}: sha256 differs from the published file's" in problem
    dirs = real_project(tmp_path)
    code, _, err = finish(start(dirs, "--profile", "quick", env={"LENET_DATA": str(tmp_path / "data")}))
    assert code == 2 and str(images) in err and not dirs["outputs"].exists()
    # a folder may vouch for its own files
    (raw / datafiles.SUMS_FILE).write_text("".join(
        f"{datafiles._digest(str(raw / n), 'sha256', 0, 0)}  {n}\n" for n in datafiles.LAYOUT["mnist"][1]))
    assert datafiles.needs("mnist", tmp_path / "data") is None
    assert datafiles.needs("mnist", DATA) is None                # the real files pass


# 4 two reports, one outputs folder: the second says who holds it, waits, and finds the run done
def test_a_second_report_waits_for_the_first(tmp_path):
    dirs = make_project(tmp_path)
    add_sleepy(dirs, seconds=4)
    first = start(dirs, "--profile", "quick", "--only", "sleepy", "--no-report")
    wait_for(lambda: started(dirs), what="the first report's run")
    second = start(dirs, "--profile", "quick", "--only", "sleepy", "--no-report")
    code_1, out_1, _ = finish(first)
    code_2, out_2, err_2 = finish(second)
    assert (code_1, code_2) == (0, 0)
    assert re.search(rf"is in use by pid {first.pid} on .* since .*; waiting for it to finish", err_2), err_2
    assert "1 ok (0 cached)" in out_1 and "1 ok (1 cached)" in out_2
    assert len(run_dirs(dirs["outputs"], "sleepy")) == 1


# 5 --force then Ctrl-C: the finished run stays as it was
def test_interrupting_a_forced_rerun_keeps_the_finished_run(tmp_path):
    dirs = make_project(tmp_path)
    add_sleepy(dirs, seconds=3)
    only = ["--profile", "quick", "--only", "sleepy"]
    assert finish(start(dirs, *only, "--no-report"))[0] == 0
    [run] = run_dirs(dirs["outputs"], "sleepy")
    before = (run / "manifest.json").read_text()
    forced = start(dirs, *only, "--force", "--no-report")
    wait_for(lambda: started(dirs), what="the forced re-run")
    forced.send_signal(signal.SIGINT)
    code, _, err = finish(forced, timeout=60)
    assert code == 130 and "interrupted" in err
    assert (run / "manifest.json").read_text() == before and (run / "results.parquet").exists()
    assert json.loads((dirs["outputs"] / "index.json").read_text())["runs"][0]["status"] == "ok"
    code, out, _ = finish(start(dirs, *only, "--no-report"))
    assert code == 0 and "1 ok (1 cached)" in out


# 6 results depend on the thread count: it is part of the run id
def test_threads_are_part_of_a_runs_identity(tmp_path):
    dirs = make_project(tmp_path)
    params, profiles = load_params(dirs["params"], dirs["notebooks"]), load_profiles(dirs["params"])
    chosen = select(params, None, "quick", None)
    one, two = (plan(chosen, dirs["outputs"], "quick", profiles, threads) for threads in (1, 2))
    assert [t.threads for t in one] == [1] * 3 and [t.threads for t in two] == [2] * 3
    assert not {t.run_id for t in one} & {t.run_id for t in two}


# 6 and 7 as a user meets them: a preset in the quick profile from the CLI, once per thread count
def test_a_quick_preset_run_is_scaled_recorded_and_keyed_by_threads(tmp_path):
    """One real run at 2 threads (recorded in its manifest, its id the one planned for 2 threads); the plan
    for 1 thread gives another id, so a new thread count is a new run (float sums differ). The run is the
    fixture's tiny preset (a kernel's seconds); R1's quick scaling is read from its plan."""
    dirs = make_project(tmp_path)
    code, out, err = finish(start(dirs, "--profile", "quick", "--preset", "P1", "--threads", "2", "--no-report"))
    assert code == 0 and "1 ok (0 cached)" in out, (out, err[-2000:])
    [entry] = json.loads((dirs["outputs"] / "index.json").read_text())["runs"]
    manifest = results.read_manifest(Path(entry["run_dir"]))
    chosen = select(load_params(dirs["params"], dirs["notebooks"]), None, "quick", "P1")
    profiles = load_profiles(dirs["params"])
    planned = {threads: [t.run_id for t in plan(chosen, dirs["outputs"], "quick", profiles, threads=threads)]
               for threads in (1, 2)}
    assert planned[2] == [manifest["run_id"]] and planned[1] != planned[2]
    assert manifest["threads"] == 2 and (manifest["profile"], manifest["preset"]) == ("quick", "P1")
    # the quick profile scales R1's seeds, data and epochs; R1's protocol (optimizer, rate, decay) stays
    repo = {"params": REPO / "params", "notebooks": REPO / "notebooks"}
    r1 = select(load_params(repo["params"], repo["notebooks"]), ["bn_dropout_grid"], "quick", "R1")
    [task] = plan(r1, tmp_path / "unused", "quick", load_profiles(repo["params"]), threads=2)
    p = task.parameters
    assert (p["seeds"], p["epochs"], p["train_size"], p["val_size"]) == ([0, 1], 1, 2000, 0)
    assert (p["optimizer"], p["lr"], p["momentum"], p["weight_decay"], p["batch_size"]) == (
        "momentum", 0.05, 0.9, 0.0005, 128)


def test_the_kernel_path_is_part_of_a_runs_identity(tmp_path, monkeypatch):
    """Cached runs of the C kernels are never reused for the PyTorch fallback (LENET_C_KERNELS=0)."""
    dirs = make_project(tmp_path)
    params, profiles = load_params(dirs["params"], dirs["notebooks"]), load_profiles(dirs["params"])
    chosen = select(params, None, "quick", None)
    monkeypatch.setenv("LENET_C_KERNELS", "1")
    c_path = plan(chosen, dirs["outputs"], "quick", profiles)
    monkeypatch.setenv("LENET_C_KERNELS", "0")
    fallback = plan(chosen, dirs["outputs"], "quick", profiles)
    assert {t.kernels for t in fallback} == {"pytorch"} and {t.kernels for t in c_path} == {cpu_kernel_path({})}
    if cpu_kernel_path({}) == "c":
        assert not {t.run_id for t in c_path} & {t.run_id for t in fallback}
    assert planned_kernel_path("cuda:0") == "cuda" and planned_kernel_path("cpu", {"LENET_C_KERNELS": "0"}) == "pytorch"


def test_rows_record_the_kernels_that_trained_them(mnist_small, monkeypatch):
    from lenet_lib.core import train as train_module
    from lenet_lib.core.specs import TrainSpec
    spec = TrainSpec(epochs=1)
    ran = train_module.train(spec, mnist_small, device="cpu", progress=False).history
    assert set(ran["kernels"]) == {cpu_kernel_path()}
    from lenet_lib.fast import c_kernels
    monkeypatch.setattr(c_kernels, "load", lambda: None)
    assert set(train_module.train(spec, mnist_small, device="cpu", progress=False).history["kernels"]) == {"pytorch"}
    monkeypatch.setenv("LENET_FAST", "0")     # the fast path off: torch's own layers
    assert set(train_module.train(spec, mnist_small, device="cpu", progress=False).history["kernels"]) == {"torch"}


# 7 quick x preset: the preset at the quick profile's scale, recorded as such
def test_quick_profile_scales_a_preset():
    params, profiles = load_params(REPO / "params", REPO / "notebooks"), load_profiles(REPO / "params")
    tasks = plan(select(params, None, "quick", "R1"), Path("/tmp/unused"), "quick", profiles)
    [task] = tasks
    assert (task.notebook, task.preset, task.profile) == ("bn_dropout_grid", "R1", "quick")
    p = task.parameters
    assert (p["seeds"], p["epochs"], p["train_size"]) == ([0, 1], 1, 2000)       # profiles.yaml, quick
    assert (p["optimizer"], p["lr"], p["weight_decay"]) == ("momentum", 0.05, 0.0005)   # R1's protocol stays
    assert p["val_size"] == 0                            # R1 had no validation split; its smoke run has none
    [batches] = plan(select(params, None, "quick", "R5"), Path("/tmp/unused"), "quick", profiles)[:1]
    assert batches.parameters["val_size"] == 500         # R5 holds out a split: scaled like the rest
    assert profiles["quick"].verdicts is False
    [default] = plan(select(params, None, "default", "R1"), Path("/tmp/unused"), "default", profiles)
    assert (default.parameters["seeds"], default.parameters["epochs"]) == ([0, 1, 2], 25)


# 8 values that used to get past the up-front check
@pytest.mark.parametrize("name, value, valid", [
    ("bn_position", "befor", "before_act"), ("bn_layers", "all", "conv"), ("dropout_site", "fcc", "conv"),
    ("dropout_at", "f7", "c5_f6"), ("input_size", 30, "32"), ("resize", "foo", "interpolate")])
def test_bad_values_are_refused_before_any_kernel(tmp_path, name, value, valid):
    dirs = real_project(tmp_path, extra=f", {name}: {json.dumps(value)}")
    with pytest.raises(ConfigError, match=rf"{name}={value!r} is not valid; choose one of .*{valid}"):
        load_params(dirs["params"], dirs["notebooks"])


def test_timing_only_and_untimed_runs_are_checked_before_any_kernel(tmp_path):
    """train: false times without training (decide's timing stages); with no rounds it would do nothing. Only a
    notebook with a `train` parameter may skip its timing (batch_size's answers read it)."""
    dirs = real_project(tmp_path, extra=", train: false")
    grid = dirs["params"] / "bn_dropout_grid.yaml"
    grid.write_text(grid.read_text().replace("timing_rounds: 1", "timing_rounds: 0"))
    with pytest.raises(ConfigError, match="train=False with timing_rounds=0 leaves the run nothing to do"):
        load_params(dirs["params"], dirs["notebooks"])
    grid.write_text(grid.read_text().replace("timing_rounds: 0", "timing_rounds: 3"))
    assert load_params(dirs["params"], dirs["notebooks"])
    (dirs["params"] / "batch_size.yaml").write_text(
        "notebook: batch_size\nprofiles: {quick: {}, default: {parameters: {timing_rounds: 0}}, full: {}}\n")
    with pytest.raises(ConfigError, match="timing_rounds=0 is not valid for batch_size.ipynb"):
        load_params(dirs["params"], dirs["notebooks"])


def test_duplicate_yaml_keys_are_refused(tmp_path):
    dirs = real_project(tmp_path, extra=", epochs: 50")
    with pytest.raises(ConfigError, match=r"bn_dropout_grid\.yaml:\d+:\d+: invalid YAML: duplicate key 'epochs'"):
        load_params(dirs["params"], dirs["notebooks"])


def test_the_api_checks_every_value():
    import numpy as np
    from lenet_lib.core.data import prepare_data
    from lenet_lib.core.specs import TrainSpec
    for bad, message in [(dict(bn="no"), "bn='no' is not valid; expected True or False"),
                         (dict(c3_table="x"), "c3_table='x' is not valid"),
                         (dict(model_id=5), "model_id=5 is not valid; expected a string"),
                         (dict(arch="resnet"), r"arch='resnet' is not valid; choose one of \['lenet5', 'mlp'\]")]:
        with pytest.raises(ValueError, match=message):
            TrainSpec(**bad)
    assert TrainSpec(seed=np.int64(3)).seed == 3 and type(TrainSpec(seed=np.int64(3)).seed) is int
    with pytest.raises(ValueError, match="val_size=True is not valid"):
        prepare_data(val_size=True)
    with pytest.raises(ValueError, match="split_seed=-1 is not valid"):
        prepare_data(split_seed=-1)


# 9 unwritable outputs; SIGTERM and SIGKILL leave nothing behind
def test_unwritable_outputs_is_one_line(tmp_path):
    dirs = make_project(tmp_path)
    dirs["outputs"] = Path("/dev/null/x")
    code, _, err = finish(start(dirs, "--profile", "quick"))
    assert code == 2 and err.strip().startswith("report: error: --outputs /dev/null/x: cannot write there")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def made_by(semaphore: Path, pids: set[int]) -> bool:
    """Whether a /dev/shm semaphore may be these processes': loky's name their creator (sem.loky-PID-...);
    other tests' kernels (scikit-learn's loky pools) run beside this one. Unnamed ones count as ours."""
    parts = semaphore.name.split("-")
    return not (parts[0] == "sem.loky" and len(parts) > 2 and parts[1].isdigit()) or int(parts[1]) in pids


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_signals_leave_no_kernels_files_or_semaphores(tmp_path, how):
    dirs = make_project(tmp_path)
    add_sleepy(dirs, seconds=60)
    runtime = tmp_path / "tmp"          # jupyter_client writes kernel connection files to $TMPDIR ...
    runtime.mkdir()

    def connection_files():             # ... which each worker points at a scratch folder of its own
        return [*runtime.rglob("*.json"), *dirs["outputs"].glob(".logs/worker-*/*.json")]
    semaphores = set(Path("/dev/shm").glob("sem.*"))
    proc = start(dirs, "--profile", "quick", "--only", "sleepy", env={"TMPDIR": str(runtime)})
    wait_for(lambda: started(dirs), what="the sleepy run")
    assert connection_files()                                   # its kernel is up
    ours = {proc.pid, *processes_mentioning(str(dirs["outputs"]))}      # the CLI, its worker and kernel
    proc.send_signal(getattr(signal, how))
    code, _, err = finish(proc, timeout=60)
    if how == "SIGTERM":
        assert code == 143 and "terminated; finished runs are kept" in err
    else:
        assert code == -signal.SIGKILL
    wait_for(lambda: not processes_mentioning(str(dirs["outputs"])) and not processes_mentioning(str(runtime))
             and not connection_files(),
             timeout=40, what="the worker and its kernel to go, connection file and all")
    assert not [s for s in set(Path("/dev/shm").glob("sem.*")) - semaphores if made_by(s, ours)]
    assert not (staging_dirs(dirs["outputs"], "sleepy")[0] / "manifest.json").exists()
