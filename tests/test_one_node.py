"""fast/one_node.py: a fused network's training pass as one autograd node gives the numbers of its layers run
one by one (their own autograd nodes), bit for bit, and steps aside wherever it cannot."""
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lenet_lib.bench import single as bench
from lenet_lib.core.models import build_model
from lenet_lib.core.optim import make_optimizer
from lenet_lib.core.specs import TrainSpec
from lenet_lib.fast import c_kernels, one_node
from lenet_lib.fast.conv import Conv2d
from lenet_lib.fast.fused import ConvTail
from lenet_lib.fast.layers import accelerate
from lenet_lib.fast.one_node import OneNodeSequential
from lenet_lib.fast.pool import ReLUMaxPool2d

pytestmark = pytest.mark.skipif(c_kernels.load() is None, reason="no C kernels (needs x86-64 and a C compiler)")


def _layer_by_layer(net: nn.Module) -> None:
    """A hook that does nothing: the fused layers then run one by one, each its own autograd node."""
    net[0].register_forward_hook(lambda *args: None)


def _train(settings: dict, batch: int, channels: int, size: int, one: bool, steps: int = 4):
    """Parameters, buffers and the generator after `steps` training steps (the last one a smaller batch,
    a second input shape), as train() takes them."""
    spec = TrainSpec(batch_size=batch, **settings)
    torch.manual_seed(0)
    model = build_model(in_channels=channels, input_size=size, **spec.model_kwargs())
    net = accelerate(model)
    assert isinstance(net, OneNodeSequential)
    if not one:
        _layer_by_layer(net)
    optimizer = make_optimizer(spec.optimizer, model.parameters(), fused=True, **spec.hyperparameters())
    g = torch.Generator().manual_seed(1)
    planned = []
    for step in range(steps):
        n = batch if step < steps - 1 else 5
        x, y = torch.randn(n, channels, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
        planned.append(net._plan(x) is not None)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return [t.detach().clone() for t in [*model.parameters(), *model.buffers()]], torch.get_rng_state(), planned


@pytest.mark.parametrize("label", list(bench.VARIANTS))
def test_every_preset_variant_trains_bit_for_bit_as_layer_by_layer(label):
    settings, batch, channels, size = bench.VARIANTS[label]
    ours, rng_ours, planned = _train(settings, batch, channels, size, one=True)
    theirs, rng_theirs, unplanned = _train(settings, batch, channels, size, one=False)
    assert all(planned) and not any(unplanned), "the one-node path must run (and the hooked one must not)"
    assert torch.equal(rng_ours, rng_theirs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b), label


@pytest.mark.parametrize("settings", [{"dropout": 0.3, "dropout_at": "c5_f6", "fc_activation": "tanh"},
                                      {"dropout": 0.0, "bn": True, "bn_position": "before_act"},
                                      {"activation": "sigmoid", "pool": "avg", "padding": "valid"}])
def test_other_layer_patterns_bit_for_bit(settings):
    ours, rng_ours, planned = _train({**settings, "optimizer": "adam", "lr": 1e-3}, 32, 1, 28, one=True)
    theirs, rng_theirs, _ = _train({**settings, "optimizer": "adam", "lr": 1e-3}, 32, 1, 28, one=False)
    assert all(planned) and torch.equal(rng_ours, rng_theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_tanh_overwrites_only_a_fresh_convolution_output():
    """R2 part I's tanh runs in place on c1's and c3's outputs, which nothing else keeps; after a step that
    keeps its output (here a ReLU, whose backward needs it) it must not, and training stays bit for bit."""
    net = _net(activation="tanh", padding="valid")
    steps = net._plan(torch.randn(4, 1, 28, 28)).steps
    tails = [step for step in steps if step.forward_in_place is not None]
    assert len(tails) == 2 and all(step.forward is step.forward_in_place for step in tails)

    def relu_then_tanh_tail():
        torch.manual_seed(0)
        return OneNodeSequential(Conv2d(1, 6, 5, padding=2), nn.ReLU(), ConvTail([nn.Tanh(), nn.MaxPool2d(2)]),
                                 nn.Flatten(), nn.Linear(6 * 14 * 14, 10))
    ours, theirs = relu_then_tanh_tail(), relu_then_tanh_tail()
    _layer_by_layer(theirs)
    x = torch.randn(4, 1, 28, 28)
    tail_step = ours._plan(x).steps[2]
    assert tail_step.forward_in_place is not None and tail_step.forward is not tail_step.forward_in_place
    for net in (ours, theirs):
        net(x).square().sum().backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours.parameters(), theirs.parameters()))


def test_layers_without_a_bias_as_layer_by_layer():
    def net():
        torch.manual_seed(0)
        return OneNodeSequential(Conv2d(1, 6, 5, padding=2, bias=False), ReLUMaxPool2d(), nn.Flatten(),
                                 nn.Linear(6 * 14 * 14, 10, bias=False))
    ours, theirs = net(), net()
    _layer_by_layer(theirs)
    x = torch.randn(4, 1, 28, 28)
    assert ours._plan(x) is not None and len(ours._plan(x).params) == 2
    for model in (ours, theirs):
        model(x).square().sum().backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours.parameters(), theirs.parameters()))


def _net(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return accelerate(build_model(**kwargs))


def test_input_gradient_and_frozen_parameters_as_layer_by_layer():
    nets = [_net(bn=True), _net(bn=True)]
    _layer_by_layer(nets[1])
    x = torch.randn(8, 1, 28, 28)
    grads = []
    for net in nets:
        net[0].bias.requires_grad_(False)
        xi = x.clone().requires_grad_(True)
        net(xi).square().sum().backward()
        grads.append([xi.grad, net[0].bias.grad, *[p.grad for p in net.parameters() if p.requires_grad]])
    assert nets[0][0].bias.grad is None
    for a, b in zip(*grads):
        assert (a is None and b is None) or torch.equal(a, b)


def test_steps_aside_where_it_cannot_run():
    net, x = _net(), torch.randn(4, 1, 28, 28)
    assert net._plan(x) is not None
    assert net._plan(x.double()) is None and net._plan(x.transpose(2, 3)) is None
    assert net._plan(torch.randn(4, 1, 32, 32)) is None          # c5 does not fit the flattened maps
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net._plan(x) is None
    handle = net.c5.register_forward_pre_hook(lambda *args: None)
    assert net._plan(x) is None
    handle.remove()
    assert net._plan(x) is not None
    sparse = _net(c3_table=True)                                   # LeCun's sparse c3: a layer it does not know
    assert isinstance(sparse, OneNodeSequential) and sparse._plan(x) is None
    inplace = _net()
    inplace.c5_act.inplace = True
    assert inplace._plan(x) is None


def test_eval_and_no_grad_run_layer_by_layer(monkeypatch):
    calls = []
    monkeypatch.setattr(one_node._OneNode, "apply", lambda *args: calls.append(1))
    net, x = _net(bn=True, dropout=0.5), torch.randn(4, 1, 28, 28)
    net.eval()
    net(x)
    net.train()
    with torch.no_grad():
        net(x)
    assert not calls
    net(x)
    assert calls == [1]


def test_a_parameter_replaced_after_planning_is_the_one_trained():
    net, x = _net(), torch.randn(4, 1, 28, 28)
    net(x).sum().backward()
    old = net.c5.weight
    first = old.grad.clone()
    net.c5.weight = nn.Parameter(old.detach() * 2)
    net(x).sum().backward()
    assert torch.equal(old.grad, first) and net.c5.weight.grad is not None


def test_a_copy_trains_its_own_parameters():
    """Plans are bound to their layers: a deep copy (or an unpickled net) plans for its own."""
    import copy
    import pickle
    net, x = _net(), torch.randn(4, 1, 28, 28)
    net(x).sum().backward()
    for twin in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        for p in net.parameters():
            p.grad = None
        twin(x).sum().backward()
        assert all(p.grad is None for p in net.parameters())
        assert all(p.grad is not None for p in twin.parameters())


def test_the_graph_and_its_activations_are_freed_after_backward():
    """The last layer's output is kept as an alias: no reference cycle through the node."""
    net = OneNodeSequential(*list(_net().children())[:-1])         # ends with f6's ReLU, whose backward needs it
    out = net(torch.randn(4, 1, 28, 28))
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == "_OneNodeBackward"
    node = weakref.ref(out.grad_fn)
    out.sum().backward()
    gc.disable()   # freed by reference counts alone
    try:
        del out
        assert node() is None
    finally:
        gc.enable()


def test_full_batch_gradients_accumulate_as_layer_by_layer():
    """gd sums the gradients of every batch before one step (train.py): AccumulateGrad adds ours alike."""
    grads = []
    for one in (True, False):
        net = _net(bn=True, dropout=0.5)
        if not one:
            _layer_by_layer(net)
        torch.manual_seed(3)
        for _ in range(3):
            F.cross_entropy(net(torch.randn(16, 1, 28, 28)), torch.randint(0, 10, (16,))).backward()
        grads.append([p.grad for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
