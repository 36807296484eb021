"""The fast path behind one switch (issue 36): LENET_FAST=0 or TrainSpec(fast=False) trains torch's own
layers and loads nothing of lenet_lib.fast; with it on, the same numbers to float rounding."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from lenet_lib.base.kernel_path import planned_kernel_path
from lenet_lib.core import train as train_module
from lenet_lib.core.models import SparseConv2d, build_model
from lenet_lib.core.specs import TrainSpec
from lenet_lib.running.runner import make_run_id

# the presets' model variants (bench.VARIANTS' settings): R1 BN + dropout, R4 BN in both convs, R2 part II
# BN after the pool with Adam, R2 part I tanh with valid padding, R5 sigmoid FC, LeCun's sparse c3, the MLP
VARIANTS = {
    "R1 BN + dropout": dict(bn=True, dropout=0.5, optimizer="momentum", lr=0.05, momentum=0.9, weight_decay=5e-4),
    "R4 BN both + dropout": dict(bn=True, bn_layers="conv", dropout=0.5, optimizer="sgd", lr=0.05),
    "R2 II BN after pool": dict(bn=True, bn_position="after_pool", dropout=0.4, optimizer="adam", lr=1e-3),
    "R2 I tanh valid": dict(activation="tanh", padding="valid", optimizer="sgd", lr=0.05),
    "R5 sigmoid FC": dict(fc_activation="sigmoid", optimizer="adam", lr=1e-3, batch_size=16),
    "c3 table, avg-pool": dict(c3_table=True, pool="avg", optimizer="adagrad"),
    "MLP": dict(arch="mlp", activation="tanh", optimizer="adagrad", lr=0.01),
}


@pytest.fixture(scope="module")
def digits():
    """320 training, 100 validation, 200 test images: 5 steps of batch 64 per epoch."""
    from lenet_lib.core.data import prepare_data
    if not (Path(os.environ["LENET_DATA"]) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.fail(f"MNIST is needed for this test; LENET_DATA={os.environ['LENET_DATA']} lacks MNIST/raw")
    return prepare_data("mnist", val_size=100, train_size=320, test_size=200)


def test_models_are_torch_nn_layers_only():
    """Every layer of every model is torch.nn's own class (LeCun's sparse c3: an nn.Conv2d subclass of
    core.models); nothing of lenet_lib.fast."""
    for settings in VARIANTS.values():
        kwargs = {k: v for k, v in settings.items() if k in TrainSpec.__dataclass_fields__}
        spec = TrainSpec(**kwargs)
        for layer in build_model(spec.arch, **spec.model_kwargs()).children():
            assert type(layer).__module__.startswith("torch.nn") or type(layer) is SparseConv2d, type(layer)


@pytest.mark.parametrize("label", VARIANTS)
def test_fast_path_on_and_off_train_the_same_numbers(digits, label):
    """train() with the fast path on and off: the same losses, accuracies and weights after two epochs of
    5 steps, to float rounding (BatchNorm's sums and the convolutions in another order). The same dropout
    masks: a draw from torch's generator on one side only would move the losses by 1e-3 at the first step."""
    spec = TrainSpec(epochs=2, seed=1, **{"batch_size": 64, **VARIANTS[label]})
    on = train_module.train(spec, digits, device="cpu", progress=False)
    off = train_module.train(replace(spec, fast=False), digits, device="cpu", progress=False)
    assert set(off.history["kernels"]) == {"torch"} and set(on.history["kernels"]) <= {"c", "pytorch"}
    assert "fast" not in on.history.columns
    for column in ("train_loss", "val_loss", "test_loss"):
        torch.testing.assert_close(torch.tensor(on.history[column].to_numpy()),
                                   torch.tensor(off.history[column].to_numpy()), rtol=2e-4, atol=1e-5)
    for column in ("train_acc", "val_acc", "test_acc"):
        assert abs(on.history[column] - off.history[column]).max() <= 0.011, column   # 1 image in 100
    mine, theirs = on.model.state_dict(), off.model.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:   # as tests/test_fused.py's steps: a max-pool near tie may route a gradient differently
        a, b = mine[key].double(), theirs[key].double()
        assert (a - b).abs().max() <= 2e-2 * b.abs().max().clamp_min(0.1), key


def test_the_model_trained_keeps_torch_layers_and_names(digits):
    """The fast path trains the model's own parameters: the returned model is the torch.nn model, its
    state_dict names those of build_model's."""
    spec = TrainSpec(bn=True, dropout=0.5, epochs=1, batch_size=64)
    result = train_module.train(spec, digits, device="cpu", progress=False)
    assert type(result.model) is nn.Sequential
    assert all(type(layer).__module__.startswith("torch.nn") for layer in result.model.children())
    assert list(result.model.state_dict()) == list(build_model(bn=True, dropout=0.5).state_dict())


SWITCHED_OFF = """
import json, sys
from lenet_lib.core.data import prepare_data
from lenet_lib.core.specs import TrainSpec
from lenet_lib.core.timing import time_variants
from lenet_lib.core.train import train
data = prepare_data("mnist", val_size=50, train_size=128, test_size=50)
spec = TrainSpec(bn=True, dropout=0.5, epochs=1, batch_size=64)
rows = train(spec, data, device="cpu", progress=False).history
time_variants({"a": spec}, data, rounds=1, calls=1, warmup=0, device="cpu", progress=False)
print(json.dumps({"kernels": sorted(set(rows["kernels"])),
                  "fast": sorted(m for m in sys.modules if m.startswith("lenet_lib.fast"))}))
"""


@pytest.mark.parametrize("switch", ["0", "1"])
def test_switched_off_nothing_of_fast_is_imported(switch):
    """LENET_FAST=0, in a fresh process: training and timing load no module of lenet_lib.fast and the rows
    say kernels "torch"; with it on, the fast path is loaded (the test can fail)."""
    env = {**os.environ, "LENET_FAST": switch, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", SWITCHED_OFF], capture_output=True, text=True, env=env, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    if switch == "0":
        assert seen == {"kernels": ["torch"], "fast": []}
    else:
        assert seen["kernels"] in (["c"], ["pytorch"]) and "lenet_lib.fast.layers" in seen["fast"]


def test_the_switch_is_part_of_the_planned_path_and_the_run_id():
    assert planned_kernel_path("cpu", {"LENET_FAST": "0"}) == "torch"
    assert planned_kernel_path("cpu", {"LENET_FAST": "0", "LENET_C_KERNELS": "0"}) == "torch"
    assert planned_kernel_path("cpu", {"LENET_C_KERNELS": "0"}) == "pytorch"
    assert planned_kernel_path("cuda:0", {"LENET_FAST": "0"}) == "cuda"
    ids = {make_run_id("nb", {"epochs": 1}, "h", "l", 2, kernels) for kernels in ("c", "pytorch", "torch")}
    assert len(ids) == 3


def test_fast_is_a_checked_bool():
    with pytest.raises(ValueError, match="fast='yes' is not valid"):
        TrainSpec(fast="yes")


def test_rows_of_torchs_own_layers_fit_a_cpu_run():
    """numpy_vs_torch trains its torch side with fast=False: rows "torch" in a run planned on "c" are no
    mismatch; rows on the fast path in a run planned with it off are."""
    from types import SimpleNamespace
    from lenet_lib.running.executors import KernelPathMismatch, check_kernels
    check_kernels(SimpleNamespace(kernels="c", env={}), ["c", "torch"])
    check_kernels(SimpleNamespace(kernels="pytorch", env={}), ["torch"])
    check_kernels(SimpleNamespace(kernels="torch", env={}), ["torch"])
    for planned, taken in (("torch", ["c"]), ("c", ["pytorch"]), ("cuda", ["torch"])):
        with pytest.raises(KernelPathMismatch):
            check_kernels(SimpleNamespace(kernels=planned, env={}), taken)


def test_the_self_checks_pass_and_leave_torchs_generator_alone():
    """Each private-API self-check (lenet_lib/fast/README.md) passes on the pinned torch and draws nothing
    from the global generator (dropout's masks after it would move: the fast path's numbers with them)."""
    from lenet_lib.fast import one_node, optim
    checks = [one_node._private_apis_agree, one_node._loss_apis_agree, optim._lean_agrees]
    for check in checks:
        check.cache_clear()
        torch.manual_seed(7)
        before = torch.get_rng_state()
        assert check() is True, check.__name__
        assert torch.equal(torch.get_rng_state(), before), check.__name__


def test_an_unknown_trick_is_refused_and_switches_come_back_on():
    from lenet_lib.fast import switches
    with pytest.raises(ValueError, match=r"unknown fast-path trick\(s\) \['fused'\]; valid: \['engine_free'"):
        with switches.off("fused"):
            pass
    with pytest.raises(RuntimeError):
        with switches.off("one_node", "lean_steps"):
            assert not switches.ON["one_node"] and not switches.ON["lean_steps"] and switches.ON["engine_free"]
            raise RuntimeError("a failing step")
    assert all(switches.ON.values())


def test_each_trick_switched_off_takes_its_public_path_with_the_same_numbers(digits):
    """Each private-API trick off (fast/switches.py, what make bench-tricks times): its fallback runs (the
    one node's layers one by one, autograd's backward, torch.optim's step) and trains the same numbers bit
    for bit as with every trick on, as README.md's table says."""
    from lenet_lib.fast import switches
    spec = TrainSpec(epochs=1, seed=3, batch_size=64, **VARIANTS["R1 BN + dropout"])
    on = train_module.train(spec, digits, device="cpu", progress=False)
    model = build_model(spec.arch, **spec.model_kwargs())
    optimizer = train_module.build_optimizer(spec, model, torch.device("cpu"))
    net, optimizer = train_module.accelerated(model, optimizer, torch.device("cpu"))
    x, y = digits.x_train[:64], digits.y_train[:64]
    with switches.off(*switches.ON):
        assert net._plan(x) is None and net.cross_entropy_backward(x, y) is None
        for _ in range(2):
            train_module.loss_and_backward(net, x, y)
            optimizer.step()
        assert optimizer._plan is None
    with switches.off("engine_free"):
        assert net._plan(x) is not None and net.cross_entropy_backward(x, y) is None
    for trick in switches.ON:
        with switches.off(trick):
            off = train_module.train(spec, digits, device="cpu", progress=False)
        for column in ("train_loss", "val_loss", "test_loss", "train_acc", "test_acc"):
            assert off.history[column].tolist() == on.history[column].tolist(), (trick, column)
