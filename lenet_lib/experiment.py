"""What notebooks call: train a list of specs on one dataset, get tidy rows, save them for the runner."""
from __future__ import annotations

import pandas as pd

from .data import DataSplits
from .ensemble import train_many
from .results import save_results
from .specs import TrainSpec


def run_specs(specs: list[TrainSpec], data: DataSplits, *, device="auto", precision: str = "fp32",
              progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Train all specs; return (tidy history of all models, {model_id: trained model})."""
    ids = [s.model_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"model_id values must be unique within a run; repeated: "
                         f"{sorted({i for i in ids if ids.count(i) > 1})}")
    results = train_many(specs, data, device=device, precision=precision, progress=progress)
    history = pd.concat([r.history for r in results], ignore_index=True)
    return history, {s.model_id: r.model for s, r in zip(specs, results)}


def final_epoch(history: pd.DataFrame) -> pd.DataFrame:
    """The last recorded epoch of every model (a diverged model's last row)."""
    if history.empty:
        return history
    keys = [c for c in ("run_id", "model_id") if c in history.columns]
    return history.sort_values("epoch").groupby(keys, as_index=False).tail(1).reset_index(drop=True)





def seconds_per_epoch(history: pd.DataFrame, by, value: str = "train_seconds") -> pd.DataFrame:
    """Mean of `value` over each model's epochs, with the `by` column(s): one value per model, so seeds
    are the sample for a confidence interval."""
    by = [by] if isinstance(by, str) else list(by)
    keys = [c for c in ("run_id", "model_id") if c in history.columns] + by
    return history.groupby(keys, as_index=False)[value].mean()


def variant_name(bn: bool, dropout: float) -> str:
    """The four BN x dropout variants of R1 and R4: plain, BN, dropout, BN+dropout."""
    return {(False, False): "plain", (True, False): "BN", (False, True): "dropout",
            (True, True): "BN+dropout"}[(bool(bn), dropout > 0)]


def add_variant(history: pd.DataFrame) -> pd.DataFrame:
    """A 'variant' column from the bn and dropout columns."""
    if history.empty:
        return history.assign(variant=pd.Series(dtype=str))
    return history.assign(variant=[variant_name(b, p) for b, p in zip(history["bn"], history["dropout"])])


VARIANT_ORDER = ["plain", "BN", "dropout", "BN+dropout"]


def lr_grid(optimizer: str, factors) -> list[float]:
    """A log grid around the optimizer's default learning rate: default x each factor."""
    from .optim import resolve_hyperparameters
    base = resolve_hyperparameters(optimizer)["lr"]
    return [float(f"{base * f:.3g}") for f in factors]


def best_by_validation(history: pd.DataFrame, group: str, choice: str, metric: str = "val_acc") -> pd.Series:
    """For each value of `group`, the `choice` (e.g. lr) whose final-epoch `metric`, averaged over seeds,
    is highest. Only the validation split decides; diverged models count as failures (metric NaN -> -inf)."""
    final = final_epoch(history)
    score = final.assign(_score=final[metric].where(final["status"] == "ok").fillna(-float("inf")))
    means = score.groupby([group, choice])["_score"].mean().reset_index()
    return means.loc[means.groupby(group)["_score"].idxmax()].set_index(group)[choice]
