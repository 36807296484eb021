"""Which files each dataset needs in the data folder (torchvision's layout), checked without torch.

The runner checks every dataset a report needs once, before any kernel starts, and data.load_raw checks
again in each kernel: a missing, truncated or altered file is one clear line naming it, not a failure
deep inside torchvision. Files are checked against their published size and checksum; a folder may carry
its own `SHA256SUMS` (lines "<sha256>  <file name>"), which then replaces the built-in list (e.g. the
small CIFAR-format files the tests generate).
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

_IDX = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
LAYOUT = {      # dataset -> (folder below the data folder, files in it)
    "mnist": ("MNIST/raw", _IDX),
    "fashion_mnist": ("FashionMNIST/raw", _IDX),
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
}
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
TRAIN_IMAGES = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}   # before any validation split
SUMS_FILE = "SHA256SUMS"

# (algorithm, digest, size in bytes) of the files as published: torchvision's raw MNIST and
# Fashion-MNIST files (the uncompressed idx files), and the CIFAR-10 python batches (torchvision's md5s).
_IDX_SIZES = [47040016, 60008, 7840016, 10008]
CHECKSUMS = {
    "mnist": dict(zip(_IDX, [
        ("sha256", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", _IDX_SIZES[0]),
        ("sha256", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", _IDX_SIZES[1]),
        ("sha256", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", _IDX_SIZES[2]),
        ("sha256", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", _IDX_SIZES[3])])),
    "fashion_mnist": dict(zip(_IDX, [
        ("sha256", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", _IDX_SIZES[0]),
        ("sha256", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", _IDX_SIZES[1]),
        ("sha256", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", _IDX_SIZES[2]),
        ("sha256", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", _IDX_SIZES[3])])),
    "cifar10": {name: ("md5", digest, None) for name, digest in [
        ("data_batch_1", "c99cafc152244af753f735de768cd75f"), ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"), ("data_batch_4", "634d18415352ddfa80567beed471001a"),
        ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"), ("test_batch", "40351d587109b95175f43aff81a1287e"),
        ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888")]},
}


class DataFolderError(ValueError):
    """The data folder's path cannot be resolved (e.g. a symlink loop)."""


def resolved(root: str | Path) -> Path:
    """root as an absolute path, symlinks followed; a DataFolderError in one line when that cannot be done."""
    try:
        return Path(root).expanduser().resolve()
    except (RuntimeError, OSError) as exc:      # RuntimeError: Python < 3.13's symlink loop
        raise DataFolderError(f"data folder {root}: cannot be resolved ({exc}); set LENET_DATA to a folder") \
            from None


def data_root(default: str | Path = "data") -> Path:
    """The data folder, absolute: $LENET_DATA, else (unset or empty) `default`, ./data."""
    return resolved(os.environ.get("LENET_DATA") or default)


def folder(dataset: str, root: str | Path | None = None) -> Path:
    return (resolved(root) if root else data_root()) / LAYOUT[dataset][0]


def missing_files(dataset: str, root: str | Path | None = None) -> list[str]:
    """The files of `dataset` that are not in the data folder (empty: it is all there)."""
    where = folder(dataset, root)
    return [name for name in LAYOUT[dataset][1] if not (where / name).is_file()]


def expected(dataset: str, where: Path) -> dict[str, tuple]:
    """{file: (algorithm, digest, size or None)}: the folder's SHA256SUMS if it has one, else CHECKSUMS."""
    sums = where / SUMS_FILE
    if not sums.is_file():
        return CHECKSUMS[dataset]
    listed = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            listed[parts[1].lstrip("*")] = ("sha256", parts[0].lower(), None)
    return listed


@functools.lru_cache(maxsize=64)
def _digest(path: str, algorithm: str, size: int, mtime_ns: int) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corrupt_files(dataset: str, root: str | Path | None = None) -> list[str]:
    """'<file>: <what is wrong>' for each present file whose size or checksum is not the expected one."""
    where = folder(dataset, root)
    problems = []
    for name, (algorithm, digest, size) in expected(dataset, where).items():
        path = where / name
        if not path.is_file():
            continue
        stat = path.stat()
        if size is not None and stat.st_size != size:
            problems.append(f"{path}: {stat.st_size} bytes, expected {size} (truncated or not this dataset)")
        elif _digest(str(path), algorithm, stat.st_size, stat.st_mtime_ns) != digest:
            problems.append(f"{path}: {algorithm} differs from the published file's (altered or damaged)")
    return problems


def needs(dataset: str, root: str | Path | None = None) -> str | None:
    """None when the dataset is there and intact, else one line saying what is wrong, e.g. "needs CIFAR-10
    (cifar10): /data/cifar-10-batches-py does not exist (expected there: data_batch_1, ...)"."""
    where = folder(dataset, root)
    missing = missing_files(dataset, root)
    if missing:
        what = f"{where} lacks {', '.join(missing)}" if where.is_dir() else f"{where} does not exist"
        return (f"needs {TITLES[dataset]} ({dataset}): {what} (expected there: {', '.join(LAYOUT[dataset][1])}; "
                f"set LENET_DATA to the folder that holds {LAYOUT[dataset][0]}/)")
    corrupt = corrupt_files(dataset, root)
    if corrupt:
        return (f"needs {TITLES[dataset]} ({dataset}) intact: " + "; ".join(corrupt)
                + f". Replace the file(s), or list their sha256 in {where / SUMS_FILE} to use them as they are")
    return None
