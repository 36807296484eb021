import hashlib
import pickle

import numpy as np
import pytest
import torch
import torchvision

from lenet_lib.core.data import DataMissingError, epoch_order, index_batches, load_raw, prepare_data
from torchvision.datasets.utils import calculate_md5 as md5_of


def test_mnist_splits_are_disjoint_normalized_and_seeded(mnist_small):
    d = mnist_small
    assert d.x_train.shape == (2000, 1, 28, 28) and d.x_val.shape == (500, 1, 28, 28)
    assert d.x_test.shape == (1000, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    # standardized with the training mean/std: mean near 0, std near 1
    assert abs(d.x_train.mean().item()) < 0.1 and abs(d.x_train.std().item() - 1) < 0.1
    again = prepare_data("mnist", val_size=500, train_size=2000, test_size=1000)
    assert torch.equal(again.x_val, d.x_val) and torch.equal(again.y_train, d.y_train)
    other = prepare_data("mnist", val_size=500, train_size=2000, test_size=1000, split_seed=1)
    assert not torch.equal(other.y_val, d.y_val)


def test_validation_never_overlaps_training():
    images, _ = load_raw("mnist", True)
    d = prepare_data("mnist", val_size=5000, normalize="unit")
    assert len(d.y_train) + len(d.y_val) == len(images) == 60000
    def digests(x):
        return {hash(row.numpy().tobytes()) for row in (x * 255).round().to(torch.uint8).flatten(1)}
    overlap = digests(d.x_train) & digests(d.x_val)
    assert len(overlap) <= 2    # disjoint indices; MNIST itself holds a couple of duplicate images


def test_pad_and_resize_to_32():
    padded = prepare_data("mnist", val_size=10, train_size=20, test_size=10, input_size=32, normalize="unit")
    assert padded.x_train.shape[1:] == (1, 32, 32)
    assert padded.x_train[:, :, :2, :].abs().max() == 0      # black zero border
    resized = prepare_data("mnist", val_size=10, train_size=20, test_size=10, input_size=32,
                           resize="interpolate", normalize="center")
    assert resized.x_train.shape[1:] == (1, 32, 32)
    assert resized.info["normalize"] == "center"


def test_input_scales_standard_center_unit_and_raw_pixels():
    """One image under each normalisation: (x-mean)/std, x-mean, x in [0, 1], and the pixel values 0..255
    themselves (R4's "normalized to [0,255]", R4 l.38)."""
    images, _ = load_raw("mnist", False)
    first = images[0].double()
    x = {n: prepare_data("mnist", val_size=0, train_size=10, test_size=10000, normalize=n).x_test[0].double()
         for n in ("standard", "center", "unit", "raw")}
    assert torch.equal(x["raw"], first) and x["raw"].max() == 255      # exact pixel values, not rescaled
    assert torch.allclose(x["unit"], first / 255, atol=1e-7)
    assert torch.allclose(x["center"], first / 255 - 0.1307, atol=1e-6)
    assert torch.allclose(x["standard"], (first / 255 - 0.1307) / 0.3081, atol=1e-5)
    # resized to 32x32, raw inputs are the [0, 1] ones times 255 (the resize is linear)
    unit32, raw32 = (prepare_data("mnist", val_size=0, train_size=10, test_size=10, input_size=32,
                                  resize="interpolate", normalize=n).x_train for n in ("unit", "raw"))
    assert raw32.shape[1:] == (1, 32, 32) and torch.allclose(raw32, unit32 * 255, atol=1e-3)


def test_r4_split_50000_training_images_and_the_whole_test_set():
    """R4 l.38: 50,000 training and 10,000 test images; with no validation split the other 10,000 training
    images are left out (a seeded subset, the same for every model seed)."""
    d = prepare_data("mnist", val_size=0, train_size=50000, normalize="unit")
    assert d.x_train.shape == (50000, 1, 28, 28) and d.x_val.shape[0] == 0 and d.x_test.shape[0] == 10000
    assert (d.info["train_size"], d.info["val_size"], d.info["test_size"]) == (50000, 0, 10000)
    _, labels = load_raw("mnist", True)
    assert not torch.equal(d.y_train, labels[:50000])                 # a shuffled subset, not the first 50k
    assert torch.equal(prepare_data("mnist", val_size=0, train_size=50000, normalize="unit").y_train, d.y_train)


@pytest.mark.parametrize("bad, message", [
    (dict(dataset="mnsit"), "dataset='mnsit'"),
    (dict(normalize="zscore"), "normalize='zscore'.*'raw'"),
    (dict(input_size=30), "input_size=30"),
    (dict(val_size=-1), "val_size=-1"),
    (dict(train_size=0), "train_size=0"),
    (dict(val_size=59000, train_size=5000), "exceed"),
])
def test_bad_parameters_raise_before_loading(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        prepare_data(**bad)


def test_missing_data_offline_names_folder_and_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_DATA", str(tmp_path / "nowhere"))
    load_raw.cache_clear()
    with pytest.raises(DataMissingError) as err:
        prepare_data("fashion_mnist", download=False)
    text = str(err.value)
    assert str((tmp_path / "nowhere").resolve()) in text and "fashion_mnist" in text
    assert "FashionMNIST/raw/" in text and "LENET_DATA" in text
    # with download allowed but no network, the same clear error (torchvision's download is tried)
    with pytest.raises(DataMissingError, match="download failed"):
        load_raw("fashion_mnist", True, str(tmp_path / "nowhere"), True)
    load_raw.cache_clear()
    assert not (tmp_path / "nowhere").exists()             # the failed download left no empty folders


def _write_cifar(root, n_train_per_batch=20, n_test=30, seed=0):
    """Files in CIFAR-10's python layout (pickled dicts), small."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train_per_batch
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    # not the published bytes: the folder vouches for its files itself (datafiles.SUMS_FILE)
    (folder / "SHA256SUMS").write_text("".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n"
                                               for n in [*names, "batches.meta"]))
    return folder


def test_cifar10_loads_generated_cifar_format(tmp_path, monkeypatch):
    folder = _write_cifar(tmp_path)
    cls = torchvision.datasets.CIFAR10
    # The generated files are real CIFAR format but not the published bytes: give torchvision their md5s.
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{i}", md5_of(folder / f"data_batch_{i}")]
                                            for i in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5_of(folder / "test_batch")]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5_of(folder / "batches.meta")})
    load_raw.cache_clear()
    d = prepare_data("cifar10", val_size=10, root=str(tmp_path))
    load_raw.cache_clear()
    assert d.x_train.shape == (90, 3, 32, 32) and d.x_test.shape == (30, 3, 32, 32)
    assert d.info["in_channels"] == 3
    raw = pickle.loads((folder / "test_batch").read_bytes())
    first = raw["data"][0].reshape(3, 32, 32) / 255.0
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    expected = (first - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(d.x_test[0].numpy(), expected, atol=1e-5)   # channels in the right order
    assert d.y_test[0].item() == raw["labels"][0]


def test_epoch_order_is_a_seeded_permutation():
    a, b = epoch_order(100, seed=3, epoch=1), epoch_order(100, seed=3, epoch=1)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, epoch_order(100, seed=3, epoch=2))
    assert not torch.equal(a, epoch_order(100, seed=4, epoch=1))
    sizes = [len(b) for b in index_batches(a, 32)]
    assert sizes == [32, 32, 32, 4]
    assert [len(b) for b in index_batches(a, 32, drop_last=True)] == [32, 32, 32]


def test_dataset_names_shared_with_the_torch_free_checks():
    from lenet_lib.base.choices import DATASET_NAMES
    from lenet_lib.core.data import DATASETS
    assert tuple(DATASETS) == DATASET_NAMES
