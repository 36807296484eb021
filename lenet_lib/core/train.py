"""Training one model: a tidy history row per epoch (train / val / test loss and accuracy, seconds)."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import pandas as pd
import torch
import torch.utils.deterministic
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm   # plain text bars: no ipywidgets needed in kernels or logs

from lenet_lib.base.choices import PRECISIONS, diverged
from lenet_lib.base import kernel_path as paths
from lenet_lib.core.data import DataSplits, epoch_order, index_batches
from lenet_lib.core.models import build_model, eval_mode
from lenet_lib.core.optim import make_optimizer
from lenet_lib.core.r2_printed import double_softmax_backward, make_printed_optimizer, printed_init_, slice_starts
from lenet_lib.core.specs import TrainSpec
from lenet_lib.base.checks import check_choice

EVAL_BATCH = 256    # evaluation batch: no gradients; bigger batches spill out of the L2 cache (1000: 2.8x slower)


@dataclass
class TrainResult:
    history: pd.DataFrame      # one row per epoch
    model: nn.Module
    status: str                # "ok" or "diverged"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} is not valid here: no CUDA device; use 'auto' or 'cpu'")
    return device


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def precision_context(precision: str, device: torch.device):
    """Autocast for bf16 (measured +8 % images/s on the 2-core CPU; recorded in every row)."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "tf32":
        if device.type != "cuda":
            raise ValueError("precision='tf32' is not valid on CPU; choose 'fp32' or 'bf16'")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_determinism(seed: int) -> None:
    """Same seed, same parameters, same machine: same numbers."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN, ATen's own outputs included, to expose code
    # that reads memory before writing it. Nothing here does, so the numbers are the same without it, and
    # a training step skips 30-40 fills (5-50 us each): 2-3 % of a step at batch 64 (make bench).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision_ctx=None,
             batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of model on (x, y); NaN for an empty set."""
    if len(y) == 0:
        return math.nan, math.nan
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    with eval_mode(model), torch.inference_mode(), (precision_ctx or contextlib.nullcontext()):
        for start in range(0, len(y), batch_size):
            logits = model(x[start:start + batch_size]).float()
            target = y[start:start + batch_size]
            loss_sum += F.cross_entropy(logits, target, reduction="sum")
            correct += (logits.argmax(1) == target).sum()
    return loss_sum.item() / len(y), correct.item() / len(y)


def build_for(spec: TrainSpec, data: DataSplits) -> nn.Module:
    """The spec's model shaped for the data (channels, input size, classes), initialised as spec.init says."""
    model = build_model(spec.arch, in_channels=data.info["in_channels"], input_size=data.info["input_size"],
                        num_classes=data.info["num_classes"], **spec.model_kwargs())
    return printed_init_(model) if spec.init == "r2_printed" else model


def build_optimizer(spec: TrainSpec, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """torch's optimizer for spec.optimizer (fused on CPU: optim.FUSED), or R2's printed rule under that name."""
    if spec.optimizer_rules == "r2_printed":
        return make_printed_optimizer(spec.optimizer, model.parameters(), spec.lr, spec.momentum)
    return make_optimizer(spec.optimizer, model.parameters(), fused=device.type == "cpu", **spec.hyperparameters())


def training_batches(spec: TrainSpec, data: DataSplits, epoch: int, starts: torch.Tensor | None):
    """One epoch's (images, labels) batches: shuffled batches of the whole training set, or, with
    spec.iterations, this block's contiguous slices x[start:start + batch_size] (r2_printed.slice_starts)."""
    if starts is None:
        for idx in index_batches(epoch_order(len(data.y_train), spec.seed, epoch).to(data.device), spec.batch_size):
            yield data.train_batch(idx)
        return
    block = spec.iterations // spec.epochs
    for start in starts[(epoch - 1) * block:epoch * block].tolist():
        yield data.x_train[start:start + spec.batch_size], data.y_train[start:start + spec.batch_size]


def fast_path_on(device: torch.device, fast: bool = True) -> bool:
    """lenet_lib's fast path trains here: on CPU, asked for (TrainSpec.fast) and not switched off (LENET_FAST=0)."""
    return device.type == "cpu" and fast and not paths.fast_path_switched_off()


def _fast():
    """lenet_lib.fast, imported only when the fast path runs: the one place lenet_lib applies it."""
    from lenet_lib import fast
    return fast


def accelerated(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, fast: bool = True):
    """(network, optimizer) to train model with: with the fast path on (fast_path_on), fast.accelerate's
    network (model's own parameters; torch's numbers to float rounding) and the optimizer stepped lean;
    else model and optimizer themselves, torch's own layers and steps."""
    if not fast_path_on(device, fast):
        return model, optimizer
    return _fast().accelerate(model), _fast().lean_steps(optimizer)


def kernel_path(device: torch.device, fast: bool = True) -> str:
    """The kernels this process trains with on `device` (base/kernel_path.py's names)."""
    if device.type == "cuda":
        return "cuda"
    return _fast().kernel_path() if fast_path_on(device, fast) else "torch"


def base_columns(spec: TrainSpec, data: DataSplits, device: torch.device, precision: str) -> dict:
    """Configuration columns shared by every epoch row of this model, the kernel path that ran included."""
    return {**spec.columns(), **data.info, "device": device_name(device), "precision": precision,
            "kernels": kernel_path(device, spec.fast)}


def epoch_row(base: dict, epoch: int, train_loss: float, train_acc: float, val: tuple, test: tuple,
              train_seconds: float, epoch_seconds: float, status: str, stacked_models: int = 1) -> dict:
    """One tidy row; stacked_models > 1: the seconds are a stacked network's, shared by that many models."""
    return {**base, "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val[0], "val_acc": val[1], "test_loss": test[0], "test_acc": test[1],
            "train_seconds": train_seconds, "epoch_seconds": epoch_seconds, "status": status,
            "stacked_models": stacked_models}


def loss_and_backward(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor, autocast=None,
                      scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch's forward pass under autocast, F.cross_entropy(logits, yb), and the backward pass of
    the loss (of loss * scale, if given): (logits, loss). The fast path's network on CPU does all three without
    the autograd engine (its cross_entropy_backward: the same numbers, less time per step)."""
    with autocast or contextlib.nullcontext():
        engine_free = getattr(net, "cross_entropy_backward", None)
        done = engine_free(xb, yb, scale) if engine_free is not None else None
        if done is not None:
            return done
        logits = net(xb)
        loss = F.cross_entropy(logits.float(), yb)
    (loss if scale is None else loss * scale).backward()
    return logits, loss


def train(spec: TrainSpec, data: DataSplits, *, device: str | torch.device = "auto", precision: str = "fp32",
          progress: bool = True, on_epoch=None) -> TrainResult:
    """Train one model as `spec` says; evaluate on validation and test after every epoch.

    The optimizer "gd" is full-batch gradient descent: gradients of all batches are summed (weighted
    by batch size) and one step is taken per epoch; with spec.iterations it steps per batch like the rest.
    Each row's `steps` counts the optimizer steps taken so far; with train_acc_on="full_train" its
    train_loss and train_acc are the model's after that epoch on the whole training set. A loss that
    diverges (choices.diverged) ends training after that epoch with status "diverged"; it never raises. on_epoch(model_id, epoch, epochs) is called
    after each epoch (the runner's progress bar).
    """
    device = resolve_device(device)
    autocast = precision_context(precision, device)
    if data.device != device:
        data = data.to(device)
    set_determinism(spec.seed)
    model = build_for(spec, data).to(device)
    # `net` shares model's parameters; on CPU the fast path's (torch's numbers to float rounding) unless switched off
    net, optimizer = accelerated(model, build_optimizer(spec, model, device), device, spec.fast)
    # by iterations every optimizer steps per batch, "gd" included (R2 l.748-759)
    full_batch = spec.optimizer == "gd" and not spec.iterations
    base = base_columns(spec, data, device, precision)
    n = len(data.y_train)
    starts = slice_starts(n, spec.batch_size, spec.iterations, spec.seed) if spec.iterations else None
    rows, status, steps = [], "ok", 0
    bar = tqdm(range(1, spec.epochs + 1), desc=spec.model_id, disable=not progress, leave=False)
    for epoch in bar:
        start = time.perf_counter()
        net.train()
        # Running sums stay on the device: no host sync per batch, one .item() per epoch.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        if full_batch:
            optimizer.zero_grad(set_to_none=True)
        for xb, yb in training_batches(spec, data, epoch, starts):
            if not full_batch:
                optimizer.zero_grad(set_to_none=True)
            # the loss's scale: the batch mean; its sum (R2's); full batch: the mean or sum over all n images
            scale = float(len(yb)) if spec.grad_scale == "sum" else len(yb) / n if full_batch else None
            if spec.loss == "r2_double_softmax":
                with autocast:
                    logits, loss = double_softmax_backward(net, xb, yb, scale)
            else:
                logits, loss = loss_and_backward(net, xb, yb, autocast, scale)
            if not full_batch:
                optimizer.step()
                steps += 1
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
        if full_batch:
            optimizer.step()
            steps += 1
        train_loss, train_acc = loss_sum.item() / seen, correct.item() / seen
        train_seconds = time.perf_counter() - start
        if diverged(train_loss, data.info["num_classes"]):
            status = "diverged"
        if spec.train_acc_on == "full_train":   # the model after this epoch, on every training image
            train_loss, train_acc = evaluate(net, data.x_train, data.y_train, autocast)
        val = evaluate(net, data.x_val, data.y_val, autocast)
        test = evaluate(net, data.x_test, data.y_test, autocast)
        rows.append({**epoch_row(base, epoch, train_loss, train_acc, val, test, train_seconds,
                                 time.perf_counter() - start, status), "steps": steps})
        bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val[1]:.3f}")
        if on_epoch:
            on_epoch(spec.model_id, epoch, spec.epochs)
        if status == "diverged":
            break
    bar.close()
    return TrainResult(pd.DataFrame(rows), model, status)
