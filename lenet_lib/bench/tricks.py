"""`make bench-tricks`: what each private-API trick of the fast path buys on a whole report, measured.

A report's worker time is its runs' seconds (index.json); the fast path's share of it is the training time of
its models (results.parquet's train_seconds, rows whose kernels are the fast path's), a sum over training
configurations. Each configuration that sets a step's cost (COST_FIELDS) gets training steps timed in turns
(core.timing.time_in_turns, one thread, as each of a report's kernels runs): every trick on, then one trick
off at a time (fast/switches.py: its public fallback runs), and the whole fast path off (torch's layers).
A trick's gain on the report, per round: sum over configurations of train_seconds x (seconds per step off /
on - 1), over the report's worker-seconds; its mean and 95 % t interval over rounds. Configurations are
timed from the costliest down until `cover` of the training time is; the rest count as gaining nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lenet_lib.analysis.stats import t_interval
from lenet_lib.bench.single import _random_images
from lenet_lib.core.specs import TrainSpec
from lenet_lib.core.timing import time_in_turns
from lenet_lib.core.train import accelerated, build_for, build_optimizer, one_model_step, set_determinism
from lenet_lib.fast import switches
from lenet_lib.fast.one_node import OneNodeSequential
from lenet_lib.fast.optim import is_lean

# the spec fields and data columns that set what one training step costs (not lr, seed, epochs, sizes)
COST_FIELDS = ["arch", "activation", "fc_activation", "pool", "bn", "bn_position", "bn_layers", "dropout",
               "dropout_at", "conv_dropout", "c3_table", "padding", "optimizer", "batch_size", "init",
               "optimizer_rules", "grad_scale", "loss", "in_channels", "input_size"]
FAST_KERNELS = ("c", "pytorch")   # base/kernel_path.py's names of the fast path's rows
WHOLE_PATH = "whole fast path"    # torch's own layers and steps (TrainSpec.fast=False)
THRESHOLD = 0.03                  # issue 36: a trick that buys under 3 % of a default report goes


def report_mix(outputs: str | Path) -> tuple[pd.DataFrame, float]:
    """(one row per training configuration of the fast path: COST_FIELDS, a spec's fields, train_seconds,
    costliest first; the report's worker-seconds, every finished run's seconds) from a report's outputs."""
    outputs = Path(outputs)
    index = outputs / "index.json"
    if not index.exists():
        raise FileNotFoundError(f"{index} not found; run `make report` first (the trick table weighs each "
                                f"configuration by what that report spent training it)")
    runs = [run for run in json.loads(index.read_text())["runs"] if run.get("status") == "ok"]
    worker_seconds = float(sum(run["seconds"] for run in runs))
    files = [outputs / "runs" / run["notebook"] / run["run_id"] / "results.parquet" for run in runs]
    rows = pd.concat([pd.read_parquet(f) for f in files if f.exists()], ignore_index=True)
    rows = rows[rows["kernels"].isin(FAST_KERNELS)]
    if rows.empty:
        raise ValueError(f"{outputs} holds no rows trained by the fast path (kernels {FAST_KERNELS}); was the "
                         f"report run with LENET_FAST=0?")
    keys = rows[COST_FIELDS].astype(str).agg("|".join, axis=1)
    mix = rows.groupby(keys, sort=False).agg(first=("train_seconds", lambda s: s.index[0]),
                                             train_seconds=("train_seconds", "sum"))
    mix = pd.concat([rows.loc[mix["first"]].reset_index(drop=True), mix["train_seconds"].reset_index(drop=True)
                     .rename("config_seconds")], axis=1)
    return mix.sort_values("config_seconds", ascending=False, ignore_index=True), worker_seconds


def spec_of(row: pd.Series) -> TrainSpec:
    """The TrainSpec a tidy row was trained with (its spec fields; NaN read as None)."""
    values = {}
    for f in fields(TrainSpec):
        if f.name in ("fast", "model_id") or f.name not in row.index:
            continue
        value = row[f.name]
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, float) and math.isnan(value):
            value = None
        elif f.type == "int":   # a column with gaps elsewhere (NaN) comes back as floats
            value = int(value)
        values[f.name] = value
    return TrainSpec.from_dict(values)


def _step_function(spec: TrainSpec, channels: int, size: int, calls: int, fast: bool = True, off: tuple = ()):
    """One training step of spec as train() runs it, on random images of the configuration's shape, with
    the tricks `off` switched off during the step; and which tricks can act on it (for the others an off
    switch changes nothing: their ratio is 1 and they are not timed)."""
    data = _random_images(channels, size, spec.batch_size * calls)
    batches = [torch.arange(i * spec.batch_size, (i + 1) * spec.batch_size) for i in range(calls)]
    set_determinism(spec.seed)
    model = build_for(spec, data)
    net, optimizer = accelerated(model, build_optimizer(spec, model, data.device), data.device, fast)
    net.train()
    step, batch = one_model_step(spec, net, contextlib.nullcontext()), itertools.cycle(batches)

    def run():
        with switches.off(*off):
            xb, yb = data.train_batch(next(batch))
            optimizer.zero_grad(set_to_none=True)
            step(xb, yb, None)
            optimizer.step()
    one_node = isinstance(net, OneNodeSequential)
    acts = {"lean_steps": is_lean(optimizer), "one_node": one_node,
            "engine_free": one_node and spec.loss == "cross_entropy"}
    return run, acts


def time_tricks(mix: pd.DataFrame, rounds: int = 10, calls: int = 5, cover: float = 0.95,
                threads: int = 1) -> pd.DataFrame:
    """Seconds per step of the costliest configurations (until `cover` of the training time) with every
    trick on, each applicable trick off, and the whole fast path off, in turns on `threads` threads.
    One row per configuration x variant x round: config (mix's row), variant, round, seconds."""
    shares = mix["config_seconds"].cumsum() / mix["config_seconds"].sum()
    timed = mix[shares.shift(fill_value=0.0) < cover]
    functions, keys = {}, {}
    for i, row in tqdm(timed.iterrows(), total=len(timed), desc="building steps", leave=False):
        spec, shape = spec_of(row), (int(row["in_channels"]), int(row["input_size"]))
        functions[f"{i} on"], acts = _step_function(spec, *shape, calls)
        keys[f"{i} on"] = (i, "on")
        for trick in [t for t in switches.ON if acts[t]]:
            functions[f"{i} {trick}"] = _step_function(spec, *shape, calls, off=(trick,))[0]
            keys[f"{i} {trick}"] = (i, trick)
        functions[f"{i} {WHOLE_PATH}"] = _step_function(spec, *shape, calls, fast=False)[0]
        keys[f"{i} {WHOLE_PATH}"] = (i, WHOLE_PATH)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        table = time_in_turns(functions, rounds=rounds, calls=calls)
    finally:
        torch.set_num_threads(before)
    table["config"] = [keys[name][0] for name in table["name"]]
    table["variant"] = [keys[name][1] for name in table["name"]]
    return table.drop(columns="name")


def gain_table(mix: pd.DataFrame, worker_seconds: float, times: pd.DataFrame) -> pd.DataFrame:
    """Per trick (and the whole fast path): its gain on the report's worker time and on its fast-path
    training time (mean over rounds, 95 % t interval) and where it stands against THRESHOLD."""
    wide = times.pivot_table(index=["round", "config"], columns="variant", values="seconds")
    training = mix["config_seconds"].sum()
    rows = []
    for variant in [*switches.ON, WHOLE_PATH]:
        if variant in wide:
            ratio = (wide[variant] / wide["on"]).fillna(1.0)   # a trick that cannot act: ratio 1
        else:
            ratio = pd.Series(1.0, index=wide.index)
        weighted = (ratio - 1) * mix.loc[ratio.index.get_level_values("config"), "config_seconds"].to_numpy()
        saved = weighted.groupby(level="round").sum()           # seconds the trick saves, per round
        gain = saved / worker_seconds
        lo, hi = t_interval(gain) if gain.std() > 0 else (gain.mean(), gain.mean())
        rows.append({"trick": variant, "gain_on_report": gain.mean(), "ci_low": lo, "ci_high": hi,
                     "gain_on_training": (saved / training).mean(),
                     "against_3pct": ("at least 3 %" if lo >= THRESHOLD else "under 3 %" if hi < THRESHOLD
                                      else "not decided at 3 %")})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default="outputs", help="a finished report's outputs folder (default report)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--cover", type=float, default=0.95, help="share of the training time whose "
                        "configurations are timed, costliest first")
    args = parser.parse_args(argv)
    if not 0 < args.cover <= 1:
        raise SystemExit(f"--cover={args.cover} is not valid; expected a share in (0, 1]")
    mix, worker_seconds = report_mix(args.outputs)
    training = mix["config_seconds"].sum()
    times = time_tricks(mix, args.rounds, args.calls, args.cover)
    timed = mix.loc[sorted(times["config"].unique()), "config_seconds"].sum()
    print(f"report: {args.outputs}, {worker_seconds / 60:.1f} worker-min, of which the fast path trained "
          f"{training / 60:.1f} ({training / worker_seconds:.0%}) in {len(mix)} configurations; timed "
          f"{times['config'].nunique()} of them ({timed / training:.0%} of that training time), "
          f"{args.rounds} rounds of {args.calls} steps in turns, one thread")
    table = gain_table(mix, worker_seconds, times)
    print(table.to_string(index=False, formatters={c: "{:.1%}".format for c in
                                                   ("gain_on_report", "ci_low", "ci_high", "gain_on_training")}))
    print("gain: the report's worker time with that trick off (its public fallback) over the time with it on, "
          "minus 1; 'whole fast path': torch's own layers and steps")


if __name__ == "__main__":
    main()
