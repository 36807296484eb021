"""Statistics over seeds: means with 95 % confidence intervals, and tests between configurations."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.05


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t confidence interval of the mean; (nan, nan) with fewer than two values."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    mean, sem = values.mean(), values.std(ddof=1) / math.sqrt(len(values))
    half = sps.t.ppf(0.5 + confidence / 2, len(values) - 1) * sem
    return mean - half, mean + half


def summarize(df: pd.DataFrame, by, value: str, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per group of `by`: n, mean, ci_low, ci_high and a readable 'mean ± half-width' column."""
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        lo, hi = t_interval(group[value], confidence)
        mean = group[value].mean()
        rows.append({**dict(zip(by, key)), "n": int(group[value].notna().sum()), "mean": mean,
                     "ci_low": lo, "ci_high": hi, value: format_ci(mean, lo, hi)})
    return pd.DataFrame(rows)


def format_ci(mean: float, lo: float, hi: float, digits: int = 4) -> str:
    if math.isnan(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def compare_to_best(df: pd.DataFrame, group: str, value: str, higher_is_better: bool = True) -> pd.DataFrame:
    """Each group against the best one (by mean): Welch t-test p-values, Holm-corrected.

    Columns: group, mean, diff_vs_best, p_value, p_holm, tied_with_best (p_holm >= ALPHA).
    """
    means = df.groupby(group)[value].mean().sort_values(ascending=not higher_is_better)
    best = means.index[0]
    best_values = df.loc[df[group] == best, value].dropna()
    rows = []
    for name, mean in means.items():
        values = df.loc[df[group] == name, value].dropna()
        if name == best or len(values) < 2 or len(best_values) < 2:
            p = math.nan        # the best is not compared with itself, nor counted in the correction
        else:
            p = sps.ttest_ind(values, best_values, equal_var=False).pvalue
            p = 1.0 if math.isnan(p) else p     # identical constant samples: no evidence of a difference
        rows.append({group: name, "mean": mean, "diff_vs_best": mean - means[best], "p_value": p})
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_value"].to_numpy())
    table["tied_with_best"] = (table["p_holm"] >= ALPHA) | (table[group] == best)
    return table


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.where(~np.isnan(p))[0]
    order = idx[np.argsort(p[idx])]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def anova(df: pd.DataFrame, group: str, value: str) -> float:
    """One-way ANOVA p-value that all groups share one mean (NaN when a group has < 2 values)."""
    samples = [g[value].dropna().to_numpy() for _, g in df.groupby(group)]
    if len(samples) < 2 or any(len(s) < 2 for s in samples):
        return math.nan
    if np.ptp(np.concatenate(samples)) == 0:    # every value equal: no evidence of a difference
        return 1.0
    return float(sps.f_oneway(*samples).pvalue)


def welch(a, b) -> float:
    """Two-sided Welch t-test p-value between two samples (NaN if either has < 2 values)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    p = sps.ttest_ind(a, b, equal_var=False).pvalue
    return 1.0 if math.isnan(p) else float(p)


def spearman(x, y) -> tuple[float, float]:
    """Spearman rank correlation and its p-value."""
    result = sps.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


# ---------------------------------------------------------------- estimates, one-sided tests, TOST, power
@dataclass(frozen=True)
class Estimate:
    """An effect with its standard error: a difference of two means over seeds (Welch) or the mean of
    paired per-round values (e.g. log time ratios measured in turns).

    sd is the spread of one unit (a seed, a round), so the standard error for another number of units
    can be predicted (units_needed). A paired difference over seeds (paired_difference) also carries
    the pairing's correlation r and its gain: Welch's variance of the difference over the paired one,
    i.e. how many times fewer seeds the paired test needs for the same precision."""
    value: float
    se: float
    df: float
    n: int                  # units per group (seeds per variant, or rounds)
    sd: float
    paired: bool            # one sample of paired values (rounds, paired seeds); else two independent groups
    r: float = math.nan     # paired seeds: correlation of the two sides over seeds
    gain: float = math.nan  # paired seeds: var(Welch difference) / var(paired difference)

    def pairing(self) -> str:
        """e.g. "r = 0.60, 2.4x fewer seeds" for a paired difference over seeds; "" otherwise."""
        if math.isnan(self.gain):
            return ""
        r = "r = n/a" if math.isnan(self.r) else f"r = {self.r:.2f}"
        if math.isinf(self.gain):
            return f"{r}, no spread in the differences"
        if self.gain >= 1:
            return f"{r}, {self.gain:.1f}x fewer seeds"
        return f"{r}, {1 / self.gain:.1f}x more seeds"

    def ci(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        if self.n < 2 or math.isnan(self.se):
            return math.nan, math.nan
        half = _t_quantile(0.5 + confidence / 2, self.df) * self.se
        return self.value - half, self.value + half

    def p_above(self, threshold: float) -> float:
        """One-sided p-value for "the effect is greater than threshold"."""
        return self._p((self.value - threshold))

    def p_below(self, threshold: float) -> float:
        """One-sided p-value for "the effect is less than threshold"."""
        return self._p((threshold - self.value))

    def _p(self, margin: float) -> float:
        if self.n < 2 or math.isnan(self.se):
            return math.nan
        if self.se == 0:        # no spread at all: the sign of the margin decides
            return 0.0 if margin > 0 else 1.0
        return float(sps.t.sf(margin / self.se, self.df))

    def units_needed(self, gap: float, alpha: float, power: float = 0.8, cap: int = 200) -> int | None:
        """Units (seeds per group, or rounds) with which a one-sided test at `alpha` would reach `power`
        for a true effect `gap` away from the threshold, at this spread; None beyond cap."""
        if gap <= 0 or not math.isfinite(self.sd):
            return None
        if self.sd == 0:
            return max(self.n, 2)
        for n in range(2, cap + 1):
            se = self.sd * math.sqrt((1 if self.paired else 2) / n)
            df = n - 1 if self.paired else 2 * n - 2
            if (sps.t.ppf(1 - alpha, df) + sps.t.ppf(power, df)) * se <= gap:
                return n
        return None


def _t_quantile(q: float, df: float) -> float:
    return float(sps.t.ppf(q, df)) if math.isfinite(df) else float(sps.norm.ppf(q))


def _clean(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[~np.isnan(values)]


def difference(a, b) -> Estimate:
    """mean(a) - mean(b) over independent samples, Welch's standard error and Satterthwaite's df."""
    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    if min(na, nb) < 2:
        mean = (a.mean() if na else math.nan) - (b.mean() if nb else math.nan)
        return Estimate(float(mean), math.nan, math.nan, min(na, nb), math.nan, paired=False)
    va, vb = a.var(ddof=1), b.var(ddof=1)
    se = math.sqrt(va / na + vb / nb)
    if se == 0:
        df = na + nb - 2
    else:
        df = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    sd = math.sqrt((va * (na - 1) + vb * (nb - 1)) / (na + nb - 2))
    return Estimate(float(a.mean() - b.mean()), se, df, min(na, nb), sd, paired=False)


def mean_estimate(values) -> Estimate:
    """The mean of one sample of paired values (e.g. per-round log ratios), with its t standard error."""
    values = _clean(values)
    n = len(values)
    if n < 2:
        return Estimate(float(values.mean()) if n else math.nan, math.nan, math.nan, n, math.nan, paired=True)
    sd = float(values.std(ddof=1))
    return Estimate(float(values.mean()), sd / math.sqrt(n), n - 1, n, sd, paired=True)


def paired_difference(a, b) -> Estimate:
    """mean(a - b) over paired units: a[i] and b[i] come from the same seed (the same data order, split,
    initialization and dropout stream where the two share layers). A paired t: its standard error is the
    differences' own, with n - 1 degrees of freedom; units missing on either side are dropped. r is the
    correlation of a and b (n >= 3), gain = (var a + var b) / var(a - b), the variance Welch's test
    would see over the one this test sees (NaN with fewer than two pairs)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have one value per unit on each side; got {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    estimate = mean_estimate(a - b)
    if len(a) < 2:
        return estimate
    var_d = float((a - b).var(ddof=1))
    spread = float(a.var(ddof=1) + b.var(ddof=1))
    gain = spread / var_d if var_d > 0 else (math.inf if spread > 0 else 1.0)
    r = float(np.corrcoef(a, b)[0, 1]) if len(a) >= 3 and a.std() > 0 and b.std() > 0 else math.nan
    return replace(estimate, r=r, gain=gain)


def tost(estimate: Estimate, margin: float) -> float:
    """Two one-sided tests: p-value for "the effect lies within (-margin, +margin)"."""
    return max(estimate.p_above(-margin), estimate.p_below(margin))


def outside_margin(estimate: Estimate, margin: float) -> float:
    """p-value for "the effect lies outside [-margin, +margin]" (the smaller one-sided p, doubled)."""
    return min(1.0, 2 * min(estimate.p_above(margin), estimate.p_below(-margin)))


def prediction_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, sd, low, high): where one new value from the same distribution falls with `confidence`,
    mean +- t(n-1) * sd * sqrt(1 + 1/n). NaN bounds with fewer than two values."""
    values = _clean(values)
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(values.std(ddof=1))
    half = prediction_factor(n, confidence) * sd
    return mean, sd, mean - half, mean + half


def prediction_factor(n: int, confidence: float = CONFIDENCE) -> float:
    """A prediction interval's half-width in standard deviations, t(n-1) * sqrt(1 + 1/n); NaN below n = 2."""
    return float(sps.t.ppf(0.5 + confidence / 2, n - 1) * math.sqrt(1 + 1 / n)) if n >= 2 else math.nan


def paired_log_ratios(table: pd.DataFrame, by: str, value: str, reference, pair_on: str = "round") -> pd.DataFrame:
    """log(value / reference's value) for every other level of `by`, paired on `pair_on` (e.g. the timing
    round both were measured in). Columns: by, pair_on, log_ratio."""
    wide = table.pivot_table(index=pair_on, columns=by, values=value, aggfunc="mean")
    if reference not in wide:
        return pd.DataFrame(columns=[by, pair_on, "log_ratio"])
    logs = np.log(wide.div(wide[reference], axis=0)).drop(columns=reference)
    return logs.reset_index().melt(id_vars=pair_on, var_name=by, value_name="log_ratio").dropna()
