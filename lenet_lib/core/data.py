"""Datasets: load through torchvision once, then hold each split as one normalized tensor on the device.

Speed: the reports fed a DataLoader with per-image ToTensor/Normalize; holding a split as one tensor and
batching by index removes that per-image Python work (figures in docs/speed.md).
"""
from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from lenet_lib.base.choices import NORMALIZATIONS, RESIZE_MODES, TRAIN_ORDERS
from lenet_lib.base import datafiles
from lenet_lib.base.datafiles import data_root
from lenet_lib.base.checks import check_choice, check_nonneg_int, check_positive_int


@dataclass(frozen=True)
class DatasetInfo:
    torchvision_class: str
    channels: int
    size: int
    mean: tuple[float, ...]     # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...]
    layout: str                 # files torchvision expects below the data folder


DATASETS = {
    "mnist": DatasetInfo("MNIST", 1, 28, (0.1307,), (0.3081,),
                         "MNIST/raw/{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte"),
    "fashion_mnist": DatasetInfo("FashionMNIST", 1, 28, (0.2860,), (0.3530,),
                                 "FashionMNIST/raw/{train,t10k}-images-idx3-ubyte and "
                                 "{train,t10k}-labels-idx1-ubyte"),
    "cifar10": DatasetInfo("CIFAR10", 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           "cifar-10-batches-py/data_batch_1..5, test_batch and batches.meta"),
}


class DataMissingError(FileNotFoundError):
    """The dataset is not in the data folder and could not be downloaded."""


@functools.lru_cache(maxsize=8)
def load_raw(dataset: str, train: bool, root: str | None = None, download: bool = True):
    """One split as (uint8 images N x C x H x W, int64 labels), read by torchvision.

    The files are checked first (datafiles: present, published size and checksum). Missing ones are
    downloaded when the network allows (a failed download leaves no folders behind); otherwise, or when a
    file is damaged, DataMissingError names the folder, the file and what was expected.
    """
    check_choice("dataset", dataset, tuple(DATASETS))
    info = DATASETS[dataset]
    root = Path(root) if root else data_root()
    if datafiles.missing_files(dataset, root):
        if not download:
            raise DataMissingError(_missing_message(dataset, root, "download disabled"))
        _download(dataset, root)
    damaged = datafiles.corrupt_files(dataset, root)
    if damaged:
        raise DataMissingError(f"{dataset} in data folder {root.resolve()} is damaged: {'; '.join(damaged)}")
    ds = getattr(torchvision.datasets, info.torchvision_class)(str(root), train=train, download=False)
    images = torch.as_tensor(np.asarray(ds.data))
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # CIFAR is NHWC
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images.contiguous(), labels


def _download(dataset: str, root: Path) -> None:
    """torchvision's download into root; on failure, remove the folders it made (so an offline machine
    does not end up with an empty MNIST/raw/ that looks like data)."""
    layout = Path(datafiles.LAYOUT[dataset][0])
    candidates = [root] + [root.joinpath(*layout.parts[:i + 1]) for i in range(len(layout.parts))]
    made = [p for p in candidates if not p.exists()]
    try:
        getattr(torchvision.datasets, DATASETS[dataset].torchvision_class)(str(root), train=True, download=True)
    except Exception as exc:    # any network or integrity failure: the user needs the same advice
        for path in reversed(made):
            shutil.rmtree(path, ignore_errors=True)
        raise DataMissingError(_missing_message(dataset, root, f"download failed: {exc}")) from None


def _missing_message(dataset: str, root: Path, why: str) -> str:
    why = " ".join(line.strip() for line in why.splitlines() if line.strip())[:300]
    return (f"{dataset} not found in data folder {root.resolve()} ({why}). Expected torchvision's "
            f"layout there: {DATASETS[dataset].layout}. Set LENET_DATA to the folder that holds it, or "
            f"run once with network access to download it.")


@dataclass
class DataSplits:
    """Train / validation / test tensors (normalized float32, on one device) and what shaped them."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def train_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images and labels at the indices idx: x_train[idx]'s values, by the cheaper index_select."""
        return self.x_train.index_select(0, idx), self.y_train.index_select(0, idx)

    def to(self, device) -> "DataSplits":
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return DataSplits(**moved, info=dict(self.info))


def _to_float(images: torch.Tensor, info: DatasetInfo, input_size: int, resize: str, normalize: str):
    x = images.float() if normalize == "raw" else images.float().div_(255.0)   # raw: pixel values 0..255
    if input_size != info.size:
        if resize == "pad":     # zero (black) border, as LeCun padded 28x28 digits into 32x32
            margin = (input_size - info.size) // 2
            x = F.pad(x, (margin, input_size - info.size - margin) * 2)
        else:
            x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    if normalize == "standard":
        x = (x - mean) / torch.tensor(info.std).view(1, -1, 1, 1)
    elif normalize == "center":
        x = x - mean
    return x.contiguous()


def prepare_data(
    dataset: str = "mnist",
    val_size: int = 5000,
    train_size: int | None = None,
    test_size: int | None = None,
    input_size: int | None = None,
    resize: str = "pad",
    normalize: str = "standard",
    split_seed: int = 0,
    train_order: str = "shuffled",
    device: str | torch.device = "cpu",
    root: str | None = None,
    download: bool = True,
) -> DataSplits:
    """Load `dataset` and carve a seeded validation split from its training set.

    val_size images are held out of the training set (the test set is never used for a choice);
    train_size / test_size take seeded subsets for quick runs (None: all). input_size 32 pads (or
    interpolates, resize="interpolate") 28x28 images. The split depends on split_seed only, so every
    model of an experiment sees the same validation set whatever its own seed. train_order "file" keeps
    the training images in the dataset file's order (R2's contiguous slices, R2 l.252-255) instead of the
    split's shuffled one.
    """
    check_choice("dataset", dataset, tuple(DATASETS))
    check_choice("normalize", normalize, NORMALIZATIONS)
    check_choice("resize", resize, RESIZE_MODES)
    check_choice("train_order", train_order, TRAIN_ORDERS)
    info = DATASETS[dataset]
    input_size = input_size or info.size
    check_choice("input_size", input_size, tuple(sorted({info.size, 32})))
    check_nonneg_int("val_size", val_size)
    check_nonneg_int("split_seed", split_seed)
    for name, value in (("train_size", train_size), ("test_size", test_size)):
        if value is not None:
            check_positive_int(name, value)

    images, labels = load_raw(dataset, True, str(root) if root else None, download)
    test_images, test_labels = load_raw(dataset, False, str(root) if root else None, download)
    n = len(labels)
    if val_size + (train_size or 1) > n:
        raise ValueError(f"val_size={val_size} plus train_size={train_size} exceed the {n} training images "
                         f"of {dataset}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_size is not None:
        train_idx = train_idx[:train_size]
    if train_order == "file":
        train_idx = train_idx.sort().values
    test_idx = torch.arange(len(test_labels))
    if test_size is not None:
        test_size = min(test_size, len(test_labels))
        test_idx = torch.randperm(len(test_labels), generator=torch.Generator().manual_seed(split_seed))[:test_size]
        test_idx = test_idx.sort().values

    def split(imgs, lbls, idx):
        return _to_float(imgs[idx], info, input_size, resize, normalize).to(device), lbls[idx].to(device)

    x_train, y_train = split(images, labels, train_idx)
    x_val, y_val = split(images, labels, val_idx)
    x_test, y_test = split(test_images, test_labels, test_idx)
    meta = {"dataset": dataset, "train_size": len(y_train), "val_size": len(y_val), "test_size": len(y_test),
            "input_size": input_size, "resize": resize, "normalize": normalize, "split_seed": split_seed,
            "train_order": train_order,
            "in_channels": info.channels, "num_classes": 10}
    return DataSplits(x_train, y_train, x_val, y_val, x_test, y_test, meta)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The order of training examples in one epoch: a permutation seeded by (seed, epoch), on the CPU.

    Stateless, so a model trained alone and the same model trained inside an ensemble see the same
    batches, and an epoch can be replayed without replaying the ones before it.
    """
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch)))


def index_batches(order: torch.Tensor, batch_size: int, drop_last: bool = False):
    """Slices of `order`, batch_size at a time (the last one shorter unless drop_last)."""
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def report_loaders(dataset: str = "mnist", batch_size: int = 128, test_batch_size: int = 100,
                   train_size: int | None = None, test_size: int | None = None, input_size: int | None = None,
                   resize: str = "pad", normalize: str = "standard", seed: int = 0, root: str | None = None):
    """The reports' data path: torchvision's dataset read image by image through per-image transforms
    (pad or resize to input_size, ToTensor, Normalize) in DataLoaders; training batches shuffled (seeded),
    test batches in order (R1 l.114: 128 shuffled, 100 not). (train loader, test loader)."""
    check_choice("dataset", dataset, tuple(DATASETS))
    check_choice("normalize", normalize, NORMALIZATIONS)
    check_choice("resize", resize, RESIZE_MODES)
    check_positive_int("batch_size", batch_size)
    check_positive_int("test_batch_size", test_batch_size)
    info = DATASETS[dataset]
    input_size = input_size or info.size
    check_choice("input_size", input_size, tuple(sorted({info.size, 32})))
    load_raw(dataset, True, root)       # the files checked (and fetched) as prepare_data checks them
    steps = []
    if input_size != info.size:
        margin = (input_size - info.size) // 2
        steps.append(torchvision.transforms.Pad((margin, margin, input_size - info.size - margin,
                                                 input_size - info.size - margin))
                     if resize == "pad" else torchvision.transforms.Resize(input_size))
    steps.append(torchvision.transforms.ToTensor())
    if normalize != "unit":
        std = info.std if normalize == "standard" else (1.0,) * info.channels
        steps.append(torchvision.transforms.Normalize(info.mean, std))
    transform = torchvision.transforms.Compose(steps)
    cls = getattr(torchvision.datasets, info.torchvision_class)
    folder = str(Path(root) if root else data_root())
    train_set = cls(folder, train=True, transform=transform, download=False)
    test_set = cls(folder, train=False, transform=transform, download=False)
    if train_size is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(train_size, len(train_set))))
    if test_size is not None:
        test_set = torch.utils.data.Subset(test_set, range(min(test_size, len(test_set))))
    generator = torch.Generator().manual_seed(seed)
    return (torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator),
            torch.utils.data.DataLoader(test_set, batch_size=test_batch_size, shuffle=False))
