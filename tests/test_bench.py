"""`make bench`'s one-model table: every path timed, ratios against the reports' path, the time split."""
import pandas as pd
import torch

from lenet_lib.bench import single as bench


def test_single_model_table_and_time_split(mnist_small):
    table = bench.single_model(1, 1280, torch.device("cpu"))
    assert list(table["path"]) == list(bench.PATHS)
    assert (table["images_per_s"] > 0).all() and (table["epochs_timed"] == 1).all()
    assert table["ratio_vs_reports"].iloc[0] == 1.0
    # which path is faster is a timing, `make bench`'s to say: on a loaded machine one epoch of 1,280 images
    # once read the data alone slower than reading and training on it


def test_time_split_says_where_the_epoch_goes():
    """1000 images: the reports' epoch 10 s, of which their DataLoaders 4 s, lenet_lib's epoch 2 s."""
    table = pd.DataFrame({"path": [bench.REPORTS, bench.DATA_ONLY, bench.LIBRARY],
                          "images_per_s_median": [100.0, 250.0, 500.0]})
    assert bench.time_split(table, 1000) == (
        "reports' epoch 10.00 s = DataLoaders 4.00 s + model 6.00 s (torch's layers, test set included); "
        "lenet_lib's epoch 2.00 s, 3.00x the reports' model part alone. Data at no cost and torch's layers "
        "would give 1.67x; 3x needs lenet_lib's epoch <= 3.33 s.")


def test_variant_table_times_both_layers_on_the_threads_asked_and_says_the_spread():
    """Two variants, a few rounds: a row each, on the thread count asked (and the process's restored after);
    the ratio is the geometric mean of the per-round ratios, so it lies inside its own CI."""
    before = torch.get_num_threads()
    variants = {name: bench.VARIANTS[name] for name in ("plain, batch 16", "sigmoid FC, batch 16 (R5)")}
    table = bench.variant_table(rounds=3, calls=2, variants=variants, threads=1)
    assert torch.get_num_threads() == before
    assert list(table["variant"]) == list(variants) and (table["threads"] == 1).all()
    assert (table["batch"] == 16).all()
    assert (table[["lenet_lib_images_per_s", "torch_images_per_s"]] > 0).all().all()
    assert ((table["ci_low"] <= table["ratio"]) & (table["ratio"] <= table["ci_high"])).all()
    line = bench.spread_line(table.assign(ratio=[1.5, 1.8]))
    assert line.startswith("lenet_lib / torch speed: min 1.50x (plain, batch 16), max 1.80x (sigmoid FC, batch 16 "
                           "(R5)), spread 20%")


def test_preset_spread_lines_cover_the_groups_present():
    table = pd.DataFrame({"variant": bench.PRESET_GROUPS["R5"] + ["plain"], "ratio": [2.0, 2.2, 3.0]})
    assert bench.preset_spread_lines(table) == [
        "  within R5's compared variants (sigmoid FC, batch 16 (R5), sigmoid FC, batch 64 (R5)): 2.00x to 2.20x, "
        "spread 10%"]
    assert all(set(labels) <= set(bench.VARIANTS) for labels in bench.PRESET_GROUPS.values())


def test_spread_interval_resamples_whole_rounds():
    """Constant per-round ratios 1.5x and 1.8x: every resample gives the spread 20 %. With noise, the interval
    holds the spread of the mean ratios, and spread_line reports it."""
    import numpy as np
    steady = pd.DataFrame({"a": [np.log(1.5)] * 6, "b": [np.log(1.8)] * 6}, index=range(1, 7))
    lo, hi = bench.spread_interval(steady)
    assert abs(lo - 0.2) < 1e-12 and abs(hi - 0.2) < 1e-12
    noisy = steady + np.random.default_rng(1).normal(0, 0.05, steady.shape)
    lo, hi = bench.spread_interval(noisy)
    point = np.exp(noisy.mean().max() - noisy.mean().min()) - 1
    assert lo < point < hi
    table = pd.DataFrame({"variant": ["a", "b"], "ratio": np.exp(noisy.mean()).to_list()})
    table.attrs["log_ratios"] = noisy
    assert f"(95 % CI {lo:.0%} to {hi:.0%}) (target" in bench.spread_line(table)
