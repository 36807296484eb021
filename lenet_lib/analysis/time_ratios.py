"""Time ratios between variants from the fair timing tables (core/timing.py: every variant timed alike, in
turns) and from the NumPy-vs-torch forward times; pandas only. Notebooks show them, the verdicts judge them.

Two measurements, two jobs. Training steps in turns with torch's layers ("steps", the timing table) are the
precise one: they isolate what a layer costs, so the claims about time are judged on them. Whole epochs
through the reports' DataLoader in turns ("epochs", the epoch_timing table) are of the reports' own kind
(their clocks covered data loading and, for R1, the test set: R1 l.264, R4 l.38 and l.66): the scorecard
scores the reports' published time ratios on them, with an interval for one whole run (whole_run_interval).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lenet_lib.analysis.stats import Estimate, mean_estimate, paired_log_ratios, prediction_factor
from lenet_lib.analysis.tidy import matches

JUDGING_IMPLEMENTATION = "torch"     # time claims: torch's own layers, what the reports ran
SHOWN_IMPLEMENTATION = "lenet_lib"   # shown beside them, never judged
TABLE_OF_KIND = {"epochs": "epoch_timing", "steps": "timing"}   # a time figure's `timing:` -> its Tables field
# What one whole run's time ratio varies by (sd of its log), whatever our measurement's noise: a report ran its
# variants one after another, not in turns, so its ratio carries the machine's drift between two clocks minutes
# apart, 10-15 % on this VM (the module docstring of core/timing.py), read here as a 95 % range: sd ~ 0.05.
WHOLE_RUN_LOG_SD = 0.05


def timing_log_ratios(timing: pd.DataFrame, where: dict, versus: dict,
                      implementation: str = JUDGING_IMPLEMENTATION, value: str = "seconds") -> pd.Series:
    """log(`value` of `where`'s variant / `value` of `versus`'s), one value per run and timing round.
    value: "seconds" (per training step) or "image_seconds" (per image: epochs of different batch sizes)."""
    if timing.empty:
        return pd.Series(dtype=float)
    rows = timing[timing["implementation"] == implementation] if "implementation" in timing else timing
    rows = rows.assign(_side=np.where(matches(rows, where), "a", np.where(matches(rows, versus), "b", "")),
                       _pair=rows["run_id"].astype(str) + ":" + rows["round"].astype(str))
    return paired_log_ratios(rows[rows["_side"] != ""], "_side", value, "b", pair_on="_pair")["log_ratio"]


def timing_ratio(timing: pd.DataFrame, where: dict, versus: dict,
                 implementation: str = JUDGING_IMPLEMENTATION, value: str = "seconds") -> Estimate:
    """The mean log time ratio of timing_log_ratios, paired by run and round."""
    return mean_estimate(timing_log_ratios(timing, where, versus, implementation, value))


def time_ratio_table(timing: pd.DataFrame, versus: dict, by: str = "label", value: str = "seconds") -> pd.DataFrame:
    """Each timed variant's time relative to `versus`'s, per implementation: ratio (the geometric mean over
    rounds) of `value` (per training step, or "image_seconds": per image, i.e. per epoch), its 95 % CI,
    rounds, and ms per step (with us per image where the table has them)."""
    rows = []
    for implementation in dict.fromkeys(timing["implementation"]) if len(timing) else []:
        mine = timing[timing["implementation"] == implementation]
        for label in dict.fromkeys(mine[by]):
            e = timing_ratio(mine, {by: label}, versus, implementation, value)
            lo, hi = e.ci()
            own = mine[mine[by] == label]
            rows.append({by: label, "implementation": implementation,
                         "ms_per_step": 1e3 * own["seconds"].median(),
                         **({"us_per_image": 1e6 * own["image_seconds"].median()} if "image_seconds" in own else {}),
                         "ratio": math.exp(e.value) if e.n else 1.0, "ci_low": math.exp(lo) if e.n > 1 else math.nan,
                         "ci_high": math.exp(hi) if e.n > 1 else math.nan, "rounds": e.n})
    return pd.DataFrame(rows)


def forward_log_ratios(forward_times: pd.DataFrame, batch: int = 1) -> pd.Series:
    """log(NumPy's / torch's whole forward time per image), one value per run and timed repeat."""
    if forward_times.empty:
        return pd.Series(dtype=float)
    rows = forward_times[forward_times["batch"] == batch]
    sums = rows.groupby(["run_id", "repeat"])[["numpy_s", "torch_s"]].sum()
    return np.log(sums["numpy_s"] / sums["torch_s"])


def forward_ratio(forward_times: pd.DataFrame, batch: int = 1) -> Estimate:
    return mean_estimate(forward_log_ratios(forward_times, batch))


def step_log_ratios(step_times: pd.DataFrame, batch_size: int) -> pd.Series:
    """log(NumPy's / torch's training-step time) at one batch size, one value per run and timing round."""
    if step_times.empty:
        return pd.Series(dtype=float)
    rows = step_times[step_times["batch_size"] == batch_size]
    return np.log(rows["numpy_s"] / rows["torch_s"]).reset_index(drop=True)


def step_ratio(step_times: pd.DataFrame, batch_size: int) -> Estimate:
    return mean_estimate(step_log_ratios(step_times, batch_size))


def whole_run_interval(log_ratios) -> tuple[float, float, float, float]:
    """(mean, sd, low, high): the 95 % prediction interval for one whole run's log time ratio from per-round
    whole-epoch log ratios. Its sd adds one whole run's own variation (WHOLE_RUN_LOG_SD, a property of
    running variants one after another) to our mean's uncertainty (the rounds' spread / sqrt(n)): a loaded
    day moves only the second, which more rounds shrink, so a figure's result does not flip with load."""
    values = pd.Series(log_ratios, dtype=float).dropna()
    n = len(values)
    if n < 2:
        return (float(values.mean()) if n else math.nan), math.nan, math.nan, math.nan
    mean = float(values.mean())
    sd = math.sqrt(WHOLE_RUN_LOG_SD ** 2 + float(values.var(ddof=1)) / n)
    half = prediction_factor(n) / math.sqrt(1 + 1 / n) * sd      # t(n-1) * sd
    return mean, sd, mean - half, mean + half


def too_noisy(log_ratios) -> bool:
    """Our mean's uncertainty (the rounds' spread / sqrt(n)) exceeds what one whole run varies by: on so
    loaded a machine the mean itself moves more than the figure's interval allows (measured at load 7-15 on
    this VM: sd 0.2-0.55 over 6 rounds), so a result would flip from day to day."""
    values = pd.Series(log_ratios, dtype=float).dropna()
    return len(values) > 1 and float(values.std(ddof=1)) / math.sqrt(len(values)) > WHOLE_RUN_LOG_SD


def timing_kind(figure: dict) -> str:
    """A time_ratio figure's measurement: "epochs" (the reports' kind, the default) or "steps"."""
    return figure.get("timing", "epochs")


def epoch_ratio_table(epoch_timing: pd.DataFrame, versus: dict, by: str = "label") -> pd.DataFrame:
    """Each variant's whole-epoch time (time_epochs' table) relative to `versus`'s: median seconds per timed
    epoch, the geometric-mean ratio over rounds, the rounds' spread (sd of log ratios) and the 95 %
    prediction interval for one whole run's ratio (whole_run_interval), as the scorecard scores it."""
    rows = []
    for label in dict.fromkeys(epoch_timing[by]) if len(epoch_timing) else []:
        logs = timing_log_ratios(epoch_timing, {by: label}, versus)
        mean, _, lo, hi = whole_run_interval(logs)
        rows.append({by: label, "seconds": epoch_timing.loc[epoch_timing[by] == label, "seconds"].median(),
                     "ratio": math.exp(mean) if len(logs) else 1.0,
                     "sd_log": float(logs.std(ddof=1)) if len(logs) > 1 else math.nan,
                     "run_low": math.exp(lo) if len(logs) > 1 else math.nan,
                     "run_high": math.exp(hi) if len(logs) > 1 else math.nan, "rounds": len(logs)})
    return pd.DataFrame(rows)
