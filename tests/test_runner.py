"""The runner (issue 4): params/ validation, run ids, cache, resume, failure, index and report.

Kernel tests run real papermill kernels on tiny fixture notebooks (tests/fixtures/runner_project.py).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from fixtures.runner_project import TINY_YAML, add_broken, args, make_project, run_dirs, write_notebook

from lenet_lib.analysis import results
from lenet_lib.base import files
from lenet_lib.running import runner
from lenet_lib.running.cli import main
from lenet_lib.running.checks import ConfigError
from lenet_lib.running.params import load_params, load_profiles, select
from lenet_lib.running.runner import is_done, plan, report


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def pinned_library_hash(monkeypatch):
    """Run ids include every lenet_lib source; an edit elsewhere in the library while a test runs
    must not change them half-way (run_id's dependence on sources is tested below)."""
    value = runner.library_hash()
    monkeypatch.setattr(runner, "library_hash", lambda for_runs=False: value)


def _plan(dirs, profile="quick", preset=None):
    params = load_params(dirs["params"], dirs["notebooks"])
    profile = profile or "default"
    return plan(select(params, None, profile, preset), dirs["outputs"], profile, load_profiles(dirs["params"]))


def _out(capsys) -> str:
    return capsys.readouterr().out


@pytest.mark.slow
def test_report_end_to_end_cache_force_resume_and_failure(tmp_path, capsys):
    dirs = make_project(tmp_path)
    out = dirs["outputs"]
    quick = args(dirs, "--profile", "quick", "--jobs", "2")

    # 1. A 2-run matrix and the preset at the quick scale, with real kernels: run folders, manifests,
    #    index, summary, report.
    assert main(quick) == 0                                    # a diverged run is a finished run
    assert "report: 3 runs: 2 ok (0 cached), 1 diverged; wrote" in _out(capsys)
    runs = sorted(run_dirs(out, "tiny"), key=lambda r: results.read_manifest(r)["parameters"]["x"])
    assert len(runs) == 3
    for run, status, preset in zip(runs, ("ok", "diverged", "ok"), (None, None, "P1")):
        assert {"executed.ipynb", "results.parquet", "run.log", "manifest.json"} <= {p.name for p in run.iterdir()}
        manifest = results.read_manifest(run)
        assert (manifest["status"], manifest["profile"], manifest["preset"]) == (status, "quick", preset)
        assert manifest["parameters"]["output_dir"] == str(run) and manifest["parameters"]["run_id"] == run.name
        assert manifest["parameters"]["label"] == "b"          # the file's fixed parameters
        assert "tiny done" in (run / "run.log").read_text()    # the kernel's stdout
        assert len(results.read_table(run / "results.parquet")) == 2
    assert [results.read_manifest(r)["parameters"]["x"] for r in runs] == [1, 2, 5]     # P1 at quick: x 5
    index = json.loads((out / "index.json").read_text())
    assert index["profile"] == "quick" and [r["status"] for r in index["runs"]] == ["ok", "diverged", "ok"]
    assert index["verdicts"] is False and index["protocols"] == {"P1": {"tiny": {
        "reading": "", "sources": {}, "published": [], "readings": [
            {"name": "as-read", "protocol": "P1", "primary": True, "summary": "", "parameters": {}, "sources": {},
             "open": {}, "run_at": ["quick", "default", "full"], "run": True}]}}}
    html = (out / "report.html").read_text()
    assert "SUMMARY: 3 runs, 6 rows, profile quick" in html
    assert "read_runs" not in html                             # code cells are hidden in the report

    # 2. Unchanged: everything cached, nothing rewritten (how fast is make bench's business, not a test's).
    files = [*(r / "manifest.json" for r in runs), out / "report.html", out / "index.json"]
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    assert main(quick) == 0
    assert "report: 3 runs: 2 ok (2 cached), 1 diverged; unchanged" in _out(capsys)
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes

    # 3. --force re-runs every run.
    assert main([*quick, "--force", "--no-report"]) == 0
    assert "2 ok (0 cached), 1 diverged" in _out(capsys)
    assert all((r / "manifest.json").stat().st_mtime_ns != mtimes[r / "manifest.json"] for r in runs)

    # 4. A run killed after its notebook saved results but before its manifest: not done, not counted.
    finished, killed, _ = runs
    (killed / "manifest.json").unlink()
    (killed / ".results.parquet.cut.tmp").write_text("half a file")
    tidy, table = results.read_runs(runs)
    assert set(tidy["run_id"]) == {finished.name, runs[2].name}
    assert table.set_index("run_id").loc[killed.name, "status"] == "missing"

    # ... the next invocation re-runs it from a clean folder, while a new notebook fails.
    add_broken(dirs, tmp_path / "no-data")
    assert main(quick) == 1
    line = _out(capsys)
    assert re.search(r"^report: 4 runs: 2 ok \(2 cached\), 1 diverged, 1 failed: broken/[0-9a-f]{12} "
                     r"\(DataMissingError: mnist not found in data folder", line, re.M), line
    assert results.read_manifest(killed)["status"] == "diverged"
    assert not (killed / ".results.parquet.cut.tmp").exists()
    [broken] = run_dirs(out, "broken")
    manifest = results.read_manifest(broken)
    assert manifest["status"] == "failed" and manifest["error"].startswith("DataMissingError: mnist not found")
    assert str(tmp_path / "no-data") in manifest["error"]
    assert (broken / "executed.ipynb").exists()                # kept for reading the traceback
    index = json.loads((out / "index.json").read_text())
    assert [(r["notebook"], r["status"]) for r in index["runs"]] == [
        ("broken", "failed"), ("tiny", "ok"), ("tiny", "diverged"), ("tiny", "ok")]
    assert "SUMMARY: 4 runs" in (out / "report.html").read_text()   # the report still shows the failure

    # 5. A failing summary notebook is an error too; the previous report.html stays, and the CLI says so.
    write_notebook(dirs["notebooks"] / "summary.ipynb", "index_path = None\nprofile = None\npreset = None\n",
                   "raise ValueError('no figure today')")
    assert main([*quick, "--only", "tiny"]) == 1
    said = _out(capsys)
    assert "the summary notebook failed: ValueError: no figure today" in said and "kept the previous report.html" in said
    assert "SUMMARY: 4 runs" in (out / "report.html").read_text() and (out / "summary.ipynb").exists()


# Windows has no fcntl (issue 36): the runner, its workers and kernels run a report without it
@pytest.mark.slow
def test_a_report_runs_where_fcntl_is_missing(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text('import sys\nsys.modules["fcntl"] = None   # import fcntl fails\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run([sys.executable, "-c", "import fcntl"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "fcntl halted" in probe.stderr     # every process below goes without
    dirs = make_project(tmp_path)
    command = [sys.executable, "-m", "lenet_lib", *args(dirs, "--profile", "quick", "--preset", "P1", "--no-report")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "report: 1 run: 1 ok (0 cached)" in done.stdout
    [run] = run_dirs(dirs["outputs"], "tiny")
    assert json.loads((run / "manifest.json").read_text())["status"] == "ok" and (run / "results.parquet").exists()


@pytest.mark.slow
def test_notebooks_command_refreshes_stored_outputs_in_place(tmp_path, capsys, monkeypatch):
    dirs = make_project(tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))      # where the workers' log folder goes
    summary_before = (dirs["notebooks"] / "summary.ipynb").read_text()
    assert main(["notebooks", "--notebooks", str(dirs["notebooks"]), "--jobs", "1"]) == 0
    assert "notebooks: 1 executed, 0 failed" in _out(capsys)
    nb = nbformat.read(str(dirs["notebooks"] / "tiny.ipynb"), as_version=4)
    assert "tiny done 1" in "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert "papermill" not in nb.metadata and not any("execution" in c.metadata for c in nb.cells)
    assert (dirs["notebooks"] / "summary.ipynb").read_text() == summary_before   # it needs an index
    assert not dirs["outputs"].exists()                        # defaults: output_dir None, nothing written
    assert list(scratch.iterdir()) == []                       # the workers' temporary log folder is gone


def test_failed_or_unfinished_runs_are_not_done(tmp_path):
    dirs = make_project(tmp_path)
    task = _plan(dirs)[0]
    assert not is_done(task)
    Path(task.run_dir).mkdir(parents=True)
    assert not is_done(task)                                   # a folder without manifest: killed mid-run
    (Path(task.run_dir) / results.RESULTS_FILE).write_bytes(b"rows")
    listed = results.file_checksums(task.run_dir)
    for status, done in (("failed", False), ("ok", True), ("diverged", True)):
        files.write_json({"status": status, "files": listed}, Path(task.run_dir) / results.MANIFEST_FILE)
        assert is_done(task) is done
    files.write_json({"status": "ok"}, Path(task.run_dir) / results.MANIFEST_FILE)
    assert not is_done(task)                                   # a manifest that vouches for no files


def test_run_ids_follow_parameters_and_sources_not_outputs(tmp_path):
    dirs = make_project(tmp_path)
    quick = _plan(dirs)
    assert [t.run_id for t in quick] == [t.run_id for t in _plan(dirs)]       # stable
    assert len({t.run_id for t in quick}) == 3 and all(re.fullmatch(r"[0-9a-f]{12}", t.run_id) for t in quick)
    assert [(t.parameters["x"], t.preset) for t in quick] == [(1, None), (2, None), (5, "P1")]
    assert quick[0].parameters == {"label": "b", "x": 1, "output_dir": quick[0].run_dir, "run_id": quick[0].run_id}
    default = [t for t in _plan(dirs, "default") if t.preset is None]
    assert [t.parameters["lr"] for t in default] == [0.1] * 3               # profile over file over defaults
    preset = _plan(dirs, None, "P1")
    assert len(preset) == 1 and preset[0].parameters["scale"] == 2 and preset[0].preset == "P1"
    assert "x" not in preset[0].parameters and preset[0].profile == "default"   # default scale: x untouched
    at_quick = _plan(dirs, "quick", "P1")
    assert at_quick[0].parameters["x"] == 5 and at_quick[0].run_id == quick[2].run_id   # one run, one id

    path = dirs["notebooks"] / "tiny.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="stored output\n")]
    nbformat.write(nb, str(path))
    assert [t.run_id for t in _plan(dirs)] == [t.run_id for t in quick]       # outputs don't count
    nb.cells[2].source += "\n# changed"
    nbformat.write(nb, str(path))
    assert not {t.run_id for t in _plan(dirs)} & {t.run_id for t in quick}    # sources do



def test_library_hash_is_decided_by_folder(tmp_path, monkeypatch):
    """Code in running/, summary/ and bench/ cannot change a result: editing it re-trains nothing; any
    other .py or .c file (core, fast and its kernels, analysis, ...) makes every run new."""
    monkeypatch.undo()                      # the real library_hash, over a copy of a library
    for name in ("core/train.py", "fast/csrc/kernel.c", "analysis/tidy.py", "running/runner.py",
                 "summary/verdicts.py", "bench/single.py", "__main__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    monkeypatch.setattr(runner, "LIBRARY_DIR", tmp_path)
    before = runner.library_hash(for_runs=True)
    for name in ("running/runner.py", "summary/verdicts.py", "bench/single.py", "__main__.py"):
        (tmp_path / name).write_text("x = 2\n")
        assert runner.library_hash(for_runs=True) == before, name
    for name in ("core/train.py", "fast/csrc/kernel.c", "analysis/tidy.py"):
        (tmp_path / name).write_text("x = 3\n")
        assert runner.library_hash(for_runs=True) != before, name
        before = runner.library_hash(for_runs=True)
    assert runner.library_hash() != runner.library_hash(for_runs=True)   # the summary's cache sees all


def _set_yaml(text):
    return lambda dirs: (dirs["params"] / "tiny.yaml").write_text(text)


def _replace(old, new):
    assert old in TINY_YAML
    return _set_yaml(TINY_YAML.replace(old, new))


QUICK = "quick: {matrix: {x: [1, 2]}}"
BAD_CONFIGS = {
    "bad yaml": (_replace(QUICK, "quick: {matrix: {x: [1, 2]}"), {},
                 r"tiny\.yaml:\d+:\d+: invalid YAML"),
    "unknown top-level key": (_set_yaml(TINY_YAML + "matrx: {}\n"), {},
                              "unknown key(s) matrx; valid keys: notebook, title, parameters, profiles, presets"),
    "unknown block key": (_replace(QUICK, "quick: {matrix: {x: [1]}, params: {}}"), {},
                          "profile quick: unknown key(s) params; valid keys: matrix, parameters"),
    "missing profile": (_replace("  full:\n    matrix: {x: [1, 2, 3, 4]}\n", ""), {},
                        "missing profile(s) full; every file defines exactly quick, default, full"),
    "unknown profile": (_replace(QUICK, QUICK + "\n  fast: {}"), {}, "unknown profile(s) fast"),
    "wrong notebook name": (_replace("notebook: tiny", "notebook: tiny2"), {}, "must name the notebook"),
    "unknown --only": (None, {"only": ["tinny"]},
                       "unknown notebook 'tinny' in --only (did you mean 'tiny'?); valid: tiny"),
    "unknown preset": (None, {"preset": "R9"}, "preset 'R9' is not defined; presets defined: P1 (tiny)"),
    "unknown parameter": (_replace(QUICK, "quick: {parameters: {epoch: 1}}"), {},
                          "profile quick: parameter 'epoch' is not in the parameters cell"),
    "wrong type": (_replace("[1, 2]", "[1, two]"), {},
                   "x='two' has type str, but the notebook's default 1 has type int"),
    "bool for int": (_replace("[1, 2]", "[1, true]"), {}, "x=True has type bool"),
    "number read as string": (_replace("lr: 0.1", "lr: 1e-3"), {}, "write 1.0e-3"),
    "list for str": (_replace("label: b", "label: [b]"), {}, "parameters: label=['b'] has type list"),
    "bad value": (_replace("lr: 0.1", "lr: -0.5"), {}, "profile default: lr=-0.5 is not valid"),
    "injected name": (_replace("label: b", "run_id: x"), {}, "run_id is set by the runner"),
    "no summary notebook": (lambda dirs: (dirs["notebooks"] / "summary.ipynb").unlink(), {},
                            "summary.ipynb does not exist"),
    "bad profile": (None, {"profile": "huge"}, "profile 'huge' is not valid; choose one of quick, default, full"),
    "scheduler without dask": (None, {"scheduler": "tcp://x:8786"}, "--scheduler needs --executor dask"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_validation_errors_come_before_any_run(tmp_path, case):
    edit, options, message = BAD_CONFIGS[case]
    dirs = make_project(tmp_path)
    if edit:
        edit(dirs)
    with pytest.raises(ConfigError) as error:
        report(**{"profile": "quick", **options}, params_dir=dirs["params"], notebooks_dir=dirs["notebooks"],
               outputs=dirs["outputs"])
    assert message in str(error.value) or re.search(message, str(error.value)), str(error.value)
    assert not dirs["outputs"].exists()                        # no run folder, no kernel


def test_cli_user_error_is_one_line_exit_2(tmp_path, capsys):
    dirs = make_project(tmp_path)
    assert main(args(dirs, "--preset", "R9")) == 2
    err = capsys.readouterr().err
    assert err.startswith("report: error: preset 'R9' is not defined") and "Traceback" not in err
    assert not dirs["outputs"].exists()


def test_list_shows_profiles_presets_and_run_counts(tmp_path, capsys):
    dirs = make_project(tmp_path)
    assert main(["list", "--params", str(dirs["params"]), "--notebooks", str(dirs["notebooks"])]) == 0
    assert re.search(r"^tiny\s+2\s+3\s+4\s+P1:1\s+Tiny fixture$", _out(capsys), re.M)


def test_the_bar_counts_training_images_and_estimates_runs_not_started(tmp_path):
    """The ETA's total: started runs as they planned, the others from their parameters, scaled by what
    their notebook's (else any) started runs planned per parameter-image; cached runs left out."""
    import io
    from lenet_lib.base import progress
    from lenet_lib.running.executors import RunTask

    def task(notebook, run_id, work):
        return RunTask(notebook, "nb.ipynb", run_id, str(tmp_path / notebook / run_id), {}, work=work)
    started, same_notebook, other, cached = (task("grid", "a1", 1000), task("grid", "a2", 3000),
                                             task("sweep", "b1", 500), task("grid", "c1", 9999))
    started.staging_dir.mkdir(parents=True)
    (started.staging_dir / progress.FILE).write_text(json.dumps(
        {"planned": 8, "done": 2, "current": "BN epoch 2/2", "planned_images": 4000, "done_images": 1000}))
    out = io.StringIO()
    bar = progress.ReportBar([started, same_notebook, other, cached], {"c1"}, out, interval=3600)
    try:
        # 4 images per parameter-image: a2 3000 x 4, b1 (no started run of its own) 500 x 4
        assert (bar.bar.total, bar.bar.n) == (4000 + 12000 + 2000, 1000)
        assert "2 model-epochs, runs 1/4" in out.getvalue() and "grid/a1: BN epoch 2/2" in out.getvalue()
    finally:
        bar.close()


def test_the_bar_counts_each_runs_fixed_seconds_at_the_training_rate(tmp_path, monkeypatch):
    """Quick runs are mostly fixed cost (kernel start, data, plots). A finished run's wall seconds outside
    its training (10 - 2 = 8 s) at the runs' training rate (15,000 images in 3 s) count 40,000 images for every
    run, done for the finished one; before any run finishes, PRIOR_FIXED_SECONDS stands in."""
    import io
    from lenet_lib.base import progress
    from lenet_lib.running.executors import RunTask

    def task(run_id, work):
        return RunTask("grid", "nb.ipynb", run_id, str(tmp_path / "grid" / run_id), {}, work=work)
    finished, running, waiting = task("f", 1000), task("r", 1000), task("w", 1000)
    Path(finished.run_dir).mkdir(parents=True)
    (Path(finished.run_dir) / progress.FILE).write_text(json.dumps(
        {"planned": 1, "done": 1, "current": "", "planned_images": 10000, "done_images": 10000, "train_seconds": 2.0}))
    running.staging_dir.mkdir(parents=True)
    (running.staging_dir / progress.FILE).write_text(json.dumps(
        {"planned": 2, "done": 1, "current": "a", "planned_images": 10000, "done_images": 5000, "train_seconds": 1.0}))
    bar = progress.ReportBar([finished, running, waiting], set(), io.StringIO(), interval=3600)
    try:
        # nothing finished yet: 8 s (the prior) at 5,000 images/s, for each of the three runs
        assert bar.bar.total == 10000 + 10000 + 10000 + 3 * progress.PRIOR_FIXED_SECONDS * 5000
        bar.run_finished(finished, seconds=10.0)
        fixed = (10.0 - 2.0) * (15000 / 3.0)
        assert (bar.bar.total, bar.bar.n) == (30000 + 3 * fixed, 15000 + fixed)
    finally:
        bar.close()


def test_parameter_images_of_a_run():
    from lenet_lib.base.progress import parameter_images
    r1 = {"dataset": "mnist", "seeds": [0, 1, 2], "epochs": 25, "train_size": None, "val_size": 0}
    assert parameter_images(r1) == 3 * 25 * 60_000
    assert parameter_images({"dataset": "fashion_mnist", "seeds": [0], "epochs": 2, "train_size": None,
                             "val_size": 5000}) == 2 * 55_000
    assert parameter_images({"seed": 0, "epochs": 2, "train_size": 2000, "val_size": 1000}) == 4000
    assert parameter_images({**r1, "train": False, "timing_rounds": 30}) == 0       # a timing-only run


def test_runs_start_longest_first_ties_in_plan_order(tmp_path):
    from lenet_lib.running.executors import RunTask
    tasks = [RunTask(notebook=f"nb{i}", notebook_path="x", run_id=str(i), run_dir=str(tmp_path), parameters={},
                     work=work) for i, work in enumerate([1.0, 5.0, 3.0, 5.0, 0.0])]
    assert [t.run_id for t in runner.longest_first(tasks)] == ["1", "3", "2", "0", "4"]

