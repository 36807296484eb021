"""The reproduction scorecard: each number a seed report published, against our runs under its protocol.

The figures live beside each preset in params/<notebook>.yaml (`published:`). For each one the
scorecard takes our values under the same preset, one per seed (per timing round for a time ratio),
and the 95 % prediction interval for one new run, mean +- t * sd * sqrt(1 + 1/n). A published single
run inside it is "reproduced"; outside, "not reproduced" with its distance in our standard deviations.
A smoke run (the quick profile: a few images, one epoch) scores nothing but exact figures (parameter
counts): its values are shown, marked "smoke run — not scored", since they are not the protocol's.
A figure printed rounded (e.g. "98 %") stands for the interval it rounds from. Times are compared as
ratios between a report's own variants, never as seconds: by default on the measurement of the reports'
kind (whole epochs through their DataLoader, in turns; `timing: steps` picks training steps in turns), with
an interval for one whole run (time_ratios.whole_run_interval); the note shows the other measurement.
"""
from __future__ import annotations

import math

import pandas as pd

from lenet_lib.analysis.stats import prediction_factor, prediction_interval
from lenet_lib.analysis.tidy import Tables, at_epoch, matches, protocol_rows, table_of
from lenet_lib.analysis.time_ratios import (TABLE_OF_KIND, forward_log_ratios, timing_kind, timing_log_ratios,
                                            too_noisy, whole_run_interval)

REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
SMOKE = "smoke run — not scored"
COLUMNS = ["report", "figure", "published", "ours (mean)", "95 % prediction interval", "n", "result", "note"]
NUMBERS = ["metric", "value", "value_low", "value_high", "mean", "low", "high", "half_width_sd"]


def figure_values(figure: dict, tables: Tables, notebook: str, preset: str) -> pd.Series:
    """Our values of one published figure: one per model (seed), timing round, repeat or run."""
    metric, where = figure["metric"], figure.get("where", {})
    if metric == "time_ratio":     # the figure's measurement: whole epochs (default) or training steps
        timing = getattr(tables, TABLE_OF_KIND[timing_kind(figure)])
        return timing_log_ratios(table_of(timing, notebook, preset), where, figure["versus"])
    if metric == "forward_ratio":
        return forward_log_ratios(table_of(tables.forward_times, notebook, preset))
    if metric == "parameters":
        layers = table_of(tables.layers, notebook, preset)
        if layers.empty:
            return pd.Series(dtype=float)
        picked = layers[matches(layers, where)]
        return picked.groupby(["run_id", "model"])["parameters"].sum().astype(float)
    rows = protocol_rows(tables.results, notebook, preset, dataset=None)
    if rows.empty:
        return pd.Series(dtype=float)
    rows, epoch = rows[matches(rows, where)], figure.get("epoch", "final")
    if epoch == "best":     # each model's best epoch
        return rows.groupby(["run_id", "model_id"])[metric].max().astype(float)
    return at_epoch(rows, epoch)[metric].astype(float)


def published_value(figure: dict) -> tuple[float, float, float]:
    """(value, low, high) of the figure on the scale it is compared on (log for ratios); low and high
    bound the interval a rounded figure stands for."""
    if figure["metric"] in ("time_ratio", "forward_ratio"):
        value = math.log(figure["value"] / figure["reference"])
        return value, value, value
    half = figure.get("rounded", 0) / 2
    return figure["value"], figure["value"] - half, figure["value"] + half


def score(figure: dict, values: pd.Series) -> dict:
    """mean, interval, n and the result for one figure and our values."""
    ratio = figure["metric"] in ("time_ratio", "forward_ratio")
    whole_run = figure["metric"] == "time_ratio" and timing_kind(figure) == "epochs"
    mean, sd, lo, hi = whole_run_interval(values) if whole_run else prediction_interval(values)
    value, low, high = published_value(figure)
    n = int(values.notna().sum())
    if n == 0:
        why = ("no whole-epoch timing in this preset's runs (epoch_timing_rounds: 0)" if whole_run else
               "no run of this preset has these models or epochs")
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "result": f"not covered: {why}"}
    exact = figure["metric"] == "parameters" or sd == 0
    if n < 2 and not exact:
        return {"mean": mean, "lo": lo, "hi": hi, "n": n, "result": "not scored: needs 2 or more values"}
    if whole_run and too_noisy(values):
        return {"mean": mean, "lo": lo, "hi": hi, "n": n, "result": "not scored: the whole-epoch timing is too "
                "noisy here (our mean varies more than one run does); more epoch_timing_rounds or a quieter machine"}
    if exact:       # deterministic (a parameter count): equal or not
        same = low - 1e-9 <= mean <= high + 1e-9
        return {"mean": mean, "lo": mean, "hi": mean, "n": n,
                "result": REPRODUCED if same else f"{NOT_REPRODUCED} (exactly {_fmt(figure, mean)} here)"}
    if high >= lo and low <= hi:
        return {"mean": mean, "lo": lo, "hi": hi, "n": n, "result": REPRODUCED}
    nearest = low if low > hi else high
    distance = (nearest - mean) / sd
    unit = " (log ratio)" if ratio else ""
    return {"mean": mean, "lo": lo, "hi": hi, "n": n,
            "result": f"{NOT_REPRODUCED} ({distance:+.1f} sd{unit})"}


def _fmt(figure: dict, value: float) -> str:
    if math.isnan(value):
        return "—"
    metric = figure["metric"]
    if metric in ("time_ratio", "forward_ratio"):
        return f"{math.exp(value):.3f}x"
    if metric == "parameters":
        return f"{value:,.0f}"
    return f"{value:.4f}"


def _other_timing(figure: dict, tables: Tables, notebook: str, preset: str) -> str:
    """For a time figure's note: which measurement scored it, and our ratio under the other one."""
    if figure["metric"] != "time_ratio":
        return ""
    names = {"epochs": "whole epochs in turns, the reports' DataLoader", "steps": "training steps in turns"}
    kind = timing_kind(figure)
    other = "steps" if kind == "epochs" else "epochs"
    values = figure_values({**figure, "timing": other}, tables, notebook, preset)
    shown = f"; {names[other]}: {math.exp(values.mean()):.3f}x" if values.notna().any() else ""
    return f"; scored on {names[kind]} (torch's layers){shown}"


def _published_text(figure: dict) -> str:
    if figure["metric"] in ("time_ratio", "forward_ratio"):
        return f"{figure['value'] / figure['reference']:.3f}x ({figure['value']:g} / {figure['reference']:g})"
    if figure["metric"] == "parameters":
        return f"{figure['value']:,.0f}"
    text = f"{figure['value']:.4g}"
    return text + (f" (printed rounded: ±{figure['rounded'] / 2:g})" if figure.get("rounded") else "")


def scorecard(tables: Tables, protocols: dict, skipped: dict | None = None, smoke: bool = False) -> pd.DataFrame:
    """One row per published figure of the presets in `protocols` ({preset: {notebook: {"reading",
    "published"}}}, as the runner writes them into index.json); skipped: {preset: why it did not run};
    smoke: the runs are a smoke run, so only exact figures are scored."""
    rows = []
    for preset in sorted(protocols):
        for notebook, info in protocols[preset].items():
            for figure in info.get("published", []):
                if (skipped or {}).get(preset):
                    result = {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0,
                              "result": f"not covered: {skipped[preset]}"}
                else:
                    result = score(figure, figure_values(figure, tables, notebook, preset))
                    scored = result["result"].startswith((REPRODUCED, NOT_REPRODUCED))
                    if smoke and scored and figure["metric"] != "parameters":
                        result["result"] = SMOKE
                low, high = result["lo"], result["hi"]
                if figure["metric"].endswith("_acc"):       # an accuracy cannot leave [0, 1]
                    low, high = max(low, 0.0), min(high, 1.0)
                interval = "—" if math.isnan(low) else f"[{_fmt(figure, low)}, {_fmt(figure, high)}]"
                value, low, high = published_value(figure)
                rows.append({"report": preset, "figure": figure["figure"], "published": _published_text(figure),
                             "ours (mean)": _fmt(figure, result["mean"]), "95 % prediction interval": interval,
                             "n": result["n"], "result": result["result"],
                             "note": f"{notebook}" + (f"; {figure['note']}" if figure.get("note") else "")
                                     + _other_timing(figure, tables, notebook, preset),
                             # the numbers behind the text, for plots.scorecard (log scale for ratios)
                             "metric": figure["metric"], "value": value, "value_low": low, "value_high": high,
                             "mean": result["mean"], "low": result["lo"], "high": result["hi"],
                             "half_width_sd": prediction_factor(result["n"])})
    return pd.DataFrame(rows, columns=COLUMNS + NUMBERS)


def tally(card: pd.DataFrame) -> dict:
    """How many figures were reproduced, not reproduced, and not scored."""
    result = card["result"].astype(str)
    return {REPRODUCED: int((result == REPRODUCED).sum()),
            NOT_REPRODUCED: int(result.str.startswith(NOT_REPRODUCED).sum()),
            "not scored": int((~result.str.startswith((REPRODUCED, NOT_REPRODUCED))).sum())}



def readings(protocols: dict) -> list[str]:
    """"R1 (bn_dropout_grid): <how the preset reads what the report left open>" for each preset."""
    return [f"{preset} ({notebook}): {info['reading']}" for preset in sorted(protocols)
            for notebook, info in protocols[preset].items() if info.get("reading")]
