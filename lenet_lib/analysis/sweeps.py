"""Small helpers for one-factor sweeps (batch size, learning rate, ...): tables over seeds and which value
is best (a report's claim about it is judged by verdicts.py)."""
from __future__ import annotations

import pandas as pd

from lenet_lib.analysis.stats import compare_to_best, summarize


def summary_table(frames: dict[str, pd.DataFrame], by: str) -> pd.DataFrame:
    """One row per value of `by`; one 'mean ± 95 % CI half-width' column per {column: frame} given.

    Example: summary_table({"test_acc": final, "val_acc": final, "train_seconds": per_model}, "batch_size").
    """
    table = None
    for value, frame in frames.items():
        summary = summarize(frame, by, value)
        if table is None:       # n (seeds per group) once, from the first frame
            table = summary[[by, "n", value]]
        else:
            table = table.merge(summary[[by, value]], on=by, how="outer")
    return table.set_index(by)


def best_and_tied(final: pd.DataFrame, group: str, value: str, claimed) -> dict:
    """Which value of `group` has the best mean `value`, which are statistically tied with it
    (stats.compare_to_best: Welch, Holm-corrected), and where a claimed best stands.

    Returns best, best_mean, tied (list), claimed_is_best, claimed_is_tied, table (the comparison).
    """
    table = compare_to_best(final, group, value)
    best = table[group].iloc[0]
    tied = sorted(table.loc[table["tied_with_best"], group].tolist())
    return {"best": best, "best_mean": float(table["mean"].iloc[0]), "tied": tied,
            "claimed_is_best": best == claimed, "claimed_is_tied": claimed in tied,
            "tested": bool(table["p_holm"].notna().any()), "table": table}
