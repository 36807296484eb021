"""Never silently wrong (issue 33): a run is done only when its files are whole, its id says the kernel path
it really took, and bad input is refused before any kernel. Each item through the real CLI or function."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fixtures.runner_project import INJECTED_DEFAULTS, SUMMARY_BODY, SUMMARY_PARAMETERS, TINY_BODY, make_project, \
    run_dirs, write_notebook

from lenet_lib.analysis import results
from lenet_lib.analysis.tidy import Tables
from lenet_lib.base import datafiles, kernel_path
from lenet_lib.running import runner
from lenet_lib.running.checks import ConfigError
from lenet_lib.running.params import load_params, load_profiles, select
from lenet_lib.summary import report, scorecard

REPO = Path(__file__).resolve().parents[1]
ONLY_TINY = ("--profile", "quick", "--only", "tiny")


def cli(dirs, *extra, env=None, timeout=300) -> tuple[int, str, str]:
    argv = [sys.executable, "-m", "lenet_lib", "report", "--params", str(dirs["params"]), "--notebooks",
            str(dirs["notebooks"]), "--outputs", str(dirs["outputs"]), *extra]
    done = subprocess.run(argv, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def one_run_project(root: Path, summary: bool = True) -> dict:
    """The tiny runner project with one run in its quick profile (x = 1, no preset)."""
    dirs = make_project(root, summary=summary)
    (dirs["params"] / "tiny.yaml").write_text("notebook: tiny\nprofiles: {quick: {}, default: {}, full: {}}\n")
    return dirs


def entries(dirs) -> dict:
    return {e["run_id"]: e for e in json.loads((dirs["outputs"] / "index.json").read_text())["runs"]}


# 1, 3 and 10: a missing or truncated results.parquet is found by its checksum, re-run and named; a run folder
# replaced by a file is re-run, nothing left beside it; 5: then a failed summary keeps the previous report.html
@pytest.mark.slow
def test_a_damaged_run_is_re_run_and_named_and_a_failed_summary_keeps_the_report(tmp_path):
    """Deleted, truncated, the folder a file: each found, re-run (and the first two named); then a summary
    that fails keeps the report.html before it. One project, one run: each case is a re-run of the last."""
    dirs = one_run_project(tmp_path)
    code, out, err = cli(dirs, *ONLY_TINY)
    assert code == 0 and "1 ok (0 cached)" in out, (out, err)
    [run] = run_dirs(dirs["outputs"], "tiny")
    manifest = results.read_manifest(run)
    listed = manifest["files"]["results.parquet"]
    assert listed == {"bytes": (run / "results.parquet").stat().st_size,
                      "sha256": results.sha256(run / "results.parquet")}
    assert {"executed.ipynb", "run.log"} <= set(manifest["files"])
    parquet = run / "results.parquet"
    for damage, why in [("deleted", "results.parquet missing"), ("truncated", "results.parquet has 100 bytes")]:
        if damage == "deleted":
            parquet.unlink()
        else:
            parquet.write_bytes(parquet.read_bytes()[:100])
        code, out, err = cli(dirs, *ONLY_TINY)
        assert code == 0, (out, err)
        assert f"1 ok (0 cached), 1 re-run as damaged: tiny/{run.name} ({why}" in out and "wrote" in out
        assert entries(dirs)[run.name]["rerun"].startswith(why) and entries(dirs)[run.name]["status"] == "ok"
        assert len(results.read_table(parquet)) == 2 and results.damage(run) is None
        assert "SUMMARY: 1 runs, 2 rows" in (dirs["outputs"] / "summary.ipynb").read_text()
    shutil.rmtree(run)
    run.write_text("not a run")
    code, out, err = cli(dirs, *ONLY_TINY)
    assert code == 0 and "1 ok (0 cached)" in out, (out, err)
    assert run.is_dir() and results.damage(run) is None
    assert sorted(p.name for p in (dirs["outputs"] / "runs" / "tiny").iterdir() if p.name.startswith(".")) == []
    before = (dirs["outputs"] / "report.html").read_text()
    write_notebook(dirs["notebooks"] / "summary.ipynb", SUMMARY_PARAMETERS,
                   SUMMARY_BODY + 'raise RuntimeError("summary broke")\n')
    code, out, err = cli(dirs, *ONLY_TINY)
    assert code == 1 and "the summary notebook failed: RuntimeError: summary broke" in out, (out, err)
    assert "kept the previous report.html" in out
    assert (dirs["outputs"] / "report.html").read_text() == before
    assert not (dirs["outputs"] / ".report.stamp").exists()         # so the next report rebuilds it


# 3: the summary names a damaged run, leaves it out and still writes the report; the stamp sees the damage
@pytest.mark.slow
def test_the_summary_skips_a_damaged_run_and_the_stamp_covers_run_files(tmp_path):
    dirs = one_run_project(tmp_path, summary=False)
    shutil.copy(REPO / "notebooks" / "summary.ipynb", dirs["notebooks"])
    code, out, err = cli(dirs, *ONLY_TINY)
    assert code == 0 and "wrote" in out, (out, err)
    [run] = run_dirs(dirs["outputs"], "tiny")
    parquet = run / "results.parquet"
    parquet.write_bytes(parquet.read_bytes()[:100])
    index, tidy, runs = report.load_index(dirs["outputs"] / "index.json")       # what the summary reads
    damaged = runs.set_index("run_id").loc[run.name]
    assert damaged["status"] == "damaged" and "results.parquet has 100 bytes" in damaged["error"]
    assert run.name not in set(tidy["run_id"]) and len(tidy) == 0
    assert run.name in set(report.problems(runs)["run_id"])
    # the index did not change, the run's file did: the report is rebuilt, naming the run
    summary_nb = dirs["notebooks"] / "summary.ipynb"
    assert runner.build_report(summary_nb, dirs["outputs"], "quick", None, force=False)
    html = (dirs["outputs"] / "report.html").read_text()
    assert "damaged" in html and run.name in html
    assert not runner.build_report(summary_nb, dirs["outputs"], "quick", None, force=False)


# 2: the kernel path is decided by building and loading the kernels, recorded, and checked against the rows
def test_a_failing_compiler_or_cache_folder_plans_the_pytorch_path(tmp_path, monkeypatch):
    if kernel_path.why_not_here():
        pytest.skip("the C kernels are not tried on this machine")
    why = kernel_path.why_no_c_kernels({"CC": "/bin/false", "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert why.startswith("/bin/false failed (exit 1)")
    assert kernel_path.cpu_kernel_path({"CC": "/bin/false", "XDG_CACHE_HOME": str(tmp_path / "cache")}) == "pytorch"
    # XDG_CACHE_HOME a file: the per-user temporary folder takes its place (holding this build here)
    built = kernel_path.build()
    monkeypatch.setattr(kernel_path.tempfile, "tempdir", str(tmp_path / "tmp"))
    fallback = tmp_path / "tmp" / f"lenet_lib-{os.getuid()}"
    fallback.mkdir(parents=True, mode=0o700)
    shutil.copy(built, fallback / built.name)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert kernel_path.build({"XDG_CACHE_HOME": str(a_file)}) == fallback / built.name
    assert kernel_path.cpu_kernel_path({"XDG_CACHE_HOME": str(a_file), "HOME": "/x"}) == "c"
    # ... and where no folder can be written, it says so
    monkeypatch.setattr(kernel_path.tempfile, "tempdir", str(a_file))
    why = kernel_path.why_no_c_kernels({"XDG_CACHE_HOME": str(a_file), "HOME": "/y"})
    assert why.startswith(f"no cache folder to build the kernels into: {a_file}/lenet_lib (")


GRID = """\
notebook: bn_dropout_grid
profiles:
  quick: {{matrix: {{dataset: [mnist]}}, parameters: {parameters}}}
  default: {{}}
  full: {{}}
{presets}"""
SMALL = {"seeds": [0], "epochs": 1, "train_size": 256, "val_size": 64, "test_size": 128, "timing_rounds": 1,
         "timing_calls": 1}


def grid_project(tmp_path, parameters=None, presets="") -> dict:
    params = tmp_path / "params"
    params.mkdir()
    shutil.copy(REPO / "params" / "profiles.yaml", params)
    text = GRID.format(parameters=json.dumps({**SMALL, **(parameters or {})}), presets=presets)
    (params / "bn_dropout_grid.yaml").write_text(text)
    return {"params": params, "notebooks": REPO / "notebooks", "outputs": tmp_path / "out"}


@pytest.mark.slow
def test_a_failing_compiler_gives_a_pytorch_run_under_its_own_id(tmp_path):
    if kernel_path.why_not_here():
        pytest.skip("the C kernels are not tried on this machine")
    dirs = grid_project(tmp_path)
    env = {"CC": "/bin/false", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    code, out, err = cli(dirs, "--profile", "quick", "--no-report", env=env)
    assert code == 0 and "1 ok (0 cached)" in out, (out, err[-2000:])
    assert "report: C kernels unavailable (/bin/false failed" in err
    [run] = run_dirs(dirs["outputs"], "bn_dropout_grid")
    manifest = results.read_manifest(run)
    assert manifest["kernels"] == "pytorch" and manifest["kernels_taken"] == ["pytorch"]
    assert set(results.read_table(run / "results.parquet")["kernels"]) == {"pytorch"}
    # with a working compiler the same run is another run (the C path), never this one reused
    params, profiles = load_params(dirs["params"], dirs["notebooks"]), load_profiles(dirs["params"])
    [task] = runner.plan(select(params, None, "quick", None), dirs["outputs"], "quick", profiles,
                         manifest["threads"])
    assert task.kernels == "c" and task.run_id != run.name


LIAR_BODY = TINY_BODY.replace('status="diverged" if x == 2 and i == 1 else "ok")',
                              'status="ok", kernels="pytorch")')


@pytest.mark.slow
def test_rows_on_another_kernel_path_than_planned_fail_the_run(tmp_path):
    if kernel_path.cpu_kernel_path() != "c":
        pytest.skip("needs the C kernels planned")
    dirs = one_run_project(tmp_path)
    write_notebook(dirs["notebooks"] / "tiny.ipynb",
                   'NOTEBOOK = "tiny"\nx = 1\nscale = 1.0\nlr = 0.01\nlabel = "a"\n' + INJECTED_DEFAULTS, LIAR_BODY)
    code, out, err = cli(dirs, *ONLY_TINY, "--no-report")
    assert code == 1 and "1 failed: tiny/" in out, (out, err)
    assert "KernelPathMismatch: planned on the 'c' kernel path (its run id says so), but its rows were trained " \
           "on 'pytorch'" in out
    [run] = run_dirs(dirs["outputs"], "tiny")
    manifest = results.read_manifest(run)
    assert manifest["status"] == "failed" and manifest["kernels_taken"] == ["pytorch"]


# 4: seeds that tie are not an exact figure; only parameter counts are
def test_a_tie_over_seeds_gets_the_accuracys_rounding():
    rows = pd.DataFrame({"notebook": "bn_dropout_grid", "protocol": "R1", "run_id": "r", "model_id": list("abc"),
                         "seed": [0, 1, 2], "epoch": 1, "test_acc": 0.983, "test_size": 10_000, "bn": False,
                         "dropout": 0.0})
    figure = {"figure": "final test acc, plain", "value": 0.9831, "metric": "test_acc", "where": {"variant": "plain"}}
    far = {**figure, "value": 0.99}
    card = scorecard.scorecard(Tables(rows), {"R1": {"bn_dropout_grid": {"published": [figure, far]}}})
    assert list(card["result"]) == ["reproduced", "not reproduced (+70.0 sd)"]
    half = scorecard.prediction_factor(3) * 1e-4
    assert math.isclose(card["high"][0] - card["mean"][0], half)
    # without a known test-set size a tie is not scored, never "exactly" a value
    result = scorecard.score(figure, rows["test_acc"])
    assert result["result"].startswith("not scored") and "exactly" not in result["result"]
    count = {"figure": "parameters", "value": 61706, "metric": "parameters"}
    assert scorecard.score(count, pd.Series([61706.0, 61706.0]))["result"] == "reproduced"
    assert scorecard.score(count, pd.Series([61707.0]))["result"] == "not reproduced (exactly 61,707 here)"


# 6: sizes and seeds that only failed inside a kernel are refused up front, naming the value and bound
@pytest.mark.parametrize("parameters, message", [
    ({"seeds": [0, 0]}, r"seeds=\[0, 0\] is not valid: 0 is given twice"),
    ({"train_size": 100}, r"batch_size=128 is larger than the training set \(100 images: train_size=100\); "
                          r"choose batch_size <= 100"),
    ({"val_size": 59_000, "train_size": 2000}, r"val_size=59000 plus train_size=2000 exceed the 60,000 training "
                                               r"images of mnist"),
    ({"train_size": None, "batch_size": 100_000}, r"batch_size=100000 is larger than the training set "
                                                  r"\(59,936 images: mnist less val_size=64\)"),
])
def test_sizes_are_checked_before_any_kernel(tmp_path, parameters, message):
    dirs = grid_project(tmp_path, parameters)
    code, out, err = cli(dirs, "--profile", "quick", timeout=60)
    assert code == 2 and "Traceback" not in err and not dirs["outputs"].exists(), err
    assert re.search(message, err), err
    assert "bn_dropout_grid.yaml: profile quick" in err and len(err.strip().splitlines()) == 1


def test_the_real_params_pass_the_size_checks():
    params, profiles = load_params(REPO / "params", REPO / "notebooks"), load_profiles(REPO / "params")
    for profile in ("quick", "default", "full"):
        assert runner.plan(select(params, None, profile, None), Path("/tmp/unused"), profile, profiles)


# 7: published figures and their where: refused up front, with the valid values
PRESET = "presets:\n  R1:\n    parameters: {seeds: [0, 1]}\n    published:\n      - {figure: f, metric: test_acc, FIGURE}\n"


@pytest.mark.parametrize("figure, message", [
    ("value: .nan", r"value=nan is not valid; expected a finite number >= 0"),
    ("value: .inf", r"value=inf is not valid; expected a finite number >= 0"),
    ("value: 99.07", r"value=99.07 is not valid for test_acc: accuracies are fractions in \[0, 1\] "
                     r"\(99.07 % is 0.9907\)"),
    ("value: 0.99, rounded: 2", r"rounded=2 is not valid for test_acc"),
    ("value: 0.99, where: {variant: BN-dropout}",
     r"where: variant='BN-dropout' is not a value this preset's runs have; choose one of plain, BN, dropout, "
     r"BN\+dropout \(did you mean 'BN\+dropout'\?\)"),
    ("value: 0.99, where: {colour: red}",
     r"where names column 'colour', which no run of this notebook has; valid columns: .*variant"),
    ("value: 0.99, where: {optimizer: adamx}", r"where: optimizer='adamx' is not valid; choose one of"),
])
def test_published_figures_are_checked(tmp_path, figure, message):
    dirs = grid_project(tmp_path, presets=PRESET.replace("FIGURE", figure))
    with pytest.raises(ConfigError, match=message):
        load_params(dirs["params"], dirs["notebooks"])


def test_where_takes_the_values_a_list_parameter_runs():
    params = load_params(REPO / "params", REPO / "notebooks")       # every published figure of params/ passes
    assert params["dropout_sweep"].presets["R4"]["published"]
    from lenet_lib.running.published import where_columns
    nb = params["dropout_sweep"]
    columns = where_columns(nb.defaults, {"dropouts": [0.1, 0.5]}, {})
    assert columns["dropout"] == (0.1, 0.5, 0.0) and columns["batch_size"] is None


# 8: the data folder: a symlink loop is one line; an empty LENET_DATA is the default ./data
def test_a_symlink_loop_as_data_folder_is_one_line(tmp_path):
    dirs = make_project(tmp_path)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code, out, err = cli(dirs, "--profile", "quick", env={"LENET_DATA": str(loop)}, timeout=60)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"data folder {loop}: cannot be resolved" in err and "set LENET_DATA" in err


def test_an_empty_lenet_data_is_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LENET_DATA", "")
    assert datafiles.data_root() == tmp_path / "data"
    dirs = make_project(tmp_path / "p")
    params, profiles = load_params(dirs["params"], dirs["notebooks"]), load_profiles(dirs["params"])
    tasks = runner.plan(select(params, None, "quick", None), dirs["outputs"], "quick", profiles)
    assert {t.env["LENET_DATA"] for t in tasks} == {str(REPO / "data")}


# 9: YAML merge keys are ordinary YAML; a key given twice is still refused
def test_yaml_merge_keys_are_accepted(tmp_path):
    dirs = make_project(tmp_path)
    (dirs["params"] / "tiny.yaml").write_text(
        "notebook: tiny\nprofiles:\n  quick: &q {matrix: {x: [1, 2]}, parameters: {lr: 0.1}}\n"
        "  default: {<<: *q}\n  full: {<<: *q, parameters: {lr: 0.2}}\n")
    blocks = load_params(dirs["params"], dirs["notebooks"])["tiny"].blocks
    assert blocks["profile default"]["parameters"] == {"lr": 0.1}
    assert blocks["profile full"]["parameters"] == {"lr": 0.2} and blocks["profile full"]["matrix"] == {"x": [1, 2]}
    (dirs["params"] / "tiny.yaml").write_text(
        "notebook: tiny\nprofiles:\n  quick: &q {matrix: {x: [1]}}\n  default: {<<: *q, matrix: {x: [2]}, "
        "matrix: {x: [3]}}\n  full: {}\n")
    with pytest.raises(ConfigError, match=r"tiny\.yaml:\d+:\d+: invalid YAML: duplicate key 'matrix'"):
        load_params(dirs["params"], dirs["notebooks"])
