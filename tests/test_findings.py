"""The report's opening: findings lines, claims split into parts, notes for a repeated message, and the two
overview figures, on frames whose answers are known by construction."""
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from lenet_lib.analysis.tidy import Tables                                  # noqa: E402
from lenet_lib.summary import decision, figures, findings, scorecard, verdicts       # noqa: E402
from test_verdicts import grid, tidy_rows, timing_rows                      # noqa: E402

CIFAR = "needs CIFAR-10 (cifar10): /data/cifar-10-batches-py does not exist; put the files there"


def r1_tables():
    rows = grid(first_epoch={"BN": 0.975, "BN+dropout": 0.975}, seeds=4)
    return Tables(rows, timing=timing_rows("bn_dropout_grid", "R1", {(True, 0.0): 1.2, (False, 0.5): 1.1,
                                                                      (True, 0.5): 1.3}))


def test_claim_parts_one_row_per_part_with_the_verdicts_numbers():
    tables = r1_tables()
    parts = findings.claim_parts(tables, skipped={"R3": CIFAR})
    claims = verdicts.judge(tables, skipped={"R3": CIFAR})
    r1 = parts[parts["report"] == "R1"]
    assert list(r1.groupby("claim", sort=False).size()) == [6, 2, 3]        # 6 pairs, 2 epoch-1 pairs, 3 ratios
    # each part's effect text is the verdicts table's, less the label
    for claim, group in r1.groupby("claim"):
        effect = claims.set_index("claim").loc[claim, "effect (95 % CI)"]
        assert effect == "; ".join(f"{part}: {text}" for part, text in zip(group["part"], group["effect (95 % CI)"]))
    same = r1[r1["claim"].str.startswith("All four")]
    assert (same["region_low"] == -verdicts.EQUIVALENCE_MARGIN).all() and (same["region_high"] == 0.002).all()
    bn = r1[r1["part"] == "BN − plain, epoch 1"].iloc[0]
    assert bn["value"] == pytest.approx(0.005, abs=0.001) and bn["low"] < bn["value"] < bn["high"]
    assert bn["region_low"] == 0 and bn["region_high"] == math.inf and bn["outcome"] == decision.SUPPORTED
    ratios = r1[r1["scale"] == "ratio"].set_index("part")
    assert math.exp(ratios.loc["BN / plain", "value"]) == pytest.approx(1.2, rel=0.01)
    # a claim that was not judged: one row, no numbers, the reason in its note
    r3 = parts[parts["report"] == "R3"]
    assert len(r3) == 2 and r3["value"].isna().all() and (r3["note"] == CIFAR).all()
    assert set(findings.claim_parts(tables, smoke=True).dropna(subset=["value"])["outcome"]) == {verdicts.SMOKE}


def test_parts_testing_one_estimate_are_one_row_with_the_region_between_their_thresholds():
    rows = grid("dropout_sweep", "R4", effects={"BN": 0.995, "plain": 0.99}, seeds=5)
    tables = Tables(rows, timing=timing_rows("dropout_sweep", "R4", {(True, 0.0): 1.3, (False, 0.5): 0.9,
                                                                      (True, 0.5): 1.2}))
    parts = findings.claim_parts(tables, skipped={})
    marginal = parts[parts["claim"].str.startswith("BN improves")].set_index("part")
    assert list(marginal.index) == ["BN − plain", "BN / plain time"]
    assert marginal.loc["BN − plain", "region_low"] == 0 and marginal.loc["BN − plain", "region_high"] == 0.01
    assert marginal.loc["BN − plain", "outcome"] == decision.SUPPORTED           # 0.5 points: inside (0, 1)
    assert marginal.loc["BN / plain time", "region_low"] == pytest.approx(math.log(1.1))


def test_a_repeated_message_is_stated_once_and_referred_to():
    numbered = findings.notes({"R3": CIFAR, "R6": CIFAR, "R7": "no GPU"})
    assert numbered == {CIFAR: "note 1", "no GPU": "note 2"}
    table = pd.DataFrame({"result": [f"not covered: {CIFAR}"] * 12, "n": range(12)})
    shown = findings.refer(table, numbered)
    assert (shown["result"] == "not covered: see note 1").all() and list(shown["n"]) == list(range(12))
    lines = findings.note_lines(numbered, {"R3": CIFAR, "R6": CIFAR, "R7": "no GPU"})
    assert lines[0] == f"<b>Note 1</b> (R3, R6): {CIFAR}"
    claim = pd.DataFrame({"report": ["R1"] * 3, "claim": ["c"] * 3, "verdict": ["supported"] * 3,
                          "part": ["a", "b", "c"], "n": ["3 seeds"] * 3, "test": ["t", "t", "u"]})
    blocks = findings.blank_repeats(claim)
    assert list(blocks["verdict"]) == ["supported", "", ""] and list(blocks["part"]) == ["a", "b", "c"]
    assert list(blocks["n"]) == ["3 seeds", "", ""] and list(blocks["test"]) == ["t", "", "u"]


def card_row(report, figure, result, reading=None, primary=None):
    row = {"report": report, "figure": figure, "result": result, "metric": "test_acc", "mean": 0.99}
    return row if reading is None else {**row, "reading": reading, "primary": primary}


def test_findings_say_reproduced_of_scored_and_the_claims_verdicts():
    card = pd.DataFrame([card_row("R1", "a", scorecard.REPRODUCED), card_row("R1", "b", "not reproduced (+3.0 sd)"),
                         card_row("R1", "c", scorecard.SMOKE), card_row("R3", "d", f"not covered: {CIFAR}")])
    claims = pd.DataFrame({"report": ["R1", "R1", "R3"], "verdict": [decision.SUPPORTED, decision.INCONCLUSIVE,
                                                                     verdicts.NOT_JUDGED],
                           "note": ["", "", CIFAR]})
    lines = findings.findings(card, claims, findings.notes({"R3": CIFAR}))
    assert lines == ["**R1** — published figures: **1 of 2** scored reproduced; 1 not scored (1 smoke run) · "
                     "claims: 1 supported, 1 inconclusive",
                     "**R3** — published figures: none of 1 scored (1 not covered) · claims: 1 not judged (note 1)"]


def test_findings_with_readings_count_the_primary_and_any_declared_reading():
    card = pd.DataFrame([card_row("R2", "a", scorecard.REPRODUCED, "printed", True),
                         card_row("R2", "a", "not reproduced (+3.0 sd)", "intended", False),
                         card_row("R2", "b", "not reproduced (-4.0 sd)", "printed", True),
                         card_row("R2", "b", scorecard.REPRODUCED, "intended", False),
                         card_row("R2", "c", "not reproduced (-9.0 sd)", "printed", True),
                         card_row("R2", "c", "not reproduced (-8.0 sd)", "intended", False)])
    line = findings.figures_line(card)
    assert line == ("published figures reproduced under the primary reading: **1 of 3**; under some declared "
                    "reading: **2 of 3**")


# ---------------------------------------------------------------- figures
def test_claims_figure_draws_each_part_at_its_effect_with_points_and_a_log_ratio_axis():
    parts = findings.claim_parts(r1_tables(), skipped={"R3": CIFAR})
    fig = figures.claims(parts)
    points, ratios = fig.axes[:2]
    assert ratios.get_xscale() == "log" and points.get_xscale() == "linear"
    drawn = parts[parts["value"].notna()]
    x = [line.get_xdata()[0] for line in points.get_lines() if line.get_marker() in ("o", "X", "D")]
    assert np.allclose(sorted(x), sorted(100 * drawn.loc[drawn["scale"] == "points", "value"]))
    ticks = [t.get_text() for t in points.get_yticklabels()]
    assert "BN − plain, epoch 1" in ticks and len(ticks) == (drawn["scale"] == "points").sum()
    assert [t.get_text() for t in fig.legends[0].get_texts()][0].startswith("part ")
    caption = figures.claims_caption(parts, findings.notes({"R3": CIFAR}))
    assert caption.startswith(f"{len(drawn)} parts of 3 claims") and "R3 (2, note 1)" in caption
    assert figures.claims(parts.assign(value=np.nan)) is None


def test_scorecard_figure_places_published_figures_against_our_interval():
    values = 0.99 + np.random.default_rng(2).normal(0, 0.001, 4)
    rows = tidy_rows("bn_dropout_grid", "R1", [dict(model_id=f"m{i}", seed=i, epoch=25, bn=False, dropout=0.0,
                                                    test_acc=v) for i, v in enumerate(values)])
    published = [{"figure": name, "value": values.mean() + shift, "metric": "test_acc"}
                 for name, shift in (("near", 0.0005), ("out", -0.01), ("far", 0.4))]
    card = scorecard.scorecard(Tables(rows), {"R1": {"bn_dropout_grid": {"published": published}},
                                              "R3": {"bn_dropout_grid": {"published": published[:1]}}},
                               skipped={"R3": CIFAR})
    ax = figures.scorecard_figure(card).axes[0]
    markers = {line.get_marker(): line.get_xdata()[0] for line in ax.get_lines() if line.get_marker() != "|"}
    assert markers["D"] == pytest.approx(0.05) and markers["X"] == pytest.approx(-1.0)     # points from our mean
    # +40 points lies beyond the axis: at its right edge, pointing out, its value written beside it
    assert markers[">"] == pytest.approx(ax.get_xlim()[1]) and "+40.0" in [t.get_text() for t in ax.texts]
    caption = figures.scorecard_caption(card, findings.notes({"R3": CIFAR}))
    assert caption.endswith("1 of 3 scored accuracies reproduced; R3: 1 not covered (note 1).")
    # other declared readings: hollow markers beside the primary reading's interval
    other = card[card["report"] == "R1"].assign(reading="b", primary=False, mean=card["mean"] + 0.002)
    both = pd.concat([card.assign(reading="a", primary=True), other], ignore_index=True)
    ax = figures.scorecard_figure(both).axes[0]
    hollow = [line for line in ax.get_lines() if line.get_marker() == "o" and line.get_mfc() == "white"]
    assert len(hollow) == 3 and hollow[0].get_xdata()[0] == pytest.approx(0.2)
    assert figures.scorecard_caption(both).startswith("Under the primary reading: 1 of 3 scored")
    smoke = scorecard.scorecard(Tables(rows), {"R1": {"bn_dropout_grid": {"published": published}}}, smoke=True)
    assert figures.scorecard_caption(smoke).endswith("3 accuracies shown, not scored.")
