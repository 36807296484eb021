"""fused.ConvTail, layer pattern by layer pattern, on each path of csrc/conv_tail.c (AVX-512 where the CPU
has it, and SSE2): the forward pass gives torch's own layers' numbers bit for bit, and both paths give the
same outputs and gradients (bit for bit without BatchNorm; BatchNorm's backward sums in another order).
fused.BatchNorm (a BatchNorm2d alone, csrc/batch_norm.c) likewise against nn.BatchNorm2d."""
import pytest
import torch
from torch import nn

from lenet_lib.fast import c_kernels
from lenet_lib.fast.fused import BatchNorm, ConvTail
from lenet_lib.fast.layers import accelerate
from lenet_lib.core.models import build_model

pytestmark = pytest.mark.skipif(c_kernels.load() is None, reason="no C kernels (needs x86-64 and a C compiler)")

PATTERNS = {   # every tail the presets use, and the rarer combinations the kernels allow
    "relu, max": lambda c: [nn.ReLU(), nn.MaxPool2d(2)],
    "BN before relu (R3)": lambda c: [nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)],
    "relu, BN (R1, R4)": lambda c: [nn.ReLU(), nn.BatchNorm2d(c), nn.MaxPool2d(2)],
    "relu, dropout (R3)": lambda c: [nn.ReLU(), nn.Dropout(0.5), nn.MaxPool2d(2)],
    "relu, BN, dropout": lambda c: [nn.ReLU(), nn.BatchNorm2d(c), nn.Dropout(0.3), nn.MaxPool2d(2)],
    "relu, avg": lambda c: [nn.ReLU(), nn.AvgPool2d(2)],
    "relu, dropout, avg": lambda c: [nn.ReLU(), nn.Dropout(0.5), nn.AvgPool2d(2)],
    "tanh, avg (classic)": lambda c: [nn.Tanh(), nn.AvgPool2d(2)],
    "tanh, max (R2 I)": lambda c: [nn.Tanh(), nn.MaxPool2d(2)],
    "sigmoid, BN, dropout, avg": lambda c: [nn.Sigmoid(), nn.BatchNorm2d(c), nn.Dropout(0.4), nn.AvgPool2d(2)],
}
# c1 and c3 maps (28, 32 and 24 wide), and rows of more than 16 windows
SHAPES = [(8, 6, 28, 28), (8, 16, 10, 10), (4, 6, 24, 24), (4, 16, 8, 8), (2, 6, 32, 32), (2, 3, 40, 36)]


def _run(pattern, shape, sse2_only: bool, fused: bool = True):
    """Output, input gradient, BatchNorm's parameter gradients and running statistics."""
    torch.manual_seed(0)
    layers = PATTERNS[pattern](shape[1])
    for layer in layers:
        if isinstance(layer, nn.BatchNorm2d):
            nn.init.uniform_(layer.weight, 0.5, 1.5)
            nn.init.uniform_(layer.bias, -0.5, 0.5)
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 2).requires_grad_()
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=torch.Generator().manual_seed(2))
    with c_kernels.sse2_only(sse2_only):
        torch.manual_seed(3)    # dropout's noise
        out = ConvTail(layers)(x) if fused else nn.Sequential(*layers)(x)
        out.backward(grad)
    bn = [layer for layer in layers if isinstance(layer, nn.BatchNorm2d)]
    extra = [t for b in bn for t in (b.weight.grad, b.bias.grad, b.running_mean, b.running_var)]
    return out.detach(), x.grad, extra


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_both_paths_agree_and_the_forward_pass_is_torchs(pattern, shape):
    wide, wide_grad, wide_extra = _run(pattern, shape, sse2_only=False)
    narrow, narrow_grad, narrow_extra = _run(pattern, shape, sse2_only=True)
    theirs, theirs_grad, theirs_extra = _run(pattern, shape, sse2_only=False, fused=False)
    assert torch.equal(wide, narrow) and torch.equal(wide, theirs)
    if "BN" in pattern:
        scale = theirs_grad.abs().max()
        assert (wide_grad - narrow_grad).abs().max() <= 1e-5 * scale
        assert (wide_grad - theirs_grad).abs().max() <= 1e-4 * scale
        for a, b in zip(wide_extra, theirs_extra):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    else:
        assert torch.equal(wide_grad, narrow_grad) and torch.equal(wide_grad, theirs_grad)


def _batch_norm_run(shape, sse2_only: bool, fused: bool, training: bool, momentum=0.1):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(shape[1], momentum=momentum)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 2.0)
    bn.train(training)
    layer = BatchNorm(bn) if fused else bn
    g = torch.Generator().manual_seed(1)
    outs, grads = [], []
    with c_kernels.sse2_only(sse2_only):
        for _ in range(3):   # running statistics move from batch to batch
            x = (torch.randn(shape, generator=g) * 3 + 1).requires_grad_()
            out = layer(x)
            out.backward(torch.randn(shape, generator=g))
            outs.append(out.detach())
            grads.append((x.grad, bn.weight.grad.clone(), bn.bias.grad.clone()))
            bn.weight.grad = bn.bias.grad = None
    return outs, grads, (bn.running_mean, bn.running_var, bn.num_batches_tracked)


# R2 part II's BatchNorm after the first pool (14x14, 6 maps), after the second (5x5, 16), planes not a
# multiple of 16 floats, and one image
@pytest.mark.parametrize("shape", [(64, 6, 14, 14), (16, 16, 5, 5), (3, 4, 7, 3), (1, 6, 14, 14)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("sse2_only", [False, True])
def test_batch_norm_alone_is_torchs(shape, training, sse2_only):
    ours, ours_grads, ours_stats = _batch_norm_run(shape, sse2_only, fused=True, training=training)
    theirs, theirs_grads, theirs_stats = _batch_norm_run(shape, sse2_only, fused=False, training=training)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    for a, b in zip(ours_stats, theirs_stats):
        assert torch.equal(a, b)
    for mine, torchs in zip(ours_grads, theirs_grads):
        for a, b in zip(mine, torchs):
            assert (a - b).abs().max() <= 2e-5 * b.abs().max().clamp_min(1.0)


def test_batch_norm_momentum_none_and_eval_without_gradients():
    ours, _, ours_stats = _batch_norm_run((8, 6, 14, 14), False, fused=True, training=True, momentum=None)
    theirs, _, theirs_stats = _batch_norm_run((8, 6, 14, 14), False, fused=False, training=True, momentum=None)
    assert all(torch.equal(a, b) for a, b in zip([*ours, *ours_stats], [*theirs, *theirs_stats]))
    bn = nn.BatchNorm2d(6).eval()
    x = torch.randn(4, 6, 14, 14)
    with torch.inference_mode():
        assert torch.equal(BatchNorm(bn)(x), bn(x))


def test_batch_norm_after_the_pool_is_fused():
    net = accelerate(build_model(bn=True, bn_position="after_pool"))
    assert isinstance(net.s2_bn, BatchNorm)
    net = accelerate(build_model(bn=True, bn_position="after_pool", bn_layers="conv"))
    assert isinstance(net.s2_bn, BatchNorm) and isinstance(net.s4_bn, BatchNorm)
    assert not [m for name, m in net.named_children() if type(m) is nn.BatchNorm2d]


@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (2, 16, 8, 8)])
def test_relu_bits_of_an_average_pool_keep_torchs_gradient_at_zero_and_nan(shape):
    """The AVX-512 backward pass of ReLU + average pool reads the ReLU's tests as bits the forward pass wrote:
    0, -0 and NaN inputs get the gradient torch's threshold_backward gives them (NaN passes, zeros do not)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randint(-2, 3, shape, generator=g).float()
    x.view(-1)[::7] = -0.0
    x.view(-1)[::11] = float("nan")
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=g)
    results = []
    for fused, sse2 in ((True, False), (True, True), (False, False)):
        xi = x.clone().requires_grad_()
        layers = [nn.ReLU(), nn.AvgPool2d(2)]
        with c_kernels.sse2_only(sse2):
            out = ConvTail(layers)(xi) if fused else nn.Sequential(*layers)(xi)
            out.backward(grad)
        results.append((out.detach(), xi.grad))
    for out, x_grad in results[:2]:
        assert torch.allclose(out, results[2][0], rtol=0, atol=0, equal_nan=True)
        assert torch.equal(x_grad, results[2][1])
