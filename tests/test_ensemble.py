"""train_many in batched mode is the same experiment as training each model alone with train().

Tolerances: the stacked network sums in a different order (grouped convolutions, batched matmuls), so
numbers agree to float rounding, not bit for bit. Some settings amplify rounding whatever its source:
scaling every input pixel by one ulp moves train()'s own losses by 2e-4 for BN after both convs with
Adam lr 3e-3 (and 1 vs 2 CPU threads by 7e-3 for BN + momentum lr 0.05 at batch 64), and the stacked
network lands at that order of distance there (9e-4). These tests use settings that do not amplify
(batch 128, 8 steps, BN after c1: a one-ulp input change moves losses by < 3e-6), where the two agree
to ~1e-6, inside the 1e-4 asserted, with identical accuracies.
"""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lenet_lib.core.ensemble import group_specs, train_many
from lenet_lib.core.models import forward_features
from lenet_lib.core.specs import TrainSpec
from lenet_lib.core.train import evaluate, train

METRICS = ["train_loss", "val_loss", "test_loss"]
ACCURACIES = ["train_acc", "val_acc", "test_acc"]
TIMES = ["train_seconds", "epoch_seconds", "stacked_models"]


@pytest.fixture(scope="module")
def data():
    """512 training images (4 batches of 128), 250 validation, 250 test."""
    if not (Path(os.environ["LENET_DATA"]) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.fail(f"MNIST is needed for this test; LENET_DATA={os.environ['LENET_DATA']} lacks MNIST/raw")
    from lenet_lib.core.data import prepare_data
    return prepare_data("mnist", val_size=250, train_size=512, test_size=250)


def assert_same_experiment(many, alone, data):
    """Same rows (every configuration column, same epochs and status), losses to float tolerance,
    accuracies identical."""
    assert many.status == alone.status
    a, b = many.history, alone.history
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    rest = [c for c in a.columns if c not in METRICS + ACCURACIES + TIMES]
    assert a[rest].equals(b[rest])
    np.testing.assert_allclose(a[METRICS].to_numpy(), b[METRICS].to_numpy(), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(a[ACCURACIES].to_numpy(), b[ACCURACIES].to_numpy())
    # The returned model is a plain nn.Sequential holding the trained weights and BatchNorm buffers: it
    # reproduces its own last row. (Weights are not compared one by one: where a gradient is rounding
    # noise, Adam's step is not, so single weights may differ by ~lr while every metric agrees.)
    assert type(many.model) is nn.Sequential
    assert list(many.model.state_dict()) == list(alone.model.state_dict())
    if many.status == "ok":
        last = a.iloc[-1]
        device = next(many.model.parameters()).device
        loss, acc = evaluate(many.model, data.x_test.to(device), data.y_test.to(device))
        assert loss == pytest.approx(last.test_loss, abs=1e-5) and acc == last.test_acc
        features = forward_features(many.model, data.x_val[:5].to(device), ["out"])["out"]
        assert features.shape == (5, 10) and torch.isfinite(features).all()


def check_against_train(specs, data, device="cpu"):
    many = train_many(specs, data, device=device, mode="batched", progress=False)
    assert len(many) == len(specs)
    for spec, result in zip(specs, many):
        assert_same_experiment(result, train(spec, data, device=device, progress=False), data)
    return many


@pytest.mark.parametrize("optimizer, hyper", [
    ("momentum", [dict(lr=0.02), dict(lr=0.05, momentum=0.5), dict(lr=0.02, weight_decay=5e-4)]),
    ("adam", [dict(), dict(lr=5e-4), dict(weight_decay=1e-4)]),
])
def test_batchnorm_group_matches_training_alone(data, optimizer, hyper):
    """Seeds x per-model lr / momentum / weight decay, BN after c1: one stacked network."""
    specs = [TrainSpec(bn=True, optimizer=optimizer, seed=seed, epochs=2, model_id=f"m{seed}",
                       **hp) for seed, hp in enumerate(hyper)]
    assert len(group_specs(specs, data, "cpu")) == 1
    check_against_train(specs, data)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_dropout_group_matches_training_alone(data, optimizer):
    """Different p per model (0: no dropout layer at all), FC and conv dropout: the same masks as alone."""
    rates = [(0.5, "c5_f6", 0.2), (0.3, "f6", 0.0), (0.0, "f6", 0.0), (0.5, "f6", 0.1)]
    specs = [TrainSpec(dropout=p, dropout_at=at, conv_dropout=conv, optimizer=optimizer, seed=seed, epochs=2,
                       model_id=f"m{seed}") for seed, (p, at, conv) in enumerate(rates)]
    assert len(group_specs(specs, data, "cpu")) == 1
    many = check_against_train(specs, data)
    # Same seed, different p: different training, so the masks really were drawn per model.
    assert many[0].history.train_loss.iloc[-1] != many[3].history.train_loss.iloc[-1]


def test_mixed_specs_are_split_into_groups_and_returned_in_spec_order(data):
    specs = [TrainSpec(bn=True, seed=0, epochs=1, model_id="bn0"),
             TrainSpec(arch="mlp", activation="tanh", optimizer="adagrad", seed=0, epochs=1, model_id="mlp0"),
             TrainSpec(optimizer="adam", seed=0, epochs=1, model_id="adam0"),
             TrainSpec(bn=True, seed=1, epochs=1, model_id="bn1"),
             TrainSpec(arch="mlp", activation="tanh", optimizer="adagrad", seed=1, epochs=1, model_id="mlp1"),
             TrainSpec(bn=True, seed=2, epochs=1, batch_size=256, model_id="bn2-b256"),
             TrainSpec(bn=True, seed=3, epochs=1, optimizer="gd", model_id="bn3-gd"),
             TrainSpec(c3_table=True, pool="avg", activation="tanh", seed=0, epochs=1, model_id="lecun")]
    groups = group_specs(specs, data, "cpu")
    assert [[m.index for m in g] for g in groups] == [[0, 3], [1, 4], [2], [5], [6], [7]]
    many = check_against_train(specs, data)
    assert [r.history.model_id.iloc[0] for r in many] == [s.model_id for s in specs]


def test_a_diverging_model_stops_and_the_others_go_on(data):
    specs = [TrainSpec(optimizer="sgd", lr=lr, seed=seed, epochs=2, model_id=f"lr{lr}")
             for seed, lr in [(0, 0.05), (1, 100.0), (2, 0.02)]]
    many = check_against_train(specs, data)
    assert [r.status for r in many] == ["ok", "diverged", "ok"]
    assert [len(r.history) for r in many] == [2, 1, 2]
    assert many[1].history.status.tolist() == ["diverged"]


def test_batched_rows_divide_as_train_does_and_report_each_epoch_once():
    """300 training images (the last batch short): train_acc identical to train()'s for any training size (the
    sums divided in float64, as train() does), and on_epoch hears each model's epochs, none after it stopped."""
    from lenet_lib.core.data import prepare_data
    small = prepare_data("mnist", val_size=50, train_size=300, test_size=50)
    specs = [TrainSpec(optimizer="sgd", lr=lr, seed=seed, epochs=2, model_id=f"lr{lr}")
             for seed, lr in [(0, 0.05), (1, 100.0)]]
    heard = []
    many = train_many(specs, small, device="cpu", mode="batched", progress=False,
                      on_epoch=lambda *args: heard.append(args))
    assert heard == [("lr0.05", 1, 2), ("lr100.0", 1, 2), ("lr0.05", 2, 2)]
    for spec, result in zip(specs, many):
        alone = train(spec, small, device="cpu", progress=False)
        assert result.history.train_acc.tolist() == alone.history.train_acc.tolist()
        assert result.history.steps.tolist() == alone.history.steps.tolist()


def test_auto_is_sequential_on_cpu_and_identical_to_train(data):
    spec = TrainSpec(dropout=0.5, seed=4, epochs=1)
    (result,) = train_many([spec], data, device="cpu", progress=False)
    alone = train(spec, data, device="cpu", progress=False)
    assert result.history.drop(columns=TIMES).equals(alone.history.drop(columns=TIMES))


def test_mode_is_validated_before_any_work(data):
    with pytest.raises(ValueError, match=r"mode='fast' is not valid; choose one of \['auto', 'batched'"):
        train_many([TrainSpec()], data, mode="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_on_cuda_matches_training_alone(data):
    """On CUDA, dropout masks come from each model's own CUDA RNG stream through the same fused kernel."""
    specs = [TrainSpec(bn=True, dropout=p, optimizer="momentum", lr=0.02, seed=seed, epochs=2, model_id=f"m{seed}")
             for seed, p in enumerate([0.5, 0.0, 0.3])]
    check_against_train(specs, data, device="cuda")
