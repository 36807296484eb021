"""Statistics over seeds: means with 95 % confidence intervals, and tests between configurations."""
from __future__ import annotations

import math

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
