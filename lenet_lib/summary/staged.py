"""The claims judged in stages (`--profile decide`): after each stage, each open claim at that look's
group-sequential boundary (summary/sequential.py), a claim once decided staying decided; and the design
columns the claims table shows for such a report.

A claim's state is plain data (it is written to outputs/index.json under "decide"): its verdict, the stage
and look (seeds per variant) that decided it, the nominal level used there, and each part's outcome so far.
Time parts have looks of their own: a timing look k has the base's rounds per first-look seed times look k's
seed count (running/decide.py's timing-only runs), so its information fraction is look k's, as for seeds. A
claim's seed parts and time parts are each tested at their own look (sequential.look_outcomes), which lets
timing, cheap, reach later looks than training does.
"""
from __future__ import annotations

import math

import pandas as pd

from lenet_lib.summary import sequential
from lenet_lib.summary.decision import CONTRADICTED, INCONCLUSIVE, SUPPORTED
from lenet_lib.summary.verdicts import CLAIMS, NOT_JUDGED, Claim, judge_claim, pairing, sample_sizes

DESIGN_COLUMNS = ["decided at", "boundary", "design"]
SINGLE = "single look"      # a claim whose notebook has no seeds to add (its runs ran once)
UNRECORDED_SPENDING = "obf"  # staged reports written before `spending` was a choice used O'Brien-Fleming-like


def claim_key(claim: Claim, claims=CLAIMS) -> str:
    """A short name for the progress bar and the index: the report and the claim's number in it, "R4.2"."""
    same = [c for c in claims if c.report == claim.report]
    return f"{claim.report}.{same.index(claim) + 1}"


def new_state(claim: Claim, claims=CLAIMS, staged: bool = True) -> dict:
    return {"key": claim_key(claim, claims), "report": claim.report, "claim": claim.text,
            "protocol": claim.protocol, "notebook": claim.notebook, "staged": staged, "verdict": INCONCLUSIVE,
            "stage": None, "n": None, "size": "", "level": None, "parts": None, "scales": None, "pairing": "",
            "to_decide": "", "note": ""}


def open_scales(state: dict) -> set:
    """What an open claim still needs: "points" (seeds) and/or "ratio" (timing rounds); both before its
    first judgement, none once decided."""
    if not is_open(state):
        return set()
    if not state.get("parts") or not state.get("scales"):
        return {"points", "ratio"}
    return {scale for scale, outcome in zip(state["scales"], state["parts"]) if outcome == INCONCLUSIVE}


def is_open(state: dict) -> bool:
    return state["verdict"] == INCONCLUSIVE


def judge_at_look(claim: Claim, state: dict, tables, stage: int, looks,
                  spending: str = sequential.DEFAULT_SPENDING, seed_look: int | None = None,
                  timing_look: int | None = None) -> dict:
    """state after judging `claim` on `tables` (the runs of stages 1..stage) after stage `stage` of `looks`,
    its boundaries from the alpha-spending function `spending`: its seed parts at look `seed_look`, its time
    parts at look `timing_look` (1-based; both default to `stage`). A decided claim is returned unchanged. A
    single-look claim is judged at alpha once."""
    if not is_open(state):
        return state
    judgement = judge_claim(claim, tables, claim.protocol)
    if judgement.verdict == NOT_JUDGED:
        return {**state, "note": judgement.note}
    parts = judgement.parts
    looks = tuple(looks) if state["staged"] else (2,)       # one look: its level is alpha itself
    at = {"points": seed_look or stage, "ratio": timing_look or stage}
    part_n = [looks[at.get(p.scale, stage) - 1] if state["staged"] else 2 for p in parts]
    n = looks[at["points"] - 1] if state["staged"] else 2
    before = state["parts"] if state["parts"] and len(state["parts"]) == len(parts) else [INCONCLUSIVE] * len(parts)
    outcomes = list(before)
    levels = []
    for alpha in dict.fromkeys(p.alpha for p in parts):      # look_outcomes takes one alpha; families share one
        index = [i for i, p in enumerate(parts) if p.alpha == alpha]
        p_values = [parts[i].p_values() for i in index]
        got = sequential.look_outcomes([parts[i].kind for i in index], [p for p, _ in p_values],
                                       [q for _, q in p_values], [parts[i].family for i in index],
                                       [part_n[i] for i in index], looks, alpha, [before[i] for i in index],
                                       spending)
        for i, outcome in zip(index, got):
            outcomes[i] = outcome
        levels += [sequential.level_at(part_n[i], looks, alpha, spending) for i in index]
    verdict = (CONTRADICTED if CONTRADICTED in outcomes else
               SUPPORTED if all(o == SUPPORTED for o in outcomes) else INCONCLUSIVE)
    state = {**state, "parts": outcomes, "scales": [p.scale for p in parts], "pairing": pairing(parts), "size": sample_sizes(parts),
             "level": min(levels), "to_decide": judgement.to_decide, "note": ""}
    if verdict != INCONCLUSIVE:
        state.update(verdict=verdict, stage=stage, n=n if state["staged"] else None)
    return state


def design_text(state: dict, design: dict) -> dict:
    """The three design columns of one claim's row, from the staged report's record (index["decide"])."""
    looks, stages_run = design["looks"], design["stages_run"]
    cap = looks[-1]
    plan = f"{spending_name(design)} alpha spending (Lan-DeMets), looks {', '.join(map(str, looks))} seeds"
    if not state["staged"]:
        decided = (f"stage 1 ({state['size']})" if not is_open(state) else "open (single look)")
        return {"decided at": decided, "boundary": _level(state["level"]),
                "design": f"{SINGLE}: {state['notebook']} has no seeds to add; judged at the 5 % level"}
    if not is_open(state):
        return {"decided at": f"stage {state['stage']} of {len(looks)}: {state['size']}",
                "boundary": _level(state["level"]), "design": plan}
    where = (f"open at the cap ({cap} seeds per variant)" if stages_run >= len(looks)
             else f"open after stage {stages_run} of {len(looks)} (stopped before the cap of {cap} seeds)")
    would = f"; {state['to_decide']}" if state["to_decide"] else ""
    return {"decided at": where + would, "boundary": _level(state["level"]), "design": plan}


def design_spending(design: dict) -> str:
    """The spending function a staged report used (UNRECORDED_SPENDING where its record names none)."""
    return design.get("spending", UNRECORDED_SPENDING)


def spending_name(design: dict) -> str:
    """The spending function a staged report used, in words: "Pocock-like"."""
    return sequential.SPENDING_NAMES[design_spending(design)]


def _level(level) -> str:
    if level is None or (isinstance(level, float) and math.isnan(level)):
        return ""
    return f"one-sided p < {level:.2g} at that look"


def with_design(claims: pd.DataFrame, design: dict | None) -> pd.DataFrame:
    """The claims table (verdicts.judge) of a staged report with the design's verdicts and DESIGN_COLUMNS:
    each claim's verdict is the sequential one (decided at a look and kept), not a fixed-n test on all its
    seeds. Without a design (another profile) the table is returned as it is. The summary calls
    `staged.with_design(verdicts.judge(tables, ...), index.get("decide"))`."""
    if not design:
        return claims
    by_claim = {(s["report"], s["claim"]): s for s in design["claims"]}
    out = claims.copy()
    extra = {c: [] for c in DESIGN_COLUMNS}
    for i, row in out.iterrows():
        state = by_claim.get((row["report"], row["claim"]))
        if state is None:
            for c in DESIGN_COLUMNS:
                extra[c].append("")
            continue
        if row["verdict"] != NOT_JUDGED:
            out.at[i, "verdict"] = state["verdict"]
        for c, text in design_text(state, design).items():
            extra[c].append(text)
    return out.assign(**extra)
