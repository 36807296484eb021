"""NumPy reference against torch: same initial weights, same batches, timings. Imports torch (the only
numpy_ref module that does); notebooks/numpy_vs_torch.ipynb calls these.
"""
from __future__ import annotations

import contextlib
import copy
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from lenet_lib.core.data import DataSplits, epoch_order
from lenet_lib.core.specs import TrainSpec
from lenet_lib.core.train import base_columns, build_for, set_determinism
from lenet_lib.fast.layers import with_torch_layers
from lenet_lib.numpy_ref import net as numpy_net
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


def time_it(fn, repeats: int = 5, device: torch.device | None = None) -> float:
    """Fastest of `repeats` timed calls of fn(), after one warm-up call.

    The minimum, not the mean: other work on the machine only ever adds time, so the fastest call is
    the best estimate of what the code itself costs.
    """
    device = device or torch.device("cpu")
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def layer_times(net, model: torch.nn.Module, x: np.ndarray, repeats: int = 5, device: str = "cpu",
                calls: int = 10) -> pd.DataFrame:
    """Forward time of each layer alone (eval mode, no gradients) on input x, NumPy and torch in turns.

    Each layer gets its own input, the previous layer's output, so a row times that layer only. One row
    per repeat and layer: numpy_s and torch_s, each the mean of `calls` calls, the two timed one after
    the other (after one warm-up call each), so a busy moment hits both; `fastest` takes the minimum.
    The torch side is a copy of model with torch's own layers (fast.layers.with_torch_layers), the
    framework as R5 used it: lenet_lib's CPU layers are a training speed-up, not the framework.
    """
    device = torch.device(device)
    model = with_torch_layers(copy.deepcopy(model)).to(device).eval()
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


def forward_backward_times(net, model: torch.nn.Module, x: np.ndarray, y: np.ndarray, repeats: int = 5,
                           device: str = "cpu") -> dict:
    """Seconds for one training forward + backward (loss and all parameter gradients) of batch (x, y)."""
    device = torch.device(device)
    model = model.to(device).train()
    net.train()
    xn = np.asarray(x, dtype=net.dtype)
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, device=device)

    def numpy_step():
        loss, dlogits = cross_entropy(net(xn), y)
        net.backward(dlogits)

    def torch_step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xt), yt).backward()

    return {"numpy_s": time_it(numpy_step, repeats), "torch_s": time_it(torch_step, repeats, device)}
