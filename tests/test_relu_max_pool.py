"""The fused ReLU + max-pool (C kernels, or the PyTorch fallback) gives torch.relu + F.max_pool2d's numbers
bit for bit, and training with it gives the same numbers as training without it."""
import os
import platform
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lenet_lib.core.train as train_module
from lenet_lib.base import kernel_path
from lenet_lib.fast import c_kernels
from lenet_lib.fast import layers as fast_layers_module
from lenet_lib.fast.layers import accelerate, fast_layers
from lenet_lib.fast.pool import ReLUMaxPool2d, relu_max_pool_2x2
from lenet_lib.core.models import build_model
from lenet_lib.core.specs import TrainSpec

CAN_BUILD = platform.machine().lower() in ("x86_64", "amd64") and shutil.which("cc") is not None


@pytest.fixture(params=["c_kernels", "c_kernels_sse2", "pytorch"])
def kernels(request, monkeypatch):
    """Each test runs on the C kernels (AVX-512 where the CPU has it), on their SSE2 path, and on the
    PyTorch fallback."""
    if request.param == "pytorch":
        monkeypatch.setattr(c_kernels, "load", lambda: None)
        yield request.param
        return
    if c_kernels.load() is None:
        pytest.skip("no C kernels on this machine (needs x86-64 and a C compiler)")
    with c_kernels.sse2_only(request.param == "c_kernels_sse2"):
        yield "c_kernels"


def _awkward_input(shape, nan: bool):
    """Small integers: ties everywhere and windows all <= 0; with nan, NaN in a window and a whole NaN window."""
    torch.manual_seed(0)
    x = torch.randint(-3, 4, shape).float()
    x[0, 0, 0, :4] = torch.tensor([1.0, 1.0, -2.0, 0.0])
    if nan:
        x[0, 0, 1, :2] = torch.tensor([float("nan"), 1.0])
        x[-1, -1, :2, :2] = float("nan")
    return x


def _both(x, grad):
    ours_in, theirs_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = relu_max_pool_2x2(ours_in), F.max_pool2d(torch.relu(theirs_in), 2)
    ours.backward(grad)
    theirs.backward(grad)
    return (ours, ours_in.grad), (theirs, theirs_in.grad)


# c1 and c3 maps of every preset; odd sides; rows of more than 16 windows (AVX-512 takes 16 at a time)
@pytest.mark.parametrize("shape", [(8, 6, 28, 28), (4, 16, 10, 10), (3, 2, 7, 9), (2, 3, 4, 4), (2, 6, 24, 24),
                                   (2, 16, 8, 8), (2, 6, 32, 32), (2, 3, 40, 37), (1, 2, 2, 66)])
def test_values_and_gradients_bit_for_bit(kernels, shape):
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    (ours, ours_grad), (theirs, theirs_grad) = _both(_awkward_input(shape, nan=False), grad)
    assert torch.equal(ours, theirs) and torch.equal(ours_grad, theirs_grad)


@pytest.mark.parametrize("shape", [(4, 16, 10, 10), (3, 2, 7, 9), (2, 3, 40, 37)])
def test_nan_like_torch(kernels, shape):
    """NaN propagates on both paths; the C kernels also send its gradient where ATen does (the NaN)."""
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    (ours, ours_grad), (theirs, theirs_grad) = _both(_awkward_input(shape, nan=True), grad)
    assert torch.equal(ours.isnan(), theirs.isnan()) and ours.isnan().any()
    assert torch.equal(ours.nan_to_num(7.0), theirs.nan_to_num(7.0))
    if kernels == "c_kernels":
        assert torch.equal(ours_grad, theirs_grad)


def test_without_gradients_and_in_inference_mode(kernels):
    x = torch.randn(4, 6, 28, 28)
    expected = F.max_pool2d(torch.relu(x), 2)
    with torch.no_grad():
        assert torch.equal(relu_max_pool_2x2(x), expected)
    with torch.inference_mode():
        assert torch.equal(relu_max_pool_2x2(x), expected)


def test_inputs_the_kernels_do_not_take_use_pytorch():
    x = torch.randn(4, 6, 28, 28)
    strided = x.transpose(2, 3)                     # not contiguous
    assert torch.equal(relu_max_pool_2x2(strided), F.max_pool2d(torch.relu(strided), 2))
    half = x.to(torch.bfloat16)
    assert torch.equal(relu_max_pool_2x2(half), F.max_pool2d(torch.relu(half), 2))


def test_fusion_keeps_names_and_shares_every_parameter():
    model = build_model()
    net = accelerate(model)
    assert [n for n, _ in net.named_children()] == [n for n, _ in model.named_children()]
    assert isinstance(net.c1_act, nn.Identity) and isinstance(net.s2, ReLUMaxPool2d)
    assert isinstance(net.c3_act, nn.Identity) and isinstance(net.s4, ReLUMaxPool2d)
    assert isinstance(model.c1_act, nn.ReLU) and type(model.c1_conv) is nn.Conv2d   # model itself unchanged
    assert all(p is q for p, q in zip(net.parameters(), model.parameters()))
    assert net.c1_conv._parameters is model.c1_conv._parameters    # a parameter replaced on model is net's too


def test_fusion_of_each_conv_tail():
    """ReLU + max-pool alone: ReLUMaxPool2d; with BatchNorm, dropout, tanh / sigmoid or avg-pool: ConvTail."""
    from lenet_lib.fast.fused import ConvTail
    after_act = accelerate(build_model(bn=True, bn_position="after_act", bn_layers="conv"))
    assert isinstance(after_act.s2, ConvTail) and isinstance(after_act.c1_bn, nn.Identity)
    before_act = accelerate(build_model(bn=True, bn_position="before_act"))
    assert isinstance(before_act.s2, ConvTail) and isinstance(before_act.s4, ReLUMaxPool2d)
    for kwargs in ({"activation": "tanh"}, {"pool": "avg"}, {"activation": "sigmoid", "pool": "avg"}):
        net = accelerate(build_model(**kwargs))
        assert isinstance(net.s2, ConvTail) and isinstance(net.s4, ConvTail), kwargs
    mlp = build_model("mlp", activation="relu")
    assert accelerate(mlp) is mlp    # no conv tail: Linear layers only


@pytest.mark.parametrize("kwargs", [{}, {"c3_table": True}, {"in_channels": 3, "input_size": 32}])
def test_fused_model_gives_the_same_outputs_and_gradients(kernels, kwargs):
    """Bit for bit where only ReLU + max-pool fuse (BatchNorm's tails: tests/test_fused.py)."""
    torch.manual_seed(0)
    model = fast_layers(build_model(**kwargs))       # the same layers unfused: the C convolutions both sides
    net = accelerate(model)
    x = torch.randn(16, kwargs.get("in_channels", 1), kwargs.get("input_size", 28), kwargs.get("input_size", 28))
    y = torch.randint(0, 10, (16,))
    grads = []
    for m in (model, net):
        m.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))


def test_training_is_the_same_fused_or_not(kernels, mnist_small, monkeypatch):
    spec = TrainSpec(optimizer="momentum", lr=0.05, momentum=0.9, epochs=2, seed=3)
    fused = train_module.train(spec, mnist_small, device="cpu", progress=False)
    monkeypatch.setattr(fast_layers_module, "fuse_relu_max_pool", lambda model: model)   # fast layers, unfused
    plain = train_module.train(spec, mnist_small, device="cpu", progress=False)
    columns = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    assert fused.history[columns].equals(plain.history[columns])
    assert isinstance(fused.model.c1_act, nn.ReLU)          # the caller gets the model as built
    for a, b in zip(fused.model.state_dict().values(), plain.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.skipif(not CAN_BUILD, reason="needs x86-64 and a C compiler")
def test_kernels_build_once_and_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # CC is the user's knob: a wrapper that compiles without optimisation (a later -O0 wins) builds the same
    # sources in seconds instead of a minute; what this test checks is the cache, not the code
    fast_cc = tmp_path / "cc-O0"
    fast_cc.write_text(f'#!/bin/sh\nexec {shutil.which(os.environ.get("CC", "cc"))} "$@" -O0\n')
    fast_cc.chmod(0o755)
    monkeypatch.setenv("CC", str(fast_cc))
    first = c_kernels._build()
    assert first.parent == tmp_path / "lenet_lib" and first.exists()
    mtime = first.stat().st_mtime_ns
    assert c_kernels._build() == first and first.stat().st_mtime_ns == mtime
    assert list(first.parent.iterdir()) == [first]           # no temporary file left behind


def test_without_kernels_load_returns_none_and_describe_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_path.platform, "machine", lambda: "x86_64")
    monkeypatch.setenv("CC", "no-such-compiler")
    c_kernels.load.cache_clear()
    try:
        assert c_kernels.load() is None
        assert "no-such-compiler" in c_kernels.describe() and "PyTorch fallback" in c_kernels.describe()
        monkeypatch.setenv("CC", "false")                     # a compiler that fails
        c_kernels.load.cache_clear()
        assert c_kernels.load() is None and "failed" in c_kernels.describe()
        monkeypatch.setattr(kernel_path.platform, "machine", lambda: "arm64")
        c_kernels.load.cache_clear()
        assert c_kernels.load() is None and "arm64" in c_kernels.describe()
        monkeypatch.setenv("LENET_C_KERNELS", "0")
        c_kernels.load.cache_clear()
        assert c_kernels.load() is None and "LENET_C_KERNELS=0" in c_kernels.describe()
    finally:
        c_kernels.load.cache_clear()


@pytest.mark.skipif(not CAN_BUILD, reason="needs x86-64 and a C compiler")
def test_describe_names_the_loaded_library():
    assert c_kernels.describe().startswith("C kernels: ") and "lenet_kernels-" in c_kernels.describe()
