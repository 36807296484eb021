import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests read MNIST from $LENET_DATA (CI points it at ../shared/data).
os.environ.setdefault("LENET_DATA", str(REPO / "data"))


def _have_mnist() -> bool:
    return (Path(os.environ["LENET_DATA"]) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


@pytest.fixture(scope="session")
def mnist_small():
    """A small MNIST split: 2000 train, 500 validation, 1000 test images."""
    if not _have_mnist():
        pytest.fail(f"MNIST is needed for this test; LENET_DATA={os.environ['LENET_DATA']} lacks MNIST/raw")
    from lenet_lib.core.data import prepare_data
    return prepare_data("mnist", val_size=500, train_size=2000, test_size=1000)
