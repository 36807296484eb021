"""OneNodeSequential.cross_entropy_backward and train.loss_and_backward: a training batch without the autograd
engine gives autograd's numbers bit for bit (loss, logits, every gradient, the parameters after optimizer
steps, the generator), accumulates as AccumulateGrad does, and hands back to autograd wherever it cannot."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lenet_lib.bench import single as bench
from lenet_lib.core.models import build_model
from lenet_lib.core.optim import make_optimizer
from lenet_lib.core.specs import TrainSpec
from lenet_lib.core.train import loss_and_backward
from lenet_lib.fast import c_kernels
from lenet_lib.fast.layers import accelerate
from lenet_lib.fast.one_node import OneNodeSequential

pytestmark = pytest.mark.skipif(c_kernels.load() is None, reason="no C kernels (needs x86-64 and a C compiler)")


def _autograd(net: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float | None = None):
    """What loss_and_backward replaces: the one autograd node, cross_entropy and loss.backward()."""
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    (loss if scale is None else loss * scale).backward()
    return logits, loss


def _engine_free(net: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float | None = None):
    done = net.cross_entropy_backward(x, y, scale)
    assert done is not None, "the engine-free path must run here"
    assert not any(t.requires_grad for t in done)
    return done


def _train(settings: dict, batch: int, channels: int, size: int, step_batch, steps: int = 4):
    """Losses, logits, parameters, buffers and the generator after `steps` optimizer steps (the last batch
    smaller: a second input shape); gd sums three batches' gradients, scaled, before each step."""
    spec = TrainSpec(batch_size=batch, **settings)
    torch.manual_seed(0)
    model = build_model(in_channels=channels, input_size=size, **spec.model_kwargs())
    net = accelerate(model)
    assert isinstance(net, OneNodeSequential)
    optimizer = make_optimizer(spec.optimizer, model.parameters(), fused=True, **spec.hyperparameters())
    g = torch.Generator().manual_seed(1)
    seen = []
    for step in range(steps):
        n = batch if step < steps - 1 else 5
        optimizer.zero_grad(set_to_none=True)
        for _ in range(3 if spec.optimizer == "gd" else 1):
            x, y = torch.randn(n, channels, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
            logits, loss = step_batch(net, x, y, 1 / 3 if spec.optimizer == "gd" else None)
            seen += [logits.detach().clone(), loss.detach().clone()]
        optimizer.step()
    return seen + [t.detach().clone() for t in [*model.parameters(), *model.buffers()]], torch.get_rng_state()


@pytest.mark.parametrize("label", [*bench.VARIANTS, "gd"])
def test_every_preset_variant_trains_bit_for_bit_as_autograd(label):
    settings, batch, channels, size = bench.VARIANTS.get(label, ({"optimizer": "gd", "lr": 0.1, "bn": True}, 16, 1, 28))
    ours, rng_ours = _train(settings, batch, channels, size, _engine_free)
    theirs, rng_theirs = _train(settings, batch, channels, size, _autograd)
    assert torch.equal(rng_ours, rng_theirs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b), label


def test_gradients_are_stored_in_the_parameters_layout():
    """Without AVX-512, c3's weight gradient at batch 64 is a transposed convolution's output, a strided view:
    stored as it is, torch's fused SGD stepped a different model. Stored contiguous, as AccumulateGrad does."""
    with c_kernels.sse2_only():
        ours, rng_ours = _train(bench.VARIANTS["plain"][0], 64, 1, 28, _engine_free, steps=3)
        theirs, rng_theirs = _train(bench.VARIANTS["plain"][0], 64, 1, 28, _autograd, steps=3)
    assert torch.equal(rng_ours, rng_theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))


def _net(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    net = accelerate(build_model(**kwargs))
    net.train()
    return net


def _batch(n: int = 8):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_gradients_add_to_those_already_there():
    """A gradient already in .grad (gd's earlier batches, or a caller's) is added to, as AccumulateGrad adds."""
    x, y = _batch()
    grads = []
    for step_batch in (_engine_free, _autograd):
        net = _net(bn=True)
        for p in net.parameters():
            p.grad = torch.full_like(p, 0.25)
        step_batch(net, x, y)
        grads.append([p.grad for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_hands_back_to_autograd_where_it_cannot_stand_in():
    x, y = _batch()
    net = _net()
    assert net.cross_entropy_backward(x, y) is not None
    net.zero_grad(set_to_none=True)
    cases = {
        "soft labels": lambda: net.cross_entropy_backward(x, torch.softmax(torch.randn(8, 10), 1)),
        "int32 targets": lambda: net.cross_entropy_backward(x, y.int()),
        "targets of another batch": lambda: net.cross_entropy_backward(x, y[:4]),
        "double input (no plan)": lambda: net.cross_entropy_backward(x.double(), y),
        "an input that wants its gradient": lambda: net.cross_entropy_backward(x.clone().requires_grad_(), y),
    }
    for name, call in cases.items():
        assert call() is None, name
    net.eval()
    assert net.cross_entropy_backward(x, y) is None
    net.train()
    with torch.no_grad():
        assert net.cross_entropy_backward(x, y) is None
    with pytest.warns(UserWarning, match="Anomaly"), torch.autograd.detect_anomaly(check_nan=False):
        assert net.cross_entropy_backward(x, y) is None
    for frozen in (net.c1_conv.bias, net.out.weight):
        frozen.requires_grad_(False)
        assert net.cross_entropy_backward(x, y) is None
        frozen.requires_grad_(True)
    for register in (lambda p: p.register_hook(lambda g: g), lambda p: p.register_post_accumulate_grad_hook(print)):
        handle = register(net.c3_conv.weight)
        assert net.cross_entropy_backward(x, y) is None
        handle.remove()
    assert net.cross_entropy_backward(x, y) is not None
    assert all(p.grad is not None for p in net.parameters())


def test_loss_and_backward_runs_autograd_where_the_engine_free_path_cannot():
    """A parameter hook is called (autograd ran), autocast computes the loss in float32 from bf16 logits, a
    plain module trains: the same loss as cross_entropy on the logits in each case."""
    x, y = _batch()
    net, calls = _net(), []
    handle = net.f6.weight.register_hook(lambda g: calls.append(1))
    logits, loss = loss_and_backward(net, x, y)
    assert calls == [1] and torch.equal(loss, F.cross_entropy(logits, y))
    handle.remove()
    autocast_net = _net()
    logits, loss = loss_and_backward(autocast_net, x, y, torch.autocast("cpu", dtype=torch.bfloat16))
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert all(p.grad is not None for p in autocast_net.parameters())
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    logits, loss = loss_and_backward(mlp, x, y, scale=0.5)
    assert torch.equal(loss, F.cross_entropy(logits, y)) and mlp[1].weight.grad is not None
