"""The seed reports' claims (../shared/SEEDS.md), each tested on tidy results: holds / does not hold.

Every check takes the tidy results of all runs, keeps the rows it needs and returns a Verdict with the
numbers behind it. Without those rows the verdict is "not tested", saying what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .experiment import add_variant, final_epoch, seconds_per_epoch
from .stats import ALPHA, anova, compare_to_best, spearman, welch
from .sweeps import best_and_tied

HOLDS, FAILS, UNTESTED = "holds", "does not hold", "not tested"


@dataclass
class Verdict:
    report: str
    claim: str
    verdict: str
    evidence: str


def _rows(results: pd.DataFrame, notebook: str, dataset: str | None = "mnist", **equal) -> pd.DataFrame:
    """Rows of one notebook (and dataset), status ok, with columns equal to the given values."""
    if results.empty or "notebook" not in results:
        return pd.DataFrame(columns=["notebook", "run_id", "model_id", "epoch", "bn", "dropout",
                                     "conv_dropout", "status", "test_acc", "train_seconds"])
    keep = (results["notebook"] == notebook) & (results["status"] == "ok")
    if dataset is not None and "dataset" in results:
        keep &= results["dataset"] == dataset
    for column, value in equal.items():
        keep &= results[column] == value if column in results else False
    return results[keep]


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


# R1 -----------------------------------------------------------------------------------------------------
def r1_same_accuracy(results):
    final = final_epoch(add_variant(_rows(results, "bn_dropout_grid", conv_dropout=0.0)))
    if final["variant"].nunique() < 4:
        return UNTESTED, "needs the four BN x dropout variants on MNIST (bn_dropout_grid)"
    p = anova(final, "variant", "test_acc")
    spread = final.groupby("variant")["test_acc"].mean()
    evidence = (f"final test accuracy {_pct(spread.min())} ({spread.idxmin()}) to {_pct(spread.max())} "
                f"({spread.idxmax()}); one-way ANOVA over seeds p = {p:.3g}")
    if p != p:
        return UNTESTED, evidence + " (needs at least 2 seeds)"
    return (HOLDS if p >= ALPHA else FAILS), evidence


def r1_bn_better_after_epoch_1(results):
    rows = add_variant(_rows(results, "bn_dropout_grid", conv_dropout=0.0))
    first = rows[rows["epoch"] == 1]
    if first["bn"].nunique() < 2:
        return UNTESTED, "needs BN and non-BN variants on MNIST (bn_dropout_grid)"
    with_bn, without = first.loc[first["bn"], "test_acc"], first.loc[~first["bn"].astype(bool), "test_acc"]
    p = welch(with_bn, without)
    diff = with_bn.mean() - without.mean()
    evidence = (f"epoch-1 test accuracy with BN {_pct(with_bn.mean())}, without {_pct(without.mean())} "
                f"(difference {100 * diff:+.2f} points, Welch p = {p:.3g})")
    return (HOLDS if diff > 0 and p < ALPHA else FAILS), evidence


def r1_plain_fastest(results):
    rows = add_variant(_rows(results, "bn_dropout_grid", conv_dropout=0.0))
    if rows["variant"].nunique() < 4:
        return UNTESTED, "needs the four BN x dropout variants on MNIST (bn_dropout_grid)"
    seconds = seconds_per_epoch(rows, "variant")
    table = compare_to_best(seconds, "variant", "train_seconds", higher_is_better=False)
    fastest = table["variant"].iloc[0]
    plain = table.set_index("variant").loc["plain"]
    evidence = (f"fastest: {fastest} ({table['mean'].iloc[0]:.3f} s/epoch); plain {plain['mean']:.3f} s/epoch"
                + ("" if fastest == "plain" else f", {'tied with' if plain['tied_with_best'] else 'slower than'}"
                   f" the fastest (Holm p = {plain['p_holm']:.3g})"))
    return (HOLDS if fastest == "plain" else FAILS), evidence


# R2 -----------------------------------------------------------------------------------------------------
R2_ORDER = ["adam", "rmsprop", "adagrad", "sgd", "gd"]


def r2_optimizer_order(results):
    rows = _rows(results, "optimizers", dataset=None)
    if "stage" in rows:
        rows = rows[rows["stage"] == "compare"]
    final = final_epoch(rows[rows["optimizer"].isin(R2_ORDER)]) if len(rows) else rows
    if len(final) == 0 or final["optimizer"].nunique() < len(R2_ORDER):
        return UNTESTED, "needs adam, rmsprop, adagrad, sgd and gd compared (optimizers)"
    means = final.groupby("optimizer")["test_acc"].mean().sort_values(ascending=False)
    observed = list(means.index)
    evidence = "observed: " + " > ".join(f"{name} {_pct(acc)}" for name, acc in means.items())
    return (HOLDS if observed == R2_ORDER else FAILS), evidence


# R3 -----------------------------------------------------------------------------------------------------
def _r3_final(results):
    rows = _rows(results, "bn_dropout_grid", dataset="cifar10")
    rows = rows[(rows["conv_dropout"] > 0) | ((rows["dropout"] == 0) & (rows["conv_dropout"] == 0))]
    return final_epoch(add_variant(rows.assign(dropout=rows["conv_dropout"])))


def r3_plain_best(results):
    final = _r3_final(results)
    if final["variant"].nunique() < 2:
        return UNTESTED, "needs CIFAR-10 runs of bn_dropout_grid with dropout after a conv layer (preset R3)"
    table = compare_to_best(final, "variant", "test_acc")
    best = table["variant"].iloc[0]
    plain = table.set_index("variant").loc["plain"]
    evidence = (f"best: {best} ({_pct(table['mean'].iloc[0])}); plain {_pct(plain['mean'])}"
                f" (Holm p vs best = {plain['p_holm']:.3g})")
    return (HOLDS if plain["tied_with_best"] else FAILS), evidence


def r3_conv_dropout_hurts(results):
    final = _r3_final(results)
    plain, dropped = final[final["variant"] == "plain"], final[final["variant"] == "dropout"]
    if plain.empty or dropped.empty:
        return UNTESTED, "needs CIFAR-10 plain and conv-dropout runs of bn_dropout_grid (preset R3)"
    p = welch(dropped["test_acc"], plain["test_acc"])
    diff = dropped["test_acc"].mean() - plain["test_acc"].mean()
    return ((HOLDS if diff < 0 and p < ALPHA else FAILS),
            f"conv dropout {100 * diff:+.2f} points vs plain (Welch p = {p:.3g})")


# R4 -----------------------------------------------------------------------------------------------------
def _r4_rows(results):
    return add_variant(_rows(results, "dropout_sweep"))


def r4_bn_marginal_but_slower(results):
    rows = _r4_rows(results)
    final = final_epoch(rows)
    base, bn = final[final["variant"] == "plain"], final[final["variant"] == "BN"]
    if base.empty or bn.empty:
        return UNTESTED, "needs baseline and BN runs of dropout_sweep"
    seconds = seconds_per_epoch(rows, "variant")
    ratio = (seconds.loc[seconds["variant"] == "BN", "train_seconds"].mean()
             / seconds.loc[seconds["variant"] == "plain", "train_seconds"].mean())
    diff = bn["test_acc"].mean() - base["test_acc"].mean()
    p = welch(bn["test_acc"], base["test_acc"])
    evidence = (f"BN {100 * diff:+.2f} accuracy points (Welch p = {p:.3g}) at {100 * (ratio - 1):+.1f} % "
                f"training time per epoch")
    return (HOLDS if 0 < diff < 0.01 and ratio > 1.10 else FAILS), evidence


def r4_dropout_cuts_time(results):
    rows = _r4_rows(results)
    seconds = seconds_per_epoch(rows, "variant")
    base = seconds.loc[seconds["variant"] == "plain", "train_seconds"]
    dropped = seconds.loc[seconds["variant"] == "dropout", "train_seconds"]
    if base.empty or dropped.empty:
        return UNTESTED, "needs baseline and dropout runs of dropout_sweep"
    ratio, p = dropped.mean() / base.mean(), welch(dropped, base)
    return ((HOLDS if ratio < 1 and p < ALPHA else FAILS),
            f"dropout-only models take {100 * (ratio - 1):+.1f} % training time per epoch vs baseline "
            f"(Welch p = {p:.3g})")


def r4_higher_p_faster_small_cost(results):
    rows = _r4_rows(results)
    rows = rows[rows["dropout"] > 0]
    if rows["dropout"].nunique() < 3:
        return UNTESTED, "needs at least three dropout rates in dropout_sweep"
    seconds = seconds_per_epoch(rows, "dropout")
    final = final_epoch(rows)
    rho_t, p_t = spearman(seconds["dropout"], seconds["train_seconds"])
    rho_a, p_a = spearman(final["dropout"], final["test_acc"])
    by_p = final.groupby("dropout")["test_acc"].mean()
    cost = by_p.iloc[0] - by_p.iloc[-1]
    evidence = (f"Spearman(p, seconds/epoch) = {rho_t:+.2f} (p = {p_t:.3g}); Spearman(p, test accuracy) = "
                f"{rho_a:+.2f} (p = {p_a:.3g}); accuracy p={by_p.index[0]:g} -> p={by_p.index[-1]:g}: "
                f"{100 * -cost:+.2f} points")
    faster = rho_t < 0 and p_t < ALPHA
    small_cost = 0 <= cost < 0.02
    return (HOLDS if faster and small_cost else FAILS), evidence


# R5 -----------------------------------------------------------------------------------------------------
def r5_framework_faster(results):
    rows = _rows(results, "numpy_vs_torch", dataset=None)
    if rows.empty or "framework" not in rows or rows["framework"].nunique() < 2:
        return UNTESTED, "needs NumPy and torch training runs (numpy_vs_torch)"
    common = set(rows.loc[rows["framework"] == "numpy", "optimizer"]) & set(
        rows.loc[rows["framework"] == "torch", "optimizer"])
    rows = rows[rows["optimizer"].isin(common)]
    per = rows.groupby("framework")["epoch_seconds"].mean()
    ratio = per["numpy"] / per["torch"]
    return ((HOLDS if ratio >= 2 else FAILS),
            f"NumPy {per['numpy']:.2f} s vs torch {per['torch']:.2f} s per epoch, same protocol: "
            f"torch {ratio:.1f}x faster")


def r5_batch_64_best(results):
    final = final_epoch(_rows(results, "batch_size"))
    if final.empty or final["batch_size"].nunique() < 2:
        return UNTESTED, "needs several batch sizes (batch_size)"
    result = best_and_tied(final, "batch_size", "test_acc", claimed=64)
    tied = [int(b) for b in result["tied"]]
    evidence = (f"best: batch {int(result['best'])} ({_pct(result['best_mean'])}); "
                f"statistically tied with it: {tied}")
    if 64 not in set(final["batch_size"]):
        return UNTESTED, evidence + "; batch 64 not run"
    return (HOLDS if result["claimed_is_best"] else FAILS), evidence


CLAIMS = [
    ("R1", "All four BN/dropout variants reach the same final accuracy", r1_same_accuracy),
    ("R1", "BN variants are better after the first epoch", r1_bn_better_after_epoch_1),
    ("R1", "The plain network trains fastest", r1_plain_fastest),
    ("R2", "Adam is best, then RMSprop, AdaGrad, SGD, GD", r2_optimizer_order),
    ("R3", "On CIFAR-10 the plain network is best", r3_plain_best),
    ("R3", "Dropout after a conv layer hurts (CIFAR-10)", r3_conv_dropout_hurts),
    ("R4", "BN improves accuracy marginally (< 1 point) at > 10 % more training time", r4_bn_marginal_but_slower),
    ("R4", "Dropout alone cuts training time", r4_dropout_cuts_time),
    ("R4", "Higher dropout p trains faster at a small accuracy cost (< 2 points)", r4_higher_p_faster_small_cost),
    ("R5", "The framework is several times (>= 2x) faster than NumPy", r5_framework_faster),
    ("R5", "Batch 64 gives the best test accuracy", r5_batch_64_best),
]


def judge(results: pd.DataFrame, reports=None) -> pd.DataFrame:
    """One row per claim (optionally only the given reports): report, claim, verdict, evidence."""
    rows = []
    for report, claim, check in CLAIMS:
        if reports and report not in reports:
            continue
        verdict, evidence = check(results)
        rows.append(Verdict(report, claim, verdict, evidence).__dict__)
    return pd.DataFrame(rows)
