"""Helpers on tidy frames (one row per model x epoch): final epochs, variant names, a protocol's rows.

pandas only, no torch: the summary and the verdicts read results back without loading a training stack.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lenet_lib.analysis.results import IDENTITY, MEASURES

VARIANT_ORDER = ["plain", "BN", "dropout", "BN+dropout"]
TABLES = ("timing", "forward_times", "layers", "step_times", "epoch_timing")   # tables runs write beside results.parquet


def no_history() -> pd.DataFrame:
    """The tidy results of a run that trained no model (a timing-only run, `train = False`): no rows."""
    types = {"notebook": str, "run_id": str, "model_id": str, "seed": "int64", "epoch": "int64", "status": str}
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, float)) for c in (*IDENTITY, *MEASURES, "status")})


@dataclass
class Tables:
    """What the verdicts and the scorecard read: the tidy results and the tables beside them."""
    results: pd.DataFrame
    timing: pd.DataFrame = field(default_factory=pd.DataFrame)          # timing.time_variants, per round
    forward_times: pd.DataFrame = field(default_factory=pd.DataFrame)   # numpy_vs_torch, per layer x repeat
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)          # models.layer_table of a run
    step_times: pd.DataFrame = field(default_factory=pd.DataFrame)      # numpy_vs_torch, per batch size x round
    epoch_timing: pd.DataFrame = field(default_factory=pd.DataFrame)    # timing.time_epochs, per round


def final_epoch(history: pd.DataFrame) -> pd.DataFrame:
    """The last recorded epoch of every model (a diverged model's last row)."""
    if history.empty:
        return history
    keys = [c for c in ("run_id", "model_id") if c in history.columns]
    return history.sort_values("epoch").groupby(keys, as_index=False).tail(1).reset_index(drop=True)


def at_epoch(history: pd.DataFrame, epoch) -> pd.DataFrame:
    """Rows of one epoch: an epoch number, or "final" for each model's last epoch."""
    return final_epoch(history) if epoch == "final" else history[history["epoch"] == epoch]


def seconds_per_epoch(history: pd.DataFrame, by, value: str = "train_seconds") -> pd.DataFrame:
    """Mean of `value` over each model's epochs, with the `by` column(s): one value per model, so seeds
    are the sample for a confidence interval."""
    by = [by] if isinstance(by, str) else list(by)
    keys = [c for c in ("run_id", "model_id") if c in history.columns] + by
    return history.groupby(keys, as_index=False)[value].mean()


def variant_name(bn: bool, dropout: float, conv_dropout: float = 0.0) -> str:
    """The four BN x dropout variants of R1, R3 and R4: plain, BN, dropout, BN+dropout (dropout in the
    FC part, or after a conv layer as in R3)."""
    dropped = dropout > 0 or conv_dropout > 0
    return {(False, False): "plain", (True, False): "BN", (False, True): "dropout",
            (True, True): "BN+dropout"}[(bool(bn), dropped)]


def add_variant(history: pd.DataFrame) -> pd.DataFrame:
    """A 'variant' column from the bn, dropout (and conv_dropout, when present) columns."""
    if history.empty:
        return history.assign(variant=pd.Series(dtype=str))
    conv = history["conv_dropout"] if "conv_dropout" in history else [0.0] * len(history)
    return history.assign(variant=[variant_name(b, p, c) for b, p, c in zip(history["bn"], history["dropout"], conv)])


def best_by_validation(history: pd.DataFrame, group: str, choice: str, metric: str = "val_acc") -> pd.Series:
    """For each value of `group`, the `choice` (e.g. lr) whose final-epoch `metric`, averaged over seeds,
    is highest. Only the validation split decides; diverged models count as failures (metric NaN -> -inf)."""
    final = final_epoch(history)
    score = final.assign(_score=final[metric].where(final["status"] == "ok").fillna(-float("inf")))
    means = score.groupby([group, choice])["_score"].mean().reset_index()
    return means.loc[means.groupby(group)["_score"].idxmax()].set_index(group)[choice]


def protocol_rows(results: pd.DataFrame, notebook: str, protocol: str | None, dataset: str | None = "mnist"):
    """Rows of one notebook run under `protocol` (None: any), of one dataset, with a variant column.

    Diverged models keep their rows: a model that diverged under a protocol is one of its results."""
    if results.empty or "notebook" not in results:
        return pd.DataFrame(columns=["notebook", "variant", "epoch", "test_acc"])
    keep = results["notebook"] == notebook
    if protocol is not None:
        keep &= results["protocol"] == protocol if "protocol" in results else False
    if dataset is not None and "dataset" in results:
        keep &= results["dataset"] == dataset
    rows = results[keep]
    return add_variant(rows) if {"bn", "dropout"} <= set(rows.columns) else rows


def matches(df: pd.DataFrame, where: dict) -> pd.Series:
    """Rows whose columns equal `where`'s values (numbers compared within float rounding)."""
    keep = pd.Series(True, index=df.index)
    for column, value in (where or {}).items():
        if column not in df:
            return pd.Series(False, index=df.index)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            keep &= np.isclose(pd.to_numeric(df[column], errors="coerce"), value)
        else:
            keep &= df[column] == value
    return keep


def table_of(table: pd.DataFrame, notebook: str, protocol: str | None) -> pd.DataFrame:
    """A run table's rows of one notebook under `protocol` (None: any), with a variant column if it can."""
    if table.empty or "notebook" not in table:
        return pd.DataFrame()
    keep = table["notebook"] == notebook
    if protocol is not None:
        keep &= table["protocol"] == protocol
    rows = table[keep]
    return add_variant(rows) if {"bn", "dropout"} <= set(rows.columns) else rows
