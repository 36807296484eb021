"""The one epoch loop: train.train (one model) and ensemble.train_group (K models stacked as one network)
both run their epochs here; each passes in its batches, its forward/backward step and its evaluation."""
from __future__ import annotations

import time

import pandas as pd
import torch
from tqdm import tqdm   # plain text bars: no ipywidgets needed in kernels or logs

from lenet_lib.base.choices import diverged
from lenet_lib.core.data import DataSplits
from lenet_lib.core.specs import TrainSpec


def epoch_row(base: dict, epoch: int, train_loss: float, train_acc: float, val: tuple, test: tuple,
              train_seconds: float, epoch_seconds: float, status: str, steps: int, stacked_models: int = 1) -> dict:
    """One tidy row; `steps`: optimizer steps so far; stacked_models > 1: the seconds are a stacked network's,
    shared by that many models."""
    return {**base, "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val[0], "val_acc": val[1], "test_loss": test[0], "test_acc": test[1],
            "train_seconds": train_seconds, "epoch_seconds": epoch_seconds, "status": status,
            "stacked_models": stacked_models, "steps": steps}


def run_epochs(specs: list[TrainSpec], data: DataSplits, bases: list[dict], *, net: torch.nn.Module, optimizer,
               batches, step, evaluate, stop=None, progress: bool = True, desc: str = "",
               on_epoch=None) -> tuple[list[pd.DataFrame], list[str]]:
    """Train K = len(specs) models (one, or a stacked network's) for their epochs; (history, status) per model.

    The specs share epochs, optimizer, iterations and train_acc_on (train_many's groups do). Passed in:
    - batches(epoch): that epoch's (images, labels); labels (B,) for one model, (K, B) for a stacked network.
    - step(images, labels, weight) -> (logits, loss): forward and backward of one batch; loss () or (K,), the
      batch mean of each model; weight: the batch's share b / n of a full-batch gradient, else None.
    - evaluate(x, y) -> [(loss, accuracy)] per model.
    - stop(i): model i diverged; called after its last row (a stacked network stops updating it).
    The optimizer "gd" is full-batch gradient descent: gradients of all batches are summed (weighted by batch
    size) and one step is taken per epoch; with spec.iterations it steps per batch like the rest (R2 l.748-759).
    A row's `steps` counts the optimizer steps so far. A loss that diverges (choices.diverged) ends that model's
    training after that epoch with status "diverged"; it never raises. on_epoch(model_id, epoch, epochs) is
    called after each model's epoch (the runner's progress bar).
    """
    k, first, n = len(specs), specs[0], len(data.y_train)
    full_batch = first.optimizer == "gd" and not first.iterations
    histories, status, steps = [[] for _ in specs], ["ok"] * k, 0
    bar = tqdm(range(1, first.epochs + 1), desc=desc or first.model_id, disable=not progress, leave=False)
    for epoch in bar:
        start = time.perf_counter()
        net.train()
        # Running sums stay on the device: no host sync per batch, one per epoch.
        loss_sum = torch.zeros(k, device=data.device)
        correct = torch.zeros(k, device=data.device, dtype=torch.int64)
        seen = 0
        if full_batch:
            optimizer.zero_grad()
        for xb, yb in batches(epoch):
            b = yb.shape[-1]
            if not full_batch:
                optimizer.zero_grad()
            logits, loss = step(xb, yb, b / n if full_batch else None)
            if not full_batch:
                optimizer.step()
                steps += 1
            loss_sum += loss.detach() * b
            correct += (logits.argmax(-1) == yb).sum(-1)
            seen += b
        if full_batch:
            optimizer.step()
            steps += 1
        train_loss = [s / seen for s in loss_sum.tolist()]
        train_acc = [c / seen for c in correct.tolist()]
        train_seconds = time.perf_counter() - start
        going = [i for i in range(k) if status[i] == "ok"]      # the models that trained this epoch
        for i in going:
            if diverged(train_loss[i], data.info["num_classes"]):
                status[i] = "diverged"
        if first.train_acc_on == "full_train":    # the model after this epoch, on every training image
            on_train = evaluate(data.x_train, data.y_train)
            train_loss, train_acc = [loss for loss, _ in on_train], [acc for _, acc in on_train]
        val = evaluate(data.x_val, data.y_val)
        test = evaluate(data.x_test, data.y_test)
        epoch_seconds = time.perf_counter() - start
        share = len(going)    # a stacked network's seconds, shared equally (stacked_models says by how many)
        for i in going:
            histories[i].append(epoch_row(bases[i], epoch, train_loss[i], train_acc[i], val[i], test[i],
                                          train_seconds / share, epoch_seconds / share, status[i], steps, share))
            if on_epoch:
                on_epoch(specs[i].model_id, epoch, first.epochs)
            if status[i] == "diverged" and stop:
                stop(i)
        bar.set_postfix(models=share, loss=f"{min(train_loss[i] for i in going):.3f}",
                        val_acc=f"{max(val[i][1] for i in going):.3f}")
        if "ok" not in status:
            break
    bar.close()
    return [pd.DataFrame(rows) for rows in histories], status
