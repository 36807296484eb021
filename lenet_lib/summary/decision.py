"""A claim's parts and the rule that decides its verdict from them.

A part is one test on one estimate (an accuracy difference over seeds, a time ratio over rounds) against the
claim's threshold: "greater" or "less" than it (one-sided), or "within" it (TOST). A claim is contradicted if
any part is shown false, supported if every part is shown, else inconclusive with the seeds or rounds that
would likely decide it; parts of one family are Holm-corrected together. verdicts.py states the claims.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lenet_lib.analysis.stats import (ALPHA, Estimate, difference, holm, outside_margin, paired_difference,
                                     tost)
from lenet_lib.analysis.tidy import at_epoch, matches

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"


@dataclass
class Part:
    """One test of a claim: the estimate, what the claim says about it, and how it is decided."""
    label: str
    estimate: Estimate
    kind: str               # "greater" / "less" than threshold, or "within" +-threshold (TOST)
    threshold: float
    scale: str              # "points" (an accuracy difference) or "ratio" (a log ratio)
    test: str
    family: str = ""        # parts of one family are Holm-corrected together ("" : on their own)
    alpha: float = ALPHA
    p_claim: float = math.nan
    p_against: float = math.nan
    outcome: str = INCONCLUSIVE

    def p_values(self) -> tuple[float, float]:
        e = self.estimate
        if self.kind == "greater":
            return e.p_above(self.threshold), e.p_below(self.threshold)
        if self.kind == "less":
            return e.p_below(self.threshold), e.p_above(self.threshold)
        return tost(e, self.threshold), outside_margin(e, self.threshold)

    def points_to_claim(self) -> bool:
        v = self.estimate.value
        return {"greater": v > self.threshold, "less": v < self.threshold,
                "within": abs(v) < self.threshold}[self.kind]

    def gap(self) -> float:
        v, t = self.estimate.value, self.threshold
        return abs(abs(v) - t) if self.kind == "within" else abs(v - t)

    def effect(self) -> str:
        lo, hi = self.estimate.ci()
        if self.scale == "ratio":
            value, lo, hi = (math.exp(x) if not math.isnan(x) else x for x in (self.estimate.value, lo, hi))
            return f"{self.label}: {value:.3f}x" + ("" if math.isnan(lo) else f" [{lo:.3f}, {hi:.3f}]")
        value = 100 * self.estimate.value
        ci = "" if math.isnan(lo) else f" [{100 * lo:+.2f}, {100 * hi:+.2f}]"
        return f"{self.label}: {value:+.2f} points{ci}"


@dataclass
class Judgement:
    verdict: str
    parts: list[Part] = field(default_factory=list)
    note: str = ""          # why not judged, or what else was measured
    to_decide: str = ""


def decide(parts: list[Part]) -> Judgement:
    """Each part's outcome (Holm within its family), then the claim's: contradicted if any part is,
    supported if all are, else inconclusive with the seeds or rounds that would likely decide it."""
    for part in parts:
        part.p_claim, part.p_against = part.p_values()
    for family in {p.family for p in parts}:
        members = [p for p in parts if p.family == family]
        corrected = bool(family) and len(members) > 1
        claim = holm(np.array([p.p_claim for p in members])) if corrected else [p.p_claim for p in members]
        against = holm(np.array([p.p_against for p in members])) if corrected else [p.p_against for p in members]
        for part, p_claim, p_against in zip(members, claim, against):
            if part.kind == "within":       # intersection-union: each pair's TOST at alpha
                p_claim = part.p_claim
            part.p_claim, part.p_against = float(p_claim), float(p_against)
            part.outcome = (SUPPORTED if part.p_claim < part.alpha else
                            CONTRADICTED if part.p_against < part.alpha else INCONCLUSIVE)
    outcomes = [p.outcome for p in parts]
    verdict = (CONTRADICTED if CONTRADICTED in outcomes else
               SUPPORTED if all(o == SUPPORTED for o in outcomes) else INCONCLUSIVE)
    return Judgement(verdict, parts, to_decide=_to_decide(parts) if verdict == INCONCLUSIVE else "")


def _to_decide(parts: list[Part]) -> str:
    """How many seeds (rounds, for timing parts) would likely decide the claim, from the observed spread."""
    open_parts = [p for p in parts if p.outcome == INCONCLUSIVE]
    against = [p for p in open_parts if not p.points_to_claim()]
    needed = []
    for part in against or open_parts:
        family = max(1, sum(q.family == part.family for q in parts)) if part.family else 1
        needed.append(part.estimate.units_needed(part.gap(), part.alpha / family))
    unit = "timing rounds" if all(p.scale == "ratio" for p in open_parts) else "seeds per variant"
    now = min(p.estimate.n for p in open_parts)
    known = [n for n in needed if n is not None]
    if against:     # one part shown false decides the claim: the easiest one
        if not known:
            return f"no likely number of {unit} decides it: the effect sits at the claim's threshold"
        return f"about {min(known)} {unit} (now {now}) would likely contradict it"
    if None in needed:
        return f"no likely number of {unit} decides it: the effect sits at the claim's threshold"
    return f"about {max(known)} {unit} (now {now}) would likely support it"


PAIR_ON = ("run_id", "seed")       # a pair: the same seed in the same run


def _accuracy(rows: pd.DataFrame, epoch="final", **where) -> pd.Series:
    """Test accuracy of the matching models, indexed by PAIR_ON's columns where the rows have them."""
    picked = at_epoch(rows[matches(rows, where)], epoch)
    keys = [k for k in PAIR_ON if k in picked]
    return picked.set_index(keys)["test_acc"] if keys else picked["test_acc"]


def accuracy_difference(rows, a: dict, b: dict, epoch="final") -> Estimate:
    """a − b in test accuracy: paired over seeds when both sides ran the same seeds in the same runs (each
    seed once a side), else Welch over two independent groups."""
    left, right = _accuracy(rows, epoch, **a), _accuracy(rows, epoch, **b)
    paired = ("seed" in left.index.names and len(left) >= 2 and not left.index.has_duplicates
              and not right.index.has_duplicates and set(left.index) == set(right.index))
    if paired:
        return paired_difference(left.to_numpy(), right.loc[left.index].to_numpy())
    return difference(left, right)


def seed_test(text: str, estimate: Estimate) -> str:
    """A test's description with "{t}" naming the test that ran on seeds: paired t or Welch."""
    return text.replace("{t}", "paired t" if estimate.paired else "Welch")

