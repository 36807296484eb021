"""What notebooks call: train a list of specs on one dataset, get tidy rows, save them for the runner."""
from __future__ import annotations

import pandas as pd

from lenet_lib.base import progress as run_progress
from lenet_lib.core.data import DataSplits
from lenet_lib.core.ensemble import train_many
from lenet_lib.core.specs import TrainSpec


def run_specs(specs: list[TrainSpec], data: DataSplits, *, device="auto", precision: str = "fp32",
              progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Train all specs; return (tidy history of all models, {model_id: trained model}).

    Under the runner, every epoch done is counted in the run's progress file (lenet_lib.base.progress)."""
    ids = [s.model_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"model_id values must be unique within a run; repeated: "
                         f"{sorted({i for i in ids if ids.count(i) > 1})}")
    # an epoch is the whole training set, or a block of iterations (TrainSpec.iterations)
    block = specs[0].iterations // specs[0].epochs * specs[0].batch_size if specs and specs[0].iterations else 0
    run_progress.RECORDER.plan(sum(s.epochs for s in specs), images_per_epoch=block or len(data.y_train))
    results = train_many(specs, data, device=device, precision=precision, progress=progress,
                         on_epoch=run_progress.RECORDER.epoch_done)
    history = pd.concat([r.history for r in results], ignore_index=True)
    return history, {s.model_id: r.model for s, r in zip(specs, results)}


def base_hyperparameters(optimizer: str, source: str = "default") -> dict:
    """Where an optimizer's learning-rate grid starts: {"lr"} from the suite's defaults (choices.DEFAULT_LR),
    or R2's printed {"lr", "momentum" for "momentum"} (core/r2_printed.py)."""
    from lenet_lib.base.checks import check_choice
    from lenet_lib.base.choices import HYPERPARAMETER_SOURCES
    from lenet_lib.core.optim import resolve_hyperparameters
    from lenet_lib.core.r2_printed import printed_hyperparameters
    check_choice("hyperparameters", source, HYPERPARAMETER_SOURCES)
    if source == "r2_printed":
        return printed_hyperparameters(optimizer)
    return {"lr": resolve_hyperparameters(optimizer)["lr"]}


def lr_grid(optimizer: str, factors, source: str = "default") -> list[float]:
    """A log grid around the optimizer's base learning rate (base_hyperparameters): base x each factor."""
    base = base_hyperparameters(optimizer, source)["lr"]
    return [float(f"{base * f:.3g}") for f in factors]
