"""Readings as data (issue 32): a preset's named readings of its report, one primary, each its own runs.

params/ validation, run planning per reading, manifests and read-back, `list`, and the scorecard per
reading on synthetic tables. Kernel tests use the tiny fixture project (tests/fixtures/runner_project.py).
"""
from __future__ import annotations

import json
import re
from textwrap import dedent

import numpy as np
import pandas as pd
import pytest
from fixtures.runner_project import TINY_YAML, args, make_project

from lenet_lib.analysis import results
from lenet_lib.analysis.tidy import Tables
from lenet_lib.running import runner
from lenet_lib.running.cli import main
from lenet_lib.running.index import protocols as index_protocols
from lenet_lib.running.checks import ConfigError
from lenet_lib.running.params import load_params, load_profiles, select
from lenet_lib.summary import scorecard

def _indent(block: str) -> str:
    return "".join("  " + line if line.strip() else line for line in block.splitlines(True))


def _project(tmp_path, preset_block: str | None = None):
    """The tiny project with P1 as given (a YAML block under `presets:`), or with READINGS: three readings
    over the tiny notebook (parameters x, scale, lr, label), where the quick profile's scale is x: 5."""
    dirs = make_project(tmp_path)
    text = TINY_YAML.replace("  P1: {parameters: {scale: 2}}\n", "")
    assert "P1" not in text
    (dirs["params"] / "tiny.yaml").write_text(text + _indent(preset_block or READINGS))
    return dirs


READINGS = dedent('''\
    P1:
      parameters: {scale: 2, lr: 0.2}
      profiles: {default: {lr: 0.3}}
      sources: {scale: "T l.1"}
      readings:
        as-printed:
          primary: true
          summary: >-
            The code as printed.
          parameters: {lr: 0.4}
          sources: {lr: "T l.2-3"}
        as-intended:
          summary: What the text says.
          parameters: {scale: 3}
          open: {scale: "not stated; read as 3"}
          profiles: {quick: {x: 7}, default: {lr: 0.5}}
        same:
          summary: The primary's parameters under another name.
          parameters: {lr: 0.4}
''')


def _reading(name: str, body: str) -> str:
    """A P1 with one reading `name` whose keys are `body` (YAML flow mapping text)."""
    return f"P1:\n  parameters: {{scale: 2}}\n  readings:\n    {name}: {body}\n"


def _plan(dirs, profile="quick", preset=None):
    params = load_params(dirs["params"], dirs["notebooks"])
    return runner.plan(select(params, None, profile, preset), dirs["outputs"], profile, load_profiles(dirs["params"]))


@pytest.fixture(autouse=True)
def pinned_library_hash(monkeypatch):
    value = runner.library_hash()
    monkeypatch.setattr(runner, "library_hash", lambda for_runs=False: value)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("block, message", [
    (READINGS.replace("summary: What the text says.", "primary: true\n      summary: What the text says."),
     "exactly one reading must be primary: true (declared before any run); 2 are (as-printed, as-intended); "
     "readings: as-printed, as-intended, same"),
    (READINGS.replace("      primary: true\n", ""), "exactly one reading must be primary: true (declared before any "
                                              "run); none is; readings: as-printed, as-intended, same"),
    (_reading("a", "{primary: true, summary: s, sorces: {lr: x}}"),
     "reading 'a': unknown key(s) sorces; valid keys: primary, summary, parameters, sources, open, profiles, "
     "run_at"),
    (_reading("a", "{primary: true, summary: s, parameters: {lrr: 0.1}}"),
     "reading 'a': parameter 'lrr' is not in the parameters cell"),
    (_reading("a", "{primary: true, summary: s, parameters: {lr: -1.0}}"), "reading 'a': lr=-1.0"),
    (_reading("a", "{primary: true, summary: s, parameters: {lr: abc}}"), "reading 'a': lr='abc' has type str"),
    (_reading("a", "{primary: true, summary: s, profiles: {quick: {xx: 1}}}"),
     "reading 'a': profiles.quick: parameter 'xx' is not in the parameters cell"),
    (_reading("a", "{primary: true, summary: s, profiles: {fast: {x: 1}}}"),
     "reading 'a': profiles must map some of quick, default, full to parameters"),
    (_reading("As Printed", "{primary: true, summary: s}"), "reading name 'As Printed' is not valid"),
    (_reading("a:b", "{primary: true, summary: s}"), "reading name 'a:b' is not valid"),
    (_reading("a", "{primary: yes please, summary: s}"), "reading 'a': primary='yes please' is not valid"),
    (_reading("a", "{primary: true}"), "reading 'a': summary is required"),
    (_reading("a", "{primary: true, summary: s, sources: {lr: 755}}"),
     "reading 'a': sources must map detail names to text"),
    (_reading("a", "{primary: true, summary: s, open: [lr]}"), "reading 'a': open must map detail names to text"),
    ("P1:\n  readings: {}\n", "readings must map reading names to readings"),
    ("P1:\n  reading: old text\n  readings: {a: {primary: true, summary: s}}\n",
     "give readings (one or more named readings) or the old reading text, not both"),
    ("P1:\n  sources: {lr: [1]}\n  readings: {a: {primary: true, summary: s}}\n",
     "preset P1: sources must map detail names to text"),
    ("P1:\n  matrix: {lr: [0.1, 0.2]}\n  readings: {a: {primary: true, summary: s, parameters: {lr: 0.3}}}\n",
     "reading 'a': lr is in the preset's matrix, which a reading cannot override"),
])
def test_bad_readings_are_config_errors_naming_the_bad_thing(tmp_path, block, message):
    dirs = _project(tmp_path, block)
    with pytest.raises(ConfigError) as error:
        load_params(dirs["params"], dirs["notebooks"])
    assert message in str(error.value) and "preset P1" in str(error.value)


def test_old_reading_text_is_one_primary_reading_named_as_read(tmp_path):
    dirs = _project(tmp_path, "P1:\n  parameters: {scale: 2}\n  reading: >-\n    how it reads\n    the gaps\n")
    nb = load_params(dirs["params"], dirs["notebooks"])["tiny"]
    assert list(nb.presets["P1"]["readings"]) == ["as-read"]
    assert nb.presets["P1"]["readings"]["as-read"]["primary"] is True
    assert nb.presets["P1"]["reading"] == "how it reads the gaps"
    [task] = _plan(dirs, "default", "P1")
    assert (task.preset, task.reading, task.primary, task.parameters["scale"]) == ("P1", "as-read", True, 2)


# ---------------------------------------------------------------- planning
def test_each_reading_is_its_own_runs_with_its_label_merge_order_and_scale(tmp_path):
    dirs = _project(tmp_path)
    nb = load_params(dirs["params"], dirs["notebooks"])["tiny"]
    assert [k for k in nb.blocks if k.startswith("preset ")] == ["preset P1", "preset P1:as-intended", "preset P1:same"]
    quick = [t for t in _plan(dirs) if t.preset]
    labels = [results.protocol_label(t.preset, t.reading, t.primary) for t in quick]
    assert labels == ["P1", "P1:as-intended", "P1:same"]
    strip = lambda t: {k: v for k, v in t.parameters.items() if k not in ("output_dir", "run_id")}     # noqa: E731
    # defaults < file < preset < profile protocol_parameters < preset profiles < reading < reading profiles
    assert [strip(t) for t in quick] == [{"label": "b", "scale": 2, "lr": 0.4, "x": 5},
                                         {"label": "b", "scale": 3, "lr": 0.2, "x": 7},
                                         {"label": "b", "scale": 2, "lr": 0.4, "x": 5}]
    default = _plan(dirs, "default", "P1")
    assert [strip(t) for t in default] == [{"label": "b", "scale": 2, "lr": 0.4}, {"label": "b", "scale": 3, "lr": 0.5},
                                           {"label": "b", "scale": 2, "lr": 0.4}]
    # the same parameters under two readings: two runs, two ids, each reading keeps its own
    assert strip(quick[0]) == strip(quick[2]) and quick[0].run_id != quick[2].run_id
    assert len({t.run_id for t in quick}) == 3
    # one reading alone, by preset:reading; an unknown one names the valid ones
    [one] = _plan(dirs, "quick", "P1:as-intended")
    assert one.run_id == quick[1].run_id and one.reading == "as-intended" and one.primary is False
    with pytest.raises(ConfigError, match=r"preset 'P1' has no reading 'as-intnded' \(did you mean 'as-intended'\?\); "
                                          r"its readings: as-intended, as-printed, same"):
        _plan(dirs, "quick", "P1:as-intnded")


def test_index_protocols_carry_each_presets_readings(tmp_path):
    dirs = _project(tmp_path)
    params = load_params(dirs["params"], dirs["notebooks"])
    found = index_protocols(select(params, None, "quick", None))["P1"]["tiny"]
    assert found["sources"] == {"scale": "T l.1"} and found["reading"] == "The code as printed."
    assert [(r["name"], r["protocol"], r["primary"]) for r in found["readings"]] == [
        ("as-printed", "P1", True), ("as-intended", "P1:as-intended", False), ("same", "P1:same", False)]
    assert found["readings"][0]["sources"] == {"lr": "T l.2-3"} and found["readings"][0]["parameters"] == {"lr": 0.4}
    assert found["readings"][1]["open"] == {"scale": "not stated; read as 3"}


@pytest.mark.parametrize("body, message", [
    ("{primary: true, summary: s, run_at: [full]}", "reading 'a': run_at=['full'] is not valid; expected a non-empty "
                                                     "list of quick, default, full (the primary reading runs at every profile)"),
    ("{primary: true, summary: s, run_at: [quick, default, full, fast]}", "reading 'a': run_at=['quick', 'default', "
                                                                          "'full', 'fast'] is not valid"),
    ("{primary: true, summary: s, run_at: full}", "reading 'a': run_at='full' is not valid"),
])
def test_bad_run_at_is_a_config_error(tmp_path, body, message):
    dirs = _project(tmp_path, _reading("a", body))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_params(dirs["params"], dirs["notebooks"])


def test_a_reading_runs_only_at_the_profiles_of_its_run_at(tmp_path, capsys):
    dirs = _project(tmp_path, READINGS.replace("      summary: What the text says.\n",
                                               "      summary: What the text says.\n      run_at: [quick, full]\n"))
    params = load_params(dirs["params"], dirs["notebooks"])
    for profile, readings in [("quick", ["as-printed", "as-intended", "same"]), ("default", ["as-printed", "same"]),
                              ("full", ["as-printed", "as-intended", "same"])]:
        assert [t.reading for t in _plan(dirs, profile) if t.preset] == readings
        assert [t.reading for t in _plan(dirs, profile, "P1")] == readings
    # asked for by name, a reading runs at any profile
    assert [t.reading for t in _plan(dirs, "default", "P1:as-intended")] == ["as-intended"]
    # the report lists the reading it did not run, and says where it runs
    found = index_protocols(select(params, None, "default", None))["P1"]["tiny"]["readings"]
    assert [(r["name"], r["run"]) for r in found] == [("as-printed", True), ("as-intended", False), ("same", True)]
    protocols = {"P1": {"tiny": {"readings": found}}}
    assert [r["name"] for r in scorecard.declared_readings("P1", protocols["P1"]["tiny"])] == ["as-printed", "same"]
    text = scorecard.readings_markdown(protocols)
    assert ("*as-intended* (protocol `P1:as-intended`) — not run in this report: it runs at the quick and full "
            "profiles (`make report PROFILE=full`, or `--preset P1:as-intended`)") in text
    assert text.count("not run in this report") == 1
    assert main(["list", "--params", str(dirs["params"]), "--notebooks", str(dirs["notebooks"])]) == 0
    assert "as-intended: 1 run, protocol P1:as-intended, quick and full profiles only\n" in capsys.readouterr().out


def test_list_shows_each_presets_readings(tmp_path, capsys):
    dirs = _project(tmp_path)
    assert main(["list", "--params", str(dirs["params"]), "--notebooks", str(dirs["notebooks"])]) == 0
    out = capsys.readouterr().out
    assert "P1:3" in out.splitlines()[1]           # the preset's runs, all readings
    assert "  P1 (tiny): * as-printed: 1 run, protocol P1\n" in out
    assert "  P1 (tiny):   as-intended: 1 run, protocol P1:as-intended\n" in out


@pytest.mark.slow
def test_manifests_and_read_back_rows_carry_preset_reading_and_protocol(tmp_path, capsys):
    dirs = _project(tmp_path, READINGS.split("    same:")[0])        # as-printed and as-intended
    assert main(args(dirs, "--profile", "quick", "--preset", "P1", "--no-report", "--jobs", "1")) == 0
    index = json.loads((dirs["outputs"] / "index.json").read_text())
    assert [(e["preset"], e["reading"], e["primary"], e["protocol"]) for e in index["runs"]] == [
        ("P1", "as-printed", True, "P1"), ("P1", "as-intended", False, "P1:as-intended")]
    manifests = [results.read_manifest(e["run_dir"]) for e in index["runs"]]
    assert [(m["preset"], m["reading"], m["primary"]) for m in manifests] == [
        ("P1", "as-printed", True), ("P1", "as-intended", False)]
    tidy, runs = results.read_runs([e["run_dir"] for e in index["runs"]])
    assert sorted(set(zip(tidy["protocol"], tidy["reading"]))) == [("P1", "as-printed"),
                                                                   ("P1:as-intended", "as-intended")]
    assert list(runs["protocol"]) == ["P1", "P1:as-intended"] and list(runs["reading"]) == ["as-printed", "as-intended"]


def test_a_manifest_from_before_readings_reads_back_as_its_preset(tmp_path):
    run = tmp_path / "tiny" / "abc"
    run.mkdir(parents=True)
    results.write_table(pd.DataFrame({"notebook": ["tiny"], "run_id": ["abc"], "epoch": [1]}),
                        run / results.RESULTS_FILE)
    (run / results.MANIFEST_FILE).write_text(json.dumps({"status": "ok", "preset": "R1", "profile": "default",
                                                         "files": results.file_checksums(run)}))
    tidy, runs = results.read_runs([run])
    assert (tidy["protocol"][0], tidy["reading"][0], runs["protocol"][0]) == ("R1", None, "R1")


# ---------------------------------------------------------------- the scorecard per reading
def _rows(protocol, values):
    return pd.DataFrame([{"notebook": "bn_dropout_grid", "run_id": f"{protocol}-run", "protocol": protocol,
                          "model_id": f"m{i}", "seed": i, "epoch": 5, "bn": False, "dropout": 0.0, "dataset": "mnist",
                          "test_acc": v, "train_acc": v, "status": "ok"} for i, v in enumerate(values)])


def test_scorecard_scores_every_figure_under_every_reading_primary_first():
    rng = np.random.default_rng(3)
    primary, other = 0.99 + rng.normal(0, 0.001, 5), 0.96 + rng.normal(0, 0.001, 5)
    tables = Tables(pd.concat([_rows("R1", primary), _rows("R1:other", other)], ignore_index=True))
    readings = [{"name": "other", "protocol": "R1:other", "primary": False, "summary": "the text's reading",
                 "parameters": {"lr": 0.1}, "sources": {}, "open": {"lr": "not printed; a guess"}},
                {"name": "printed", "protocol": "R1", "primary": True, "summary": "the code as printed",
                 "parameters": {}, "sources": {"epochs": "R1 l.12"}, "open": {}}]
    figures = [{"figure": "by primary", "value": float(primary.mean()), "metric": "test_acc"},
               {"figure": "by other", "value": float(other.mean()), "metric": "test_acc"},
               {"figure": "by none", "value": 0.5, "metric": "test_acc"},
               {"figure": "c1", "value": 156, "metric": "parameters"}]
    protocols = {"R1": {"bn_dropout_grid": {"readings": readings, "published": figures, "sources": {"x": "R1 l.3"}}}}
    card = scorecard.scorecard(tables, protocols)
    assert list(card.columns[:4]) == ["report", "figure", "reading", "primary"]
    assert list(zip(card["figure"], card["reading"], card["primary"])) == [
        ("by primary", "printed", True), ("by primary", "other", False), ("by other", "printed", True),
        ("by other", "other", False), ("by none", "printed", True), ("by none", "other", False),
        ("c1", "printed", True), ("c1", "other", False)]
    result = list(card["result"])
    assert result[0] == scorecard.REPRODUCED and result[1].startswith(scorecard.NOT_REPRODUCED)
    assert result[2].startswith(scorecard.NOT_REPRODUCED) and result[3] == scorecard.REPRODUCED
    # a figure no reading reproduces stays "not reproduced", with its distance under each reading
    for row, values in ((4, primary), (5, other)):
        distance = float(result[row].split("(")[1].split(" sd")[0])
        assert distance == pytest.approx((0.5 - values.mean()) / values.std(ddof=1), abs=0.05)
    assert result[6].startswith("not covered") and result[7].startswith("not covered")     # no layers table
    assert scorecard.tally(card) == {"figures": 4, scorecard.UNDER_PRIMARY: 1, scorecard.UNDER_SOME: 2,
                                     scorecard.UNDER_NONE: 1, "reproduced": 1, "not reproduced": 2, "not scored": 1}
    assert scorecard.tally_text(scorecard.tally(card)) == (
        "Of 4 published figures, **1** are reproduced under the primary reading and **2** reproduced under some "
        "declared reading; 1 are not reproduced under any reading, and 1 are not scored under any.")
    # skipped (a dataset absent here) covers every reading of the preset
    skipped = scorecard.scorecard(tables, protocols, skipped={"R1": "needs CIFAR-10"})
    assert set(skipped["result"]) == {"not covered: needs CIFAR-10"}

    text = scorecard.readings_markdown(protocols)
    assert text.index("*printed* (primary): the code as printed") < text.index("*other* (protocol `R1:other`)")
    assert "- shared · source · x: R1 l.3" in text and "    - source · epochs: R1 l.12" in text
    assert "    - open · lr: not printed; a guess" in text and "    - parameters: lr=0.1" in text
    assert scorecard.readings(protocols)[0] == "R1 (bn_dropout_grid) · printed (primary): the code as printed"
    assert scorecard.INTERVAL_NOTE.startswith("The intervals hold our seed-to-seed variance only")


def test_scorecard_figure_marks_the_rows_of_other_readings():
    import matplotlib
    matplotlib.use("Agg")
    from lenet_lib.summary import figures
    values = 0.99 + np.random.default_rng(4).normal(0, 0.001, 4)
    tables = Tables(pd.concat([_rows("R1", values), _rows("R1:b", values)], ignore_index=True))
    protocols = {"R1": {"bn_dropout_grid": {"published": [{"figure": "f", "value": 0.99, "metric": "test_acc"}],
                                            "readings": [{"name": "a", "protocol": "R1", "primary": True},
                                                         {"name": "b", "protocol": "R1:b", "primary": False}]}}}
    fig = figures.scorecard_figure(scorecard.scorecard(tables, protocols))
    labels = [t.get_text() for ax in fig.axes for t in (ax.get_legend().get_texts() if ax.get_legend() else [])]
    labels += [t.get_text() for t in (fig.legends[0].get_texts() if fig.legends else [])]
    assert "another declared reading" in labels


def test_an_index_from_before_readings_scores_as_one_primary_reading():
    values = 0.99 + np.random.default_rng(5).normal(0, 0.001, 4)
    protocols = {"R1": {"bn_dropout_grid": {"reading": "old", "published": [
        {"figure": "f", "value": float(values.mean()), "metric": "test_acc"}]}}}
    card = scorecard.scorecard(Tables(_rows("R1", values)), protocols)
    assert list(zip(card["reading"], card["primary"], card["result"])) == [("as-read", True, scorecard.REPRODUCED)]
    assert scorecard.readings(protocols) == ["R1 (bn_dropout_grid) · as-read (primary): old"]
