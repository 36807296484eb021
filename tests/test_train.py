import math

import pytest
import torch

from lenet_lib.core.train import build_for
from lenet_lib.experiments.runs import run_specs
from lenet_lib.analysis.tidy import final_epoch
from lenet_lib.core.specs import TrainSpec, expand_grid
from lenet_lib.core.train import train

# R1's optimizer; batch 32 so that one epoch of the 2000-image subset is 63 steps.
R1 = dict(optimizer="momentum", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=32)


def test_one_epoch_on_a_small_subset_clearly_beats_chance(mnist_small):
    result = train(TrainSpec(**R1, epochs=1), mnist_small, device="cpu", progress=False)
    row = result.history.iloc[0]
    assert result.status == "ok" and row["status"] == "ok"
    assert row["val_acc"] > 0.6 and row["test_acc"] > 0.6       # chance is 0.1
    assert 0 < row["train_seconds"] <= row["epoch_seconds"]
    assert row["dataset"] == "mnist" and row["train_size"] == 2000 and row["device"] == "cpu"
    assert row["lr"] == 0.05 and row["momentum"] == 0.9 and row["epoch"] == 1


def test_same_seed_same_numbers_other_seed_other_numbers(mnist_small):
    spec = TrainSpec(**R1, epochs=2, dropout=0.5, bn=True, seed=7)
    cols = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    a = train(spec, mnist_small, device="cpu", progress=False).history[cols]
    b = train(spec, mnist_small, device="cpu", progress=False).history[cols]
    assert a.equals(b)
    c = train(TrainSpec(**R1, epochs=2, dropout=0.5, bn=True, seed=8), mnist_small, device="cpu",
              progress=False).history[cols]
    assert not a.equals(c)


def test_divergence_is_caught_and_marked(mnist_small):
    spec = TrainSpec(optimizer="sgd", lr=1e6, epochs=3)
    result = train(spec, mnist_small, device="cpu", progress=False)
    assert result.status == "diverged"
    assert len(result.history) < 3 and result.history["status"].iloc[-1] == "diverged"
    assert not math.isfinite(result.history["train_loss"].iloc[-1])


def test_full_batch_gd_takes_one_step_per_epoch(mnist_small):
    result = train(TrainSpec(optimizer="gd", lr=0.5, epochs=2), mnist_small, device="cpu", progress=False)
    model = result.model
    assert result.status == "ok"
    # one step per epoch: the model after 2 epochs equals 2 manual full-batch steps from the same init
    spec = TrainSpec(optimizer="gd", lr=0.5)
    torch.manual_seed(spec.seed)
    manual = build_for(spec, mnist_small)
    opt = torch.optim.SGD(manual.parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(manual(mnist_small.x_train), mnist_small.y_train).backward()
        opt.step()
    for p, q in zip(model.parameters(), manual.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (dict(batch_size=0), "batch_size=0"),
    (dict(epochs=1.5), "epochs=1.5"),
    (dict(seed=-1), "seed=-1"),
    (dict(optimizer="lbfgs"), "optimizer='lbfgs'"),
    (dict(activation="swish"), "activation='swish'"),
    (dict(dropout=-0.1), "dropout=-0.1"),
])
def test_bad_specs_raise_before_any_work(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainSpec(**bad)


def test_unknown_spec_field_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown training parameter.*'lrate'.*'lr'"):
        TrainSpec.from_dict({"lrate": 0.1})


def test_bad_precision_and_device_raise(mnist_small):
    with pytest.raises(ValueError, match="precision='fp8'"):
        train(TrainSpec(), mnist_small, precision="fp8", progress=False)
    with pytest.raises(ValueError, match="tf32"):
        train(TrainSpec(), mnist_small, device="cpu", precision="tf32", progress=False)


def test_expand_grid_and_run_specs_give_tidy_rows(mnist_small):
    specs = expand_grid({"bn": [False, True], "seed": [0, 1]}, epochs=2, **R1)
    assert [s.model_id for s in specs] == ["bn=False,seed=0", "bn=False,seed=1", "bn=True,seed=0",
                                           "bn=True,seed=1"]
    history, models = run_specs(specs, mnist_small, device="cpu", progress=False)
    assert len(history) == 8 and set(models) == {s.model_id for s in specs}
    last = final_epoch(history)
    assert len(last) == 4 and (last["epoch"] == 2).all()
    with pytest.raises(ValueError, match="given both"):
        expand_grid({"seed": [0]}, seed=1)
    with pytest.raises(ValueError, match="unique"):
        run_specs([specs[0], specs[0]], mnist_small, progress=False)


def test_bf16_autocast_is_recorded(mnist_small):
    result = train(TrainSpec(**R1, epochs=1), mnist_small, device="cpu", precision="bf16", progress=False)
    assert result.history["precision"].iloc[0] == "bf16" and result.history["test_acc"].iloc[0] > 0.5
