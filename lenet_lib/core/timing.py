"""Fair timing: training steps of several variants measured in turns, in one process, by one implementation.

Training wall clocks cannot judge a claim about time: models trained one after another meet a machine
whose speed drifts (10-15 % from minute to minute on a shared CPU), and lenet_lib's fast path speeds some
layers more than others. Here every variant's training step (forward, backward, optimizer step on the
same batches) is called in turns, round after round, in a shuffled order, warm-up rounds dropped; a
ratio between two variants is taken within each round (stats.paired_log_ratios), so drift cancels, and
the rounds give its confidence interval.

Implementations: "torch" is torch's own layers, as the reports ran them (what verdicts use);
"lenet_lib" is the fast path that lenet_lib.core.train runs (shown beside it). Data loading is left out: it
costs every variant the same seconds and would only pull every ratio towards 1.
"""
from __future__ import annotations

import itertools
import random
import time

import pandas as pd
import torch
from tqdm import tqdm

from lenet_lib.core.data import DataSplits, epoch_order, index_batches
from lenet_lib.fast.layers import fuse_relu_max_pool, with_torch_layers
from lenet_lib.core.optim import make_optimizer
from lenet_lib.core.specs import TrainSpec
from lenet_lib.core.train import build_for, loss_and_backward, resolve_device, set_determinism
from lenet_lib.base.checks import check_choice, check_positive_int

IMPLEMENTATIONS = ("torch", "lenet_lib")


def time_in_turns(functions: dict, rounds: int = 20, calls: int = 5, warmup: int = 2, seed: int = 0,
                  sync=None, progress: bool = True) -> pd.DataFrame:
    """Seconds per call of each function, measured in turns.

    Every round calls each function `calls` times in a row, the functions in an order shuffled per round
    (seeded); the first `warmup` rounds are dropped. One row per function and kept round:
    name, round, seconds (per call). `sync` (e.g. torch.cuda.synchronize) runs before each clock read.
    """
    check_positive_int("rounds", rounds)
    check_positive_int("calls", calls)
    if not (isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"warmup={warmup!r} is not valid; expected an integer >= 0")
    if not functions:
        raise ValueError("functions is empty; give at least one {name: function}")
    sync = sync or (lambda: None)
    names, order, rows = list(functions), random.Random(seed), []
    for number in tqdm(range(warmup + rounds), desc="timing rounds", disable=not progress, leave=False):
        turn = names[:]
        order.shuffle(turn)
        for name in turn:
            fn = functions[name]
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            if number >= warmup:
                rows.append({"name": name, "round": number - warmup + 1,
                             "seconds": (time.perf_counter() - start) / calls})
    return pd.DataFrame(rows)


def training_step(spec: TrainSpec, data: DataSplits, implementation: str, batches: list[torch.Tensor]):
    """One training step of spec's model as a function of no arguments: the next batch of `batches`,
    forward, cross-entropy, backward, optimizer step. The model is built, and the step run, as
    lenet_lib.core.train builds and runs them (train.loss_and_backward)."""
    check_choice("implementation", implementation, IMPLEMENTATIONS)
    set_determinism(spec.seed)
    model = build_for(spec, data).to(data.device)
    if implementation == "torch":
        net = with_torch_layers(model)
    else:   # what train() runs: the fused ReLU + max-pool on CPU
        net = fuse_relu_max_pool(model) if data.device.type == "cpu" else model
    # lenet_lib's optimizer as train() makes it (fused on CPU); torch's default for the reports' way
    fused = implementation == "lenet_lib" and data.device.type == "cpu"
    optimizer = make_optimizer(spec.optimizer, model.parameters(), fused=fused, **spec.hyperparameters())
    net.train()
    batch = itertools.cycle(batches)

    def step():
        xb, yb = data.train_batch(next(batch))
        optimizer.zero_grad(set_to_none=True)
        loss_and_backward(net, xb, yb)
        optimizer.step()
    return step


def time_variants(variants: dict[str, TrainSpec], data: DataSplits, implementations=IMPLEMENTATIONS,
                  rounds: int = 20, calls: int = 5, warmup: int = 2, device="auto",
                  progress: bool = True) -> pd.DataFrame:
    """Training-step seconds of each {label: spec} under each implementation, all in turns.

    Every variant steps through the same data order (the first spec's seed), in batches of its own batch
    size. One row per variant x implementation x round: label, implementation, round, seconds (per step),
    image_seconds (per training image: seconds / batch size, so that variants of different batch sizes
    compare as epochs do), threads, device and the spec's configuration columns.
    """
    if not variants:
        raise ValueError("variants is empty; give at least one {label: TrainSpec}")
    for implementation in implementations:
        check_choice("implementation", implementation, IMPLEMENTATIONS)
    n = len(data.y_train)
    too_big = sorted({s.batch_size for s in variants.values() if s.batch_size > n})
    if too_big:
        raise ValueError(f"batch_size={too_big[0]} is not valid for timing on {n} training images; "
                         f"expected a batch size <= {n}")
    device = resolve_device(device)
    data = data if data.device == device else data.to(device)
    first = next(iter(variants.values()))
    order = epoch_order(n, first.seed, 1).to(device)
    batches = {size: list(index_batches(order, size, drop_last=True))[:max(1, calls)]
               for size in {spec.batch_size for spec in variants.values()}}
    functions, keys = {}, {}
    for label, spec in variants.items():
        for implementation in implementations:
            name = f"{label} [{implementation}]"
            functions[name] = training_step(spec, data, implementation, batches[spec.batch_size])
            keys[name] = (label, implementation, spec)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    table = time_in_turns(functions, rounds=rounds, calls=calls, warmup=warmup, sync=sync, progress=progress)
    rows, order = [], {name: i for i, name in enumerate(functions)}
    table = table.sort_values(["round"]).sort_values("name", key=lambda names: names.map(order), kind="stable")
    for row in table.itertuples():
        label, implementation, spec = keys[row.name]
        rows.append({**spec.columns(), "label": label, "implementation": implementation, "round": row.round,
                     "seconds": row.seconds, "image_seconds": row.seconds / spec.batch_size,
                     "threads": torch.get_num_threads(), "device": str(device)})
    return pd.DataFrame(rows)
