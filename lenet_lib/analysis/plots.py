"""Figures from tidy frames (one row per model x epoch). Bands and bars are 95 % t-intervals over seeds."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lenet_lib.analysis.tidy import seconds_per_epoch
from lenet_lib.analysis.stats import t_interval

sns.set_theme(style="whitegrid", context="notebook")
LABELS = {"train_loss": "train loss", "val_loss": "validation loss", "test_loss": "test loss",
          "train_acc": "train accuracy", "val_acc": "validation accuracy", "test_acc": "test accuracy",
          "epoch_seconds": "seconds per epoch", "train_seconds": "training seconds per epoch"}


def _finish_axis(ax, metric: str) -> None:
    """Accuracy axes stay within [0, 1], loss and time axes above 0, even where a few-seed interval
    reaches past them."""
    low, high = ax.get_ylim()
    if metric.endswith("_acc"):
        ax.set_ylim(max(low, 0.0), min(high, 1.0))
    elif metric.endswith(("_loss", "_seconds")):
        ax.set_ylim(max(low, 0.0), high)


def _legend_outside(ax, fontsize: int = 8) -> None:
    if ax.get_legend() is not None:
        ax.legend(fontsize=fontsize, bbox_to_anchor=(1.01, 1), loc="upper left", borderaxespad=0)


def _as_categories(df: pd.DataFrame, hue: str | None) -> pd.DataFrame:
    """A numeric hue (batch size, p) as ordered labels: distinct colours instead of a pale gradient."""
    if hue is None or hue not in df or not pd.api.types.is_numeric_dtype(df[hue]) or df[hue].dtype == bool:
        return df
    order = [f"{v:g}" for v in sorted(df[hue].dropna().unique())]
    return df.assign(**{hue: pd.Categorical(df[hue].map(lambda v: f"{v:g}"), categories=order, ordered=True)})


def _ci(values):
    """seaborn errorbar callable: the same t-interval the tables report (a point alone: no bar)."""
    lo, hi = t_interval(values)
    mean = float(np.mean(values))
    return (mean, mean) if np.isnan(lo) else (lo, hi)


def curves(df: pd.DataFrame, metrics=("train_loss", "val_loss"), hue: str = "variant", title: str = ""):
    """Per-epoch curves of each metric, one line per hue value, with a 95 % CI band over seeds."""
    metrics = list(metrics)
    df = _as_categories(df, hue)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(data=df, x="epoch", y=metric, hue=hue, errorbar=_ci, marker="o", ax=ax)
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.xaxis.get_major_locator().set_params(integer=True)
        _finish_axis(ax, metric)
        if ax is not axes[0][-1] and ax.get_legend():
            ax.get_legend().remove()
    _legend_outside(axes[0][-1])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def bars(df: pd.DataFrame, x: str, y: str, hue: str | None = None, title: str = "", ax=None):
    """Mean of y per x (and hue) with 95 % CI bars, e.g. final test accuracy per variant."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.8))
    df = _as_categories(df, hue)
    sns.pointplot(data=df, x=x, y=y, hue=hue, errorbar=_ci, capsize=0.15, linestyle="none",
                  dodge=0.3 if hue else False, ax=ax)
    ax.set_ylabel(LABELS.get(y, y))
    _finish_axis(ax, y)
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


def versus(df: pd.DataFrame, x: str, y: str, hue: str | None = None, logx: bool = False, title: str = "",
           ax=None):
    """y against a numeric x (learning rate, dropout p, batch size), one line per hue, 95 % CI band."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.8))
    df = _as_categories(df, hue)
    sns.lineplot(data=df, x=x, y=y, hue=hue, errorbar=_ci, marker="o", ax=ax)
    if logx:
        ax.set_xscale("log")
    ax.set_ylabel(LABELS.get(y, y))
    _finish_axis(ax, y)
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


def ratio_bars(ratios: pd.DataFrame, x: str, title: str = "", hue: str = "implementation", ax=None):
    """Ratios with their precomputed 95 % CI (columns ratio, ci_low, ci_high), one marker per hue value,
    a line at 1: e.g. each variant's training-step time relative to the plain network's."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.8))
    order = list(dict.fromkeys(ratios[x]))
    groups = list(dict.fromkeys(ratios[hue])) if hue in ratios else [None]
    width = 0.3 if len(groups) > 1 else 0.0
    for i, (group, color) in enumerate(zip(groups, sns.color_palette(n_colors=len(groups)))):
        part = ratios if group is None else ratios[ratios[hue] == group]
        where = np.array([order.index(v) for v in part[x]]) + (i - (len(groups) - 1) / 2) * width
        low = (part["ratio"] - part["ci_low"]).fillna(0).clip(lower=0)
        high = (part["ci_high"] - part["ratio"]).fillna(0).clip(lower=0)
        ax.errorbar(where, part["ratio"], yerr=[low, high], fmt="o", capsize=4, color=color, label=group)
    ax.axhline(1.0, color="gray", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(order)), order, rotation=30 if len(order) > 5 else 0, ha="right" if len(order) > 5 else "center")
    ax.set_ylabel("ratio")
    if groups != [None]:
        ax.legend(fontsize=8)
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


def held_out(rows: pd.DataFrame) -> str:
    """"val" when the rows have validation measures, else "test" (a protocol without a validation split)."""
    return "val" if "val_acc" in rows and rows["val_acc"].notna().any() else "test"


def image_grid(images, titles=None, rows: int | None = None, cmap: str = "gray", title: str = "",
               scale: float = 1.3):
    """A grid of images (N x H x W, or N x C x H x W for RGB), one optional title each."""
    images = np.asarray(images)
    n = len(images)
    rows = rows or int(np.ceil(n / 10))
    cols = int(np.ceil(n / rows))
    # constrained layout keeps each title clear of the row above (tight_layout let square tiles run into them)
    fig, axes = plt.subplots(rows, cols, figsize=(scale * cols, scale * rows + 0.4), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = images[i]
            ax.imshow(img.transpose(1, 2, 0) if img.ndim == 3 and img.shape[0] == 3 else img.squeeze(),
                      cmap=cmap)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    fig.suptitle(title)
    return fig


def heatmap(matrix, labels, title: str = "", fmt: str = "d"):
    """A labelled square matrix, e.g. a confusion matrix (rows: true class, columns: predicted)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.6))
    sns.heatmap(matrix, annot=True, fmt=fmt, cmap="Blues", xticklabels=labels, yticklabels=labels, ax=ax,
                cbar=False, annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def scatter(points, labels, title: str = ""):
    """2-D points coloured by class, e.g. a t-SNE embedding."""
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=labels, palette="tab10", s=10, linewidth=0, ax=ax)
    ax.legend(title="class", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def overview(rows: pd.DataFrame, hue: str = "config", title: str = ""):
    """Validation (or, without a validation split, test) loss and accuracy per epoch (CI bands) beside
    seconds per epoch (CI bars), one colour per hue value; the seconds panel names the colours."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.9), gridspec_kw={"width_ratios": [2, 2, 2]})
    split = held_out(rows)
    for ax, metric in zip(axes[:2], (f"{split}_loss", f"{split}_acc")):
        if metric not in rows or not np.isfinite(rows[metric].astype(float)).any():     # e.g. every model diverged
            ax.text(0.5, 0.5, f"no finite {LABELS[metric]}", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        sns.lineplot(data=rows, x="epoch", y=metric, hue=hue, errorbar=_ci, marker="o", ax=ax, legend=False)
        ax.set_ylabel(LABELS[metric])
        ax.xaxis.get_major_locator().set_params(integer=True)
        _finish_axis(ax, metric)
    per_model = seconds_per_epoch(rows, hue, "epoch_seconds")
    order = list(dict.fromkeys(rows[hue]))       # the line plots' colour order
    sns.pointplot(data=per_model, y=hue, x="epoch_seconds", hue=hue, order=order, hue_order=order,
                  errorbar=_ci, capsize=0.2, linestyle="none", legend=False, ax=axes[2])
    axes[2].set_xlim(max(axes[2].get_xlim()[0], 0.0), axes[2].get_xlim()[1])
    axes[2].set_xlabel(LABELS["epoch_seconds"])
    axes[2].set_ylabel("")
    axes[2].tick_params(axis="y", labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
