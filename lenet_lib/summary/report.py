"""What the summary notebook computes: every run of one report read back, grouped and tabled.

It reads files only (outputs/index.json, each run's results and manifest); it never trains.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lenet_lib.analysis.tidy import final_epoch, seconds_per_epoch
from lenet_lib.analysis.results import IDENTITY, MEASURES, read_manifest, read_runs, read_tables
from lenet_lib.analysis.stats import summarize
from lenet_lib.analysis.tidy import TABLES, Tables

# Columns that never name a configuration: identity, measures, timing, bookkeeping.
NOT_CONFIG = set(IDENTITY) | set(MEASURES) | {"status", "train_seconds", "model_id", "fc_activation",
                                              "device", "run_dir", "in_channels", "num_classes", "protocol",
                                              "reading", "profile"}


def load_index(index_path: str | Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(the index, tidy results of its finished runs, one row per planned run with status and error)."""
    index = json.loads(Path(index_path).read_text())
    planned = index.get("runs", [])
    results, runs = read_runs([entry["run_dir"] for entry in planned])
    by_dir = {entry["run_dir"]: entry for entry in planned}
    # The index knows about runs lost before they wrote a manifest (e.g. a killed worker): keep its word.
    runs["status"] = [row.status if row.status != "missing" else by_dir[row.run_dir].get("status", "missing")
                      for row in runs.itertuples()]
    for column in ("error", "preset", "reading", "protocol"):     # a run without a manifest (lost, skipped)
        runs[column] = [value if isinstance(value, str) else by_dir[run_dir].get(column)    # has them in the index
                        for value, run_dir in zip(runs[column], runs["run_dir"])]
    return index, results, runs


def load_tables(results: pd.DataFrame, runs: pd.DataFrame) -> Tables:
    """The tidy results and every finished run's tables beside them (timing, forward_times, layers)."""
    run_dirs = list(runs["run_dir"]) if len(runs) else []
    return Tables(results, *(read_tables(run_dirs, name) for name in TABLES))


def skipped_presets(index: dict) -> dict[str, str]:
    """{preset: why} for presets with a run that could not run here (e.g. its dataset is missing)."""
    found = {}
    for entry in index.get("runs", []):
        if entry.get("status") == "skipped" and entry.get("preset"):
            found.setdefault(entry["preset"], entry.get("error") or "skipped")
    return found


def provenance(runs: pd.DataFrame) -> dict:
    """Provenance of the first finished run (all runs of a report come from one machine and commit)."""
    for run_dir in runs.loc[runs["status"].isin(["ok", "diverged"]), "run_dir"]:
        manifest = read_manifest(run_dir)
        if manifest:
            return manifest.get("provenance", {})
    return {}


def varying_columns(df: pd.DataFrame) -> list[str]:
    """Configuration columns whose value differs between models of df (in column order)."""
    return [c for c in df.columns
            if c not in NOT_CONFIG and not c.startswith("_") and df[c].astype(str).nunique() > 1]


# Columns that name an experiment's factors, tried first when a label is built.
PRIMARY = ("framework", "arch", "optimizer", "batch_size", "bn", "dropout", "conv_dropout", "protocol",
           "activation", "pool", "lr")


def label_columns(df: pd.DataFrame, exclude=("dataset",)) -> list[str]:
    """The fewest varying columns that tell df's configurations apart, primary factors first.

    A column is kept only when it splits configurations the kept ones do not (e.g. optimizers's lr is
    dropped: each optimizer has one chosen rate)."""
    candidates = [c for c in varying_columns(df) if c not in exclude]
    candidates.sort(key=lambda c: (PRIMARY.index(c) if c in PRIMARY else len(PRIMARY), -df[c].nunique()))
    full = len(df[candidates].astype(str).drop_duplicates()) if candidates else 1
    kept: list[str] = []
    for column in candidates:
        before = len(df[kept].astype(str).drop_duplicates()) if kept else 1
        if len(df[kept + [column]].astype(str).drop_duplicates()) > before:
            kept.append(column)
        if before == full:
            break
    return kept


def with_config(df: pd.DataFrame, exclude=("dataset",)) -> tuple[pd.DataFrame, list[str]]:
    """df with a 'config' label column, e.g. "bn=True, dropout=0.5", from label_columns."""
    columns = label_columns(df, exclude)
    if not columns:
        return df.assign(config="all models"), columns
    label = df[columns].astype(str).apply(lambda r: ", ".join(f"{c}={v}" for c, v in r.items()), axis=1)
    return df.assign(config=label), columns


def notebook_sections(results: pd.DataFrame):
    """(notebook, protocol, dataset, rows with a config column) for each notebook x preset x dataset with
    results; protocol is the preset's name, or "" for a notebook's own (exploratory) runs.

    Notebooks that record a 'stage' column (e.g. optimizers: tune, compare) are shown at their last
    stage, the one their conclusions come from."""
    if results.empty or "notebook" not in results:
        return
    results = results.assign(protocol=results["protocol"].fillna("") if "protocol" in results else "",
                             dataset=results["dataset"] if "dataset" in results else "")
    for (notebook, protocol, dataset), rows in results.groupby(["notebook", "protocol", "dataset"], sort=True,
                                                                dropna=False):
        rows = rows.dropna(axis=1, how="all")
        if "stage" in rows:
            rows = rows[rows["stage"] == rows["stage"].dropna().iloc[-1]]
        labelled, _ = with_config(rows)
        yield notebook, protocol, dataset, labelled


def overview(rows: pd.DataFrame) -> pd.DataFrame:
    """Per config: models, final test and validation accuracy (mean ± 95 % CI), seconds per epoch.
    A protocol without a validation split (most presets: the reports held out only the test set) has no
    val_acc column here."""
    final = final_epoch(rows)
    seconds = seconds_per_epoch(rows, "config", "epoch_seconds")
    diverged = final.groupby("config")["status"].apply(lambda s: int((s == "diverged").sum()))
    table = summarize(final, "config", "test_acc")[["config", "n", "mean", "test_acc"]]
    if "val_acc" in final:
        table = table.merge(summarize(final, "config", "val_acc")[["config", "val_acc"]], on="config")
    table = table.merge(summarize(seconds, "config", "epoch_seconds")[["config", "epoch_seconds"]], on="config")
    table["diverged"] = table["config"].map(diverged).fillna(0).astype(int)
    return table.sort_values("mean", ascending=False).drop(columns="mean").reset_index(drop=True)


def problems(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that did not finish cleanly: failed, missing or diverged, with their error."""
    bad = runs[runs["status"] != "ok"]
    return bad[["notebook", "preset", "run_id", "status", "error"]].reset_index(drop=True)
