"""The fair timing measurement: variants in turns, ratios within rounds, confidence intervals that cover."""
import math

import numpy as np
import pytest
import threadpoolctl

from lenet_lib.analysis import stats
from lenet_lib.core import timing
from lenet_lib.core.specs import TrainSpec

# a few milliseconds a call, so that scheduler jitter on a shared VM is small against it
MATRIX = np.random.default_rng(0).normal(size=(200, 200))


def work():
    for _ in range(8):
        MATRIX @ MATRIX


def twice_the_work():
    work()
    work()


def test_a_known_cost_ratio_lands_within_its_confidence_interval():
    # one BLAS thread: two threads on two cores, one of them busy with something else, wait on each other
    # and the ratio of the costs drowns in that waiting
    with threadpoolctl.threadpool_limits(1):
        table = timing.time_in_turns({"once": work, "twice": twice_the_work}, rounds=40, calls=3, warmup=2,
                                     progress=False)
    assert len(table) == 80 and set(table["round"]) == set(range(1, 41))
    logs = stats.paired_log_ratios(table, "name", "seconds", "once")
    estimate = stats.mean_estimate(logs["log_ratio"])
    low, high = (math.exp(x) for x in estimate.ci(0.999))
    assert low <= 2.0 <= high, (low, high)
    low, high = (math.exp(x) for x in estimate.ci(0.95))
    assert high / low < 1.3, (low, high)          # narrow enough to tell 2x from 1.5x or 2.6x


def test_turns_are_shuffled_and_warmup_dropped():
    calls = []
    table = timing.time_in_turns({name: (lambda n=name: calls.append(n)) for name in "abc"}, rounds=4,
                                 calls=1, warmup=1, seed=3, progress=False)
    assert len(calls) == 15 and len(table) == 12                     # 5 rounds run, the first dropped
    orders = {tuple(calls[i:i + 3]) for i in range(0, 15, 3)}
    assert len(orders) > 1                                            # not always the same order


@pytest.mark.parametrize("bad, message", [
    (dict(rounds=0), "rounds=0 is not valid"), (dict(warmup=-1), "warmup=-1 is not valid"),
    (dict(functions={}), "functions is empty")])
def test_bad_timing_arguments_are_refused(bad, message):
    arguments = {"functions": {"a": work}, **bad}
    with pytest.raises(ValueError, match=message):
        timing.time_in_turns(progress=False, **arguments)


def test_time_variants_times_every_variant_and_implementation(mnist_small):
    variants = {"plain": TrainSpec(), "BN": TrainSpec(bn=True), "dropout": TrainSpec(dropout=0.5)}
    table = timing.time_variants(variants, mnist_small, rounds=3, calls=2, warmup=1, progress=False)
    assert len(table) == 3 * 2 * 3
    assert set(table["label"]) == set(variants) and set(table["implementation"]) == {"torch", "lenet_lib"}
    assert (table["seconds"] > 0).all() and (table["threads"] >= 1).all()
    assert table.loc[table["label"] == "BN", "bn"].all() and (table.loc[table["label"] == "dropout", "dropout"] == 0.5).all()
    with pytest.raises(ValueError, match="implementation='numpy' is not valid"):
        timing.time_variants(variants, mnist_small, implementations=("numpy",), progress=False)


def test_time_variants_times_each_batch_size_on_its_own_batches_and_per_image(mnist_small):
    """Variants of different batch sizes (the batch-size sweep): each steps at its own batch size, and
    image_seconds compares them per image, as epochs over the same images do."""
    from lenet_lib.analysis import time_ratios
    variants = {"batch 16": TrainSpec(batch_size=16), "batch 64": TrainSpec(batch_size=64)}
    table = timing.time_variants(variants, mnist_small, rounds=3, calls=2, warmup=1, progress=False)
    assert dict(zip(table["label"], table["batch_size"])) == {"batch 16": 16, "batch 64": 64}
    assert np.allclose(table["image_seconds"] * table["batch_size"], table["seconds"])
    table = table.assign(run_id="one run")          # as results.save_table stores it
    per_epoch = time_ratios.time_ratio_table(table, {"label": "batch 64"}, value="image_seconds")
    per_step = time_ratios.time_ratio_table(table, {"label": "batch 64"})
    for implementation in ("torch", "lenet_lib"):
        epoch_ratio, step_ratio = (t.set_index(["implementation", "label"]).loc[(implementation, "batch 16"), "ratio"]
                                   for t in (per_epoch, per_step))
        assert math.isclose(epoch_ratio, step_ratio * 4, rel_tol=1e-9)     # 4x the steps of a quarter the size
    assert (per_epoch["us_per_image"] > 0).all()
    with pytest.raises(ValueError, match="batch_size=9999 is not valid for timing on"):
        timing.time_variants({"huge": TrainSpec(batch_size=9999)}, mnist_small, progress=False)


def test_time_epochs_runs_every_variant_once_a_round_in_shuffled_turns(mnist_small):
    """The reports' kind: one (fraction of an) epoch per variant and round through the reports' DataLoader,
    in an order shuffled per round; one row per variant x round."""
    variants = {"plain": TrainSpec(), "BN": TrainSpec(bn=True), "dropout": TrainSpec(dropout=0.5, batch_size=64)}
    table = timing.time_epochs(variants, mnist_small, rounds=4, fraction=0.1, warmup_batches=1, progress=False)
    assert len(table) == 4 * 3 and list(table["round"]) == [r for r in range(1, 5) for _ in range(3)]
    for _, one_round in table.groupby("round"):
        assert sorted(one_round["label"]) == sorted(variants) and list(one_round["position"]) == [1, 2, 3]
    assert len({tuple(r["label"]) for _, r in table.groupby("round")}) > 1      # not always the same order
    batches = table.drop_duplicates("label").set_index("label")
    # 2000 training images: 16 batches of 128 (10 % -> 2), 32 of 64 (-> 3); 1000 test images at 100 (-> 1)
    assert dict(batches["train_batches"]) == {"plain": 2, "BN": 2, "dropout": 3}
    assert (table["test_batches"] == 1).all() and (table["fraction"] == 0.1).all()
    assert np.allclose(table["seconds"], table["train_seconds"] + table["eval_seconds"])
    assert (table["eval_seconds"] > 0).all() and (table["train_seconds"] > 0).all()
    assert table.loc[table["label"] == "BN", "bn"].all() and (batches.loc["dropout", "batch_size"] == 64)
    untested = timing.time_epochs({"plain": TrainSpec()}, mnist_small, rounds=1, fraction=0.1, evaluate=False,
                                  progress=False)
    assert (untested["test_batches"] == 0).all() and np.allclose(untested["seconds"], untested["train_seconds"])


@pytest.mark.parametrize("bad, message", [
    (dict(fraction=0), "fraction=0 is not valid"), (dict(fraction=1.5), "fraction=1.5 is not valid"),
    (dict(rounds=0), "rounds=0 is not valid"), (dict(evaluate="yes"), "evaluate='yes' is not valid"),
    (dict(variants={}), "variants is empty")])
def test_bad_epoch_timing_arguments_are_refused_before_any_work(mnist_small, bad, message):
    arguments = {"variants": {"plain": TrainSpec()}, **bad}
    with pytest.raises(ValueError, match=message):
        timing.time_epochs(data=mnist_small, progress=False, **arguments)


@pytest.mark.parametrize("bad, message", [
    ({"epoch_timing_rounds": -1}, "epoch_timing_rounds=-1 is not valid; expected an integer >= 0"),
    ({"epoch_timing_rounds": 1.5}, "epoch_timing_rounds=1.5 is not valid"),
    ({"epoch_timing_fraction": 0.0}, r"epoch_timing_fraction=0.0 is not valid; expected a number in \(0.0, 1.0\]"),
    ({"epoch_timing_fraction": 2}, "epoch_timing_fraction=2 is not valid"),
    ({"epoch_timing_eval": "no"}, "epoch_timing_eval='no' is not valid; expected True or False")])
def test_epoch_timing_parameters_are_checked(bad, message):
    from lenet_lib.base.validate import check_parameters
    check_parameters({"epoch_timing_rounds": 0, "epoch_timing_fraction": 0.25, "epoch_timing_eval": False})
    with pytest.raises(ValueError, match=message):
        check_parameters(bad)


def test_report_loaders_are_the_reports_data_path():
    """Per-image transforms in DataLoaders: R1's batch 128 shuffled and test batch 100; 32x32 by padding or
    resizing; standardised, centred or [0, 1] inputs."""
    from lenet_lib.core.data import report_loaders
    train, test = report_loaders("mnist", batch_size=128, train_size=300, test_size=250)
    x, y = next(iter(train))
    assert x.shape == (128, 1, 28, 28) and y.shape == (128,) and len(train) == 3 and len(test) == 3
    assert next(iter(test))[0].shape == (100, 1, 28, 28) and x.min() < -0.4       # standardised: below 0
    padded, _ = report_loaders("mnist", batch_size=8, train_size=8, input_size=32, normalize="unit")
    x, _ = next(iter(padded))
    assert x.shape == (8, 1, 32, 32) and x.min() >= 0 and x.max() <= 1 and (x[:, :, :2] == 0).all()
    resized, _ = report_loaders("mnist", batch_size=8, train_size=8, input_size=32, resize="interpolate")
    assert next(iter(resized))[0].shape == (8, 1, 32, 32)
    with pytest.raises(ValueError, match="normalize='none' is not valid"):
        report_loaders("mnist", normalize="none")


def test_a_time_figures_timing_key_is_checked():
    from lenet_lib.running.checks import ConfigError
    from lenet_lib.running.published import _check_figures
    figure = {"figure": "BN / plain", "value": 94.86, "reference": 84.17, "metric": "time_ratio",
              "where": {"variant": "BN"}, "versus": {"variant": "plain"}}
    assert _check_figures("R4", [{**figure, "timing": "steps"}, figure])      # epochs by default
    with pytest.raises(ConfigError, match="timing='wall' is not valid; only a time_ratio figure takes it, one of"):
        _check_figures("R4", [{**figure, "timing": "wall"}])
    with pytest.raises(ConfigError, match="timing='epochs' is not valid"):
        _check_figures("R4", [{"figure": "acc", "value": 0.99, "metric": "test_acc", "timing": "epochs"}])
