"""lenet_lib.experiments.inside and lenet_lib.analysis.sweeps on tiny random models and data (no dataset needed)."""
import numpy as np
import pandas as pd
import pytest
import torch

from lenet_lib.experiments import inside
from lenet_lib.analysis import sweeps, tidy
from lenet_lib.core.models import build_model, forward_features, layer_table


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    return build_model("lenet5", fc_activation="sigmoid")


def test_layer_times_one_row_per_layer_and_repeat(lenet):
    times = inside.layer_times(lenet, (1, 28, 28), batch_sizes=(1, 4), repeats=2, calls=1, warmup=0)
    layers = [name for name, _ in lenet.named_children()]
    assert len(times) == 2 * 2 * len(layers)
    assert (times["seconds"] > 0).all()
    per_batch = times[times["batch_size"] == 4]
    assert np.allclose(per_batch["us_per_image"], 1e6 * per_batch["seconds"] / 4)
    table = inside.layer_time_table(times)
    assert list(table.index) == layers                  # network order, not alphabetical
    assert table["share_1"].sum() == pytest.approx(1.0)
    medians = inside.layer_time_medians(times)
    assert list(medians["layer"].iloc[:len(layers)]) == layers
    assert set(medians["batch"]) == {"batch 1", "batch 4"}
    assert lenet.training                               # the caller's mode is restored


def test_multiply_adds_and_parts(lenet):
    macs = inside.multiply_adds(lenet, (1, 28, 28)).set_index("layer")["multiply_adds"]
    assert macs["c1_conv"] == 6 * 25 * 28 * 28 and macs["c3_conv"] == 16 * 6 * 25 * 10 * 10
    assert macs["c5"] == 400 * 120 and macs["s2"] == 0
    layers = layer_table(lenet, (1, 28, 28))
    times = pd.DataFrame({"batch_size": 1, "layer": layers["layer"], "seconds": 1.0})
    parts = inside.time_by_part(times, layers, inside.multiply_adds(lenet, (1, 28, 28))).set_index("part")
    assert parts["time_share"].sum() == pytest.approx(1.0)
    assert parts.loc["conv", "parameter_share"] == pytest.approx(2_572 / 61_706)
    assert parts.loc["conv", "multiply_add_share"] > 0.5 > parts.loc["conv", "parameter_share"]


def test_one_per_class_finds_the_first_of_each():
    labels = torch.tensor([3, 1, 0, 1, 2, 3, 0])
    assert inside.one_per_class(labels, 4).tolist() == [2, 1, 4, 0]
    with pytest.raises(ValueError, match="class 4"):
        inside.one_per_class(labels, 5)


def test_feature_layers_and_tiles(lenet):
    names = inside.feature_layers(lenet)
    assert names == ["c1_conv", "s2", "c3_conv", "s4"]
    maps = forward_features(lenet, torch.randn(3, 1, 28, 28), names)
    tile = inside.tile_maps(maps["c3_conv"][0])            # 16 maps of 10x10 -> 4 x 4 with 1-pixel gaps
    assert tile.shape == (4 * 11 - 1, 4 * 11 - 1)
    assert np.nanmin(tile) >= 0 and np.nanmax(tile) <= 1 and np.isnan(tile[10]).all()
    assert inside.tile_maps(maps["c1_conv"][0]).shape == (2 * 29 - 1, 3 * 29 - 1)   # 6 maps -> 2 x 3


def test_confusion_matrix_matches_predictions():
    torch.manual_seed(1)
    model = build_model("mlp", num_classes=4, input_size=28)
    x, y = torch.randn(50, 1, 28, 28), torch.randint(0, 4, (50,))
    predicted, probs = inside.predict(model, x, batch_size=16)
    assert torch.equal(predicted, model.eval()(x).argmax(1))
    assert probs.sum(1).allclose(torch.ones(50))
    matrix = inside.confusion_matrix(y, predicted, 4)
    assert matrix.sum() == 50
    assert np.trace(matrix) == int((predicted == y).sum())
    for t in range(4):
        for p in range(4):
            assert matrix[t, p] == int(((y == t) & (predicted == p)).sum())


def test_confused_pairs_and_most_confused_order():
    matrix = np.array([[5, 2, 0], [4, 6, 4], [1, 0, 7]])
    pairs = inside.confused_pairs(matrix, ["a", "b", "c"], top=3)
    # Largest first; the tie between b->a and b->c keeps class order.
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"])) == [("b", "a", 4), ("b", "c", 4),
                                                                            ("a", "b", 2)]
    assert pairs["share_of_true_class"].iloc[0] == pytest.approx(4 / 14)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.1, 0.9]])
    y = torch.tensor([0, 0, 0, 1, 1])
    mistakes = inside.most_confused(y, probs, top=5)
    assert mistakes["index"].tolist() == [1, 3, 2]     # wrong ones, most confident first
    assert mistakes["confidence"].tolist() == pytest.approx([0.8, 0.7, 0.6])
    assert inside.mistake_titles(mistakes, ["x", "y"])[0] == "x→y\n(0.80)"


def test_penultimate_embedding_and_separation(lenet):
    assert inside.penultimate_layer(lenet) == "f6_act"
    assert inside.penultimate_layer(build_model("mlp", dropout=0.2)) == "h2_act"
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    apart = rng.normal(size=(40, 5)) + 10 * labels[:, None]
    points = inside.tsne(apart, seed=0)
    assert points.shape == (40, 2)
    mixed = rng.normal(size=(40, 5))
    assert inside.class_separation(apart, labels) > 0.5 > inside.class_separation(mixed, labels)
    # a diverged model's saturated (identical) or non-finite activations: a clear error, not a segfault
    for degenerate in (np.ones((40, 5)), np.where(apart > 5, np.nan, apart)):
        with pytest.raises(ValueError, match="t-SNE needs finite features"):
            inside.tsne(degenerate, seed=0)


def test_class_names_cover_every_dataset():
    from lenet_lib.core.data import DATASETS
    assert set(inside.CLASS_NAMES) == set(DATASETS)
    assert all(len(names) == 10 for names in inside.CLASS_NAMES.values())
    labelled = inside.labelled([2, 0], "cifar10")
    assert list(labelled) == ["bird", "airplane"]
    assert list(labelled.categories) == inside.CLASS_NAMES["cifar10"]


def test_lenet_and_mlp_specs_are_unique_per_seed():
    specs = inside.lenet_and_mlp_specs([0, 1], epochs=1, batch_size=64, optimizer="adam", lr=1e-3,
                                       activation="relu", fc_activation="sigmoid", mlp_optimizer="adagrad",
                                       mlp_lr=0.01, mlp_activation="tanh")
    assert [s.model_id for s in specs] == ["lenet5-s0", "mlp-s0", "lenet5-s1", "mlp-s1"]
    assert specs[1].optimizer == "adagrad" and specs[1].activation == "tanh"


def test_sweep_best_and_tied():
    final = pd.DataFrame({"batch_size": [16] * 3 + [64] * 3 + [128] * 3,
                          "test_acc": [0.90, 0.91, 0.92, 0.905, 0.915, 0.925, 0.50, 0.51, 0.52]})
    result = sweeps.best_and_tied(final, "batch_size", "test_acc", claimed=64)
    assert result["best"] == 64 and result["claimed_is_best"] and 128 not in result["tied"]
    assert 16 in result["tied"]
    result = sweeps.best_and_tied(final, "batch_size", "test_acc", claimed=128)
    assert not result["claimed_is_best"] and not result["claimed_is_tied"]
    table = sweeps.summary_table({"test_acc": final}, "batch_size")
    assert list(table.index) == [16, 64, 128] and (table["n"] == 3).all()
    seconds = tidy.seconds_per_epoch(pd.DataFrame({"model_id": ["a", "a", "b"], "batch_size": [16, 16, 64],
                                                     "train_seconds": [1.0, 3.0, 5.0]}), "batch_size")
    assert seconds.set_index("model_id")["train_seconds"].to_dict() == {"a": 2.0, "b": 5.0}
