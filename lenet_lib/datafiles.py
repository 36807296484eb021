"""Which files each dataset needs in the data folder (torchvision's layout), checked without torch.

The runner asks before any kernel starts, so a missing dataset is one clear line, not a failure inside
every notebook that needs it.
"""
from __future__ import annotations

import os
from pathlib import Path

_IDX = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
LAYOUT = {      # dataset -> (folder below the data folder, files in it)
    "mnist": ("MNIST/raw", _IDX),
    "fashion_mnist": ("FashionMNIST/raw", _IDX),
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
}
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def data_root() -> Path:
    """The data folder: $LENET_DATA, else ./data."""
    return Path(os.environ.get("LENET_DATA", "data")).expanduser()


def folder(dataset: str, root: str | Path | None = None) -> Path:
    return (Path(root) if root else data_root()).expanduser().resolve() / LAYOUT[dataset][0]


def missing_files(dataset: str, root: str | Path | None = None) -> list[str]:
    """The files of `dataset` that are not in the data folder (empty: it is all there)."""
    where = folder(dataset, root)
    return [name for name in LAYOUT[dataset][1] if not (where / name).is_file()]


def needs(dataset: str, root: str | Path | None = None) -> str | None:
    """None when the dataset is there, else e.g. "needs CIFAR-10: cifar-10-batches-py/ not found in /data
    (expected data_batch_1, ..., batches.meta)"."""
    missing = missing_files(dataset, root)
    if not missing:
        return None
    where = folder(dataset, root)
    what = f"{where} lacks {', '.join(missing)}" if where.is_dir() else f"{where} does not exist"
    return (f"needs {TITLES[dataset]} ({dataset}): {what} (expected there: {', '.join(LAYOUT[dataset][1])}; "
            f"set LENET_DATA to the folder that holds {LAYOUT[dataset][0]}/)")
