"""`--profile decide`: seeds in stages, claims judged at each look's boundary, a time budget.

The cheap half judges synthetic staged results; the runner half runs a tiny seeded notebook (real kernels,
seconds each) through the stages."""
import json
import shutil
from textwrap import dedent

import numpy as np
import pandas as pd
import pytest

from lenet_lib.summary import sequential
from lenet_lib.analysis.tidy import Tables
from lenet_lib.running import decide
from lenet_lib.running.cli import main
from lenet_lib.running.checks import ConfigError
from lenet_lib.summary import staged, verdicts
from lenet_lib.summary.decision import accuracy_difference, decide as decide_parts
from lenet_lib.summary.verdicts import Claim, _better
from tests.fixtures.runner_project import INJECTED_DEFAULTS, make_project, run_dirs, write_notebook

LOOKS = (2, 4, 8)


def a_beats_b(rows, tables):
    if "arm" not in rows or not {"a", "b"} <= set(rows["arm"]):
        return None
    return decide_parts([_better("a − b", accuracy_difference(rows, {"arm": "a"}, {"arm": "b"}))])


def claims_for(*presets):
    return [Claim(p, f"a beats b under {p}", p, "seeded", "mnist", a_beats_b, "arms a and b") for p in presets]


def seeded_rows(seeds, effect, protocol="P", run_id=None, noise=0.01):
    """One final-epoch row per seed and arm; a seed's luck is shared by both arms (pairing)."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        luck = rng.normal(0, noise)
        for arm in ("a", "b"):
            rows.append({"notebook": "seeded", "protocol": protocol, "dataset": "mnist", "run_id": run_id or f"r{seed}",
                         "seed": seed, "arm": arm, "epoch": 1, "model_id": f"{arm}{seed}",
                         "test_acc": 0.9 + luck + (effect if arm == "a" else 0) + rng.normal(0, noise / 10)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- input checked before any work
@pytest.mark.parametrize("text, seconds", [("60m", 3600), ("90s", 90), ("1h30m", 5400), ("45", 2700),
                                           (" 2h ", 7200)])
def test_budget_parses(text, seconds):
    assert decide.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["0", "0m", "abc", "-5m", "5x", "m", "1h-5m", ""])
def test_bad_budget_is_refused(text):
    with pytest.raises(ConfigError, match="--budget .* is not valid"):
        decide.parse_budget(text)


DESIGN = "quick: {verdicts: false}\ndefault: {}\nfull: {}\n"


@pytest.mark.parametrize("block, message", [
    ("{looks: [3, 3, 12], cap: 24}", r"looks=\(3, 3, 12\) is not valid; expected increasing"),
    ("{looks: [6, 3], cap: 24}", "expected increasing"),
    ("{looks: [3, 6], cap: 2}", r"cap=2 is not valid; expected a seed count >= the first look \(3\)"),
    ("{looks: [3, 6, 48], cap: 24}", "looks 48 lie past the cap 24"),
    ("{looks: [1, 6], cap: 6}", "each >= 2"),
    ("{looks: 3, cap: 6}", "looks=3 is not valid"),
    ("{looks: [3, 6], cap: 6, base: huge}", "base='huge' is not valid; choose one of quick, default, full"),
    ("{looks: [3, 6], cap: 6, stages: 4}", "unknown key"),
    ("{looks: [3, 6], cap: 6, spending: linear}", "spending='linear' is not valid; expected one of obf, pocock"),
])
def test_bad_design_is_refused(tmp_path, block, message):
    (tmp_path / "profiles.yaml").write_text(DESIGN + f"decide: {block}\n")
    with pytest.raises(ConfigError, match=message):
        decide.load_design(tmp_path)


def test_design_appends_the_cap_and_the_repository_declares_one():
    from lenet_lib.running.runner import REPO_ROOT
    design = decide.load_design(REPO_ROOT / "params")
    assert design.looks == (3, 6, 12, 24) and design.spending == "pocock"


def test_design_cap_becomes_the_last_look(tmp_path):
    (tmp_path / "profiles.yaml").write_text(DESIGN + "decide: {looks: [3, 6], cap: 10}\n")
    assert decide.load_design(tmp_path) == decide.Design((3, 6, 10), "default")


def test_stages_add_new_seeds_and_rounds_in_proportion():
    [change] = decide.staged_changes((3, 6, 12, 24), 1, base_seeds=3)
    assert change({"seeds": [0, 1, 2], "timing_rounds": 30}) == {"seeds": [0, 1, 2], "timing_rounds": 30}
    # a base with fewer seeds than look 1 (R2 part I's 2): its run as it is, and the rest as a run of its own
    runs = [c({"seeds": [0, 1], "timing_rounds": 10}) for c in decide.staged_changes((3, 6, 12, 24), 1, 2)]
    assert runs == [{"seeds": [0, 1], "timing_rounds": 10}, {"seeds": [2], "timing_rounds": 5}]
    runs = [c({"seeds": [0, 1, 2], "timing_rounds": 30}) for c in decide.staged_changes((3, 6, 12, 24), 3, 3)]
    assert runs == [{"seeds": [6, 7, 8], "timing_rounds": 30}, {"seeds": [9, 10, 11], "timing_rounds": 30}]
    runs = [c({"seeds": [0, 1], "timing_rounds": 10}) for c in decide.staged_changes((2, 5), 2, 2)]
    assert runs == [{"seeds": [2, 3], "timing_rounds": 10}, {"seeds": [4], "timing_rounds": 5}]
    assert decide.stage_seeds((3, 6, 12, 24), 4) == list(range(12, 24))


def test_a_stage_gives_every_job_a_run_and_times_apart_where_the_notebook_can():
    base = {"seeds": [0, 1, 2], "timing_rounds": 30, "epoch_timing_rounds": 8}
    runs = [c(base) for c in decide.staged_changes((3, 6, 12, 24), 2, 3, jobs=2)]
    assert [r["seeds"] for r in runs] == [[3, 4], [5]] and [r["timing_rounds"] for r in runs] == [20, 10]
    # a notebook that times apart: seed runs skip every timing; one timing-only run times look 2's new share
    seeds = [c(base) for c in decide.staged_changes((3, 6, 12, 24), 3, 3, jobs=2, timed_apart=True)]
    assert seeds == [{"seeds": [6, 7, 8], "timing_rounds": 0, "epoch_timing_rounds": 0},
                     {"seeds": [9, 10, 11], "timing_rounds": 0, "epoch_timing_rounds": 0}]
    [timing] = [c(base) for c in decide.staged_changes((3, 6, 12, 24), 3, 3, jobs=2, kind=decide.TIMING,
                                                       timed_apart=True)]
    assert timing == {"seeds": list(range(6, 12)), "train": False, "timing_rounds": 60, "epoch_timing_rounds": 0}


def test_each_part_is_judged_at_its_own_look():
    """Seed parts at look 1 and a time part at look 3: each gets its own look's level (Holm within them)."""
    looks, p = (2, 4, 8), [0.001, 0.02]
    at_own = sequential.look_outcomes(["greater"] * 2, p, [0.9, 0.9], ["", ""], [2, 8], looks)
    assert at_own == ["supported" if p[0] < sequential.level_at(2, looks) else "inconclusive",
                      "supported" if p[1] < sequential.level_at(8, looks) else "inconclusive"]
    assert at_own[1] == "supported" and sequential.look_outcomes(
        ["greater"] * 2, p, [0.9, 0.9], ["", ""], 2, looks)[1] == "inconclusive"
    with pytest.raises(ValueError, match="one per part"):
        sequential.look_outcomes(["greater"] * 2, p, [0.9, 0.9], ["", ""], [2], looks)


# ---------------------------------------------------------------- judging at a look (synthetic stages)
def judge_stages(effects_by_stage, looks=LOOKS):
    """The state of one claim after each stage; stage k's seeds have effect effects_by_stage[k-1]."""
    claim = claims_for("P")[0]
    state, states, frames = staged.new_state(claim, [claim]), [], []
    for stage, effect in enumerate(effects_by_stage, start=1):
        frames.append(seeded_rows(decide.stage_seeds(looks, stage), effect, run_id=f"stage{stage}"))
        state = staged.judge_at_look(claim, state, Tables(pd.concat(frames)), stage, looks)
        states.append(state)
    return states


def test_a_clear_effect_is_decided_early_at_the_looks_boundary():
    states = judge_stages([0.05, 0.05, 0.05])
    assert [s["verdict"] for s in states] == ["inconclusive", "supported", "supported"]
    assert states[1]["stage"] == 2 and states[1]["n"] == 4
    assert states[1]["level"] == pytest.approx(sequential.level_at(4, LOOKS))
    assert states[1]["level"] < 0.01          # the boundary, not 5 %


def test_a_claim_decided_at_look_k_stays_decided():
    """Stage 3's seeds say the opposite; the verdict of look 2 stands, with its n and stage."""
    states = judge_stages([0.05, 0.05, -0.2])
    assert states[2]["verdict"] == "supported" and states[2]["stage"] == 2 and states[2]["n"] == 4
    fixed_n = verdicts.judge_claim(claims_for("P")[0], Tables(pd.concat(
        [seeded_rows(decide.stage_seeds(LOOKS, k), e, run_id=f"s{k}") for k, e in ((1, .05), (2, .05), (3, -.2))])), "P")
    assert fixed_n.verdict != "supported"      # so the test would fail if the state were re-judged


def test_no_effect_stays_open_to_the_cap():
    states = judge_stages([0.0, 0.0, 0.0])
    assert [s["verdict"] for s in states] == ["inconclusive"] * 3 and states[-1]["stage"] is None


def test_the_design_columns_replace_the_fixed_n_verdict():
    claim = claims_for("P")[0]
    tables = Tables(pd.concat([seeded_rows(range(0, 2), 0.05, run_id="s1"), seeded_rows(range(2, 4), 0.05, run_id="s2"),
                               seeded_rows(range(4, 8), -0.2, run_id="s3")]))
    states = judge_stages([0.05, 0.05, -0.2])
    table = pd.DataFrame([{"report": "P", "claim": claim.text, "verdict": verdicts.judge_claim(claim, tables, "P").verdict}])
    shown = staged.with_design(table, {"looks": list(LOOKS), "stages_run": 3, "claims": [states[-1]]})
    assert shown.loc[0, "verdict"] == "supported"
    assert shown.loc[0, "decided at"].startswith("stage 2 of 3: 4 seeds")
    assert "one-sided p < " in shown.loc[0, "boundary"] and "O'Brien-Fleming" in shown.loc[0, "design"]
    pocock = staged.with_design(table, {"looks": list(LOOKS), "stages_run": 3, "claims": [states[-1]],
                                        "spending": "pocock"})
    assert pocock.loc[0, "design"].startswith("Pocock-like alpha spending (Lan-DeMets)")
    assert staged.with_design(table, None) is table
    open_state = judge_stages([0.0, 0.0, 0.0])[-1]
    shown = staged.with_design(table, {"looks": list(LOOKS), "stages_run": 3, "claims": [open_state]})
    assert shown.loc[0, "decided at"].startswith("open at the cap (8 seeds per variant)")


# ---------------------------------------------------------------- the runner through the stages
SEEDED_BODY = dedent('''\
    import numpy as np
    import pandas as pd
    import time
    from lenet_lib.analysis.results import save_results
    time.sleep(sleep)
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        luck = rng.normal(0, 0.01)
        for arm in ("a", "b"):
            rows.append(dict(model_id=f"{arm}{seed}", seed=seed, arm=arm, dataset="mnist", epoch=1, train_loss=0.5,
                             train_acc=0.5, val_loss=0.5, val_acc=0.5, epoch_seconds=0.01, status="ok",
                             test_loss=0.5, test_acc=0.9 + luck + (effect if arm == "a" else 0) + rng.normal(0, 0.001)))
    save_results(pd.DataFrame(rows), output_dir, notebook="seeded", run_id=run_id)
''')
SEEDED_YAML = dedent('''\
    notebook: seeded
    profiles: {quick: {}, default: {}, full: {}}
    presets:
      P: {parameters: {effect: 0.05}}
      Q: {parameters: {effect: 0.0}}
      S: {parameters: {effect: 0.05, sleep: 60.0}}
''')
PROFILES = dedent('''\
    quick: {verdicts: false}
    default: {protocol_parameters: {seeds: [0, 1]}}
    full: {}
    decide: {base: default, looks: [2, 4, 8], cap: 8}
''')


@pytest.fixture
def project(tmp_path):
    dirs = make_project(tmp_path)
    (dirs["params"] / "tiny.yaml").unlink()
    (dirs["params"] / "seeded.yaml").write_text(SEEDED_YAML)
    (dirs["params"] / "profiles.yaml").write_text(PROFILES)
    write_notebook(dirs["notebooks"] / "seeded.ipynb",
                   "seeds = [0]\neffect = 0.0\nsleep = 0.0\n" + INJECTED_DEFAULTS, SEEDED_BODY)
    return dirs


def run_decide(dirs, budget, preset=None, make_report=False, claims=None, capsys=None):
    return decide.report(budget, preset=preset, outputs=dirs["outputs"], params_dir=dirs["params"],
                         notebooks_dir=dirs["notebooks"], make_report=make_report, jobs=2, threads=1,
                         claims=claims or claims_for("P", "Q"))


def seeds_of(outputs):
    return sorted(json.loads((d / "manifest.json").read_text())["parameters"]["seeds"]
                  for d in run_dirs(outputs, "seeded"))


def test_bad_input_fails_before_any_work(project, capsys):
    for extra in (["--budget", "0"], ["--budget", "abc"]):
        assert main(["report", "--profile", "decide", "--params", str(project["params"]), "--notebooks",
                     str(project["notebooks"]), "--outputs", str(project["outputs"]), *extra]) == 2
        assert "--budget" in capsys.readouterr().err
    assert main(["report", "--budget", "5m", "--outputs", str(project["outputs"])]) == 2
    assert "--budget needs --profile decide" in capsys.readouterr().err
    (project["params"] / "profiles.yaml").write_text(PROFILES.replace("looks: [2, 4, 8]", "looks: [4, 2, 8]"))
    assert main(["report", "--profile", "decide", "--budget", "5m", "--params", str(project["params"]),
                 "--notebooks", str(project["notebooks"]), "--outputs", str(project["outputs"])]) == 2
    assert "expected increasing seed counts" in capsys.readouterr().err
    assert not (project["outputs"] / "runs").exists()


def test_stages_reuse_runs_and_a_decided_preset_stops(project, capsys):
    from lenet_lib.running.runner import report
    assert report(profile="default", preset="P", outputs=project["outputs"], params_dir=project["params"],
                  notebooks_dir=project["notebooks"], make_report=False, jobs=1, threads=1) == 0
    default_run = run_dirs(project["outputs"], "seeded")
    assert run_decide(project, "10m") == 0
    record = json.loads((project["outputs"] / "index.json").read_text())["decide"]
    by_key = {c["key"]: c for c in record["claims"]}
    # P (a clear effect) is decided at look 2 and gets no third stage; Q (none) runs to the cap, open
    assert by_key["P.1"]["verdict"] == "supported" and (by_key["P.1"]["stage"], by_key["P.1"]["n"]) == (2, 4)
    assert by_key["Q.1"]["verdict"] == "inconclusive" and record["stages_run"] == 3
    assert [s["runs"] for s in record["stages"]] == [2, 4, 2]      # two jobs: a stage's seeds in two runs
    assert record["stages"][0]["executed"] == 1          # P's first stage is the default report's run
    assert default_run[0] in run_dirs(project["outputs"], "seeded")
    assert seeds_of(project["outputs"]) == [[0, 1], [0, 1], [2], [2], [3], [3], [4, 5], [6, 7]]
    err = capsys.readouterr().err
    assert "stage 2/3 (4 seeds); open: P.1, Q.1" in err and "P.1 supported (stage 2; 4 seeds)" in err
    # again: every seed is cached, nothing runs, the same decisions
    assert run_decide(project, "10m") == 0
    again = json.loads((project["outputs"] / "index.json").read_text())["decide"]
    assert [s["executed"] for s in again["stages"]] == [0, 0, 0]
    assert [c["verdict"] for c in again["claims"]] == [c["verdict"] for c in record["claims"]]

    # a budget the next stage cannot fit in: it stops cleanly after the (cached) first stage, report written
    for run in run_dirs(project["outputs"], "seeded"):      # Q's later stages to run again
        manifest = json.loads((run / "manifest.json").read_text())
        if manifest["preset"] == "Q" and manifest["parameters"]["seeds"] != [0, 1]:
            shutil.rmtree(run)
        elif manifest["preset"] == "Q":     # the estimate reads stage 1's seconds: make them far above the budget
            (run / "manifest.json").write_text(json.dumps({**manifest, "seconds": 600.0}))
    assert run_decide(project, "2s", make_report=True, claims=claims_for("Q")) == 0
    index = json.loads((project["outputs"] / "index.json").read_text())
    assert index["decide"]["stages_run"] == 1 and index["decide"]["stopped"].startswith("budget: stage 2"), \
        json.dumps({k: v for k, v in index["decide"].items() if k != "claims"})
    assert index["decide"]["claims"][0]["n"] is None and len(index["runs"]) == 1     # stage 2 never started
    assert (project["outputs"] / "report.html").exists()


def test_a_run_past_the_budget_and_its_grace_is_stopped(project, capsys):
    assert run_decide(project, "2s", preset="S", claims=claims_for("S"), make_report=True) == 0
    index = json.loads((project["outputs"] / "index.json").read_text())
    assert [r["status"] for r in index["runs"]] == ["stopped"]
    assert index["decide"]["stopped"].startswith("budget: stage 1 stopped")
    assert index["decide"]["claims"][0]["verdict"] == "inconclusive"
    assert (project["outputs"] / "report.html").exists()


def test_a_preset_whose_stage_does_not_fit_stops_while_the_others_go_on(project, capsys):
    from lenet_lib.running.runner import report
    for preset in ("P", "Q"):
        assert report(profile="default", preset=preset, outputs=project["outputs"], params_dir=project["params"],
                      notebooks_dir=project["notebooks"], make_report=False, jobs=1, threads=1) == 0
    for run in run_dirs(project["outputs"], "seeded"):  # Q's first stage reads as slow: its next would not fit
        manifest = json.loads((run / "manifest.json").read_text())
        if manifest["preset"] == "Q":
            (run / "manifest.json").write_text(json.dumps({**manifest, "seconds": 600.0}))
    assert run_decide(project, "3m") == 0
    record = json.loads((project["outputs"] / "index.json").read_text())["decide"]
    by_key = {c["key"]: c for c in record["claims"]}
    # P's stage 2 fits and decides it; Q stops at its first look, open, and says why
    assert by_key["P.1"]["verdict"] == "supported" and (by_key["P.1"]["stage"], by_key["P.1"]["n"]) == (2, 4)
    assert by_key["Q.1"]["verdict"] == "inconclusive" and by_key["Q.1"]["size"] == "2 seeds"
    assert by_key["Q.1"]["note"].startswith("budget: its stage 2 (4 seeds) would take about 10 min, "), by_key["Q.1"]["note"]
    assert record["stages_run"] == 2 and record["stopped"] == "no claim left open to stage 3"
    assert seeds_of(project["outputs"]) == [[0, 1], [0, 1], [2], [3]]


# ---------------------------------------------------------------- time claims: timing-only runs of their own
TIMED_BODY = dedent('''\
    import numpy as np
    import pandas as pd
    from lenet_lib.analysis import tidy
    from lenet_lib.analysis.results import save_results, save_table
    rows = []
    for seed in seeds if train else []:
        for arm in ("a", "b"):
            rows.append(dict(model_id=f"{arm}{seed}", seed=seed, arm=arm, dataset="mnist", epoch=1, train_loss=0.5,
                             train_acc=0.5, val_loss=0.5, val_acc=0.5, epoch_seconds=0.01, status="ok",
                             test_loss=0.5, test_acc=0.9 + np.random.default_rng(seed).normal(0, 0.01)))
    save_results(pd.DataFrame(rows) if rows else tidy.no_history(), output_dir, notebook="timed", run_id=run_id)
    rng = np.random.default_rng(seeds[0] + 100)
    if timing_rounds:
        save_table(pd.DataFrame([dict(label=arm, implementation="torch", round=r,
                                      seconds=0.01 * (ratio if arm == "a" else 1.0) * noise)
                                 for r in range(timing_rounds) for arm, noise in zip("ab", rng.lognormal(0, 0.05, 2))]),
                   output_dir, "timing", notebook="timed", run_id=run_id)
''')


def a_slower_than_b(rows, tables):
    return verdicts._timed(tables, [("a / b", {"label": "a"}, {"label": "b"})], "greater", 0.0, "", "steps")


def test_time_claims_get_timing_only_runs_while_seeds_stop(tmp_path, capsys):
    """An open accuracy claim whose next seeds do not fit the budget stops at look 1; the time claim on the same
    preset goes on with timing-only runs (train False, no models), its rounds growing look by look. Look 1 has
    3 seeds, one more than the default report's 2: stage 1 adds it as a run of its own."""
    from lenet_lib.running.runner import report
    dirs = make_project(tmp_path)
    (dirs["params"] / "tiny.yaml").unlink()
    (dirs["params"] / "timed.yaml").write_text("notebook: timed\nprofiles: {quick: {}, default: {}, full: {}}\n"
                                               "presets:\n  T: {parameters: {ratio: 1.01}}\n")
    (dirs["params"] / "profiles.yaml").write_text(PROFILES.replace("looks: [2, 4, 8], cap: 8", "looks: [3, 6], cap: 6"))
    write_notebook(dirs["notebooks"] / "timed.ipynb", "seeds = [0]\ntrain = True\ntiming_rounds = 4\nratio = 1.0\n"
                   + INJECTED_DEFAULTS, TIMED_BODY)
    claims = [Claim("T", "a beats b", "T", "timed", "mnist", a_beats_b, "arms a and b"),
              Claim("T", "a is slower than b", "T", "timed", "mnist", a_slower_than_b, "the timing table")]
    assert report(profile="default", preset="T", outputs=dirs["outputs"], params_dir=dirs["params"],
                  notebooks_dir=dirs["notebooks"], make_report=False, jobs=1, threads=1) == 0
    [first] = run_dirs(dirs["outputs"], "timed")
    manifest = json.loads((first / "manifest.json").read_text())
    (first / "manifest.json").write_text(json.dumps({**manifest, "seconds": 600.0}))   # seeds far past the budget
    assert decide.report("3m", outputs=dirs["outputs"], params_dir=dirs["params"], notebooks_dir=dirs["notebooks"],
                         make_report=False, jobs=2, threads=1, claims=claims) == 0
    record = json.loads((dirs["outputs"] / "index.json").read_text())["decide"]
    accuracy, timed = record["claims"]
    assert accuracy["verdict"] == "inconclusive" and accuracy["note"].startswith("budget: its stage 2 (6 seeds)")
    parameters = [json.loads((d / "manifest.json").read_text())["parameters"] for d in run_dirs(dirs["outputs"], "timed")]
    assert sorted(p["seeds"] for p in parameters if p.get("train", True)) == [[0, 1], [2]]   # look 1's seeds
    assert record["stages"][0]["executed"] == 1                     # the default report's run reused
    later = [p for p in parameters if not p.get("train", True)]      # no model trained after stage 1
    # the base's 4 rounds per 2 seeds (the notebook's default): 2 with seed 2, 6 more at look 2
    assert [p["timing_rounds"] for p in later] == [6] and record["stages_run"] == 2
    assert [s["timing_only_runs"] for s in record["stages"]] == [0, 1]
    assert timed["verdict"] == "inconclusive" and timed["size"] == "12 rounds"    # a 1 % effect, 12 rounds
    assert accuracy["size"] == "3 seeds"
