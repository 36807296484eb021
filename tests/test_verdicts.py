"""Verdicts (three-valued, judged under each claim's own protocol) and the reproduction scorecard, on
frames whose answers are known by construction."""
import math

import numpy as np
import pandas as pd
import pytest

from lenet_lib.summary import scorecard
from lenet_lib.analysis import stats
from lenet_lib.summary import decision, verdicts
from lenet_lib.analysis.tidy import Tables

BASE = dict(train_loss=0.1, train_acc=0.9, val_loss=np.nan, val_acc=np.nan, test_loss=0.1, epoch_seconds=1.0,
            status="ok", dataset="mnist", conv_dropout=0.0)


def tidy_rows(notebook, protocol, rows, run_id="run"):
    return pd.DataFrame([{**BASE, "notebook": notebook, "run_id": run_id, "protocol": protocol, **r} for r in rows])


def grid(notebook="bn_dropout_grid", protocol="R1", effects=None, first_epoch=None, seeds=5, sd=0.0003,
         dataset="mnist", conv=False, rates=(0.5,), seed_offset=0):
    """The four BN x dropout variants x seeds x 2 epochs; effects / first_epoch: {variant: accuracy}."""
    effects = effects or {}
    first_epoch = first_epoch or {}
    rng, rows = np.random.default_rng(seed_offset), []
    for bn in (False, True):
        for p in (0.0, *rates):
            variant = {(False, False): "plain", (True, False): "BN", (False, True): "dropout",
                       (True, True): "BN+dropout"}[(bn, p > 0)]
            for seed in range(seeds):
                for epoch, acc in ((1, first_epoch.get(variant, 0.97)), (2, effects.get((variant, p),
                                                                                      effects.get(variant, 0.99)))):
                    rows.append(dict(model_id=f"{bn}-{p}-{seed}", seed=seed, epoch=epoch, bn=bn,
                                     dropout=0.0 if conv else p, conv_dropout=p if conv else 0.0,
                                     test_acc=acc + rng.normal(0, sd), dataset=dataset))
    return tidy_rows(notebook, protocol, rows)


def timing_rows(notebook, protocol, ratios, rounds=30, noise=0.01, base=0.005):
    """Training-step seconds per round, torch and lenet_lib: {(bn, dropout): ratio to plain}."""
    rng, rows = np.random.default_rng(1), []
    for r in range(1, rounds + 1):
        drift = 1 + 0.1 * math.sin(r)               # the machine's speed drifts; ratios within a round hold
        for (bn, p), ratio in {(False, 0.0): 1.0, **ratios}.items():
            for implementation in ("torch", "lenet_lib"):
                rows.append(dict(notebook=notebook, run_id="run", protocol=protocol, round=r, bn=bn, dropout=p,
                                 conv_dropout=0.0, implementation=implementation, label=f"{bn}-{p}",
                                 seconds=base * ratio * drift * math.exp(rng.normal(0, noise))))
    return pd.DataFrame(rows)


def verdict_of(tables, claim):
    table = verdicts.judge(tables).set_index("claim")
    return table.loc[claim]


SAME = "All four BN/dropout variants reach the same final accuracy"
BN_FIRST = "BN variants are better after the first epoch"
PLAIN_FASTEST = "The plain network trains fastest"


# ---------------------------------------------------------------- statistics
def test_difference_tost_and_units_needed_known_values():
    a, b = [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]
    e = stats.difference(a, b)
    assert e.value == -1.0 and e.se == pytest.approx(math.sqrt(2 / 3)) and e.df == pytest.approx(4.0)
    lo, hi = e.ci()
    assert (lo + hi) / 2 == pytest.approx(-1.0) and hi - lo == pytest.approx(2 * 2.776445 * math.sqrt(2 / 3), rel=1e-5)
    assert e.p_below(0.0) == pytest.approx(0.1439, abs=1e-4)         # P(T(4) > 1.2247), one-sided
    assert stats.tost(stats.difference([0.5, 0.5001, 0.4999], [0.5, 0.5002, 0.4998]), 0.01) < 0.001
    assert stats.tost(e, 0.5) > 0.5                                   # a difference of 1 is not within 0.5
    assert stats.outside_margin(e, 0.01) > 0.05                       # nor shown outside a tiny margin
    wide = stats.difference([0.0, 1.0], [0.0, 1.0])
    n = wide.units_needed(gap=0.5, alpha=0.05)
    assert n is not None and n > 2 and wide.units_needed(gap=0.25, alpha=0.05) > n   # smaller gaps need more
    assert wide.units_needed(gap=0.0, alpha=0.05) is None


def test_prediction_interval_and_factor():
    mean, sd, lo, hi = stats.prediction_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 * math.sqrt(1 + 1 / 3)
    assert (mean, sd) == (2.0, 1.0) and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert stats.prediction_factor(3) == pytest.approx(half)
    assert math.isnan(stats.prediction_interval([1.0])[2])


def test_paired_log_ratios_cancel_drift():
    table = pd.DataFrame({"v": ["a", "b"] * 3, "round": [1, 1, 2, 2, 3, 3], "s": [1, 2, 10, 20, 5, 10.0]})
    logs = stats.paired_log_ratios(table, "v", "s", "a")
    assert np.allclose(logs["log_ratio"], math.log(2))                # a 10x drift between rounds cancels


def test_paired_difference_is_scipys_paired_t_with_the_pairings_gain():
    from scipy import stats as sps
    a = np.array([0.981, 0.975, 0.990, 0.984, 0.979])
    b = a - np.array([0.002, 0.0015, 0.0025, 0.001, 0.002])      # b tracks a seed by seed
    e = stats.paired_difference(a, b)
    assert e.paired and e.n == 5 and e.df == 4 and e.value == pytest.approx(0.0018)
    assert e.p_above(0.0) == pytest.approx(sps.ttest_rel(a, b, alternative="greater").pvalue)
    assert e.r == pytest.approx(np.corrcoef(a, b)[0, 1]) and e.r > 0.99
    assert e.gain == pytest.approx((a.var(ddof=1) + b.var(ddof=1)) / (a - b).var(ddof=1))
    assert e.pairing() == f"r = {e.r:.2f}, {e.gain:.1f}x fewer seeds"
    assert stats.difference(a, b).p_above(0.0) > 0.3                # Welch sees the seeds' spread, not the pairs
    anti = stats.paired_difference([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert anti.r == pytest.approx(-1.0) and anti.pairing() == "r = -1.00, 2.0x more seeds"
    assert stats.tost(stats.paired_difference(a, a - 0.0001), 0.002) < 0.001        # paired TOST
    assert stats.paired_difference([1.0, np.nan, 3.0], [0.5, 2.0, 2.0]).n == 2       # a missing side drops the seed
    with pytest.raises(ValueError, match="one value per unit"):
        stats.paired_difference([1.0, 2.0], [1.0])


def seed_shared(rows, sd=0.004, seed=7):
    """rows with a per-seed offset shared by every variant of that seed (what common seeds give)."""
    offset = np.random.default_rng(seed).normal(0, sd, rows["seed"].max() + 1)
    return rows.assign(test_acc=rows["test_acc"] + offset[rows["seed"]])


def test_shared_seeds_are_paired_and_decide_what_welch_cannot():
    rows = seed_shared(grid(first_epoch={"BN": 0.972, "BN+dropout": 0.972, "plain": 0.970, "dropout": 0.970},
                            seeds=3))
    row = verdict_of(Tables(rows), BN_FIRST)
    assert row["verdict"] == decision.SUPPORTED, row.to_dict()
    assert row["test"] == "one-sided paired t, Holm" and "fewer seeds (2 pairs)" in row["pairing"]
    low_gain = float(row["pairing"].split(", ")[1].split("x")[0])
    assert low_gain > 10, row["pairing"]                                      # shared seed effects cancel
    # the same numbers with each BN model on a seed no plain model ran: no pairs, Welch, undecided
    unpaired = rows.assign(seed=np.where(rows["bn"], rows["seed"] + 100, rows["seed"]))
    row = verdict_of(Tables(unpaired), BN_FIRST)
    assert row["verdict"] == decision.INCONCLUSIVE and row["test"] == "one-sided Welch, Holm"
    assert row["pairing"] == "Welch for 2 pairs: seeds not shared"
    same = verdict_of(Tables(rows), SAME)
    assert same["test"] == "TOST (paired t), margin ±0.2 points" and "(6 pairs)" in same["pairing"]


# ---------------------------------------------------------------- R1
def test_true_equality_is_supported_and_a_spread_contradicts():
    supported = verdict_of(Tables(grid()), SAME)
    assert supported["verdict"] == decision.SUPPORTED, supported.to_dict()
    assert "TOST" in supported["test"] and supported["n"] == "5 seeds" and "[" in supported["effect (95 % CI)"]
    spread = verdict_of(Tables(grid(effects={"BN+dropout": 0.985})), SAME)
    assert spread["verdict"] == decision.CONTRADICTED                 # 0.5 points apart, shown beyond 0.2


def test_clear_reversal_is_contradicted_and_two_noisy_seeds_inconclusive():
    better = grid(first_epoch={"BN": 0.98, "BN+dropout": 0.98, "plain": 0.96, "dropout": 0.96})
    assert verdict_of(Tables(better), BN_FIRST)["verdict"] == decision.SUPPORTED
    reversed_ = grid(first_epoch={"BN": 0.95, "BN+dropout": 0.95, "plain": 0.97, "dropout": 0.97})
    assert verdict_of(Tables(reversed_), BN_FIRST)["verdict"] == decision.CONTRADICTED
    noisy = grid(first_epoch={"BN": 0.972, "BN+dropout": 0.972}, seeds=2, sd=0.004)
    row = verdict_of(Tables(noisy), BN_FIRST)
    assert row["verdict"] == decision.INCONCLUSIVE and "seeds per variant (now 2)" in row["to decide"]


def test_time_claims_come_from_the_timing_table_with_torchs_layers():
    rows = grid()
    slower = timing_rows("bn_dropout_grid", "R1", {(True, 0.0): 1.14, (False, 0.5): 1.03, (True, 0.5): 1.17})
    row = verdict_of(Tables(rows, timing=slower), PLAIN_FASTEST)
    assert row["verdict"] == decision.SUPPORTED and "30 rounds" in row["n"] and "lenet_lib" in row["note"]
    faster_dropout = timing_rows("bn_dropout_grid", "R1", {(True, 0.0): 1.14, (False, 0.5): 0.9, (True, 0.5): 1.1})
    assert verdict_of(Tables(rows, timing=faster_dropout), PLAIN_FASTEST)["verdict"] == decision.CONTRADICTED
    # epoch wall clocks never decide: without the timing table the claim is not judged
    assert verdict_of(Tables(rows), PLAIN_FASTEST)["verdict"] == verdicts.NOT_JUDGED
    # whole epochs of the reports' kind are shown in the note, never judged: steps decide
    epochs = epoch_rows({(True, 0.0): math.log(0.8), (False, 0.5): math.log(0.8), (True, 0.5): math.log(0.8)},
                        0.01, notebook="bn_dropout_grid", protocol="R1")
    row = verdict_of(Tables(rows, timing=slower, epoch_timing=epochs), PLAIN_FASTEST)
    assert row["verdict"] == decision.SUPPORTED and "the precise measurement" in row["test"]
    assert "whole epochs with the reports' DataLoader (8 rounds): BN / plain 0.800x" in row["note"]
    assert verdict_of(Tables(rows, epoch_timing=epochs), PLAIN_FASTEST)["verdict"] == verdicts.NOT_JUDGED


def test_only_runs_under_the_claims_own_protocol_judge_it():
    exploratory = grid(protocol=None)
    row = verdict_of(Tables(exploratory), SAME)
    assert row["verdict"] == verdicts.NOT_JUDGED and "preset R1" in row["note"]
    other_preset = grid(protocol="R2")                                 # R2 part II's runs of the same notebook
    assert verdict_of(Tables(other_preset), SAME)["verdict"] == verdicts.NOT_JUDGED
    assert verdicts.judge(Tables(exploratory), any_protocol=True).set_index("claim").loc[SAME, "verdict"] \
        == decision.SUPPORTED                                          # a notebook judging its own run


def test_smoke_runs_give_no_verdicts_and_skipped_presets_say_why():
    table = verdicts.judge(Tables(grid()), smoke=True).set_index("claim")
    assert table.loc[SAME, "verdict"] == verdicts.SMOKE and table.loc[SAME, "effect (95 % CI)"]
    reason = "needs CIFAR-10 (cifar10): /data/cifar-10-batches-py does not exist"
    table = verdicts.judge(Tables(grid()), skipped={"R3": reason})
    r3 = table[table["report"] == "R3"]
    assert len(r3) == 2 and (r3["verdict"] == verdicts.NOT_JUDGED).all() and (r3["note"] == reason).all()
    empty = verdicts.judge(Tables(pd.DataFrame()))
    assert len(empty) == len(verdicts.CLAIMS) and (empty["verdict"] == verdicts.NOT_JUDGED).all()


# ---------------------------------------------------------------- R2, R3
def test_r2_order_supported_contradicted_and_inconclusive():
    order = ["adam", "rmsprop", "adagrad", "sgd", "gd"]
    claim = "Adam is best, then RMSprop, AdaGrad, SGD, GD (part I)"

    def rows(accuracies, sd=0.0005, seeds=5):
        rng = np.random.default_rng(2)
        return Tables(tidy_rows("optimizers", "R2", [
            dict(model_id=f"{o}{s}", seed=s, epoch=5, optimizer=o, stage="compare", test_acc=a + rng.normal(0, sd))
            for o, a in zip(order, accuracies) for s in range(seeds)]))
    assert verdict_of(rows([0.99, 0.98, 0.97, 0.96, 0.90]), claim)["verdict"] == decision.SUPPORTED
    assert verdict_of(rows([0.99, 0.98, 0.97, 0.90, 0.96]), claim)["verdict"] == decision.CONTRADICTED
    assert verdict_of(rows([0.99, 0.9895, 0.97, 0.96, 0.90], sd=0.003, seeds=3), claim)["verdict"] \
        == decision.INCONCLUSIVE


def test_r3_claims_on_cifar10():
    worse = {"dropout": 0.50, "BN+dropout": 0.53, "plain": 0.62, "BN": 0.6}
    rows = Tables(grid("bn_dropout_grid", "R3", effects=worse, dataset="cifar10", conv=True, sd=0.005))
    table = verdicts.judge(rows, reports=["R3"]).set_index("claim")["verdict"]
    assert (table == decision.SUPPORTED).all()
    better = {"dropout": 0.66, "BN+dropout": 0.67, "plain": 0.62}
    rows = Tables(grid("bn_dropout_grid", "R3", effects=better, dataset="cifar10", conv=True, sd=0.005))
    assert (verdicts.judge(rows, reports=["R3"])["verdict"] == decision.CONTRADICTED).all()


# ---------------------------------------------------------------- R4
R4_BN = "BN improves accuracy marginally (< 1 point) at > 10 % more training time"
R4_DROPOUT = "Dropout alone cuts training time"
R4_RATE = "Higher dropout p trains faster at a small accuracy cost (< 2 points)"
RATES = (0.1, 0.2, 0.5, 0.8)


def r4(effects, ratios):
    return Tables(grid("dropout_sweep", "R4", effects=effects, rates=RATES),
                  timing=timing_rows("dropout_sweep", "R4", ratios))


def test_r4_bn_threshold_claim_on_confidence_intervals():
    slow_bn = {(True, 0.0): 1.2}
    assert verdict_of(r4({"BN": 0.995, "plain": 0.99}, slow_bn), R4_BN)["verdict"] == decision.SUPPORTED
    assert verdict_of(r4({"BN": 1.0, "plain": 0.98}, slow_bn), R4_BN)["verdict"] == decision.CONTRADICTED   # 2 points
    assert verdict_of(r4({"BN": 0.995, "plain": 0.99}, {(True, 0.0): 1.02}), R4_BN)["verdict"] \
        == decision.CONTRADICTED                                                   # +2 % time is not > 10 %
    at_threshold = verdict_of(r4({"BN": 0.995, "plain": 0.99}, {(True, 0.0): 1.10}), R4_BN)
    assert at_threshold["verdict"] == decision.INCONCLUSIVE and "decides it" in at_threshold["to decide"]


def test_r4_dropout_time_and_rate_claims():
    cheaper = {(False, p): 0.9 for p in RATES}
    assert verdict_of(r4({}, cheaper), R4_DROPOUT)["verdict"] == decision.SUPPORTED
    dearer = {(False, p): 1.05 for p in RATES}
    assert verdict_of(r4({}, dearer), R4_DROPOUT)["verdict"] == decision.CONTRADICTED
    falling = {**{(False, p): 1.0 - 0.1 * p for p in RATES}, **{(True, p): 1.2 - 0.1 * p for p in RATES}}
    small_cost = {("dropout", 0.8): 0.985, ("BN+dropout", 0.8): 0.985}
    assert verdict_of(r4(small_cost, falling), R4_RATE)["verdict"] == decision.SUPPORTED
    big_cost = {("dropout", 0.8): 0.96, ("BN+dropout", 0.8): 0.985}
    assert verdict_of(r4(big_cost, falling), R4_RATE)["verdict"] == decision.CONTRADICTED


# ---------------------------------------------------------------- R5
def forward_rows(ratio, repeats=20):
    rng, rows = np.random.default_rng(3), []
    for repeat in range(1, repeats + 1):
        for layer in ("c1_conv", "c1_act", "s2"):
            torch_s = 1e-5 * math.exp(rng.normal(0, 0.05))
            rows.append(dict(notebook="numpy_vs_torch", run_id="run", protocol="R5", layer=layer, repeat=repeat,
                             batch=1, numpy_s=torch_s * ratio * math.exp(rng.normal(0, 0.05)), torch_s=torch_s))
    return pd.DataFrame(rows)


def step_rows(ratios, rounds=20, noise=0.05):
    """numpy_vs_torch's step_times: NumPy / torch per training step, {batch size: ratio}."""
    rng, rows = np.random.default_rng(6), []
    for batch_size, ratio in ratios.items():
        for number in range(1, rounds + 1):
            torch_s = 1e-3 * batch_size * math.exp(rng.normal(0, noise))
            rows.append(dict(notebook="numpy_vs_torch", run_id="run", protocol="R5", batch_size=batch_size,
                             round=number, numpy_s=torch_s * ratio * math.exp(rng.normal(0, noise)),
                             torch_s=torch_s))
    return pd.DataFrame(rows)


def test_r5_framework_speed_and_batch_size():
    results = tidy_rows("numpy_vs_torch", "R5", [dict(model_id="m", seed=0, epoch=1, test_acc=0.9)])
    claim = "The framework is several times (>= 2x) faster than NumPy"
    fast_steps = step_rows({16: 6.0, 32: 5.0, 64: 4.0, 128: 3.5})

    def r5(forward, steps):
        return verdict_of(Tables(results, forward_times=forward, step_times=steps), claim)

    both = r5(forward_rows(6.0), fast_steps)
    assert both["verdict"] == decision.SUPPORTED
    assert "forward time per image" in both["effect (95 % CI)"] and "training step, batch 128: 3.5" in both[
        "effect (95 % CI)"]
    # each part alone can sink the claim: a slow forward pass, or training that is not 2x faster
    assert r5(forward_rows(0.8), fast_steps)["verdict"] == decision.CONTRADICTED
    assert r5(forward_rows(6.0), step_rows({16: 6.0, 32: 5.0, 64: 1.2, 128: 1.1}))["verdict"] == decision.CONTRADICTED
    near = r5(forward_rows(6.0), step_rows({16: 6.0, 32: 5.0, 64: 4.0, 128: 2.0}, rounds=4, noise=0.3))
    assert near["verdict"] == decision.INCONCLUSIVE and "timing rounds" in near["to decide"]
    # without the training-step table (or without one of R5's batch sizes) the claim is not judged
    assert r5(forward_rows(6.0), pd.DataFrame())["verdict"] == verdicts.NOT_JUDGED
    assert r5(forward_rows(6.0), step_rows({16: 6.0, 32: 5.0, 64: 4.0}))["verdict"] == verdicts.NOT_JUDGED
    rng = np.random.default_rng(4)
    batches = tidy_rows("batch_size", "R5", [
        dict(model_id=f"{a}{b}-{s}", seed=s, epoch=5, batch_size=b, arch=a,
             test_acc=(0.99 if b == 64 else 0.985) - (0.05 if a == "mlp" else 0) + rng.normal(0, 0.0005))
        for a in ("lenet5", "mlp") for b in (16, 32, 64, 128) for s in range(4)])
    assert verdict_of(Tables(batches), "Batch 64 gives the best test accuracy")["verdict"] == decision.SUPPORTED


# ---------------------------------------------------------------- the scorecard
def test_scorecard_prediction_intervals_on_synthetic_seeds():
    rng = np.random.default_rng(5)
    values = 0.99 + rng.normal(0, 0.001, 5)
    rows = tidy_rows("bn_dropout_grid", "R1", [dict(model_id=f"m{i}", seed=i, epoch=25, bn=False, dropout=0.0,
                                                    test_acc=v) for i, v in enumerate(values)])
    mean, sd = values.mean(), values.std(ddof=1)
    half = stats.prediction_factor(5) * sd

    def figure(value, **extra):
        return {"figure": "f", "value": value, "metric": "test_acc", "where": {"variant": "plain"}, **extra}
    protocols = {"R1": {"bn_dropout_grid": {"reading": "r", "published": [
        figure(mean + 0.9 * half), figure(mean + 1.1 * half), figure(mean - 10 * sd),
        figure(mean + half + 0.003, rounded=0.01), figure(mean + half + 0.003)]}}}
    card = scorecard.scorecard(Tables(rows), protocols)
    assert list(card["n"]) == [5] * 5
    assert card["result"][0] == scorecard.REPRODUCED
    assert card["result"][1].startswith(scorecard.NOT_REPRODUCED)
    distance = float(card["result"][2].split("(")[1].split(" sd")[0])
    assert distance == pytest.approx(-10, abs=0.05)
    low, high = (float(x) for x in card["95 % prediction interval"][0].strip("[]").split(", "))
    assert low == pytest.approx(mean - half, abs=1e-4) and high == pytest.approx(mean + half, abs=1e-4)
    # a rounded figure stands for the interval it rounds from: +-0.005 reaches into ours, the exact one not
    assert card["result"][3] == scorecard.REPRODUCED and card["result"][4].startswith(scorecard.NOT_REPRODUCED)


def epoch_rows(log_ratios: dict, sd: float, rounds: int = 8, notebook="dropout_sweep", protocol="R4"):
    """A whole-epoch timing table whose per-round log ratios to plain are exactly mean + sd * z, z a fixed
    standardised vector: tables of one mean ratio that differ only in their spread."""
    z = np.random.default_rng(3).normal(size=rounds)
    z = (z - z.mean()) / z.std(ddof=1)
    rows = []
    for r in range(rounds):
        drift = 1 + 0.2 * math.sin(r)           # the machine's speed between rounds: cancels within a round
        for (bn, p), log_ratio in {(False, 0.0): None, **log_ratios}.items():
            ratio = 1.0 if log_ratio is None else math.exp(log_ratio + sd * z[r])
            rows.append(dict(notebook=notebook, run_id="run", protocol=protocol, round=r + 1, bn=bn, dropout=p,
                             conv_dropout=0.0, label=f"{bn}-{p}", seconds=10.0 * drift * ratio))
    return pd.DataFrame(rows)


R4_DROPOUT_TIME = {"figure": "dropout p = 0.1 / baseline", "value": 78.28, "reference": 84.17,
                   "metric": "time_ratio", "where": {"variant": "dropout", "dropout": 0.1},
                   "versus": {"variant": "plain"}}     # 0.930x


def test_a_time_figure_does_not_flip_with_the_machines_load():
    """The same mean whole-epoch ratio (0.99x), measured on a quiet machine (sd 0.005 per round) and a loaded
    one (sd 0.03): a published 0.930x gets one result. With the day's spread alone as the interval it would
    read "not reproduced" quiet and "reproduced" loaded; one whole run's ratio varies by WHOLE_RUN_LOG_SD
    whatever our day's noise, which only adds our mean's uncertainty."""
    from lenet_lib.analysis.time_ratios import WHOLE_RUN_LOG_SD
    protocols = {"R4": {"dropout_sweep": {"published": [R4_DROPOUT_TIME]}}}
    results = {}
    for name, sd in (("quiet", 0.005), ("loaded", 0.03)):
        assert sd < WHOLE_RUN_LOG_SD
        epochs = epoch_rows({(False, 0.1): math.log(0.99)}, sd)
        card = scorecard.scorecard(Tables(grid("dropout_sweep", "R4", rates=(0.1,)), epoch_timing=epochs), protocols)
        results[name] = card.iloc[0]
        assert card["ours (mean)"][0] == "0.990x" and card["n"][0] == 8
        naive = stats.prediction_interval(np.log(epochs.query("dropout == 0.1")["seconds"].to_numpy()
                                                 / epochs.query("not bn and dropout == 0")["seconds"].to_numpy()))
        results[name + " naive"] = naive[2] <= math.log(0.930) <= naive[3]
    assert results["quiet"]["result"] == results["loaded"]["result"] == scorecard.REPRODUCED
    widths = {name: results[name]["high"] - results[name]["low"] for name in ("quiet", "loaded")}
    assert widths["loaded"] / widths["quiet"] < 1.03        # the day's noise enters only as our mean's / sqrt(n)
    assert (results["quiet naive"], results["loaded naive"]) == (False, True)    # the day's spread alone flips
    # a spread far above a whole run's widens the interval: a much noisier measurement says less
    noisy = scorecard.scorecard(Tables(grid("dropout_sweep", "R4", rates=(0.1,)),
                                       epoch_timing=epoch_rows({(False, 0.1): math.log(0.99)}, 0.12)), protocols)
    assert noisy["high"][0] - noisy["low"][0] > results["quiet"]["high"] - results["quiet"]["low"]
    assert noisy["result"][0] == scorecard.REPRODUCED
    # so noisy that our mean moves more than a run does (sd 0.3 over 8 rounds, as at load 7-15 here): not scored
    wild = scorecard.scorecard(Tables(grid("dropout_sweep", "R4", rates=(0.1,)),
                                      epoch_timing=epoch_rows({(False, 0.1): math.log(0.99)}, 0.3)), protocols)
    assert wild["result"][0].startswith("not scored: the whole-epoch timing is too noisy here")


def test_time_figures_are_scored_on_whole_epochs_with_the_step_timing_beside():
    steps = timing_rows("dropout_sweep", "R4", {(False, 0.1): 1.0}, noise=0.001)
    epochs = epoch_rows({(False, 0.1): math.log(0.80)}, 0.01)
    tables = Tables(grid("dropout_sweep", "R4", rates=(0.1,)), timing=steps, epoch_timing=epochs)
    figures = [R4_DROPOUT_TIME, {**R4_DROPOUT_TIME, "figure": "on steps", "timing": "steps"}]
    card = scorecard.scorecard(tables, {"R4": {"dropout_sweep": {"published": figures}}}).set_index("figure")
    on_epochs, on_steps = card.loc[R4_DROPOUT_TIME["figure"]], card.loc["on steps"]
    assert on_epochs["ours (mean)"] == "0.800x" and on_epochs["n"] == 8
    assert "scored on whole epochs" in on_epochs["note"] and "training steps in turns: 1.000x" in on_epochs["note"]
    assert on_steps["ours (mean)"] == "1.000x" and on_steps["n"] == 30
    assert "scored on training steps" in on_steps["note"] and "the reports' DataLoader: 0.800x" in on_steps["note"]
    assert on_steps["result"].startswith(scorecard.NOT_REPRODUCED)     # 0.930x against 1.000x, sd 0.001
    missing = scorecard.scorecard(Tables(tables.results, timing=steps), {"R4": {"dropout_sweep": {"published":
                                                                                  figures[:1]}}})
    assert missing["result"][0] == "not covered: no whole-epoch timing in this preset's runs (epoch_timing_rounds: 0)"
    assert "training steps in turns: 1.000x" in missing["note"][0]


def test_scorecard_ratios_parameters_and_missing_presets():
    timing = timing_rows("dropout_sweep", "R4", {(True, 0.0): 1.13})
    layers = pd.DataFrame({"notebook": "inside_lenet", "run_id": "run", "protocol": "R5", "model": "lenet5",
                           "layer": ["c1_conv", "c5"], "parameters": [156, 48120]})
    protocols = {
        "R4": {"dropout_sweep": {"published": [
            {"figure": "BN / baseline", "value": 94.86, "reference": 84.17, "metric": "time_ratio",
             "where": {"variant": "BN"}, "versus": {"variant": "plain"}},
            {"figure": "BN / baseline, far", "value": 200.0, "reference": 84.17, "metric": "time_ratio",
             "where": {"variant": "BN"}, "versus": {"variant": "plain"}}]}},
        "R5": {"inside_lenet": {"published": [
            {"figure": "c1", "value": 156, "metric": "parameters", "where": {"layer": "c1_conv"}},
            {"figure": "total", "value": 61706, "metric": "parameters", "where": {"model": "lenet5"}}]}},
        "R3": {"bn_dropout_grid": {"published": [{"figure": "plain", "value": 0.62, "metric": "test_acc"}]}}}
    epochs = timing[timing["implementation"] == "torch"].drop(columns="implementation")   # as time_epochs'
    card = scorecard.scorecard(Tables(grid("dropout_sweep", "R4"), timing=timing, layers=layers,
                                      epoch_timing=epochs), protocols,
                               skipped={"R3": "needs CIFAR-10 (cifar10): /d/cifar-10-batches-py does not exist"})
    result = card.set_index("figure")["result"]
    assert result["BN / baseline"] == scorecard.REPRODUCED
    assert card.set_index("figure").loc["BN / baseline", "published"].startswith("1.127x")
    assert result["BN / baseline, far"].startswith(scorecard.NOT_REPRODUCED)
    assert result["c1"] == scorecard.REPRODUCED
    assert result["total"] == f"{scorecard.NOT_REPRODUCED} (exactly 48,276 here)"
    assert result["plain"].startswith("not covered: needs CIFAR-10") and "cifar-10-batches-py" in result["plain"]
    counts = scorecard.tally(card)      # one reading each: the primary reading's rows are the figures
    assert {k: counts[k] for k in ("reproduced", "not reproduced", "not scored")} == {
        "reproduced": 2, "not reproduced": 2, "not scored": 1}
    assert (counts["figures"], counts[scorecard.UNDER_PRIMARY], counts[scorecard.UNDER_SOME]) == (5, 2, 2)
    # a smoke run shows its values but scores only what no scale changes: the parameter counts
    smoke = scorecard.scorecard(Tables(grid("dropout_sweep", "R4"), timing=timing, layers=layers,
                                       epoch_timing=epochs), protocols,
                                smoke=True).set_index("figure")
    assert list(smoke.loc[["BN / baseline", "BN / baseline, far"], "result"]) == [scorecard.SMOKE] * 2
    assert smoke.loc["BN / baseline", "ours (mean)"] == card.set_index("figure").loc["BN / baseline", "ours (mean)"]
    assert smoke.loc["c1", "result"] == scorecard.REPRODUCED and smoke.loc["total", "result"].startswith(
        scorecard.NOT_REPRODUCED)
    assert smoke.loc["plain", "result"].startswith("not covered")      # R3 not skipped here, but no rows


def test_an_accuracy_interval_that_holds_every_accuracy_is_not_scored():
    # two seeds that disagree (one trains, one is stuck at chance): t with 1 df spans all of [0, 1]
    figure = {"figure": "SGD test acc", "value": 0.9593, "metric": "test_acc"}
    result = scorecard.score(figure, pd.Series([0.98, 0.88]))
    assert result["result"] == ("not scored: our interval holds every accuracy from 0 to 1 (2 seeds that "
                                "disagree); more seeds")
    # the same figure with seeds that agree is scored
    assert scorecard.score(figure, pd.Series([0.958, 0.961, 0.960]))["result"] == scorecard.REPRODUCED
    assert scorecard.score(figure, pd.Series([0.90, 0.901, 0.902]))["result"].startswith(scorecard.NOT_REPRODUCED)
