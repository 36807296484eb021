"""Training a NumPy network: one tidy row per epoch, like lenet_lib.core.train (train / val / test, seconds, status).

Data come as NumPy arrays in a mapping with keys x_train, y_train, x_val, y_val, x_test, y_test (e.g.
compare.numpy_splits turns lenet_lib.core.data.prepare_data's tensors into one).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from lenet_lib.base.choices import BATCHINGS, diverged
from lenet_lib.base.checks import check_choice, check_positive_int
from lenet_lib.numpy_ref.layers import cross_entropy
from lenet_lib.numpy_ref.net import Sequential
from lenet_lib.numpy_ref.optim import make_optimizer

EVAL_BATCH = 500     # c1's im2col of 1000 images alone would take ~80 MB in float32


def evaluate(net: Sequential, x: np.ndarray, y: np.ndarray, batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode; NaN for an empty set."""
    if len(y) == 0:
        return math.nan, math.nan
    was_training = net.training
    net.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = net(x[start:start + batch_size])
        target = y[start:start + batch_size]
        loss_sum += cross_entropy(logits, target, reduction="sum")[0]
        correct += int((logits.argmax(1) == target).sum())
    net.train(was_training)
    return loss_sum / len(y), correct / len(y)


def shuffled_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation seeded by (seed, epoch): stateless, so an epoch can be replayed alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, batching: str = "shuffle",
                  order: Callable | None = None):
    """Index arrays for one epoch.

    "shuffle": a seeded permutation cut into batches (the last one shorter), from `order(n, seed, epoch)`
    when given (e.g. lenet_lib.core.data.epoch_order, to see exactly the batches torch sees).
    "contiguous": R2's protocol, n // batch_size batches, each a contiguous run of examples starting at a
    random position (so some examples are seen twice in an epoch and some not at all).
    """
    if batching == "contiguous":
        rng = np.random.default_rng([seed, epoch])
        starts = rng.integers(0, max(n - batch_size, 0) + 1, size=max(n // batch_size, 1))
        return [np.arange(s, min(s + batch_size, n)) for s in starts]
    idx = np.asarray(order(n, seed, epoch) if order else shuffled_order(n, seed, epoch))
    return [idx[s:s + batch_size] for s in range(0, n, batch_size)]


def train(net: Sequential, data, optimizer: str = "adam", epochs: int = 1, batch_size: int = 64, seed: int = 0,
          batching: str = "shuffle", order: Callable | None = None, base: dict | None = None,
          on_epoch: Callable | None = None, **hyperparameters) -> list[dict]:
    """Train net in place; return one row per epoch: base columns, epoch, measures, status.

    As lenet_lib.core.train: "gd" is full-batch gradient descent (gradients of all batches weighted by size,
    one step per epoch, every example exactly once whatever `batching` says); a diverged training loss
    (base.choices.diverged) ends training after that epoch with status "diverged" and never raises.
    on_epoch(epoch, epochs) is called after each epoch (the runner's progress bar).
    """
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    check_choice("batching", batching, BATCHINGS)
    opt = make_optimizer(optimizer, net.parameters(), **hyperparameters)
    x, y = data["x_train"], data["y_train"]
    n, full_batch = len(y), optimizer == "gd"
    rows, status, steps = [], "ok", 0     # steps: optimizer steps so far, as core.train counts them
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        total = None
        # Overflow in exp/tanh of a diverging model is reported by the status, not by warnings.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for idx in epoch_batches(n, batch_size, seed, epoch, "shuffle" if full_batch else batching, order):
                logits = net(x[idx])
                loss, dlogits = cross_entropy(logits, y[idx])
                net.backward(dlogits)
                if full_batch:
                    weight = len(idx) / n
                    grads = net.grads()
                    total = ({k: g * weight for k, g in grads.items()} if total is None
                             else {k: total[k] + g * weight for k, g in grads.items()})
                else:
                    opt.step(net.grads())
                    steps += 1
                loss_sum += loss * len(idx)
                correct += int((logits.argmax(1) == y[idx]).sum())
                seen += len(idx)
            if full_batch:
                opt.step(total)
                steps += 1
            train_loss, train_acc = loss_sum / seen, correct / seen
            train_seconds = time.perf_counter() - start
            if diverged(train_loss, (base or {}).get("num_classes", 10)):
                status = "diverged"
            val = evaluate(net, data["x_val"], data["y_val"])
            test = evaluate(net, data["x_test"], data["y_test"])
        rows.append({**(base or {}), "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                     "val_loss": val[0], "val_acc": val[1], "test_loss": test[0], "test_acc": test[1],
                     "train_seconds": train_seconds, "epoch_seconds": time.perf_counter() - start,
                     "status": status, "steps": steps})
        if on_epoch:
            on_epoch(epoch, epochs)
        if status == "diverged":
            break
    return rows
