"""Training many models: train_many(specs, data) has train()'s contract, one TrainResult per spec.

mode="batched" trains models that share layer shapes, optimizer, batch size and epochs as one stacked
network (batched.py); "sequential" calls train() once per model; "auto" picks batched on CUDA and
sequential on CPU. Either way it is the same experiment as training each model alone: each model keeps
its own initialization (its seed, then train.build_for), data order (data.epoch_order), BatchNorm
statistics, dropout masks (its own p and RNG stream), loss, optimizer hyperparameters and state, and a
diverged model stops (its rows end) while the others go on.

Speed, all in one place (what each buys):
- Stacking (batched.py): one LeNet-5 leaves a GPU idle; K models per kernel launch instead of one.
  A CPU has no launch overhead to amortize and the stacked convolutions run slower there (figures in
  docs/speed.md), so "auto" stays sequential on CPU.
- Data is moved to the device once for all models, and each batch is gathered there by index.
- Running sums stay on the device: one host sync per epoch, none per batch.
- Evaluation runs all models on the same images, EVAL_MODEL_IMAGES model-images per forward pass.
- Optional torch.compile of the stacked network (compile_step=True; off by default; checked on CPU only).
- precision: "bf16" autocast or "tf32" matmuls (CUDA), as in train(); recorded in every row.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm   # plain text bars: no ipywidgets needed in kernels or logs

from lenet_lib.core.batched import DropoutStreams, StackedNet, StackedOptimizer, rng_state, signature
from lenet_lib.core.data import DataSplits, epoch_order
from lenet_lib.core.specs import TrainSpec
from lenet_lib.core.loop import run_epochs
from lenet_lib.core.train import (EVAL_BATCH, TrainResult, base_columns, build_for, precision_context,
                                  resolve_device, set_determinism, train)
from lenet_lib.base.checks import check_choice

MODES = ("auto", "batched", "sequential")
MAX_GROUP = 256              # models per stacked network: K*batch images per step must fit in memory
EVAL_MODEL_IMAGES = 16384    # models x images per evaluation pass (train() evaluates EVAL_BATCH at once)


def train_many(specs: list[TrainSpec], data: DataSplits, *, device="auto", precision: str = "fp32",
               mode: str = "auto", progress: bool = True, compile_step: bool = False,
               on_epoch=None) -> list[TrainResult]:
    """Train every spec; results in the order of specs (see the module docstring for the modes).

    In batched mode a row's train_seconds and epoch_seconds are the stacked network's wall time shared
    equally among the models it trained that epoch, so their sum over models is the time spent.
    """
    check_choice("mode", mode, MODES)
    device = resolve_device(device)
    precision_context(precision, device)          # a bad precision fails here, before any work
    if data.device != device:
        data = data.to(device)     # once for all models, not once per model
    # the stacked network knows torch's rules only, not R2's printed ones (TrainSpec.init ... iterations)
    printed = [s.model_id for s in specs if (s.init, s.optimizer_rules, s.grad_scale, s.loss, s.train_acc_on,
                                             s.iterations) != ("torch", "torch", "mean", "cross_entropy", "running", 0)]
    if mode == "auto":
        mode = "batched" if device.type == "cuda" and not printed else "sequential"
    if mode == "batched" and printed:
        raise ValueError(f"mode='batched' is not valid for {printed[:3]}: R2's printed options train one model "
                         f"at a time; use mode='sequential' or 'auto'")
    if mode == "sequential":
        # One bar over the models; a model's own epoch bar only when it is the only one.
        return [train(spec, data, device=device, precision=precision, progress=progress and len(specs) == 1,
                      on_epoch=on_epoch)
                for spec in tqdm(specs, desc="models", disable=not progress or len(specs) == 1)]
    results: list[TrainResult | None] = [None] * len(specs)
    groups = group_specs(specs, data, device)
    for number, members in enumerate(groups, start=1):
        desc = f"group {number}/{len(groups)} ({len(members)} models)"
        group_results = train_group([m.spec for m in members], data, device=device, precision=precision,
                                    built=[(m.model, m.rng_state) for m in members], progress=progress,
                                    on_epoch=on_epoch,
                                    compile_step=compile_step, desc=desc)
        for member, result in zip(members, group_results):
            results[member.index] = result
    return results


class Member(NamedTuple):
    index: int                  # position in train_many's specs
    spec: TrainSpec
    model: nn.Sequential        # built as train() builds it
    rng_state: torch.Tensor     # the global RNG state right after the build: its dropout stream


def _build(spec: TrainSpec, data: DataSplits, device: torch.device):
    """Exactly train()'s start: seed, build on the CPU; then the RNG state dropout will draw from."""
    set_determinism(spec.seed)
    model = build_for(spec, data)
    return model, rng_state(device)


def group_specs(specs: list[TrainSpec], data: DataSplits, device) -> list[list[Member]]:
    """Specs that can share one stacked network (same layers but dropout, optimizer, batch size and
    epochs), in order of first appearance, at most MAX_GROUP models each."""
    groups: dict[tuple, list[Member]] = {}
    for index, spec in enumerate(specs):
        model, state = _build(spec, data, torch.device(device))
        key = (signature(model), spec.optimizer, spec.batch_size, spec.epochs)
        groups.setdefault(key, []).append(Member(index, spec, model, state))
    return [members[i:i + MAX_GROUP] for members in groups.values() for i in range(0, len(members), MAX_GROUP)]


def evaluate_many(net: StackedNet, x: torch.Tensor, y: torch.Tensor, autocast) -> list[tuple[float, float]]:
    """Mean cross-entropy and accuracy of each stacked model on (x, y); NaN for an empty set."""
    k = net.k
    if len(y) == 0:
        return [(math.nan, math.nan)] * k
    net.eval()
    batch = max(1, min(EVAL_BATCH, EVAL_MODEL_IMAGES // k))
    loss_sum = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.int64)
    with torch.inference_mode(), autocast:
        for start in range(0, len(y), batch):
            target = y[start:start + batch]
            logits = net(x[start:start + batch].repeat(1, k, 1, 1), {}).float()   # every model, same images
            loss_sum += F.cross_entropy(logits.flatten(0, 1), target.repeat(k), reduction="none").view(k, -1).sum(1)
            correct += (logits.argmax(2) == target).sum(1)
    net.train()
    return [(s / len(y), c / len(y)) for s, c in zip(loss_sum.tolist(), correct.tolist())]


def train_group(specs: list[TrainSpec], data: DataSplits, *, device, precision: str = "fp32", built=None,
                progress: bool = True, compile_step: bool = False, desc: str = "group",
                on_epoch=None) -> list[TrainResult]:
    """Train specs that share a group key as one stacked network; one TrainResult per spec, in order.

    `built`: (model, rng state) per spec from _build, when group_specs already built them.
    """
    device = torch.device(device)
    autocast = precision_context(precision, device)
    built = built or [_build(spec, data, device) for spec in specs]
    models = [m for m, _ in built]
    k, first = len(specs), specs[0]
    net = StackedNet(models, data.input_shape).to(device)
    dropout = DropoutStreams(net.dropout, [s for _, s in built], device,
                             torch.bfloat16 if precision == "bf16" else torch.float32)
    optimizer = StackedOptimizer(first.optimizer, net, [s.hyperparameters() for s in specs])
    forward = torch.compile(net) if compile_step else net
    n, batch_size = len(data.y_train), first.batch_size
    active = torch.ones(k, dtype=torch.bool, device=device)

    def batches(epoch: int):
        """Each model its own shuffled batch: images B x K*C x H x W, labels K x B."""
        orders = torch.stack([epoch_order(n, s.seed, epoch) for s in specs]).to(device)   # K x n
        for at in range(0, n, batch_size):
            idx = orders[:, at:at + batch_size]
            yield data.x_train[idx.T].flatten(1, 2), data.y_train[idx]

    def step(xb: torch.Tensor, yb: torch.Tensor, weight: float | None):
        b = yb.shape[1]
        masks = dropout.draw(b)
        with autocast:
            logits = forward(xb, masks)                            # K x B x classes
            losses = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(),
                                     reduction="none").view(k, b).mean(1)
        # The sum of per-model mean losses gives each model exactly its own gradient.
        total = torch.where(active, losses, 0.0).sum()
        (total if weight is None else total * weight).backward()
        return logits, losses

    def stop(i: int):
        net.copy_to(i, models[i])      # its state when it stopped, as train() returns it
        active[i] = False

    # Dropout swaps each model's RNG state in and out of the global one; leave the caller's as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type="cuda"):
        histories, status = run_epochs(
            specs, data, [base_columns(s, data, device, precision) for s in specs], net=net, optimizer=optimizer,
            batches=batches, step=step, evaluate=lambda x, y: evaluate_many(net, x, y, autocast), stop=stop,
            progress=progress, desc=desc, on_epoch=on_epoch)
    for i in range(k):
        if status[i] == "ok":
            net.copy_to(i, models[i])
    return [TrainResult(h, m.to(device), s) for h, m, s in zip(histories, models, status)]
