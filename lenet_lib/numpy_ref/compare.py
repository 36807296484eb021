"""NumPy reference against torch: same initial weights, same batches, timings. Imports torch (the only
numpy_ref module that does); notebooks/numpy_vs_torch.ipynb calls these.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import time

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from lenet_lib.core.data import DataSplits, epoch_order, index_batches
from lenet_lib.core.specs import TrainSpec, with_values
from lenet_lib.core.timing import time_in_turns, training_step
from lenet_lib.core.train import base_columns, build_for, set_determinism
from lenet_lib.numpy_ref import net as numpy_net
from lenet_lib.numpy_ref import optim as numpy_optim
from lenet_lib.numpy_ref.layers import cross_entropy
from lenet_lib.numpy_ref.train import train as train_loop

SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def numpy_state(model: torch.nn.Module, dtype=None) -> dict[str, np.ndarray]:
    """A torch state_dict as NumPy arrays (floating ones cast to dtype when given), for load_torch_state."""
    state = {}
    for key, value in model.state_dict().items():
        array = value.detach().cpu().numpy()
        if dtype is not None and np.issubdtype(array.dtype, np.floating):
            array = array.astype(dtype)
        state[key] = array
    return state


def numpy_splits(data: DataSplits, dtype=np.float32) -> dict[str, np.ndarray]:
    """prepare_data's tensors as NumPy arrays (images in dtype, labels int64)."""
    arrays = {k: getattr(data, k).cpu().numpy() for k in SPLITS}
    return {k: v.astype(dtype) if k.startswith("x") else v for k, v in arrays.items()}


def twin(spec: TrainSpec, data: DataSplits, dtype=np.float32):
    """(NumPy network, torch model) with identical weights: the torch model exactly as lenet_lib.core.train.train
    initializes it for this spec, so both start from the same point."""
    set_determinism(spec.seed)
    model = build_for(spec, data)
    net = numpy_net.build_model(spec.arch, in_channels=data.info["in_channels"], input_size=data.info["input_size"],
                                num_classes=data.info["num_classes"], seed=spec.seed, dtype=dtype,
                                **spec.model_kwargs())
    numpy_net.load_torch_state(net, numpy_state(model))
    return net, model


def train_numpy(spec: TrainSpec, data: DataSplits, dtype=np.float32, batching: str = "shuffle",
                on_epoch=None) -> pd.DataFrame:
    """Train spec's model in NumPy from torch's initial weights; rows with lenet_lib.core.train's columns
    (`kernels` says "numpy"). on_epoch(model_id, epoch, epochs) as in lenet_lib.core.train.train.

    batching "shuffle" takes lenet_lib.core.data.epoch_order's permutation, so NumPy sees torch's batches;
    "contiguous" is R2's random contiguous mini-batches.
    """
    net, _ = twin(spec, data, dtype)
    precision = {np.dtype(np.float32): "fp32", np.dtype(np.float64): "fp64"}[np.dtype(dtype)]
    base = {**base_columns(spec, data, torch.device("cpu"), precision), "kernels": "numpy", "batching": batching,
            "stacked_models": 1}
    order = lambda n, seed, epoch: epoch_order(n, seed, epoch).numpy()  # noqa: E731
    rows = train_loop(net, numpy_splits(data, dtype), spec.optimizer, spec.epochs, spec.batch_size, spec.seed,
                      batching, order, base,
                      on_epoch=on_epoch and (lambda epoch, epochs: on_epoch(spec.model_id, epoch, epochs)),
                      **spec.hyperparameters())
    return pd.DataFrame(rows)


@contextlib.contextmanager
def threads(n: int):
    """Both frameworks on n CPU threads (NumPy's BLAS and torch's intra-op pool), restored afterwards.

    On a CPU shared with other work, 2-thread BLAS calls were measured up to 15x slower than 1-thread
    ones (threads waiting for each other), so timings compare like with like at a fixed count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def layer_times(net, model: torch.nn.Module, x: np.ndarray, repeats: int = 5, device: str = "cpu",
                calls: int = 10) -> pd.DataFrame:
    """Forward time of each layer alone (eval mode, no gradients) on input x, NumPy and torch in turns.

    Each layer gets its own input, the previous layer's output, so a row times that layer only. One row
    per repeat and layer: numpy_s and torch_s, each the mean of `calls` calls, the two timed one after
    the other (after one warm-up call each), so a busy moment hits both; `fastest` takes the minimum.
    The torch side is a copy of model as built: torch's own layers, the framework as R5 used it (lenet_lib's
    fast path is a training speed-up, not the framework).
    """
    device = torch.device(device)
    model = copy.deepcopy(model).to(device).eval()
    net.eval()
    xn, xt = np.asarray(x, dtype=net.dtype), torch.as_tensor(x, dtype=torch.float32, device=device)
    layers = []
    with torch.inference_mode():
        for name, layer in model.named_children():      # each layer with its own input
            layers.append((name, net[name], layer, xn, xt))
            xn, xt = net[name].forward(xn), layer(xt)
        rows = []
        for repeat in range(repeats + 1):               # repeat 0 warms every layer up
            for name, np_layer, layer, xn, xt in layers:
                numpy_s = _mean_seconds(lambda: np_layer.forward(xn), calls, torch.device("cpu"))
                torch_s = _mean_seconds(lambda: layer(xt), calls, device)
                if repeat:
                    rows.append({"layer": name, "type": type(np_layer).__name__,
                                 "parameters": np_layer.parameter_count(), "repeat": repeat,
                                 "numpy_s": numpy_s, "torch_s": torch_s})
    net.train()
    return pd.DataFrame(rows)


def _mean_seconds(fn, calls: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / calls


def fastest(times: pd.DataFrame) -> pd.DataFrame:
    """layer_times' fastest repeat of each layer and framework (other work only ever adds time)."""
    return times.groupby("layer", sort=False).agg(type=("type", "first"), parameters=("parameters", "first"),
                                                  numpy_s=("numpy_s", "min"), torch_s=("torch_s", "min")
                                                  ).reset_index()


def _numpy_step(spec: TrainSpec, data: DataSplits, batches: list[torch.Tensor]):
    """One NumPy training step as a function of no arguments: the next batch, forward, cross-entropy,
    backward, optimizer step (numpy_ref.train's loop), from torch's initial weights."""
    net, _ = twin(spec, data, np.float32)
    optimizer = numpy_optim.make_optimizer(spec.optimizer, net.parameters(), **spec.hyperparameters())
    x, y = data.x_train.numpy(), data.y_train.numpy()
    batch = itertools.cycle([b.numpy() for b in batches])
    net.train()

    def step():
        idx = next(batch)
        loss, dlogits = cross_entropy(net(x[idx]), y[idx])
        net.backward(dlogits)
        optimizer.step(net.grads())
    return step


def step_times(spec: TrainSpec, data: DataSplits, batch_sizes, rounds: int = 10, calls: int = 3,
               warmup: int = 1, progress: bool = False) -> pd.DataFrame:
    """Seconds per training step of spec's model at each batch size, NumPy against torch's own layers and
    optimizer (core.timing.training_step "torch": not lenet_lib's fast path), on the CPU, all in turns:
    every round calls each of them `calls` times, in a shuffled order (core.timing.time_in_turns).

    One row per batch size and kept round: batch_size, round, numpy_s, torch_s (per step), threads.
    """
    batch_sizes = [int(b) for b in batch_sizes]
    data = data if data.device.type == "cpu" else data.to("cpu")
    n = len(data.y_train)
    too_big = [b for b in batch_sizes if b > n]
    if too_big:
        raise ValueError(f"batch size {too_big[0]} is not valid for timing on {n} training images; "
                         f"expected batch sizes <= {n}")
    order = epoch_order(n, spec.seed, 1)
    functions, keys = {}, {}
    for size in batch_sizes:
        sized = with_values(spec, batch_size=size)
        batches = list(index_batches(order, size, drop_last=True))[:calls]
        functions[f"numpy {size}"], keys[f"numpy {size}"] = _numpy_step(sized, data, batches), ("numpy_s", size)
        functions[f"torch {size}"], keys[f"torch {size}"] = (training_step(sized, data, "torch", batches),
                                                             ("torch_s", size))
    rows = {}
    for row in time_in_turns(functions, rounds=rounds, calls=calls, warmup=warmup, progress=progress).itertuples():
        column, size = keys[row.name]
        rows.setdefault((size, row.round), {"batch_size": size, "round": row.round})[column] = row.seconds
    table = pd.DataFrame([rows[key] for key in sorted(rows)], columns=["batch_size", "round", "numpy_s", "torch_s"])
    return table.assign(threads=torch.get_num_threads())
