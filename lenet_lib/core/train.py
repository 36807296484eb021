"""Training one model: a tidy history row per epoch (train / val / test loss and accuracy, seconds)."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.utils.deterministic
import torch.nn.functional as F
from torch import nn

from lenet_lib.base.choices import PRECISIONS
from lenet_lib.base import kernel_path as paths
from lenet_lib.core.data import DataSplits, epoch_order, index_batches
from lenet_lib.core.loop import run_epochs
from lenet_lib.core.models import build_model, eval_mode
from lenet_lib.core.optim import make_optimizer
from lenet_lib.core.r2_printed import double_softmax_backward, make_printed_optimizer, printed_init_, slice_starts
from lenet_lib.core.specs import TrainSpec
from lenet_lib.base.checks import check_choice

EVAL_BATCH = 256    # evaluation batch: no gradients; bigger batches spill out of the L2 cache


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
    """Autocast for bf16, TF32 matmuls for tf32 (CUDA only); the precision is recorded in every row."""
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
    # no NaN fill of every new tensor: nothing here reads memory before writing it, and each step saves the fills
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


def one_model_step(spec: TrainSpec, net: nn.Module, autocast):
    """step(xb, yb, weight) -> (logits, loss) for loop.run_epochs: one model's forward and backward pass of a
    batch with spec's loss and gradient scale; weight: the batch's share of a full-batch gradient, or None."""
    def step(xb: torch.Tensor, yb: torch.Tensor, weight: float | None):
        # the loss's scale: the batch mean; its sum (R2's); full batch: the mean or sum over all n images
        scale = float(len(yb)) if spec.grad_scale == "sum" else weight
        if spec.loss == "r2_double_softmax":
            with autocast:
                return double_softmax_backward(net, xb, yb, scale)
        return loss_and_backward(net, xb, yb, autocast, scale)
    return step


def train(spec: TrainSpec, data: DataSplits, *, device: str | torch.device = "auto", precision: str = "fp32",
          progress: bool = True, on_epoch=None) -> TrainResult:
    """Train one model as `spec` says; evaluate on validation and test after every epoch (loop.run_epochs:
    full-batch "gd", `steps`, divergence and on_epoch). With train_acc_on="full_train" a row's train_loss and
    train_acc are the model's after that epoch on the whole training set.
    """
    device = resolve_device(device)
    autocast = precision_context(precision, device)
    if data.device != device:
        data = data.to(device)
    set_determinism(spec.seed)
    model = build_for(spec, data).to(device)
    # `net` shares model's parameters; on CPU the fast path's (torch's numbers to float rounding) unless switched off
    net, optimizer = accelerated(model, build_optimizer(spec, model, device), device, spec.fast)
    base = base_columns(spec, data, device, precision)
    starts = slice_starts(len(data.y_train), spec.batch_size, spec.iterations, spec.seed) if spec.iterations else None
    (history,), (status,) = run_epochs(
        [spec], data, [base], net=net, optimizer=optimizer,
        batches=lambda epoch: training_batches(spec, data, epoch, starts),
        step=one_model_step(spec, net, autocast),
        evaluate=lambda x, y: [evaluate(net, x, y, autocast)],
        progress=progress, desc=spec.model_id, on_epoch=on_epoch)
    return TrainResult(history, model, status)
