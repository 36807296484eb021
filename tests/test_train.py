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


def test_a_seed_fixes_what_the_variants_a_claim_compares_share(mnist_small, monkeypatch):
    """Common random numbers, so the verdicts may pair variants by seed: at one seed the variants get the same
    initialization of the layers they share, the same batches in the same order, and the same dropout stream
    (the same global RNG state before every step: BatchNorm draws nothing, so dropout's masks are equal)."""
    from lenet_lib.core import train as train_module
    from lenet_lib.core.data import DataSplits
    from lenet_lib.fast import fused, one_node

    class Recording(DataSplits):
        def train_batch(self, idx):
            seen["batches"].append(idx.clone())
            seen["rng"].append(torch.get_rng_state())       # dropout's stream as the step starts
            return super().train_batch(idx)

    def build_for(spec, data):
        model = real_build(spec, data)
        seen["init"] = {k: v.clone() for k, v in model.state_dict().items()}
        return model

    def dropout_keep(numel, p):
        keep, scale = real_keep(numel, p)
        seen["masks"].append(keep.clone())
        return keep, scale

    real_build, real_keep = train_module.build_for, fused.dropout_keep
    monkeypatch.setattr(train_module, "build_for", build_for)
    monkeypatch.setattr(fused, "dropout_keep", dropout_keep)
    monkeypatch.setattr(one_node, "dropout_keep", dropout_keep)
    data = Recording(**{k: getattr(mnist_small, k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test",
                                                             "y_test")}, info=mnist_small.info)

    def run(**changes):
        seen.update(batches=[], rng=[], masks=[], init={})
        spec = TrainSpec(**{**R1, "epochs": 1, "seed": 3, "bn_layers": "conv", "dropout_at": "f6", **changes})
        train(spec, data, device="cpu", progress=False)
        return {k: list(v) if isinstance(v, list) else dict(v) for k, v in seen.items()}

    seen = {}
    plain, bn = run(), run(bn=True)
    drop, bn_drop = run(dropout=0.5), run(bn=True, dropout=0.5)
    shared = [k for k in plain["init"] if k in bn["init"]]
    assert {"c1_conv.weight", "c3_conv.weight", "c5.weight", "f6.weight", "out.bias"} <= set(shared)
    for other in (bn, drop, bn_drop):
        assert all(torch.equal(plain["init"][k], other["init"][k]) for k in shared)
        assert len(other["batches"]) == 63 and all(map(torch.equal, plain["batches"], other["batches"]))
    assert all(torch.equal(a, b) for a, b in zip(drop["rng"], bn_drop["rng"]))
    assert not torch.equal(drop["rng"][0], drop["rng"][1])         # dropout does draw, step by step
    assert all(torch.equal(plain["rng"][0], state) for state in plain["rng"] + bn["rng"])   # the others never
    if drop["masks"]:                                               # drawn by the C kernels: compare them too
        assert len(drop["masks"]) == 63 and all(map(torch.equal, drop["masks"], bn_drop["masks"]))
    # R4's rates, R2's optimizers, R5's batch sizes: the same initialization and the same epoch order
    for changes in (dict(dropout=0.8), dict(optimizer="adam", lr=1e-3, momentum=None), dict(batch_size=64)):
        other = run(**changes)
        assert all(torch.equal(plain["init"][k], other["init"][k]) for k in plain["init"])
        assert torch.equal(torch.cat(plain["batches"]), torch.cat(other["batches"]))
