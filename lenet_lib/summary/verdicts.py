"""The seed reports' claims (../shared/SEEDS.md), each judged only on runs under its report's own protocol.

A claim is a few tests (parts) on tidy results and the fair timing tables. Its verdict is one of
  supported     every part is shown, at the 5 % level;
  contradicted  some part is shown false;
  inconclusive  neither: the row says how many seeds (or timing rounds) would likely decide it.
A claim whose runs are missing is "not judged", saying why; a smoke run (the quick profile) gives none.
A part and the rule that decides a verdict from the parts are in decision.py; this module states the claims
and judges them into the claims table.

Tests, by the kind of claim:
- equality ("the same accuracy"): two one-sided tests (TOST) on each pair against EQUIVALENCE_MARGIN; all
  pairs must pass (an intersection-union test); a pair shown outside the margin (Holm over the pairs)
  contradicts.
- order and "better": one-sided tests over seeds, Holm-corrected across the pairs a claim makes.
- thresholds ("< 1 point", "> 10 % more time", ">= 2x"): on the 95 % confidence interval of the difference
  or ratio: entirely on the claimed side supports, entirely on the other side contradicts.
Accuracy pairs are paired over seeds (paired t) where the pairing is real: both sides trained the same seeds
in the same runs, so a seed fixed what they share (split, data order, the shared layers' initialization,
dropout's stream; tests/test_train.py checks it); else Welch. The row names the test and the pairing's gain.
Time claims are judged on core/timing.py's training steps in turns with torch's own layers (what the reports
ran), paired by round: the precise measurement of what a layer costs, free of the data loading and evaluation
that cost every variant alike and pull every ratio towards 1. The reports' own kind (whole epochs through their
DataLoader, in turns: the epoch_timing table) is shown in the note, and the scorecard scores the published
ratios on it; lenet_lib's fast path is shown beside them, never judged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from lenet_lib.analysis.stats import ALPHA, Estimate
from lenet_lib.analysis.tidy import TABLES, Tables, protocol_rows, table_of
from lenet_lib.analysis.time_ratios import (SHOWN_IMPLEMENTATION, forward_ratio, step_ratio, timing_log_ratios,
                                           timing_ratio)
from lenet_lib.summary.decision import (CONTRADICTED, INCONCLUSIVE, SUPPORTED, Judgement, Part, accuracy_difference,
                                     decide, seed_test)

NOT_JUDGED, SMOKE = "not judged", "smoke run — no verdicts"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
EQUIVALENCE_MARGIN = 0.002      # "the same accuracy": within 0.2 accuracy points
STEPS = ("training-step time in turns, torch's layers (the precise measurement; whole epochs with the "
         "reports' DataLoader, their kind, in the note)")


# ---------------------------------------------------------------- the claims
@dataclass(frozen=True)
class Claim:
    report: str
    text: str
    protocol: str           # the preset whose runs may judge it
    notebook: str           # the notebook of those runs
    dataset: str
    check: object           # (rows, tables of the same runs) -> Judgement, or None when data is missing
    needs: str              # what the check needs, said when it is missing

    @property
    def where(self) -> str:
        return f"preset {self.protocol} · {self.notebook} · {self.dataset}"


def _variants_present(rows, names) -> bool:
    return "variant" in rows and set(names) <= set(rows["variant"])


def r1_same_accuracy(rows, tables):
    variants = ["plain", "BN", "dropout", "BN+dropout"]
    if not _variants_present(rows, variants):
        return None
    estimates = {(a, b): accuracy_difference(rows, {"variant": a}, {"variant": b})
                 for a, b in combinations(variants, 2)}
    parts = [Part(f"{a} − {b}", e, "within", EQUIVALENCE_MARGIN, "points",
                  seed_test(f"TOST ({{t}}), margin ±{100 * EQUIVALENCE_MARGIN:.1f} points", e), family="pairs")
             for (a, b), e in estimates.items()]
    return decide(parts)


def r1_bn_better_after_epoch_1(rows, tables):
    if not _variants_present(rows, ["plain", "BN", "dropout", "BN+dropout"]):
        return None
    parts = [_better(f"{a} − {b}, epoch 1", accuracy_difference(rows, {"variant": a}, {"variant": b}, epoch=1),
                     "pairs") for a, b in (("BN", "plain"), ("BN+dropout", "dropout"))]
    return decide(parts)


def _better(label: str, estimate: Estimate, family: str = "", kind: str = "greater") -> Part:
    """An accuracy part "a − b > 0" (or < 0), one-sided over seeds; Holm within `family`."""
    return Part(label, estimate, kind, 0.0, "points", seed_test("one-sided {t}" + (", Holm" if family else ""),
                                                                estimate), family=family)


def _time_parts(timing, pairs, kind, threshold, family, test):
    """Ratio parts from the timing table: (label, where, versus) each."""
    parts = []
    for label, where, versus in pairs:
        estimate = timing_ratio(timing, where, versus)
        if estimate.n == 0:
            return None
        parts.append(Part(label, estimate, kind, threshold, "ratio", test, family=family))
    return parts


def _fast_path_note(timing, pairs, epoch_timing=None) -> str:
    """lenet_lib's fast path on the same steps, and the whole epochs of the reports' kind where measured."""
    shown, epochs, rounds = [], [], 0
    for label, where, versus in pairs:
        e = timing_ratio(timing, where, versus, SHOWN_IMPLEMENTATION)
        if e.n:
            shown.append(f"{label} {math.exp(e.value):.3f}x")
        logs = timing_log_ratios(epoch_timing if epoch_timing is not None else pd.DataFrame(), where, versus)
        if len(logs):
            epochs.append(f"{label} {math.exp(logs.mean()):.3f}x")
            rounds = len(logs)
    notes = [("lenet_lib's fast path, same measurement: " + ", ".join(shown)) if shown else "",
             (f"whole epochs with the reports' DataLoader ({rounds} rounds): " + ", ".join(epochs)) if epochs else ""]
    return "; ".join(n for n in notes if n)


def _timed(tables, pairs, kind, threshold, family, test):
    parts = _time_parts(tables.timing, pairs, kind, threshold, family, test)
    if parts is None:
        return None
    judgement = decide(parts)
    judgement.note = _fast_path_note(tables.timing, pairs, tables.epoch_timing)
    return judgement


def r1_plain_fastest(rows, tables):
    pairs = [(f"{v} / plain", {"variant": v}, {"variant": "plain"}) for v in ("BN", "dropout", "BN+dropout")]
    return _timed(tables, pairs, "greater", 0.0, "pairs",
                  f"{STEPS}, one-sided t on log ratios, Holm")


R2_ORDER = ["adam", "rmsprop", "adagrad", "sgd", "gd"]


def r2_optimizer_order(rows, tables):
    if "stage" in rows:
        rows = rows[rows["stage"] == "compare"]
    if "optimizer" not in rows or not set(R2_ORDER) <= set(rows["optimizer"]):
        return None
    parts = [_better(f"{a} − {b}", accuracy_difference(rows, {"optimizer": a}, {"optimizer": b}), "order")
             for a, b in zip(R2_ORDER, R2_ORDER[1:])]
    return decide(parts)


def r3_plain_best(rows, tables):
    if not _variants_present(rows, ["plain", "dropout", "BN+dropout"]):
        return None
    parts = [_better(f"plain − {v}", accuracy_difference(rows, {"variant": "plain"}, {"variant": v}), "pairs")
             for v in ("dropout", "BN+dropout")]
    return decide(parts)


def r3_conv_dropout_hurts(rows, tables):
    if not _variants_present(rows, ["plain", "dropout"]):
        return None
    return decide([_better("conv dropout − plain", accuracy_difference(rows, {"variant": "dropout"},
                                                                        {"variant": "plain"}), kind="less")])


def r4_bn_marginal_but_slower(rows, tables):
    if not _variants_present(rows, ["plain", "BN"]):
        return None
    gain = accuracy_difference(rows, {"variant": "BN"}, {"variant": "plain"})
    ci_test = seed_test("95 % CI ({t}) against the threshold", gain)
    parts = [Part("BN − plain", gain, "greater", 0.0, "points", ci_test, alpha=ALPHA / 2),
             Part("BN − plain", gain, "less", 0.01, "points", ci_test, alpha=ALPHA / 2)]
    pairs = [("BN / plain time", {"variant": "BN"}, {"variant": "plain"})]
    time_parts = _time_parts(tables.timing, pairs, "greater", math.log(1.10), "",
                             f"{STEPS}, 95 % CI against 1.10x")
    if time_parts is None:
        return None
    for part in time_parts:
        part.alpha = ALPHA / 2
    judgement = decide(parts + time_parts)
    judgement.note = _fast_path_note(tables.timing, pairs, tables.epoch_timing)
    return judgement


def _dropout_rates(rows) -> list[float]:
    return sorted(float(p) for p in rows.loc[rows["dropout"] > 0, "dropout"].unique()) if "dropout" in rows else []


def r4_dropout_cuts_time(rows, tables):
    rates = _dropout_rates(rows)
    if not rates:
        return None
    pairs = [(f"dropout p={p:g} / plain", {"variant": "dropout", "dropout": p}, {"variant": "plain"})
             for p in rates]
    return _timed(tables, pairs, "less", 0.0, "rates",
                  f"{STEPS}, one-sided t on log ratios, Holm")


def r4_higher_p_faster_small_cost(rows, tables):
    rates = _dropout_rates(rows)
    if len(rates) < 2:
        return None
    low, high = rates[0], rates[-1]
    timing = tables.timing
    pairs = [(f"{v} p={high:g} / p={low:g} time", {"variant": v, "dropout": high}, {"variant": v, "dropout": low})
             for v in ("dropout", "BN+dropout")]
    time_parts = _time_parts(timing, pairs, "less", 0.0, "time",
                             f"{STEPS}, one-sided t on log ratios, Holm")
    if time_parts is None:
        return None
    costs = {v: accuracy_difference(rows, {"variant": v, "dropout": low}, {"variant": v, "dropout": high})
             for v in ("dropout", "BN+dropout")}
    cost = [Part(f"{v} accuracy p={low:g} − p={high:g} (< 2 points)", e, "less", 0.02, "points",
                 seed_test("95 % CI ({t}) against the threshold", e), alpha=ALPHA / 2) for v, e in costs.items()]
    judgement = decide(time_parts + cost)
    judgement.note = _fast_path_note(timing, pairs, tables.epoch_timing)
    return judgement


R5_BATCH_SIZES = (16, 32, 64, 128)     # R5 l.62-66: the batch sizes it trained at


def r5_framework_faster(rows, tables):
    """R5 l.290: training and feed-forward time. Forward: one image, per layer (R5 l.28); training: a step
    at each of R5's batch sizes; NumPy against torch's own layers, in turns, each ratio's CI above 2x."""
    forward = forward_ratio(tables.forward_times)
    steps = {b: step_ratio(tables.step_times, b) for b in R5_BATCH_SIZES}
    if forward.n == 0 or any(e.n == 0 for e in steps.values()):
        return None
    return decide([Part("NumPy / torch forward time per image", forward, "greater", math.log(2.0), "ratio",
                        "per-layer forward times in turns, 95 % CI against 2x", alpha=ALPHA / 2)]
                  + [Part(f"NumPy / torch training step, batch {b}", e, "greater", math.log(2.0), "ratio",
                          "training steps in turns, 95 % CI against 2x, Holm over the batch sizes",
                          family="training", alpha=ALPHA / 2) for b, e in steps.items()])


def r5_batch_64_best(rows, tables):
    if "arch" in rows:
        rows = rows[rows["arch"] == "lenet5"]
    if "batch_size" not in rows or not {16, 32, 64, 128} <= set(rows["batch_size"]):
        return None
    parts = [_better(f"batch 64 − batch {b}", accuracy_difference(rows, {"batch_size": 64}, {"batch_size": b}),
                     "batches") for b in (16, 32, 128)]
    return decide(parts)


_GRID4 = "the four BN x dropout variants"
CLAIMS = [
    Claim("R1", "All four BN/dropout variants reach the same final accuracy", "R1", "bn_dropout_grid", "mnist",
          r1_same_accuracy, _GRID4),
    Claim("R1", "BN variants are better after the first epoch", "R1", "bn_dropout_grid", "mnist",
          r1_bn_better_after_epoch_1, _GRID4),
    Claim("R1", "The plain network trains fastest", "R1", "bn_dropout_grid", "mnist", r1_plain_fastest,
          "the timing table of the four variants"),
    Claim("R2", "Adam is best, then RMSprop, AdaGrad, SGD, GD (part I)", "R2", "optimizers", "mnist",
          r2_optimizer_order, "adam, rmsprop, adagrad, sgd and gd"),
    Claim("R3", "On CIFAR-10 the plain network is best", "R3", "bn_dropout_grid", "cifar10", r3_plain_best,
          "plain, conv-dropout and conv-dropout+BN models"),
    Claim("R3", "Dropout after a conv layer hurts (CIFAR-10)", "R3", "bn_dropout_grid", "cifar10",
          r3_conv_dropout_hurts, "plain and conv-dropout models"),
    Claim("R4", "BN improves accuracy marginally (< 1 point) at > 10 % more training time", "R4", "dropout_sweep",
          "mnist", r4_bn_marginal_but_slower, "baseline and BN models and their timing table"),
    Claim("R4", "Dropout alone cuts training time", "R4", "dropout_sweep", "mnist", r4_dropout_cuts_time,
          "dropout models and their timing table"),
    Claim("R4", "Higher dropout p trains faster at a small accuracy cost (< 2 points)", "R4", "dropout_sweep",
          "mnist", r4_higher_p_faster_small_cost, "two or more dropout rates and their timing table"),
    Claim("R5", "The framework is several times (>= 2x) faster than NumPy", "R5", "numpy_vs_torch", "mnist",
          r5_framework_faster, "the per-layer forward times and the training-step times at batch 16-128"),
    Claim("R5", "Batch 64 gives the best test accuracy", "R5", "batch_size", "mnist", r5_batch_64_best,
          "LeNet-5 at batch sizes 16, 32, 64 and 128"),
]
COLUMNS = ["report", "claim", "protocol", "verdict", "n", "effect (95 % CI)", "test", "pairing", "to decide",
           "note"]


def sample_sizes(parts: list[Part]) -> str:
    """e.g. "3 seeds; 30 rounds": the smallest group behind the claim's accuracy and its timing parts."""
    seeds = [p.estimate.n for p in parts if p.scale == "points"]
    rounds = [p.estimate.n for p in parts if p.scale == "ratio"]
    text = [f"{min(seeds)} seeds" for _ in seeds[:1]] + [f"{min(rounds)} rounds" for _ in rounds[:1]]
    return "; ".join(text)


def pairing(parts: list[Part]) -> str:
    """The pairing over seeds of a claim's accuracy parts: "r = 0.60, 2.4x fewer seeds" for one pair (how
    many times the seeds Welch's test would need for the same precision), the ranges over several pairs;
    pairs tested with Welch say so. "" for a claim without accuracy parts."""
    seeded = list({id(p.estimate): p.estimate for p in parts if p.scale == "points"}.values())
    paired = [e for e in seeded if not math.isnan(e.gain)]
    text = []
    if len(paired) == 1:
        text.append(paired[0].pairing())
    elif paired:
        r = [e.r for e in paired if not math.isnan(e.r)]
        low, high = min(e.gain for e in paired), max(e.gain for e in paired)
        gains = (f"{low:.1f}x to {high:.1f}x fewer seeds" if low >= 1 else
                 f"{1 / low:.1f}x more to {high:.1f}x fewer seeds" if high >= 1 else
                 f"{1 / high:.1f}x to {1 / low:.1f}x more seeds")
        r_text = f"r = {min(r):.2f} to {max(r):.2f}" if r else "r = n/a"
        text.append(f"{r_text}, {gains} ({len(paired)} pairs)")
    welch = sum(not e.paired for e in seeded)
    if welch:
        text.append(f"Welch for {welch} pair{'s' if welch > 1 else ''}: seeds not shared")
    return "; ".join(text)


def judge_claim(claim: Claim, tables: Tables, protocol: str | None) -> Judgement:
    rows = protocol_rows(tables.results, claim.notebook, protocol, claim.dataset)
    if rows.empty:
        where = f"runs of preset {claim.protocol}" if protocol else "runs"
        return Judgement(NOT_JUDGED, note=f"no {where} of {claim.notebook} on {claim.dataset} in this report")
    scoped = Tables(rows, *(table_of(getattr(tables, name), claim.notebook, protocol) for name in TABLES))
    judgement = claim.check(rows, scoped)
    if judgement is None:
        return Judgement(NOT_JUDGED, note=f"needs {claim.needs} ({claim.notebook}, preset {claim.protocol})")
    return judgement


def judge(tables: Tables | pd.DataFrame, reports=None, *, smoke: bool = False, skipped: dict | None = None,
          any_protocol: bool = False) -> pd.DataFrame:
    """One row per claim (optionally only the given reports), columns COLUMNS.

    smoke: a quick-profile report; the numbers are computed, the verdict says "smoke run — no verdicts".
    skipped: {preset: why} for presets whose runs could not run here (e.g. no CIFAR-10).
    any_protocol: judge whatever runs are given (a notebook looking at its own run), not only preset runs.
    """
    tables = tables if isinstance(tables, Tables) else Tables(tables)
    rows = []
    for claim in CLAIMS:
        if reports and claim.report not in reports:
            continue
        if (skipped or {}).get(claim.protocol):
            judgement = Judgement(NOT_JUDGED, note=skipped[claim.protocol])
        else:
            judgement = judge_claim(claim, tables, None if any_protocol else claim.protocol)
        verdict = SMOKE if smoke and judgement.verdict in VERDICTS else judgement.verdict
        parts = judgement.parts
        rows.append({"report": claim.report, "claim": claim.text, "protocol": claim.where, "verdict": verdict,
                     "n": sample_sizes(parts),
                     "effect (95 % CI)": "; ".join(dict.fromkeys(p.effect() for p in parts)),
                     "test": "; ".join(dict.fromkeys(p.test for p in parts)), "pairing": pairing(parts),
                     "to decide": judgement.to_decide, "note": judgement.note})
    return pd.DataFrame(rows, columns=COLUMNS)
