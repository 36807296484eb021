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

A preset may declare several readings of its report (params/, `readings:`), one of them primary before any
run. Each figure is scored under every reading, primary first (columns `reading`, `primary`), and the tally
counts both "reproduced under the primary reading" and "reproduced under some declared reading", never
only the best: a reading chosen after seeing which one matches is no evidence by itself.
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
UNDER_PRIMARY, UNDER_SOME = "reproduced under the primary reading", "reproduced under some declared reading"
UNDER_NONE = "not reproduced under any reading"
INTERVAL_NOTE = ("The intervals hold our seed-to-seed variance only; a single run on other hardware and "
                 "libraries varies more.")
COLUMNS = ["report", "figure", "reading", "primary", "published", "ours (mean)", "95 % prediction interval", "n",
           "result", "note"]
NUMBERS = ["metric", "value", "value_low", "value_high", "mean", "low", "high", "half_width_sd", "figure_no"]


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


def accuracy_resolution(figure: dict, tables: Tables, notebook: str, preset: str) -> float | None:
    """The rounding of an accuracy: 1 / the images it was measured on (test_size for test_acc, ...), from
    the rows the figure is scored on; None for other metrics or when the rows do not say."""
    metric = figure["metric"]
    size = {"test_acc": "test_size", "train_acc": "train_size", "val_acc": "val_size"}.get(metric)
    rows = protocol_rows(tables.results, notebook, preset, dataset=None) if size else pd.DataFrame()
    if rows.empty or size not in rows:
        return None
    sizes = pd.to_numeric(rows.loc[matches(rows, figure.get("where", {})), size], errors="coerce")
    sizes = sizes[sizes > 0]
    return 1.0 / float(sizes.min()) if len(sizes) else None


def score(figure: dict, values: pd.Series, resolution: float | None = None) -> dict:
    """mean, interval, n and the result for one figure and our values.

    Only a parameter count is exact. An accuracy is a count over `resolution`'s images (1 / test-set
    size), so its spread over seeds is at least that rounding: seeds that all tie (likely on a small test
    set) get it as their standard deviation, not zero."""
    ratio = figure["metric"] in ("time_ratio", "forward_ratio")
    whole_run = figure["metric"] == "time_ratio" and timing_kind(figure) == "epochs"
    mean, sd, lo, hi = whole_run_interval(values) if whole_run else prediction_interval(values)
    value, low, high = published_value(figure)
    n = int(values.notna().sum())
    if n == 0:
        why = ("no whole-epoch timing in this preset's runs (epoch_timing_rounds: 0)" if whole_run else
               "no run of this preset has these models or epochs")
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "result": f"not covered: {why}"}
    exact = figure["metric"] == "parameters"
    if n < 2 and not exact:
        return {"mean": mean, "lo": lo, "hi": hi, "n": n, "result": "not scored: needs 2 or more values"}
    if whole_run and too_noisy(values):
        return {"mean": mean, "lo": lo, "hi": hi, "n": n, "result": "not scored: the whole-epoch timing is too "
                "noisy here (our mean varies more than one run does); more epoch_timing_rounds or a quieter machine"}
    if exact:       # deterministic (a parameter count): equal or not
        same = low - 1e-9 <= mean <= high + 1e-9
        return {"mean": mean, "lo": mean, "hi": mean, "n": n,
                "result": REPRODUCED if same else f"{NOT_REPRODUCED} (exactly {_fmt(figure, mean)} here)"}
    if figure["metric"].endswith("_acc") and resolution and sd < resolution:
        sd = resolution     # the metric's rounding floors the spread
        lo, hi = mean - prediction_factor(n) * sd, mean + prediction_factor(n) * sd
    if not sd > 0:
        return {"mean": mean, "lo": lo, "hi": hi, "n": n,
                "result": "not scored: every value is the same, and its rounding is not known"}
    if figure["metric"].endswith("_acc") and lo <= 0.0 and hi >= 1.0:     # it holds every accuracy: says nothing
        return {"mean": mean, "lo": lo, "hi": hi, "n": n,
                "result": f"not scored: our interval holds every accuracy from 0 to 1 ({n} seeds that disagree); "
                          f"more seeds"}
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


def declared_readings(preset: str, info: dict, ran_only: bool = True) -> list[dict]:
    """A preset's readings as index.json lists them, primary first (ran_only: those whose runs this report
    planned, not those whose run_at leaves its profile out); an entry written before readings existed stands
    for one primary reading whose runs carry the preset's name."""
    readings = info.get("readings") or [{"name": "as-read", "protocol": preset, "primary": True,
                                         "summary": info.get("reading", "")}]
    return sorted([r for r in readings if r.get("run", True) or not ran_only], key=lambda r: not r.get("primary"))


def scorecard(tables: Tables, protocols: dict, skipped: dict | None = None, smoke: bool = False) -> pd.DataFrame:
    """One row per published figure and reading of the presets in `protocols` ({preset: {notebook:
    {"readings", "published"}}}, as the runner writes them into index.json), the primary reading first;
    skipped: {preset (or protocol): why it did not run}; smoke: the runs are a smoke run, so only exact
    figures are scored. figure_no numbers the figures: a figure's rows share it."""
    rows, number = [], 0
    for preset in sorted(protocols):
        for notebook, info in protocols[preset].items():
            for figure in info.get("published", []):
                for reading in declared_readings(preset, info):
                    protocol = reading.get("protocol") or preset
                    why = (skipped or {}).get(protocol) or (skipped or {}).get(preset)
                    rows.append({"report": preset, "figure": figure["figure"], "reading": reading.get("name"),
                                 "primary": bool(reading.get("primary")), "figure_no": number,
                                 **_row(figure, tables, notebook, protocol, why, smoke)})
                number += 1
    return pd.DataFrame(rows, columns=COLUMNS + NUMBERS)


def _row(figure: dict, tables: Tables, notebook: str, protocol: str, skipped: str | None, smoke: bool) -> dict:
    """One figure scored on the runs of one protocol (a preset's reading)."""
    if skipped:
        result = {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "result": f"not covered: {skipped}"}
    else:
        result = score(figure, figure_values(figure, tables, notebook, protocol),
                       accuracy_resolution(figure, tables, notebook, protocol))
        scored = result["result"].startswith((REPRODUCED, NOT_REPRODUCED))
        if smoke and scored and figure["metric"] != "parameters":
            result["result"] = SMOKE
    low, high = result["lo"], result["hi"]
    if figure["metric"].endswith("_acc"):       # an accuracy cannot leave [0, 1]
        low, high = max(low, 0.0), min(high, 1.0)
    interval = "—" if math.isnan(low) else f"[{_fmt(figure, low)}, {_fmt(figure, high)}]"
    value, low, high = published_value(figure)
    return {"published": _published_text(figure), "ours (mean)": _fmt(figure, result["mean"]),
            "95 % prediction interval": interval, "n": result["n"], "result": result["result"],
            "note": f"{notebook}" + (f"; {figure['note']}" if figure.get("note") else "")
                    + ("" if skipped else _other_timing(figure, tables, notebook, protocol)),
            # the numbers behind the text, for figures.scorecard_figure (log scale for ratios)
            "metric": figure["metric"], "value": value, "value_low": low, "value_high": high,
            "mean": result["mean"], "low": result["lo"], "high": result["hi"],
            "half_width_sd": prediction_factor(result["n"])}


def tally(card: pd.DataFrame) -> dict:
    """Counts of figures (not rows): reproduced under the primary reading, reproduced under some declared
    reading, not reproduced under any (scored, never inside), not scored under any. "reproduced",
    "not reproduced" and "not scored" count the primary reading's rows, one per figure."""
    if card.empty:
        return {"figures": 0, UNDER_PRIMARY: 0, UNDER_SOME: 0, UNDER_NONE: 0, REPRODUCED: 0, NOT_REPRODUCED: 0,
                "not scored": 0}
    result = card["result"].astype(str)
    card = card.assign(_in=result == REPRODUCED, _out=result.str.startswith(NOT_REPRODUCED))
    figures = card.groupby("figure_no")
    primary = card[card["primary"].astype(bool)]
    some, out = figures["_in"].any(), figures["_out"].any()
    return {"figures": int(figures.ngroups),
            UNDER_PRIMARY: int(primary["_in"].sum()), UNDER_SOME: int(some.sum()), UNDER_NONE: int((~some & out).sum()),
            REPRODUCED: int(primary["_in"].sum()), NOT_REPRODUCED: int(primary["_out"].sum()),
            "not scored": int((~primary["_in"] & ~primary["_out"]).sum())}


def tally_text(counts: dict) -> str:
    """The scorecard's count in one sentence (markdown), primary reading and any declared reading."""
    return (f"Of {counts['figures']} published figures, **{counts[UNDER_PRIMARY]}** are {UNDER_PRIMARY} and "
            f"**{counts[UNDER_SOME]}** {UNDER_SOME}; {counts[UNDER_NONE]} are {UNDER_NONE}, and "
            f"{counts['figures'] - counts[UNDER_SOME] - counts[UNDER_NONE]} are not scored under any.")


def readings(protocols: dict) -> list[str]:
    """"R1 (bn_dropout_grid) · as-read (primary): <its summary>" for each declared reading with a summary."""
    return [f"{preset} ({notebook}) · {r.get('name')}{' (primary)' if r.get('primary') else ''}: {r['summary']}"
            for preset in sorted(protocols) for notebook, info in protocols[preset].items()
            for r in declared_readings(preset, info) if r.get("summary")]


def readings_markdown(protocols: dict) -> str:
    """Each preset's readings for the report: the details all readings share with their sources, then each
    reading (primary first) with its summary, its parameters, a line per source and per open choice."""
    parts = []
    for preset in sorted(protocols):
        for notebook, info in protocols[preset].items():
            lines = [f"**{preset}** (`{notebook}`)"]
            lines += [f"- shared · source · {key}: {text}" for key, text in (info.get("sources") or {}).items()]
            for r in declared_readings(preset, info, ran_only=False):
                label = f"*{r.get('name')}*" + (" (primary)" if r.get("primary") else
                                               f" (protocol `{r.get('protocol')}`)")
                if not r.get("run", True):
                    label += (f" — not run in this report: it runs at the {' and '.join(r.get('run_at') or [])} "
                              f"profiles (`make report PROFILE=full`, or `--preset {r.get('protocol')}`)")
                lines.append(f"- {label}: {r.get('summary') or '(no summary)'}")
                if r.get("parameters"):
                    values = ", ".join(f"{k}={v!r}" for k, v in r["parameters"].items())
                    lines.append(f"    - parameters: {values}")
                lines += [f"    - source · {key}: {text}" for key, text in (r.get("sources") or {}).items()]
                lines += [f"    - open · {key}: {text}" for key, text in (r.get("open") or {}).items()]
            parts.append("\n".join(lines))
    return "\n\n".join(parts)
