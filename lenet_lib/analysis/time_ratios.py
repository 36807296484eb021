"""Time ratios between variants from the fair timing tables (core/timing.py: every variant timed alike, in
turns) and from the NumPy-vs-torch forward times; pandas only. Notebooks show them, the verdicts judge them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lenet_lib.analysis.stats import Estimate, mean_estimate, paired_log_ratios
from lenet_lib.analysis.tidy import matches

JUDGING_IMPLEMENTATION = "torch"     # time claims: torch's own layers, what the reports ran
SHOWN_IMPLEMENTATION = "lenet_lib"   # shown beside them, never judged


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

