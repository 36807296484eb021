"""Fair timing: training steps of several variants measured in turns, in one process, by one implementation.

Training wall clocks cannot judge a claim about time: models trained one after another meet a machine
whose speed drifts (10-15 % from minute to minute on a shared CPU), and lenet_lib's fast path speeds some
layers more than others. Here every variant's training step (forward, backward, optimizer step on the
same batches) is called in turns, round after round, in a shuffled order, warm-up rounds dropped; a
ratio between two variants is taken within each round (stats.paired_log_ratios), so drift cancels, and
the rounds give its confidence interval.

Implementations: "torch" is torch's own layers and optimizer, as the reports ran them (what verdicts use);
"lenet_lib" is what lenet_lib.core.train runs (train.accelerated: the fast path unless switched off; shown
beside it). Data loading is left out: it
costs every variant the same seconds and would only pull every ratio towards 1.

time_epochs is the measurement of the reports' own kind (R1 l.264 and R4 l.66 timed whole runs): whole
epochs, or a declared fraction of each, through the reports' DataLoader path (data.report_loaders) with
torch's own layers, the test set evaluated after each when the report's clock included it, every variant's
epoch in turns with the others. The scorecard scores the reports' time ratios on it.
"""
from __future__ import annotations

import itertools
import random
import time

import pandas as pd
import torch
from tqdm import tqdm

from lenet_lib.core.data import DataSplits, epoch_order, index_batches, report_loaders
from lenet_lib.core.optim import make_optimizer
from lenet_lib.core.specs import TrainSpec
from lenet_lib.core.train import accelerated, build_for, loss_and_backward, resolve_device, set_determinism
from lenet_lib.base.checks import check_bool, check_choice, check_nonneg_int, check_positive_int, check_range

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
    lenet_lib.core.train builds and runs them (train.loss_and_backward); "torch" runs the model as built."""
    check_choice("implementation", implementation, IMPLEMENTATIONS)
    set_determinism(spec.seed)
    model = build_for(spec, data).to(data.device)
    # lenet_lib's optimizer as train() makes it (fused on CPU); torch's default for the reports' way
    fused = implementation == "lenet_lib" and data.device.type == "cpu"
    optimizer = make_optimizer(spec.optimizer, model.parameters(), fused=fused, **spec.hyperparameters())
    net = model
    if implementation == "lenet_lib":
        net, optimizer = accelerated(model, optimizer, data.device, spec.fast)
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


def _epoch_function(spec: TrainSpec, data: DataSplits, loaders, fraction: float, evaluate: bool):
    """(run, (train batches, test batches)): run(train batches, test batches) is one (fraction of an) epoch
    of spec's model the reports' way, returning (train seconds, eval seconds): DataLoader batches, torch's
    own layers and optimizer, then the test set."""
    set_determinism(spec.seed)
    model = build_for(spec, data).to(data.device)
    optimizer = make_optimizer(spec.optimizer, model.parameters(), fused=False, **spec.hyperparameters())
    train_loader, test_loader = loaders
    train_batches = max(1, round(fraction * len(train_loader)))
    test_batches = max(1, round(fraction * len(test_loader))) if evaluate else 0
    sync = torch.cuda.synchronize if data.device.type == "cuda" else (lambda: None)

    def run(train_limit: int, test_limit: int) -> tuple[float, float]:
        start = time.perf_counter()
        model.train()
        for x, y in itertools.islice(train_loader, train_limit):
            x, y = x.to(data.device), y.to(data.device)
            optimizer.zero_grad(set_to_none=True)
            loss_and_backward(model, x, y)
            optimizer.step()
        sync()
        middle = time.perf_counter()
        if not test_limit:
            return middle - start, 0.0
        model.eval()
        with torch.no_grad():
            for x, y in itertools.islice(test_loader, test_limit):
                (model(x.to(data.device)).argmax(1) == y.to(data.device)).sum().item()
        sync()
        return middle - start, time.perf_counter() - middle

    return run, (train_batches, test_batches)


def time_epochs(variants: dict[str, TrainSpec], data: DataSplits, rounds: int = 3, fraction: float = 1.0,
                evaluate: bool = True, warmup_batches: int = 2, test_batch_size: int = 100, seed: int = 0,
                device="auto", progress: bool = True) -> pd.DataFrame:
    """Epochs of each {label: spec}, the reports' way, in turns: the measurement of the reports' kind.

    Every round runs one epoch of each variant (its first `fraction` of the training batches, and as much of
    the test set when `evaluate`), in an order shuffled per round (seeded); each variant keeps training its
    one model from round to round, as epochs of a run do. Data come through data.report_loaders with the
    sizes, input size and normalisation of `data` (its info), at each spec's batch size. Before the first
    round every variant runs `warmup_batches` untimed training batches (and one test batch).
    One row per variant x round: label, round, position (1 = first in its round), train_batches,
    test_batches, fraction, train_seconds, eval_seconds, seconds (the report's clock: train + eval, or train
    alone when not evaluate), threads, device and the spec's configuration columns.
    """
    if not variants:
        raise ValueError("variants is empty; give at least one {label: TrainSpec}")
    check_positive_int("rounds", rounds)
    check_range("fraction", fraction, 0.0, 1.0, lo_open=True)
    check_bool("evaluate", evaluate)
    check_nonneg_int("warmup_batches", warmup_batches)
    device = resolve_device(device)
    data = data if data.device == device else data.to(device)
    info = data.info
    sizes = dict(dataset=info["dataset"], train_size=info["train_size"], test_size=info["test_size"],
                 input_size=info["input_size"], resize=info["resize"], normalize=info["normalize"])
    loaders = {size: report_loaders(batch_size=size, test_batch_size=test_batch_size, seed=seed, **sizes)
               for size in sorted({spec.batch_size for spec in variants.values()})}
    epochs = {label: _epoch_function(spec, data, loaders[spec.batch_size], fraction, evaluate)
              for label, spec in variants.items()}
    for run, _ in epochs.values():
        run(warmup_batches, 1 if (evaluate and warmup_batches) else 0)
    order, rows = random.Random(seed), []
    labels = list(variants)
    for number in tqdm(range(1, rounds + 1), desc="epoch timing rounds", disable=not progress, leave=False):
        turn = labels[:]
        order.shuffle(turn)
        for position, label in enumerate(turn, start=1):
            run, batches = epochs[label]
            train_seconds, eval_seconds = run(*batches)
            rows.append({**variants[label].columns(), "label": label, "round": number, "position": position,
                         "train_batches": batches[0], "test_batches": batches[1],
                         "fraction": float(fraction), "train_seconds": train_seconds, "eval_seconds": eval_seconds,
                         "seconds": train_seconds + eval_seconds, "threads": torch.get_num_threads(),
                         "device": str(device)})
    table = pd.DataFrame(rows)
    return table.sort_values(["round", "position"], kind="stable").reset_index(drop=True)
