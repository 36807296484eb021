"""Group-sequential decisions: seeds added in stages, a claim judged after each, its error rates kept.

Judging a claim after 3 seeds, again after 6, 12 and 24, each time at p < 0.05, gives a false claim up to
four chances: its error rate grows well past 5 % (tests/test_sequential.py measures it). A group-sequential
design spends the 5 % over the looks instead: Lan-DeMets alpha spending (Lan & DeMets 1983), with
t = n / n_max the information fraction and one of two named spending functions (SPENDING):

    pocock:  alpha(t) = alpha ln(1 + (e - 1) t)          (Pocock-like)
    obf:     alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t))   (O'Brien-Fleming-like)

O'Brien-Fleming-like spends almost nothing at the early looks (3e-8 at 3 of 24 seeds) and nearly all of alpha
at the last, so a study that runs to the cap loses little power against a single test there; Pocock-like
spends alpha more evenly (0.0097 at 3 of 24), so a clear effect stops at the early looks a time budget
reaches, at some power lost at the cap. Each one-sided test gets its own boundary,
non-binding: stopping at the other boundary only removes chances to err. A claim's test statistic is a
t statistic over a few seeds, so each look's z boundary is turned into the one-sided p-value it stands for
(the nominal level) and that level is applied to the t test's p-value (the significance-level approach,
Jennison & Turnbull 2000, section 3.8).

Verdicts at a look, for one part of a claim (p-values from analysis/stats.py):
- "greater" / "less": supported if the claim's one-sided p is below the look's level at alpha, contradicted
  if the opposite one-sided p is.
- "within" (equivalence): supported if the TOST p (the larger of the two one-sided p-values) is below the
  level at alpha; contradicted if the smaller one-sided p of "outside the margin" is below the level at
  alpha / 2 (one boundary per side).
- several parts: Holm's step-down with each step's level recomputed at alpha / (m - j) (a graphical
  sequentially rejective test, Maurer & Bretz 2013).
look_outcomes applies these to a claim's parts as decision.decide does at a fixed n; with one look (the
cap) it gives decide's outcomes exactly. Pure functions of numbers: no torch, no data.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize
from scipy import stats as sps

from lenet_lib.analysis.stats import ALPHA

PLANNED_LOOKS = (3, 6, 12, 24)      # seeds per variant at each look; the last is the cap
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
GRID = 1201                         # points of the numerical integration per look


def obf_spending(t, alpha: float = ALPHA):
    """alpha spent by information fraction t (0 < t <= 1): 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))."""
    t = _fraction(t)
    return 2.0 * sps.norm.sf(sps.norm.isf(alpha / 2) / np.sqrt(t))


def pocock_spending(t, alpha: float = ALPHA):
    """alpha spent by information fraction t (0 < t <= 1): alpha ln(1 + (e - 1) t)."""
    t = _fraction(t)
    return alpha * np.log1p((math.e - 1.0) * t)


def _fraction(t) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    if np.any((t <= 0) | (t > 1)):
        raise ValueError(f"information fraction t={t} is not valid; expected 0 < t <= 1")
    return t


SPENDING = {"obf": obf_spending, "pocock": pocock_spending}
SPENDING_NAMES = {"obf": "O'Brien-Fleming-like", "pocock": "Pocock-like"}
DEFAULT_SPENDING = "obf"


def check_spending(spending: str) -> str:
    if spending not in SPENDING:
        raise ValueError(f"spending={spending!r} is not valid; expected one of {', '.join(SPENDING)}")
    return spending


def planned_looks(first: int = PLANNED_LOOKS[0], cap: int = PLANNED_LOOKS[-1]) -> tuple[int, ...]:
    """Seed counts doubling from `first` up to `cap`, the cap always the last look: (3, 6, 12, 24)."""
    if not 2 <= first <= cap:
        raise ValueError(f"first={first}, cap={cap} are not valid; expected 2 <= first <= cap")
    looks = [first]
    while looks[-1] * 2 < cap:
        looks.append(looks[-1] * 2)
    return check_looks(looks + [cap] if looks[-1] < cap else looks)


def check_looks(looks) -> tuple[int, ...]:
    """Looks as seed counts: at least 2 each (a t test needs two), strictly increasing."""
    looks = tuple(int(n) for n in looks)
    if not looks or looks[0] < 2 or any(b <= a for a, b in zip(looks, looks[1:])):
        raise ValueError(f"looks={looks} is not valid; expected increasing seed counts, each >= 2, "
                         f"e.g. {PLANNED_LOOKS}")
    return looks


def check_alpha(alpha: float) -> float:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha={alpha} is not valid; expected 0 < alpha < 0.5")
    return float(alpha)


@functools.lru_cache(maxsize=256)
def _boundaries(looks: tuple[int, ...], alpha: float, spending: str) -> tuple[float, ...]:
    t = np.array(looks, dtype=float) / looks[-1]
    spent = SPENDING[spending](t, alpha)
    bounds = [float(sps.norm.isf(spent[0]))]
    # density of Z_1 on its continuation region (z < b_1), on a grid; Z_k's increments are independent
    z = np.linspace(-10.0, bounds[0], GRID)
    density = sps.norm.pdf(z)
    for k in range(1, len(looks)):
        step = t[k] - t[k - 1]
        weights = _trapezoid_weights(z) * density
        scale = math.sqrt(step / t[k])

        def crossing(b):      # P(continued to look k and Z_k >= b)
            return float(weights @ sps.norm.sf((b - z * math.sqrt(t[k - 1] / t[k])) / scale))

        target = spent[k] - spent[k - 1]
        b = optimize.brentq(lambda b: crossing(b) - target, -10.0, 40.0, xtol=1e-10) if target > 0 else math.inf
        bounds.append(float(b))
        y = np.linspace(-10.0, min(b, 12.0), GRID)
        kernel = sps.norm.pdf((y[:, None] - z[None, :] * math.sqrt(t[k - 1] / t[k])) / scale) / scale
        z, density = y, kernel @ weights
    return tuple(bounds)


def _trapezoid_weights(z: np.ndarray) -> np.ndarray:
    h = np.diff(z)
    w = np.zeros_like(z)
    w[:-1] += h / 2
    w[1:] += h / 2
    return w


def boundaries(looks=PLANNED_LOOKS, alpha: float = ALPHA, spending: str = DEFAULT_SPENDING) -> np.ndarray:
    """One-sided z boundaries, one per look, whose crossing probabilities under the null add up to
    the spending function at each look's information fraction n / n_max. A look's boundary depends only on the
    looks up to it, so a study cut short (a time budget) keeps its error rate; if a stage ends with other
    seed counts than planned, pass the counts it had, with the planned cap last."""
    return np.array(_boundaries(check_looks(looks), check_alpha(alpha), check_spending(spending)))


def nominal_levels(looks=PLANNED_LOOKS, alpha: float = ALPHA, spending: str = DEFAULT_SPENDING) -> np.ndarray:
    """The one-sided p-value each look's test must fall below: 1 - Phi(boundary)."""
    return np.array(_levels(check_looks(looks), check_alpha(alpha), check_spending(spending)))


@functools.lru_cache(maxsize=256)
def _levels(looks: tuple[int, ...], alpha: float, spending: str) -> tuple[float, ...]:
    return tuple(float(x) for x in sps.norm.sf(_boundaries(looks, alpha, spending)))


def level_at(n: int, looks=PLANNED_LOOKS, alpha: float = ALPHA, spending: str = DEFAULT_SPENDING) -> float:
    """The nominal level at the look with n seeds (n must be one of the looks)."""
    looks = check_looks(looks)
    if n not in looks:
        raise ValueError(f"n={n} is not one of the looks {looks}")
    return _levels(looks, check_alpha(alpha), check_spending(spending))[looks.index(n)]


def one_sided_outcome(p_claim, p_against, level_claim: float, level_against: float):
    """"supported", "contradicted" or "inconclusive" at one look (NaN p-values decide nothing); arrays of
    p-values give an array of outcomes (one per simulated study, say)."""
    outcome = np.where(np.less(p_claim, level_claim), SUPPORTED,
                       np.where(np.less(p_against, level_against), CONTRADICTED, INCONCLUSIVE))
    return str(outcome) if outcome.ndim == 0 else outcome


def greater_outcome(p_claim, p_against, n: int, looks=PLANNED_LOOKS, alpha: float = ALPHA,
                    spending: str = DEFAULT_SPENDING):
    """A "greater" or "less" part at the look with n seeds: each one-sided test against its boundary."""
    level = level_at(n, looks, alpha, spending)
    return one_sided_outcome(p_claim, p_against, level, level)


def equivalence_outcome(p_tost, p_outside, n: int, looks=PLANNED_LOOKS, alpha: float = ALPHA,
                        spending: str = DEFAULT_SPENDING):
    """A "within" part: TOST p (max of the two one-sided p) against the level at alpha; p_outside (the
    smaller one-sided p of "outside the margin", not doubled) against the level at alpha / 2."""
    return one_sided_outcome(p_tost, p_outside, level_at(n, looks, alpha, spending),
                             level_at(n, looks, alpha / 2, spending))


def holm_reject(p_values, n, looks=PLANNED_LOOKS, alpha: float = ALPHA, rejected=(),
                spending: str = DEFAULT_SPENDING) -> np.ndarray:
    """Holm's step-down at the look with n seeds: the j-th smallest open p-value against the level at
    alpha / (open hypotheses - j). `rejected`: indices rejected at earlier looks (they stay rejected, and
    their share of alpha passes to the others). NaN p-values are never rejected. n may give each hypothesis
    its own look (per_part): each is then tested at its own look's level, as the graphical approach allows."""
    p = np.asarray(p_values, dtype=float)
    ns = per_part(n, len(p))
    out = np.zeros(len(p), dtype=bool)
    out[list(rejected)] = True
    open_ = [i for i in np.argsort(p) if not out[i] and not math.isnan(p[i])]
    m = len(p) - int(out.sum())
    for j, i in enumerate(open_):
        if p[i] < level_at(ns[i], looks, alpha / (m - j), spending):
            out[i] = True
        else:
            break
    return out


def per_part(n, parts: int) -> list[int]:
    """n as one look per part: a seed count shared by all, or a list with one count per part (a claim whose
    time parts have had more timing looks than its seed parts have had seed looks)."""
    ns = [n] * parts if isinstance(n, (int, np.integer)) else list(n)
    if len(ns) != parts:
        raise ValueError(f"n={n!r} gives {len(ns)} look(s) for {parts} part(s); expected one per part")
    return ns


def look_outcomes(kinds, p_claim, p_against, families, n, looks=PLANNED_LOOKS, alpha: float = ALPHA,
                  decided=None, spending: str = DEFAULT_SPENDING) -> list[str]:
    """The outcome of each part of one claim at the look with n seeds: decision.decide's rules with each
    look's levels in place of alpha. Per part: its kind ("greater", "less", "within"), its p-values as
    decision.Part.p_values gives them (for "within": the TOST p and outside_margin's doubled p) and its
    family ("" : on its own; a family's parts are Holm-corrected together, "within" parts' TOST each at
    the full level, as an intersection-union test). `decided`: each part's outcome at earlier looks
    (a part once decided stays so, and its share of alpha passes to its family). n: the look's seed count,
    or one per part (per_part): a part is tested at its own look, one whose data did not grow since its last
    look at the same level again (so a repeat changes its outcome only through alpha passed on in Holm)."""
    m = len(kinds)
    decided = list(decided or [INCONCLUSIVE] * m)
    if not m == len(p_claim) == len(p_against) == len(families) == len(decided):
        raise ValueError("kinds, p_claim, p_against, families and decided need one entry per part")
    out = list(decided)
    ns = per_part(n, m)
    for family in dict.fromkeys(families):
        members = [i for i in range(m) if families[i] == family]
        for group in ([members] if family else [[i] for i in members]):
            tost = [i for i in group if kinds[i] == "within"]
            for i in tost:                          # each pair's TOST at the full level
                if out[i] == INCONCLUSIVE and p_claim[i] < level_at(ns[i], looks, alpha, spending):
                    out[i] = SUPPORTED
            ordered = [i for i in group if kinds[i] != "within"]
            _step_down(out, decided, ordered, [p_claim[i] for i in ordered], SUPPORTED, ns, looks, alpha,
                       spending)
            if tost and ordered:
                raise ValueError("a family mixes 'within' parts with others; give them families of their own")
            # "outside the margin": half the doubled p is one side's, tested at alpha / 2 a side
            halved = [p_against[i] / 2 if kinds[i] == "within" else p_against[i] for i in group]
            _step_down(out, decided, group, halved, CONTRADICTED, ns, looks, alpha / 2 if tost else alpha,
                       spending)
    return out


def _step_down(out, decided, parts, p, verdict, ns, looks, alpha, spending) -> None:
    """Holm at this look over `parts` (those given `verdict` at earlier looks count as rejected); ns: each
    part of the claim's look."""
    if not parts:
        return
    earlier = [j for j, i in enumerate(parts) if decided[i] == verdict]
    for j, rejected in enumerate(holm_reject(p, [ns[i] for i in parts], looks, alpha, earlier, spending)):
        if rejected and out[parts[j]] == INCONCLUSIVE:
            out[parts[j]] = verdict
