"""`make bench`'s one-model table: every path timed, ratios against the reports' path, the time split."""
import json

import pandas as pd
import pytest
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


def test_a_tricks_gain_on_a_report_weighs_each_configuration_by_its_training_seconds():
    """Two configurations trained 60 s and 40 s of a 200-worker-second report. lean_steps off makes the
    first 1.5x slower (30 s more), the whole fast path off both 2x (100 s more): 15 % and 50 % of the report,
    30 % and 100 % of its training; one_node off changes nothing and engine_free could act on neither."""
    from lenet_lib.bench import tricks
    mix = pd.DataFrame({"config_seconds": [60.0, 40.0]})
    seconds = {"on": [1.0, 1.0], "lean_steps": [1.5, 1.0], "one_node": [1.0, 1.0], tricks.WHOLE_PATH: [2.0, 2.0]}
    times = pd.DataFrame([{"round": r, "config": c, "variant": v, "seconds": s[c]}
                          for r in (1, 2) for v, s in seconds.items() for c in (0, 1)])
    table = tricks.gain_table(mix, 200.0, times).set_index("trick")
    assert table.loc["lean_steps", "gain_on_report"] == pytest.approx(0.15)
    assert table.loc["lean_steps", "gain_on_training"] == pytest.approx(0.30)
    assert table.loc[tricks.WHOLE_PATH, "gain_on_report"] == pytest.approx(0.50)
    assert table.loc["engine_free", "gain_on_report"] == 0 and table.loc["one_node", "gain_on_report"] == 0
    assert table.loc["lean_steps", "against_3pct"] == "at least 3 %"
    assert table.loc["one_node", "against_3pct"] == "under 3 %"


def test_the_trick_table_reads_a_reports_outputs_and_times_each_trick_that_can_act(mnist_small, tmp_path):
    """A report of one run (an R1-like BN + dropout model and an Adam one): the mix has a row per
    configuration with its spec, and each is timed with the tricks that can act on it off, one at a time."""
    from dataclasses import replace
    from lenet_lib.bench import tricks
    from lenet_lib.core.specs import TrainSpec
    from lenet_lib.core.train import train
    r1 = TrainSpec(bn=True, dropout=0.5, optimizer="momentum", lr=0.05, momentum=0.9, epochs=1, batch_size=128)
    r2 = TrainSpec(activation="tanh", optimizer="rmsprop", lr=1e-3, epochs=1, batch_size=64)
    specs = (r1, replace(r1, seed=1), r2)
    rows = pd.concat([train(s, mnist_small, device="cpu", progress=False).history for s in specs])
    run = tmp_path / "runs" / "nb" / "abc"
    run.mkdir(parents=True)
    rows.to_parquet(run / "results.parquet")
    (tmp_path / "index.json").write_text(json.dumps({"runs": [
        {"notebook": "nb", "run_id": "abc", "status": "ok", "seconds": 100.0}]}))
    mix, worker_seconds = tricks.report_mix(tmp_path)
    assert worker_seconds == 100.0 and len(mix) == 2 and mix["config_seconds"].sum() == pytest.approx(
        rows["train_seconds"].sum())
    momentum = mix.index[mix["optimizer"] == "momentum"][0]
    assert tricks.spec_of(mix.loc[momentum]).columns() == r1.columns()
    times = tricks.time_tricks(mix, rounds=1, calls=1, cover=1.0)
    variants = times.groupby("config")["variant"].apply(set).to_dict()
    assert variants[momentum] == {"on", *tricks.switches.ON, tricks.WHOLE_PATH}
    assert variants[1 - momentum] == {"on", "one_node", "engine_free", tricks.WHOLE_PATH}   # rmsprop: no lean step
    with pytest.raises(FileNotFoundError, match="run `make report` first"):
        tricks.report_mix(tmp_path / "nothing")
