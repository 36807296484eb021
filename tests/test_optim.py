import pytest
import torch

from lenet_lib.core.models import build_model
from lenet_lib.base.choices import resolve_hyperparameters
from lenet_lib.core import optim
from lenet_lib.core.optim import FUSED, OPTIMIZERS, make_optimizer


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_steps_and_lowers_the_loss(name):
    torch.manual_seed(0)
    model = build_model()
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    lr = {"gd": 0.05, "sgd": 0.05, "adadelta": 1.0, "adagrad": 2e-3, "rmsprop": 2e-4}.get(name)
    opt = make_optimizer(name, model.parameters(), lr=lr, weight_decay=1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert losses[-1] < losses[0]


def test_defaults_and_meaning():
    assert resolve_hyperparameters("momentum")["momentum"] == 0.9
    assert resolve_hyperparameters("sgd")["momentum"] == 0.0
    assert resolve_hyperparameters("adam") == {"lr": 1e-3, "weight_decay": 0.0}
    opt = make_optimizer("nesterov", build_model().parameters(), lr=0.1, momentum=0.8)
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.8 and opt.defaults["lr"] == 0.1
    opt = make_optimizer("adam", build_model().parameters(), betas=(0.8, 0.9))
    assert opt.defaults["betas"] == (0.8, 0.9)


@pytest.mark.parametrize("args, message", [
    (dict(name="adamm"), "optimizer='adamm'.*'adam'"),
    (dict(name="sgd", lr=0), r"lr=0 .*\(0.0"),
    (dict(name="sgd", lr=float("nan")), "lr=nan"),
    (dict(name="momentum", momentum=1.0), "momentum=1.0"),
    (dict(name="adam", momentum=0.9), "only .* take momentum"),
    (dict(name="sgd", weight_decay=-1), "weight_decay=-1"),
    (dict(name="adam", beta=0.9), "unknown argument.*beta.*betas"),
    (dict(name="nesterov", momentum=0), "nesterov"),
])
def test_bad_values_are_clear_errors(args, message):
    with pytest.raises(ValueError, match=message):
        resolve_hyperparameters(**args)


def _twin_models(name):
    """Two LeNet-5s with the same weights, and hyperparameters for `name` (momentum where it takes one)."""
    torch.manual_seed(0)
    a, b = build_model(), build_model()
    b.load_state_dict(a.state_dict())
    return a, b, {"weight_decay": 5e-4, **({"momentum": 0.9} if name in ("momentum", "nesterov") else {})}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_gives_the_same_steps_to_float_rounding(name):
    """fused=True (lenet_lib's training on CPU) takes torch's fused kernel where it has one (FUSED) and the
    per-tensor loop otherwise; 30 steps on the same gradients land within float rounding of each other."""
    loop_model, fused_model, hp = _twin_models(name)
    loop = make_optimizer(name, loop_model.parameters(), **hp)
    fused = make_optimizer(name, fused_model.parameters(), fused=True, **hp)
    assert bool(fused.defaults.get("fused")) == (name in FUSED) and not loop.defaults.get("fused")
    start = [p.detach().clone() for p in loop_model.parameters()]
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        for a, b in zip(loop_model.parameters(), fused_model.parameters()):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        loop.step()
        fused.step()
    for a, b, a0 in zip(loop_model.parameters(), fused_model.parameters(), start):
        assert not torch.equal(a, a0)                                             # they moved
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_fused_names_are_optimizer_names():
    assert FUSED <= set(OPTIMIZERS) and {"rmsprop", "adadelta"}.isdisjoint(FUSED)


def _torch_fused(name, params, **hp):
    """torch's own fused optimizer for `name`, stepped by torch.optim's step (what _LeanStep shortens)."""
    cls, _, fixed = OPTIMIZERS[name]
    return cls(params, **resolve_hyperparameters(name, **hp), **fixed, fused=True)


@pytest.mark.parametrize("name", sorted(FUSED))
def test_lean_steps_are_torchs_fused_steps_bit_for_bit(name, monkeypatch):
    """make_optimizer(fused=True) steps lean after its first step (optim._LeanStep): 20 steps on the same
    gradients give torch's own fused optimizer's parameters and state, bit for bit; so does a step where a
    parameter has no gradient (torch's step runs it) and a learning rate changed mid-way."""
    theirs_model, ours_model, hp = _twin_models(name)
    theirs = _torch_fused(name, theirs_model.parameters(), **hp)
    ours = make_optimizer(name, ours_model.parameters(), fused=True, **hp)
    assert isinstance(ours, type(theirs))
    lean_steps = []   # _run's answers: True where the step ran lean
    run = optim._run
    monkeypatch.setattr(optim, "_run", lambda plan: lean_steps.append(run(plan)) or lean_steps[-1])
    g = torch.Generator().manual_seed(1)
    for step in range(20):
        ours.zero_grad()
        assert all(p.grad is None for p in ours_model.parameters())
        for i, (a, b) in enumerate(zip(theirs_model.parameters(), ours_model.parameters())):
            a.grad = None if (step == 7 and i == 3) else torch.randn(a.shape, generator=g)
            b.grad = None if a.grad is None else a.grad.clone()
        if step == 12:
            for opt in (theirs, ours):
                opt.param_groups[0]["lr"] *= 0.5
        theirs.step()
        ours.step()
    assert lean_steps == [True] * 6 + [False] + [True] * 12   # step 7 (one gradient missing): torch's
    for a, b in zip(theirs_model.parameters(), ours_model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(theirs.state.values(), ours.state.values()):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lean_step_falls_back_to_torchs_with_hooks_and_closures():
    model = build_model()
    opt = make_optimizer("adam", model.parameters(), fused=True)
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for _ in range(3):
        opt.step()
    assert calls == [1, 1, 1]                       # every step went through torch's, which runs the hook
    loss = opt.step(lambda: torch.tensor(2.0))
    assert loss.item() == 2.0 and calls == [1, 1, 1, 1]
