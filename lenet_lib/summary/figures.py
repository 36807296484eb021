"""The report's two overview figures, each with a caption computed from the same frame:
- claims: one row per claim part, its effect and 95 % CI against the region the claim puts it in;
- scorecard: one row per published figure, against our 95 % prediction interval for one new run.
Colours are colour-blind safe and every outcome also has its own marker, so both read in greyscale.
"""
from __future__ import annotations

import base64
import html
import io
import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from lenet_lib.summary import decision, scorecard, verdicts

GREEN, ORANGE, PURPLE, GREY = "#1b9e77", "#d95f02", "#7570b3", "#6b6b6b"
# outcome -> (colour, marker, face): filled, cross, hollow and hollow diamond tell them apart without colour
OUTCOME = {decision.SUPPORTED: (GREEN, "o", GREEN), decision.CONTRADICTED: (ORANGE, "X", ORANGE),
           decision.INCONCLUSIVE: (PURPLE, "o", "white"), verdicts.SMOKE: (GREY, "D", "white")}
RESULT = {scorecard.REPRODUCED: (GREEN, "D", GREEN), scorecard.NOT_REPRODUCED: (ORANGE, "X", ORANGE),
          "not scored": (GREY, "D", "white")}
REGION, INTERVAL = "#dcdcdc", "#9ecae1"
ROW = 0.24              # inches per row


def as_html(fig, caption: str, anchor: str, alt: str) -> str:
    """A figure as an inline PNG in a <figure> with its caption; the matplotlib figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return (f'<figure id="{anchor}" style="margin: 0.5em 0"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(alt)}" style="max-width: 100%; height: auto">'
            f'<figcaption style="font-size: 0.9em">{caption}</figcaption></figure>')


def _shown(x: float, scale: str) -> float:
    """A value on its axis: accuracy fractions in points, log ratios as ratios."""
    return math.exp(x) if scale == "ratio" else 100 * x


def _ratio_ticks(ax, low: float, high: float) -> None:
    """Ratio ticks spaced for the axis's span, labelled "1.25x"."""
    steps = ((0.1, 0.2, 0.5, 1, 2, 5, 10) if high / low > 6 else (0.25, 0.5, 0.8, 1, 1.25, 1.5, 2, 3, 4)
             if high / low > 2.5 else (0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.35, 1.5))
    ticks = [t for t in steps if low <= t <= high]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()


def _limits(values, scale: str, cap: float) -> tuple[float, float]:
    """Axis limits that hold every finite value, padded, and never beyond +-cap (x cap for ratios)."""
    values = np.array([v for v in values if np.isfinite(v)] or [1.0 if scale == "ratio" else 0.0])
    if scale == "ratio":
        low, high = max(values.min() / 1.15, 1 / cap), min(values.max() * 1.15, cap)
        return min(low, 0.9), max(high, 1.1)
    pad = max(0.08 * (values.max() - values.min()), 0.3)
    return max(values.min() - pad, -cap), min(values.max() + pad, cap)


def _header(ax, y: float, text: str, x: float = 0.005) -> None:
    """A group's title written across its own row from x (axes fraction), clear of the data rows below it."""
    where = blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(x, y, text, transform=where, fontsize=7.5, fontweight="bold", va="center", ha="left",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})


# ---------------------------------------------------------------- the claims, part by part
LABEL_INCH, CHAR_INCH, HEADER_CHAR_INCH = 0.25, 0.064, 0.066      # tick labels at 8 pt, headers at 7.5 pt bold


def _claim_header(report: str, claim: str, verdict: str) -> str:
    """"R1: <claim> — supported"; a smoke run's verdict is the same for all, said once in the legend."""
    return f"{report}: {claim}" + ("" if verdict == verdicts.SMOKE else f" — {verdict}")


def _header_lines(rows: pd.DataFrame, width: float) -> list[tuple[tuple, list[str]]]:
    return [(key, textwrap.wrap(_claim_header(*key, group["verdict"].iloc[0]), int(width / HEADER_CHAR_INCH)))
            for key, group in rows.groupby(["report", "claim"], sort=False)]


def _axis(ax, scale: str, limits, height: int, ticks, labels, label_size: float, xlabel: str, title: str) -> None:
    """A panel's frame: the no-effect line (0 points, ratio 1), log ticks for ratios, the rows' labels."""
    ax.axvline(_shown(0.0, scale), color="black", linewidth=0.8, zorder=0)
    if scale == "ratio":
        ax.set_xscale("log")
        _ratio_ticks(ax, *limits)
    ax.set_xlim(*limits)
    ax.set_ylim(-0.7, height - 0.3)
    ax.set_yticks(ticks, labels, fontsize=label_size)
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color="#e8e8e8")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=10)


def _claims_panel(ax, scale: str, rows: pd.DataFrame, height: int, label_width: float, width: float) -> None:
    limits = _limits([_shown(v, scale) for column in ("value", "low", "high", "region_low", "region_high")
                      for v in rows[column]] + [_shown(0.0, scale)], scale, 20.0 if scale == "ratio" else 100.0)
    headers = dict(_header_lines(rows, label_width + width))
    y, ticks, labels = height, [], []
    for key, group in rows.groupby(["report", "claim"], sort=False):
        for line in headers[key]:       # the claim's title, from the labels' left edge across the panel
            y -= 1
            _header(ax, y, line, x=-label_width / width)
        for part in group.itertuples():
            y -= 1
            colour, marker, face = OUTCOME.get(part.outcome, OUTCOME[verdicts.SMOKE])
            region = [min(max(_shown(v, scale), limits[0]), limits[1]) for v in (part.region_low, part.region_high)]
            ax.fill_betweenx([y - 0.38, y + 0.38], *region, color=REGION, linewidth=0)
            low, high = (_shown(v, scale) for v in (part.low, part.high))
            if np.isfinite(low):
                ax.hlines(y, max(low, limits[0]), min(high, limits[1]), color=colour, linewidth=2)
            ax.plot(_shown(part.value, scale), y, marker=marker, color=colour, mfc=face, ms=7, mew=1.5)
            ticks.append(y)
            labels.append(part.part)
    _axis(ax, scale, limits, height, ticks, labels, 8, "time ratio, log scale (95 % CI)" if scale == "ratio" else
          "accuracy difference, points (95 % CI)", "training and forward time ratios" if scale == "ratio" else "accuracy")


def claims(parts: pd.DataFrame):
    """The claims figure from findings.claim_parts: accuracy differences (points) and time ratios (log axis)
    side by side, each claim titled above its parts; None when no part has a number."""
    drawn = parts[parts["value"].notna()]
    panels = [(scale, drawn[drawn["scale"] == scale]) for scale in ("points", "ratio")
              if (drawn["scale"] == scale).any()]
    if not panels:
        return None
    # laid out by hand: each panel's labels get the room their longest label needs, its claim titles that
    # room and the panel's width
    label_widths = [LABEL_INCH + CHAR_INCH * rows["part"].str.len().max() for _, rows in panels]
    width = 4.0 if len(panels) > 1 else 6.0
    height = max(sum(len(lines) for _, lines in _header_lines(rows, w + width)) + len(rows)
                 for (_, rows), w in zip(panels, label_widths))
    bottom, top, gap = 0.95, 0.3, 0.3
    size = (sum(label_widths) + width * len(panels) + gap * (len(panels) - 1) + 0.2, ROW * height + bottom + top)
    fig = plt.figure(figsize=size)
    left = 0.0
    for (scale, rows), label_width in zip(panels, label_widths):
        left += label_width
        ax = fig.add_axes((left / size[0], bottom / size[1], width / size[0], ROW * height / size[1]))
        _claims_panel(ax, scale, rows, height, label_width, width)
        left += width + gap
    outcomes = [o for o in OUTCOME if (drawn["outcome"] == o).any()]
    handles = [Line2D([], [], color=OUTCOME[o][0], marker=OUTCOME[o][1], mfc=OUTCOME[o][2], ms=7, mew=1.5,
                      linewidth=2, label=f"part {o}" if o in verdicts.VERDICTS else o) for o in outcomes]
    handles.append(Patch(color=REGION, label="where the claim puts the effect (its threshold or ±margin)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    return fig


def claims_caption(parts: pd.DataFrame, numbered: dict | None = None) -> str:
    """One computed line: parts drawn, their outcomes, and the claims not drawn and why."""
    drawn = parts[parts["value"].notna()]
    counts = drawn["outcome"].value_counts()
    outcome = ", ".join(f"{counts[o]} {o}" for o in OUTCOME if counts.get(o, 0))
    missing = parts[parts["value"].isna()].drop_duplicates(["report", "claim"])
    text = (f"{len(drawn)} parts of {drawn[['report', 'claim']].drop_duplicates().shape[0]} claims, each "
            f"effect with its 95 % CI ({outcome}). Grey: where the claim puts the effect.")
    if len(missing):
        why = []
        for report, group in missing.groupby("report"):
            note = next((n for m, n in (numbered or {}).items() if group["note"].str.contains(m, regex=False).any()),
                        None)
            why.append(f"{report} ({len(group)}{', ' + note if note else ''})")
        text += f" Not drawn: {len(missing)} claims not judged — {'; '.join(why)}."
    return text


# ---------------------------------------------------------------- the scorecard, figure by figure
def _scored_rows(card: pd.DataFrame) -> pd.DataFrame:
    """Figures with one of our values and an interval to compare with (parameter counts are exact: the table)."""
    card = card.assign(primary=card["primary"].astype(bool) if "primary" in card else True)
    keep = card["mean"].notna() & (card["metric"] != "parameters")
    return card[keep]


def _result(text: str) -> str:
    return (scorecard.REPRODUCED if text == scorecard.REPRODUCED else
            scorecard.NOT_REPRODUCED if text.startswith(scorecard.NOT_REPRODUCED) else "not scored")


def _scorecard_panel(ax, scale: str, rows: pd.DataFrame, height: int) -> None:
    primary = rows[rows["primary"]]
    base = primary.set_index(["report", "figure"])["mean"]
    # accuracies as points from our primary mean (figures sit far apart), ratios as they are
    def place(row, column):
        value = row[column]
        if scale == "ratio":
            return math.exp(value)
        if column in ("low", "high"):       # an accuracy's interval stops at 0 and 1, as the table's does
            value = min(max(value, 0.0), 1.0)
        return 100 * (value - base.get((row["report"], row["figure"]), math.nan))
    spans = [place(r, c) for _, r in primary.iterrows() for c in ("low", "high")]
    published = [place(r, "value") for _, r in primary.iterrows()]
    widest = max((abs(v) for v in spans if np.isfinite(v)), default=1.0)
    cap = 10.0 if scale == "ratio" else max(10.0, 1.1 * widest)
    limits = _limits(spans + published + [_shown(0.0, scale) if scale == "ratio" else 0.0], scale, cap)
    y, ticks, labels = height, [], []
    for report, group in primary.groupby("report", sort=False):
        y -= 1
        _header(ax, y, f"{report}")
        for _, row in group.iterrows():
            y -= 1
            low, high = place(row, "low"), place(row, "high")
            ax.hlines(y, max(low, limits[0]), min(high, limits[1]), color=INTERVAL, linewidth=6)
            ax.plot(place(row, "mean"), y, "|", color="#3182bd", ms=9, mew=1.5)
            for _, other in rows[(rows["report"] == report) & (rows["figure"] == row["figure"]) & ~rows["primary"]].iterrows():
                ax.hlines(y - 0.28, max(place(other, "low"), limits[0]), min(place(other, "high"), limits[1]),
                          color=GREY, linewidth=1)
                ax.plot(min(max(place(other, "mean"), limits[0]), limits[1]), y - 0.28, "o", color=GREY,
                        mfc="white", ms=4)
            colour, marker, face = RESULT[_result(str(row["result"]))]
            value = place(row, "value")
            rounded = [place(row, c) for c in ("value_low", "value_high")]
            if rounded[1] > rounded[0]:
                ax.hlines(y, *rounded, color=colour, linewidth=1)
            inside = limits[0] <= value <= limits[1]
            shown = min(max(value, limits[0]), limits[1])
            ax.plot(shown, y, marker=marker if inside else (">" if value > limits[1] else "<"), color=colour,
                    mfc=face, ms=7, mew=1.5)
            if not inside:      # beyond the axis: at its edge, with the value written beside it
                text = f"{value:.3g}x" if scale == "ratio" else f"{value:+.1f}"
                ax.annotate(text, (shown, y), xytext=(-4 if value > limits[1] else 4, 0), textcoords="offset points",
                            ha="right" if value > limits[1] else "left", va="center", fontsize=7, color=colour)
            ticks.append(y)
            labels.append(textwrap.shorten(str(row["figure"]), 48, placeholder="…"))
    _axis(ax, scale, limits, height, ticks, labels, 7.5,
          "time ratio between the report's own variants, log scale" if scale == "ratio" else
          "published − our mean, accuracy points", "time ratios" if scale == "ratio" else "accuracies")


def scorecard_figure(card: pd.DataFrame):
    """The scorecard figure from scorecard.scorecard: accuracies (points from our mean) above time ratios
    (log axis); None when no figure has our values beside it."""
    rows = _scored_rows(card)
    ratio = rows["metric"].isin(["time_ratio", "forward_ratio"])
    panels = [(scale, part) for scale, part in (("points", rows[~ratio]), ("ratio", rows[ratio]))
              if part["primary"].any()]
    if not panels:
        return None
    heights = [int(part["primary"].sum() + part.loc[part["primary"], "report"].nunique()) for _, part in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, ROW * sum(heights) + 1.1 + 0.7 * len(panels)),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, (scale, part), height in zip(axes[:, 0], panels, heights):
        _scorecard_panel(ax, scale, part, height)
    results = {_result(str(r)) for r in rows.loc[rows["primary"], "result"]}
    handles = [Line2D([], [], color=INTERVAL, linewidth=6, label="our 95 % prediction interval"),
               Line2D([], [], color="#3182bd", marker="|", linestyle="none", ms=9, mew=1.5, label="our mean")]
    handles += [Line2D([], [], color=RESULT[r][0], marker=RESULT[r][1], mfc=RESULT[r][2], linestyle="none", ms=7,
                       mew=1.5, label=f"published: {r}" + (" (smoke run)" if r == "not scored" else ""))
                for r in RESULT if r in results]
    if not rows["primary"].all():
        handles.append(Line2D([], [], color=GREY, marker="o", mfc="white", ms=4, linewidth=1,
                              label="another declared reading"))
    total = ROW * sum(heights) + 1.1 + 0.7 * len(panels)
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.75 / total, 1, 1))
    return fig


def scorecard_caption(card: pd.DataFrame, numbered: dict | None = None) -> str:
    """One computed line: figures drawn and reproduced by kind, and those not drawn and why."""
    rows = _scored_rows(card)
    rows = rows[rows["primary"]]
    ratio = rows["metric"].isin(["time_ratio", "forward_ratio"])
    said = []
    for name, part in (("accuracies", rows[~ratio]), ("time ratios", rows[ratio])):
        if len(part):
            results = part["result"].astype(str).map(_result)
            scored = int((results != "not scored").sum())
            if not scored:
                said.append(f"{len(part)} {name} shown, not scored")
                continue
            said.append(f"{int((results == scorecard.REPRODUCED).sum())} of {scored} scored {name} reproduced"
                        + (f" ({len(part) - scored} more shown, not scored)" if len(part) > scored else ""))
    primary = card[card["primary"].astype(bool)] if "primary" in card else card
    counts = primary[primary["metric"] == "parameters"]
    if len(counts):
        said.append(f"parameter counts (exact, in the table): {int((counts['result'] == scorecard.REPRODUCED).sum())}"
                    f" of {len(counts)} equal")
    missing = primary[primary["mean"].isna()]
    for report, group in missing.groupby("report"):
        note = next((n for m, n in (numbered or {}).items()
                     if group["result"].astype(str).str.contains(m, regex=False).any()), None)
        said.append(f"{report}: {len(group)} not covered" + (f" ({note})" if note else ""))
    reading = "Under the primary reading: " if "primary" in card else ""
    return reading + ("; ".join(said) or "no published figure") + "."
