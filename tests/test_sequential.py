"""The group-sequential design (summary/sequential.py): boundaries against published values, and by
simulation: wrong verdicts stay at 5 % over all looks, where stopping at the first p < 0.05 does not."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from lenet_lib.summary import sequential as seq

LOOKS = seq.PLANNED_LOOKS           # 3, 6, 12, 24 seeds
STUDIES = 4000
ALPHA = 0.05
MC = 3 * math.sqrt(ALPHA * (1 - ALPHA) / STUDIES)    # three Monte Carlo standard errors of a 5 % rate


def test_boundaries_match_published_obrien_fleming_spending_values():
    # Lan-DeMets O'Brien-Fleming-like spending, 4 equally spaced looks, one-sided 0.025 (Jennison & Turnbull
    # table 7.6; gsDesign's sfLDOF): 4.333, 2.963, 2.359, 2.014
    assert seq.boundaries((2, 4, 6, 8), 0.025) == pytest.approx([4.3326, 2.9631, 2.3590, 2.0141], abs=2e-3)
    assert seq.obf_spending(1.0, ALPHA) == pytest.approx(ALPHA)
    assert seq.boundaries((24,), ALPHA) == pytest.approx([sps.norm.isf(ALPHA)])      # one look: the plain test
    levels = seq.nominal_levels(LOOKS)
    assert np.all(np.diff(levels) > 0) and levels[0] < 1e-6 and 0.04 < levels[-1] < ALPHA


def test_pocock_like_boundaries_are_nearly_flat_at_pococks_constant():
    # Lan-DeMets Pocock-like spending, 4 equally spaced looks, one-sided 0.025 (gsDesign's sfLDPocock):
    # 2.368, 2.368, 2.358, 2.350, close to Pocock's constant boundary 2.361 (Jennison & Turnbull table 2.1)
    assert seq.boundaries((2, 4, 6, 8), 0.025, "pocock") == pytest.approx([2.368, 2.368, 2.358, 2.350], abs=3e-3)
    assert seq.pocock_spending(1.0, ALPHA) == pytest.approx(ALPHA)
    pocock, obf = seq.nominal_levels(LOOKS, ALPHA, "pocock"), seq.nominal_levels(LOOKS, ALPHA, "obf")
    assert pocock[0] > 1e5 * obf[0] and pocock[-1] < obf[-1]      # more at the first look, less at the cap
    with pytest.raises(ValueError, match="spending='linear' is not valid; expected one of obf, pocock"):
        seq.level_at(3, LOOKS, ALPHA, "linear")


def test_planned_looks_double_up_to_the_cap():
    assert seq.planned_looks(3, 24) == LOOKS
    assert seq.planned_looks(3, 20) == (3, 6, 12, 20) and seq.planned_looks(5, 5) == (5,)
    with pytest.raises(ValueError, match="first=1"):
        seq.planned_looks(1, 24)


@pytest.mark.parametrize("looks, message", [((3, 3), "increasing"), ((1, 4), ">= 2"), ((), "looks")])
def test_bad_looks_and_alpha_raise(looks, message):
    with pytest.raises(ValueError, match=message):
        seq.boundaries(looks)
    with pytest.raises(ValueError, match="alpha=0.7"):
        seq.boundaries(LOOKS, 0.7)
    with pytest.raises(ValueError, match="n=5 is not one of the looks"):
        seq.level_at(5, LOOKS)


def one_sided_p(d):
    """Per study: the paired t test's one-sided p-values for mean > 0 and mean < 0 over the rows' seeds."""
    n = d.shape[1]
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    return sps.t.sf(t, n - 1), sps.t.cdf(t, n - 1)


def run_studies(effect, sd=1.0, seed=0, looks=LOOKS, margin=None, spending="obf"):
    """Simulated studies of per-seed differences; at each look the sequential verdict (stopping once
    decided) and, on the same data, a naive one that stops at the first p < 0.05.
    Returns (supported, contradicted, naive_supported, look index where supported or -1)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(effect, sd, (STUDIES, looks[-1]))
    outcome = np.full(STUDIES, "inconclusive", dtype=object)
    decided_at = np.full(STUDIES, -1)
    naive = np.zeros(STUDIES, dtype=bool)
    for k, n in enumerate(looks):
        if margin is None:       # "better": supported if mean > 0
            p_claim, p_against = one_sided_p(d[:, :n])
            outcomes = seq.greater_outcome(p_claim, p_against, n, looks, ALPHA, spending)
        else:                    # "the same": TOST against +-margin
            above, _ = one_sided_p(d[:, :n] + margin)          # mean > -margin
            _, below = one_sided_p(d[:, :n] - margin)          # mean < +margin
            out_hi, _ = one_sided_p(d[:, :n] - margin)         # mean > +margin
            _, out_lo = one_sided_p(d[:, :n] + margin)         # mean < -margin
            p_claim = np.maximum(above, below)
            outcomes = seq.equivalence_outcome(p_claim, np.minimum(out_hi, out_lo), n, looks, ALPHA, spending)
        fresh = outcome == "inconclusive"
        outcome[fresh] = outcomes[fresh]
        decided_at[fresh & (outcome != "inconclusive")] = k
        naive |= p_claim < ALPHA
    return outcome == "supported", outcome == "contradicted", naive, decided_at


@pytest.mark.parametrize("spending", ["obf", "pocock"])
def test_better_claim_under_the_null_keeps_both_error_rates_and_naive_peeking_does_not(spending):
    supported, contradicted, naive, _ = run_studies(effect=0.0, spending=spending)
    assert supported.mean() <= ALPHA + MC, supported.mean()          # false "supported"
    assert contradicted.mean() <= ALPHA + MC, contradicted.mean()    # false "contradicted" (mean < 0)
    assert naive.mean() > ALPHA + MC, naive.mean()                   # four peeks at 0.05: ~14 %
    assert supported.mean() > ALPHA - MC                             # and it spends what it may


@pytest.mark.parametrize("spending", ["obf", "pocock"])
def test_equality_claim_at_the_margin_keeps_its_error_rate_and_naive_peeking_does_not(spending):
    margin = 2.0                       # in units of one seed's spread: the other side is far
    supported, _, naive, _ = run_studies(effect=margin, margin=margin, seed=1, spending=spending)
    assert supported.mean() <= ALPHA + MC, supported.mean()
    assert naive.mean() > ALPHA + MC, naive.mean()
    _, contradicted, _, _ = run_studies(effect=margin, margin=margin, seed=2, spending=spending)
    assert contradicted.mean() <= ALPHA / 2 + MC, contradicted.mean()    # "outside" spends alpha / 2 a side


def test_power_rises_with_the_stages_and_nearly_matches_one_test_at_the_cap():
    effect = 0.55                      # differences in units of one seed's spread
    supported, contradicted, _, decided_at = run_studies(effect=effect, seed=3)
    by_look = [np.mean(supported & (decided_at <= k)) for k in range(len(LOOKS))]
    assert all(b > a for a, b in zip(by_look[1:], by_look[2:])) and by_look[0] < 0.01, by_look
    n = LOOKS[-1]
    fixed = sps.nct.sf(sps.t.isf(ALPHA, n - 1), n - 1, effect * math.sqrt(n))     # one t test at 24 seeds
    assert supported.mean() == pytest.approx(fixed, abs=0.04), (supported.mean(), fixed)
    assert contradicted.mean() < 0.001
    seeds = np.where(decided_at >= 0, np.array(LOOKS)[decided_at], n).mean()
    assert seeds < 0.95 * n, seeds      # stopping early saves seeds on average


def test_pocock_like_decides_a_clear_effect_at_the_first_looks_at_some_power_lost_at_the_cap():
    effect = 1.5                       # a clear effect: 1.5 seeds' spreads
    obf, _, _, obf_at = run_studies(effect=effect, seed=5)
    pocock, contradicted, _, pocock_at = run_studies(effect=effect, seed=5, spending="pocock")
    # by the second look (6 seeds): about 0.69 against 0.03 (one seed's t at 3 seeds is weak either way)
    assert np.mean(pocock & (pocock_at <= 1)) > 0.5 > 0.1 > np.mean(obf & (obf_at <= 1))
    assert contradicted.mean() < 0.001
    seeds = {name: np.where(at >= 0, np.array(LOOKS)[at], LOOKS[-1]).mean()
             for name, at in (("obf", obf_at), ("pocock", pocock_at))}
    assert seeds["pocock"] < seeds["obf"], seeds
    small, _, _, _ = run_studies(effect=0.55, seed=3, spending="pocock")
    large, _, _, _ = run_studies(effect=0.55, seed=3)
    assert small.mean() < large.mean()        # the price: less power at the cap for a small effect


@pytest.mark.parametrize("spending", ["obf", "pocock"])
def test_holm_over_pairs_keeps_the_familywise_rate_at_each_look(spending):
    studies, m = STUDIES // 2, 3
    d = np.random.default_rng(4).normal(0.0, 1.0, (studies, m, LOOKS[-1]))     # three true nulls a study
    p = [one_sided_p(d[:, :, :n].reshape(studies * m, n))[0].reshape(studies, m) for n in LOOKS]
    any_false = 0
    for study in range(studies):
        rejected = np.zeros(m, dtype=bool)
        for k, n in enumerate(LOOKS):
            rejected = seq.holm_reject(p[k][study], n, LOOKS, ALPHA, np.flatnonzero(rejected), spending)
        any_false += rejected.any()
    naive = np.any([pk < ALPHA / m for pk in p], axis=(0, 2))         # Bonferroni at every look, no spending
    mc = 3 * math.sqrt(ALPHA * (1 - ALPHA) / studies)
    assert any_false / studies <= ALPHA + mc, any_false / studies
    assert naive.mean() > ALPHA + mc, naive.mean()


def test_holm_reject_steps_down_with_the_levels():
    last = LOOKS[-1]
    a3, a2, a1 = (seq.level_at(last, LOOKS, ALPHA / j) for j in (3, 2, 1))
    assert a3 < a2 < a1
    assert list(seq.holm_reject([0.9 * a3, 0.9 * a2, 0.9], last)) == [True, True, False]
    assert list(seq.holm_reject([1.1 * a3, 0.9 * a3, 0.9], last)) == [True, True, False]   # step 2 at a2
    assert list(seq.holm_reject([1.1 * a3, 1.1 * a3, 1.1 * a3], last)) == [False] * 3      # step 1 fails
    assert list(seq.holm_reject([0.9, math.nan], last)) == [False, False]
    # one rejected at an earlier look: the other gets all of alpha
    assert list(seq.holm_reject([0.9 * a1, 0.9], last, rejected=[1])) == [True, True]
    assert list(seq.holm_reject([0.9 * a1, 0.9], last)) == [False, False]


def test_one_look_at_the_cap_is_verdicts_fixed_design():
    """With a single look the boundaries are alpha itself: look_outcomes gives decision.decide's outcomes."""
    from lenet_lib.analysis import stats
    from lenet_lib.summary import decision
    rng, seen = np.random.default_rng(6), set()
    for trial in range(60):
        n, effects = 5, rng.normal(0, 0.003, 3)
        values = [stats.difference(rng.normal(e, 0.002, n), rng.normal(0, 0.002, n)) for e in effects]
        kind = ["greater", "less", "within"][trial % 3]
        family = "pairs" if trial % 2 else ""
        parts = [decision.Part(f"p{i}", v, kind, 0.002 if kind == "within" else 0.0, "points", "t",
                               family=family) for i, v in enumerate(values)]
        p_values = [part.p_values() for part in parts]
        expected = [part.outcome for part in decision.decide(parts).parts]
        found = seq.look_outcomes([kind] * 3, [p for p, _ in p_values], [q for _, q in p_values], [family] * 3,
                                  n, looks=(n,))
        assert found == expected, (trial, kind, family, p_values)
        seen |= {(kind, o) for o in expected}
    assert len(seen) == 9                   # every kind met every outcome


def test_early_looks_ask_for_more_than_the_fixed_design():
    outcome = seq.look_outcomes(["greater"], [0.01], [0.99], [""], 3)
    assert outcome == [seq.INCONCLUSIVE]                              # p = 0.01 at 3 of 24 seeds: not yet
    assert seq.look_outcomes(["greater"], [0.01], [0.99], [""], 24) == [seq.SUPPORTED]
    # Holm in a family: p = 0.04 passes only once its sibling was supported at an earlier look
    pair = dict(kinds=["greater"] * 2, p_claim=[0.04, 0.5], p_against=[0.9, 0.5], families=["pairs"] * 2, n=24)
    assert seq.look_outcomes(**pair) == [seq.INCONCLUSIVE] * 2
    assert seq.look_outcomes(**pair, decided=[seq.INCONCLUSIVE, seq.SUPPORTED]) == [seq.SUPPORTED] * 2
    with pytest.raises(ValueError, match="one entry per part"):
        seq.look_outcomes(["greater"], [0.01, 0.2], [0.99], [""], 3)
