"""The CPU speed tricks in fast/layers.py give torch's numbers: pooling bit for bit, convolution gradients
to float32 rounding (checked against float64)."""
import contextlib

import pytest
import torch
import torch.nn.functional as F

from lenet_lib.fast import c_kernels
from lenet_lib.fast.conv import C3_SMALL, Conv2d, MaskedConv2d, conv2d
from lenet_lib.fast.layers import fast_layers
from lenet_lib.fast.pool import MaxPool2d, max_pool_2x2
from lenet_lib.core.models import build_model
from lenet_lib.core.train import set_determinism


@pytest.mark.parametrize("shape", [(8, 6, 28, 28), (3, 2, 7, 9), (4, 16, 10, 10)])
def test_max_pool_matches_torch_bit_for_bit_with_ties(shape):
    torch.manual_seed(0)
    # small integers: many windows hold two or more equal maxima, where the gradient's target is a choice
    x = torch.randint(-3, 4, shape).float().requires_grad_()
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    ours, theirs = max_pool_2x2(x), F.max_pool2d(x, 2)
    assert torch.equal(ours, theirs)
    assert torch.equal(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(theirs, x, grad)[0])
    with torch.no_grad():
        assert torch.equal(max_pool_2x2(x), theirs)


def test_max_pool_propagates_nan_like_torch():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    assert torch.equal(max_pool_2x2(x).isnan(), F.max_pool2d(x, 2).isnan())


def test_max_pool_layer_falls_back_for_other_geometries():
    x = torch.randn(2, 3, 9, 9)
    assert torch.equal(MaxPool2d(3, stride=2)(x), F.max_pool2d(x, 3, stride=2))
    assert torch.equal(MaxPool2d(2, ceil_mode=True)(x), F.max_pool2d(x, 2, ceil_mode=True))


def _conv_and_grads(x64, w64, b64, grad64, fn, dtype, sse2_only=False):
    """fn's output and its gradients for x, w, b (as dtype), for the output gradient grad64."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (x64, w64, b64)]
    with c_kernels.sse2_only(sse2_only) if c_kernels.load() is not None else contextlib.nullcontext():
        out = fn(*leaves)
        return [out.detach()] + list(torch.autograd.grad(out, leaves, grad64.to(dtype)))


# c3 (6 -> 16 maps, 14x14) and c1 (1 or 3 -> 6 maps, 28x28 or 32x32), at batch sizes the presets use
@pytest.mark.parametrize("batch, cin, maps, size, padding", [(32, 6, 16, 14, 0), (32, 6, 16, 14, 2), (128, 6, 16, 14, 0),
                                                            (16, 1, 6, 28, 2), (64, 1, 6, 32, 0), (16, 3, 6, 32, 0)])
def test_conv_gradients_as_close_to_float64_as_torchs(batch, cin, maps, size, padding):
    torch.manual_seed(1)
    x64 = torch.randn(batch, cin, size, size, dtype=torch.float64)
    w64, b64 = torch.randn(maps, cin, 5, 5, dtype=torch.float64), torch.randn(maps, dtype=torch.float64)
    out = size - 4 + 2 * padding
    grad64 = torch.randn(batch, maps, out, out, dtype=torch.float64)

    torchs = lambda x, w, b: F.conv2d(x, w, b, padding=padding)                     # noqa: E731
    exact = _conv_and_grads(x64, w64, b64, grad64, torchs, torch.float64)
    ours = _conv_and_grads(x64, w64, b64, grad64, lambda x, w, b: conv2d(x, w, b, padding), torch.float32)
    theirs = _conv_and_grads(x64, w64, b64, grad64, torchs, torch.float32)
    for e, o, t in zip(exact, ours, theirs):    # forward (csrc/conv3.c at small sizes) and both gradients
        ours_error, torch_error = (o.double() - e).abs().max(), (t.double() - e).abs().max()
        assert ours_error <= 2 * torch_error + 1e-6 * e.abs().max()
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d(x, w, b, padding),
                                    (x64[:1, :, :8, :8].clone().requires_grad_(), w64[:4].clone().requires_grad_(),
                                     b64[:4].clone().requires_grad_()))


def test_conv_layer_without_bias_and_input_gradient_only():
    torch.manual_seed(2)
    layer = Conv2d(6, 16, 5, bias=False)
    x = torch.randn(4, 6, 14, 14, requires_grad=True)
    layer.weight.requires_grad_(False)
    (grad,) = torch.autograd.grad(layer(x).sum(), x)
    (expected,) = torch.autograd.grad(F.conv2d(x, layer.weight).sum(), x)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("kwargs", [{}, {"c3_table": True}, {"bn": True, "bn_layers": "conv"},
                                    {"in_channels": 3, "input_size": 32}])
def test_lenet5_trains_like_one_built_from_torchs_layers(kwargs):
    """A LeNet-5 with this folder's convolutions and max-pools (fast_layers) and the model as built, torch's
    layers: same outputs and gradients."""
    set_determinism(0)
    ours = fast_layers(build_model(**kwargs))
    theirs = build_model(**kwargs)
    theirs.load_state_dict(ours.state_dict())
    assert not any(type(m) in (Conv2d, MaxPool2d) for m in theirs.modules())
    assert type(ours.c1_conv) is Conv2d and type(ours.s2) is MaxPool2d
    assert type(ours.c3_conv) is (MaskedConv2d if kwargs.get("c3_table") else Conv2d)
    x = torch.randn(16, kwargs.get("in_channels", 1), kwargs.get("input_size", 28), kwargs.get("input_size", 28))
    y = torch.randint(0, 10, (16,))
    for model in (ours, theirs):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(ours(x), theirs(x))


# c3 at the presets' shapes: 14x14 -> 10x10 (padding "same" c1, or 32x32 inputs), 12x12 -> 8x8 (R2 part I),
# batch 16 to 128 and a remainder batch; on AVX-512 its forward and weight gradient run direct at every batch
# (csrc/conv3.c), the input gradient too on 14x14
@pytest.mark.parametrize("batch, size", [(128, 14), (64, 14), (16, 14), (5, 14), (64, 12), (16, 12)])
def test_c3_direct_kernels_are_as_close_to_float64_as_torchs(batch, size):
    lib = c_kernels.load()
    if lib is None:
        pytest.skip("no C kernels (needs x86-64 and a C compiler)")
    torch.manual_seed(batch + size)
    x64, w64 = torch.randn(batch, 6, size, size, dtype=torch.float64), torch.randn(16, 6, 5, 5, dtype=torch.float64)
    b64, grad64 = torch.randn(16, dtype=torch.float64), torch.randn(batch, 16, size - 4, size - 4, dtype=torch.float64)
    ours = lambda x, w, b: conv2d(x, w, b, 0)                                          # noqa: E731
    exact = _conv_and_grads(x64, w64, b64, grad64, lambda x, w, b: F.conv2d(x, w, b), torch.float64)
    theirs = _conv_and_grads(x64, w64, b64, grad64, lambda x, w, b: F.conv2d(x, w, b), torch.float32)
    wide = _conv_and_grads(x64, w64, b64, grad64, ours, torch.float32)
    narrow = _conv_and_grads(x64, w64, b64, grad64, ours, torch.float32, sse2_only=True)
    for name, e, t, a, b in zip(["output", "grad x", "grad w", "grad b"], exact, theirs, wide, narrow):
        torch_error = (t.double() - e).abs().max()
        for path, o in (("direct", a), ("sse2", b)):
            assert (o.double() - e).abs().max() <= 2 * torch_error + 1e-6 * e.abs().max(), (name, path)
    with c_kernels.sse2_only():
        assert not lib.conv3_direct(5, size, 16)
    if lib.conv3_direct(5, size, 16) and batch * (size - 4) ** 2 <= C3_SMALL:
        # both paths run C here: the direct forward sums the same terms in the same order as im2col's
        assert torch.equal(wide[0], narrow[0])


# c1 at the presets' shapes: on AVX-512 its forward writes whole rows straight into the output (csrc/conv1.c
# rows_forward); the terms and their order are those of the flat-layout path, so the numbers are too
@pytest.mark.parametrize("batch, cin, size, padding", [(128, 1, 28, 2), (64, 1, 32, 0), (16, 1, 28, 0), (5, 3, 32, 2)])
def test_c1_forward_rows_give_the_flat_paths_numbers(batch, cin, size, padding):
    if c_kernels.load() is None:
        pytest.skip("no C kernels (needs x86-64 and a C compiler)")
    torch.manual_seed(batch)
    x, w, b = torch.randn(batch, cin, size, size), torch.randn(6, cin, 5, 5), torch.randn(6)
    with torch.no_grad():
        wide = conv2d(x, w, b, padding)
        with c_kernels.sse2_only():
            narrow = conv2d(x, w, b, padding)
    assert torch.equal(wide, narrow)
    exact = F.conv2d(x.double(), w.double(), b.double(), padding=padding)
    theirs = F.conv2d(x, w, b, padding=padding)
    assert (wide.double() - exact).abs().max() <= 2 * (theirs.double() - exact).abs().max() + 1e-6
