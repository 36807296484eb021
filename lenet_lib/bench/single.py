"""`make bench`: training images/s of the library's path against what the reports did, in the same run.

Baseline ("reports"): torchvision MNIST through a DataLoader with ToTensor + Normalize per image,
batch 128 shuffled, test evaluated through a DataLoader at batch 100, torch's own layers. Library:
lenet_lib.core.train on the whole split held as one tensor. Same model (standard LeNet-5), same optimizer
(SGD momentum 0.9, lr 0.05), same batch 128; each side timed over whole epochs including its test-set
evaluation. The paths take turns epoch by epoch, so a busy moment of a shared CPU hits them alike.
The reports' DataLoaders are also timed alone, without a model: the part of their epoch that holding the
data as one tensor removes, and so the ceiling of that trick by itself.

Per variant (the layers the presets use): training steps with lenet_lib's fast path (fast.accelerate) and with
torch's own, in turns in one run (timing.time_in_turns, random batches of the variant's shape), and the
ratio per round with its 95 % CI; a last line gives the smallest and largest ratio and their spread.
"""
from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lenet_lib.bench import ensemble as bench_ensemble
from lenet_lib.fast import c_kernels
from lenet_lib.core.data import DataSplits, prepare_data, report_loaders
from lenet_lib.core.models import build_model
from lenet_lib.core.specs import TrainSpec
from lenet_lib.analysis.stats import paired_log_ratios, t_interval
from lenet_lib.core.timing import time_in_turns, training_step
from lenet_lib.core.train import resolve_device, train


@functools.lru_cache(maxsize=1)
def _baseline_loaders(train_size: int | None):
    """The reports' data path (core.data.report_loaders): MNIST, batch 128 shuffled, test at 100."""
    return report_loaders("mnist", batch_size=128, test_batch_size=100, train_size=train_size)


def baseline_epoch_seconds(train_size: int | None, device: torch.device) -> float:
    """One epoch the reports' way, torch's own layers, test set evaluated at the end."""
    train_loader, test_loader = _baseline_loaders(train_size)
    torch.manual_seed(0)
    model = build_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    start = time.perf_counter()
    model.train()
    for x, y in train_loader:
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_loader:
            correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
    return time.perf_counter() - start


def dataloader_epoch_seconds(train_size: int | None, device: torch.device) -> float:
    """The reports' DataLoaders alone: every batch read and moved to the device, no model."""
    train_loader, test_loader = _baseline_loaders(train_size)
    start = time.perf_counter()
    for loader in (train_loader, test_loader):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
    return time.perf_counter() - start


@functools.lru_cache(maxsize=1)
def _library_data(train_size: int | None, device: torch.device):
    return prepare_data("mnist", val_size=0, train_size=train_size, device=device)


def library_epoch_seconds(train_size: int | None, device: torch.device, precision: str = "fp32") -> float:
    """One epoch of lenet_lib.core.train, its test-set evaluation included."""
    spec = TrainSpec(optimizer="momentum", lr=0.05, momentum=0.9, batch_size=128, epochs=1)
    result = train(spec, _library_data(train_size, device), device=device, precision=precision, progress=False)
    return float(result.history["epoch_seconds"].iloc[0])


REPORTS, LIBRARY, DATA_ONLY = ("reports: DataLoader + ToTensor/Normalize", "lenet_lib: tensor + index batches (fp32)",
                               "reports' DataLoaders alone (no model)")
PATHS = {
    REPORTS: baseline_epoch_seconds,
    LIBRARY: library_epoch_seconds,
    "lenet_lib: tensor + index batches (bf16 autocast)": functools.partial(library_epoch_seconds, precision="bf16"),
    DATA_ONLY: dataloader_epoch_seconds,
}


def single_model(epochs: int, train_size: int | None, device: torch.device) -> pd.DataFrame:
    """images/s per path, from its best and its median epoch; ratios against the reports' path."""
    n = train_size or 60000
    seconds = {path: [] for path in PATHS}
    for _ in range(epochs):
        for path, one_epoch in PATHS.items():
            seconds[path].append(one_epoch(train_size, device))
    table = pd.DataFrame([{"path": path, "images_per_s": n / min(s), "images_per_s_median": n / np.median(s),
                           "epochs_timed": len(s)} for path, s in seconds.items()])
    table["ratio_vs_reports"] = table["images_per_s"] / table["images_per_s"].iloc[0]
    table["ratio_median"] = table["images_per_s_median"] / table["images_per_s_median"].iloc[0]
    return table


def time_split(table: pd.DataFrame, n: int) -> str:
    """Where the reports' epoch goes (median epochs), and what the library's epoch is measured against."""
    seconds = n / table.set_index("path")["images_per_s_median"]
    reports, data_only, library = seconds[REPORTS], seconds[DATA_ONLY], seconds[LIBRARY]
    model = reports - data_only
    return (f"reports' epoch {reports:.2f} s = DataLoaders {data_only:.2f} s + model {model:.2f} s "
            f"(torch's layers, test set included); lenet_lib's epoch {library:.2f} s, "
            f"{model / library:.2f}x the reports' model part alone. Data at no cost and torch's layers would "
            f"give {reports / model:.2f}x; 3x needs lenet_lib's epoch <= {reports / 3:.2f} s.")


# label: (model and optimizer settings, batch size, input channels, input size); the presets' layers
_R1 = dict(bn=True, optimizer="momentum", lr=0.05, momentum=0.9, weight_decay=5e-4)
_R4 = dict(bn=True, bn_layers="conv", optimizer="sgd", lr=0.05)
_R5 = dict(fc_activation="sigmoid", optimizer="adam", lr=1e-3)
_MOMENTUM = dict(optimizer="momentum", lr=0.05, momentum=0.9)
VARIANTS = {
    "plain": (_MOMENTUM, 128, 1, 28),
    "plain, batch 16": (_MOMENTUM, 16, 1, 28),
    "dropout f6": ({**_MOMENTUM, "dropout": 0.5}, 128, 1, 28),
    "BN after act, c1 (R1)": (_R1, 128, 1, 28),
    "BN + dropout (R1)": ({**_R1, "dropout": 0.5}, 128, 1, 28),
    "BN both convs (R4)": (_R4, 128, 1, 28),
    "BN both + dropout (R4)": ({**_R4, "dropout": 0.5}, 128, 1, 28),
    "BN after pool, 32x32, dropout 0.4, Adam (R2 II)": (dict(bn=True, bn_position="after_pool", dropout=0.4,
                                                            optimizer="adam", lr=1e-3), 64, 1, 32),
    "tanh, valid padding (R2 I)": (dict(activation="tanh", padding="valid", optimizer="sgd", lr=0.05), 64, 1, 28),
    "sigmoid FC, batch 16 (R5)": (_R5, 16, 1, 28),
    "sigmoid FC, batch 64 (R5)": (_R5, 64, 1, 28),
    "BN before act + conv dropout, 3x32x32 (R3)": (dict(bn=True, bn_position="before_act", conv_dropout=0.5,
                                                       optimizer="momentum", lr=0.01, momentum=0.9), 128, 3, 32),
    "avg-pool": ({**_MOMENTUM, "pool": "avg"}, 128, 1, 28),
}


# variants whose training times a preset's figures compare with each other (R1's and R4's time ratios, R5's
# time per epoch by batch size): within each, lenet_lib's relative cost should be torch's
PRESET_GROUPS = {
    "R1": ["plain", "dropout f6", "BN after act, c1 (R1)", "BN + dropout (R1)"],
    "R4": ["plain", "BN both convs (R4)", "BN both + dropout (R4)"],
    "R5": ["sigmoid FC, batch 16 (R5)", "sigmoid FC, batch 64 (R5)"],
}


def _random_images(channels: int, size: int, n: int) -> DataSplits:
    """Normal noise and random labels shaped like the variant's dataset: timing needs shapes, not digits."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, channels, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
    empty = x[:0], y[:0]
    return DataSplits(x, y, *empty, *empty, info={"in_channels": channels, "input_size": size, "num_classes": 10})


def variant_table(rounds: int = 20, calls: int = 5, variants: dict | None = None,
                  threads: int | None = None) -> pd.DataFrame:
    """Per variant: training images/s with lenet_lib's layers and torch's, and lenet_lib / torch speed with
    its 95 % CI (per-round ratios of one run in turns, CPU), on `threads` threads (None: as set now)."""
    if threads is None:
        return _variant_table(rounds, calls, variants or VARIANTS)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)   # the C kernels share torch's OpenMP pool, so this sets theirs too
    try:
        return _variant_table(rounds, calls, variants or VARIANTS)
    finally:
        torch.set_num_threads(before)


def _variant_table(rounds: int, calls: int, variants: dict) -> pd.DataFrame:
    functions, keys, sizes = {}, {}, {}
    for label, (settings, batch, channels, size) in variants.items():
        spec = TrainSpec(batch_size=batch, **settings)
        data = _random_images(channels, size, batch * calls)
        batches = [torch.arange(i * batch, (i + 1) * batch) for i in range(calls)]
        for implementation in ("lenet_lib", "torch"):
            name = f"{label} [{implementation}]"
            functions[name] = training_step(spec, data, implementation, batches)
            keys[name] = (label, implementation)
        sizes[label] = batch
    table = time_in_turns(functions, rounds=rounds, calls=calls, progress=False)
    table["label"] = [keys[name][0] for name in table["name"]]
    table["implementation"] = [keys[name][1] for name in table["name"]]
    rows, per_round = [], {}
    for label in variants:
        own = table[table["label"] == label]
        paired = paired_log_ratios(own, "implementation", "seconds", "lenet_lib")   # log(torch / ours) per round
        logs = paired["log_ratio"]
        per_round[label] = paired.set_index("round")["log_ratio"]
        lo, hi = t_interval(logs)
        seconds = own.groupby("implementation")["seconds"].median()
        rows.append({"variant": label, "batch": sizes[label], "threads": torch.get_num_threads(),
                     "lenet_lib_images_per_s": sizes[label] / seconds["lenet_lib"],
                     "torch_images_per_s": sizes[label] / seconds["torch"], "ratio": float(np.exp(logs.mean())),
                     "ci_low": float(np.exp(lo)), "ci_high": float(np.exp(hi))})
    result = pd.DataFrame(rows)
    result.attrs["log_ratios"] = pd.DataFrame(per_round)   # round x variant, for spread_interval
    return result


def spread_interval(log_ratios: pd.DataFrame, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the spread (largest / smallest ratio - 1) from per-round log ratios (round x
    variant). Whole rounds are resampled: each round timed every variant in turns, so the pairing stays."""
    logs = log_ratios.dropna().to_numpy()
    picks = np.random.default_rng(seed).integers(0, len(logs), size=(draws, len(logs)))
    means = logs[picks].mean(axis=1)                       # draws x variants: each variant's mean log ratio
    spreads = np.exp(means.max(axis=1) - means.min(axis=1)) - 1
    return float(np.quantile(spreads, 0.025)), float(np.quantile(spreads, 0.975))


def spread_line(table: pd.DataFrame) -> str:
    """The smallest and largest ratio and their spread, with its 95 % interval where the table has its
    rounds (variant_table's); the spread of noisy ratios reads high, and the interval says by how much."""
    low, high = table["ratio"].min(), table["ratio"].max()
    rounds = table.attrs.get("log_ratios")
    interval = ""
    if rounds is not None and len(rounds.dropna()) > 1:
        lo, hi = spread_interval(rounds)
        interval = f" (95 % CI {lo:.0%} to {hi:.0%})"
    return (f"lenet_lib / torch speed: min {low:.2f}x ({table.loc[table['ratio'].idxmin(), 'variant']}), "
            f"max {high:.2f}x ({table.loc[table['ratio'].idxmax(), 'variant']}), spread {high / low - 1:.0%}"
            f"{interval} (target: every variant >= 1.3x, spread <= 10 %)")


def preset_spread_lines(table: pd.DataFrame) -> list[str]:
    """Per PRESET_GROUPS entry whose variants are all in the table: the spread of their ratios."""
    lines = []
    for preset, labels in PRESET_GROUPS.items():
        ratios = table.set_index("variant")["ratio"].reindex(labels)
        if ratios.notna().all():
            lines.append(f"  within {preset}'s compared variants ({', '.join(labels)}): {ratios.min():.2f}x to "
                         f"{ratios.max():.2f}x, spread {ratios.max() / ratios.min() - 1:.0%}")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 10k-image subset, 2 epochs (CI-sized)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    epochs, train_size = (2, 10000) if args.quick else (5, None)
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}; {c_kernels.describe()}")
    print(f"\n== One model: MNIST, LeNet-5, SGD momentum, batch 128, {epochs} epochs, "
          f"{train_size or 60000} training images, test set evaluated each epoch ==")
    table = single_model(epochs, train_size, device)
    print(table.to_string(index=False, float_format="%.2f"))
    print(time_split(table, train_size or 60000))
    rounds, calls = (6, 3) if args.quick else (20, 5)
    # On every thread this process has, and on one: what each of a report's two kernels gets on 2 cores
    # (running.runner.kernel_threads), so the relative costs that its runs' epoch seconds show.
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        print(f"\n== Per variant, {threads} thread(s): training steps, lenet_lib's layers vs torch's, in turns "
              f"({rounds} rounds of {calls}) ==")
        variants = variant_table(rounds, calls, threads=threads)
        print(variants.to_string(index=False, float_format="%.2f"))
        print(spread_line(variants))
        print("\n".join(preset_spread_lines(variants)))
    print("\n== Many models: batched ensemble vs one at a time ==")
    print(bench_ensemble.run(quick=args.quick).to_string(index=False, float_format="%.2f"))

