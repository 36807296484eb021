"""What the report opens with: one line per seed report (its figures reproduced, its claims' verdicts), the
claims split into their parts (one row each, with the numbers the claims figure draws), and a message that
repeats across rows (a missing dataset) stated once as a numbered note and referred to.

Nothing here judges anything: the verdicts and scores come from verdicts.py and scorecard.py.
"""
from __future__ import annotations

import html
import math

import pandas as pd

from lenet_lib.analysis.tidy import Tables
from lenet_lib.summary import decision, scorecard, verdicts

PART_COLUMNS = ["report", "claim", "protocol", "verdict", "part", "effect (95 % CI)", "n", "test", "pairing",
                "to decide", "note"]
# the numbers behind a part, for figures.claims: value and its 95 % CI, and the region the claim says the
# effect lies in (its threshold or equivalence margin); accuracies as fractions, time ratios as log ratios
PART_NUMBERS = ["scale", "value", "low", "high", "region_low", "region_high", "outcome"]
CLAIM_LEVEL = ["report", "claim", "protocol", "verdict", "pairing", "to decide", "note", "decided at", "boundary",
               "design"]


def _region(part: decision.Part) -> tuple[float, float]:
    """The interval the claim puts the effect in."""
    if part.kind == "greater":
        return part.threshold, math.inf
    if part.kind == "less":
        return -math.inf, part.threshold
    return -part.threshold, part.threshold


def _outcome(outcomes: list[str]) -> str:
    """Parts that test one estimate (R4's "BN - plain" is > 0 and < 1 point) read as one, like decide()."""
    if decision.CONTRADICTED in outcomes:
        return decision.CONTRADICTED
    return decision.SUPPORTED if all(o == decision.SUPPORTED for o in outcomes) else decision.INCONCLUSIVE


def _judgements(tables, skipped: dict | None):
    """(claim, judgement) for every claim, as verdicts.judge makes them."""
    tables = tables if isinstance(tables, Tables) else Tables(tables)
    for claim in verdicts.CLAIMS:
        if (skipped or {}).get(claim.protocol):
            yield claim, decision.Judgement(verdicts.NOT_JUDGED, note=skipped[claim.protocol])
        else:
            yield claim, verdicts.judge_claim(claim, tables, claim.protocol)


def claim_parts(tables, *, smoke: bool = False, skipped: dict | None = None,
                design: dict | None = None) -> pd.DataFrame:
    """One row per claim part (parts testing the same estimate merged), PART_COLUMNS + PART_NUMBERS; a claim
    that was not judged is one row without numbers. Arguments as verdicts.judge's; `design` is a staged
    report's index["decide"]: verdicts and part outcomes are then the sequential ones (staged.py), with its
    design columns."""
    from lenet_lib.summary import staged
    states = {(s["report"], s["claim"]): s for s in (design or {}).get("claims", [])}
    rows = []
    for claim, judgement in _judgements(tables, skipped):
        state = states.get((claim.report, claim.text))
        if state is not None and judgement.verdict != verdicts.NOT_JUDGED:     # the staged verdict, kept
            judgement.verdict = state["verdict"]
            for part, outcome in zip(judgement.parts, state.get("parts") or []):
                part.outcome = outcome
        verdict = verdicts.SMOKE if smoke and judgement.verdict in verdicts.VERDICTS else judgement.verdict
        common = {"report": claim.report, "claim": claim.text, "verdict": verdict, "protocol": claim.where,
                  "pairing": verdicts.pairing(judgement.parts), "to decide": judgement.to_decide,
                  "note": judgement.note}
        if design:
            common.update(staged.design_text(state, design) if state else
                          dict.fromkeys(staged.DESIGN_COLUMNS, ""))
        groups: dict[str, list[decision.Part]] = {}
        for part in judgement.parts:
            groups.setdefault(part.label, []).append(part)
        if not groups:
            rows.append({**common, "part": "—", "effect (95 % CI)": "", "n": "", "test": "", "scale": "",
                         "value": math.nan, "low": math.nan, "high": math.nan, "region_low": math.nan,
                         "region_high": math.nan, "outcome": verdict})
        for label, parts in groups.items():
            regions = [_region(p) for p in parts]
            low, high = parts[0].estimate.ci()
            outcome = _outcome([p.outcome for p in parts])
            rows.append({**common, "part": label, "effect (95 % CI)": parts[0].effect()[len(label) + 2:],
                         "n": verdicts.sample_sizes(parts[:1]),
                         "test": "; ".join(dict.fromkeys(p.test for p in parts)), "scale": parts[0].scale,
                         "value": parts[0].estimate.value, "low": low, "high": high,
                         "region_low": max(r[0] for r in regions), "region_high": min(r[1] for r in regions),
                         "outcome": verdicts.SMOKE if smoke else outcome})
    extra = [c for c in ("decided at", "boundary", "design") if design]
    return pd.DataFrame(rows, columns=PART_COLUMNS + extra + PART_NUMBERS)


def table(parts: pd.DataFrame, numbered: dict[str, str]) -> pd.DataFrame:
    """The claims table from claim_parts: one row per part, claim-level cells once per claim, repeated
    messages referred to their notes; the pairing column only where some claim has one."""
    design = [c for c in ("decided at", "boundary", "design") if c in parts]
    columns = [c for c in PART_COLUMNS + design if c != "pairing" or parts[c].astype(bool).any()]
    return blank_repeats(refer(parts[columns], numbered))


def blank_repeats(table: pd.DataFrame, key=("report", "claim"), columns=CLAIM_LEVEL,
                  runs=("n", "test")) -> pd.DataFrame:
    """The claim-level cells on a claim's first row only, and a part's `runs` cells only where they differ
    from the part above in the same claim, so each claim reads as one block of parts."""
    repeat = table.duplicated(subset=list(key))
    shown = table.copy()
    shown.loc[repeat, [c for c in columns if c in table]] = ""
    for column in (c for c in runs if c in table):
        shown.loc[repeat & (table[column] == table[column].shift()), column] = ""
    return shown


# ---------------------------------------------------------------- a repeated message, stated once
def notes(skipped: dict | None) -> dict[str, str]:
    """{message: "note 1", ...}: each distinct reason a preset did not run, numbered once."""
    return {message: f"note {i}" for i, message in enumerate(dict.fromkeys((skipped or {}).values()), 1)}


def refer(table: pd.DataFrame, numbered: dict[str, str]) -> pd.DataFrame:
    """table with each numbered message in its text cells replaced by "see note k"."""
    if not numbered:
        return table

    def short(cell):
        if not isinstance(cell, str):
            return cell
        for message, note in numbered.items():
            cell = cell.replace(message, f"see {note}")
        return cell
    return table.map(short)


def note_lines(numbered: dict[str, str], skipped: dict | None) -> list[str]:
    """"<b>Note 1</b> (R3): <message>" (HTML) for each numbered message, naming the presets it stands for."""
    lines = []
    for message, note in numbered.items():
        presets = ", ".join(sorted(p for p, m in (skipped or {}).items() if m == message))
        lines.append(f"<b>{note.capitalize()}</b> ({presets}): {html.escape(message)}")
    return lines


# ---------------------------------------------------------------- one line per seed report
def _scored(results: pd.Series) -> pd.Series:
    return results.astype(str).str.startswith((scorecard.REPRODUCED, scorecard.NOT_REPRODUCED))


def _why(results: pd.Series) -> str:
    """Why figures were not scored, counted: e.g. "14 smoke run, 1 not covered"."""
    kinds = results.astype(str).map(lambda r: "smoke run" if r == scorecard.SMOKE else
                                    "not covered" if r.startswith("not covered") else "too few values")
    return ", ".join(f"{n} {kind}" for kind, n in kinds.value_counts().items())


def figures_line(card: pd.DataFrame) -> str:
    """How many of one report's published figures were reproduced, of those scored; with readings
    (columns reading, primary): under the primary reading and under some declared reading."""
    if card.empty:
        return "no published figure"
    result = card["result"].astype(str)
    reproduced = result == scorecard.REPRODUCED
    primary = card["primary"].astype(bool) if "primary" in card else pd.Series(True, index=card.index)
    scored = int((_scored(result) & primary).sum())
    unscored = result[primary & ~_scored(result)]
    if not scored:
        return f"published figures: none of {int(primary.sum())} scored ({_why(unscored)})"
    rest = f"; {len(unscored)} not scored ({_why(unscored)})" if len(unscored) else ""
    if "primary" not in card:
        return f"published figures: **{int(reproduced.sum())} of {scored}** scored reproduced" + rest
    some = card.loc[reproduced, "figure"].nunique()
    return (f"published figures reproduced under the primary reading: **{int((reproduced & primary).sum())} of "
            f"{scored}**; under some declared reading: **{some} of {scored}**" + rest)


def claims_line(claims: pd.DataFrame) -> str:
    """A report's claims by verdict, e.g. "claims: 1 supported, 2 inconclusive"."""
    if claims.empty:
        return "no claims"
    counts = claims["verdict"].value_counts()
    order = [*verdicts.VERDICTS, verdicts.NOT_JUDGED, verdicts.SMOKE]
    return "claims: " + ", ".join(f"{counts[v]} {v}" for v in order if counts.get(v, 0))


def findings(card: pd.DataFrame, claims: pd.DataFrame, numbered: dict[str, str] | None = None) -> list[str]:
    """One markdown line per seed report: its figures reproduced out of scored, its claims' verdicts; a
    report that did not run refers to its note."""
    reports = sorted(set(card.get("report", [])) | set(claims.get("report", [])))
    lines = []
    for report in reports:
        line = (f"**{report}** — {figures_line(card[card['report'] == report])} · "
                f"{claims_line(claims[claims['report'] == report])}")
        for message, note in (numbered or {}).items():
            if claims.loc[claims["report"] == report, "note"].astype(str).str.contains(message, regex=False).any():
                line += f" ({note})"
        lines.append(line)
    return lines
