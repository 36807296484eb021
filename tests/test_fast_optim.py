"""lenet_lib.fast.optim: torch's fused optimizers stepped lean, torch's numbers bit for bit."""
import pytest
import torch

from lenet_lib.base.choices import resolve_hyperparameters
from lenet_lib.core.models import build_model
from lenet_lib.core.optim import FUSED, OPTIMIZERS, make_optimizer
from lenet_lib.fast import optim
from lenet_lib.fast.optim import lean_steps


def _twin_models(name):
    """Two LeNet-5s with the same weights, and hyperparameters for `name` (momentum where it takes one)."""
    torch.manual_seed(0)
    a, b = build_model(), build_model()
    b.load_state_dict(a.state_dict())
    return a, b, {"weight_decay": 5e-4, **({"momentum": 0.9} if name in ("momentum", "nesterov") else {})}


def _torch_fused(name, params, **hp):
    """torch's own fused optimizer for `name`, stepped by torch.optim's step (what _LeanStep shortens)."""
    cls, _, fixed = OPTIMIZERS[name]
    return cls(params, **resolve_hyperparameters(name, **hp), **fixed, fused=True)


@pytest.mark.parametrize("name", sorted(FUSED))
def test_lean_steps_are_torchs_fused_steps_bit_for_bit(name, monkeypatch):
    """lean_steps(make_optimizer(fused=True)) steps lean after its first step (optim._LeanStep): 20 steps on the same
    gradients give torch's own fused optimizer's parameters and state, bit for bit; so does a step where a
    parameter has no gradient (torch's step runs it) and a learning rate changed mid-way."""
    theirs_model, ours_model, hp = _twin_models(name)
    theirs = _torch_fused(name, theirs_model.parameters(), **hp)
    ours = lean_steps(make_optimizer(name, ours_model.parameters(), fused=True, **hp))
    assert isinstance(ours, type(theirs))
    assert optim._lean_agrees()   # the self-check (once per process) before _run is counted
    went_lean = []   # _run's answers: True where the step ran lean
    run = optim._run
    monkeypatch.setattr(optim, "_run", lambda plan: went_lean.append(run(plan)) or went_lean[-1])
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
    assert went_lean == [True] * 6 + [False] + [True] * 12   # step 7 (one gradient missing): torch's
    for a, b in zip(theirs_model.parameters(), ours_model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(theirs.state.values(), ours.state.values()):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lean_step_falls_back_to_torchs_with_hooks_and_closures():
    model = build_model()
    opt = lean_steps(make_optimizer("adam", model.parameters(), fused=True))
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for _ in range(3):
        opt.step()
    assert calls == [1, 1, 1]                       # every step went through torch's, which runs the hook
    loss = opt.step(lambda: torch.tensor(2.0))
    assert loss.item() == 2.0 and calls == [1, 1, 1, 1]


def test_lean_steps_leave_other_optimizers_alone():
    """Only a fused SGD, Adagrad, Adam or AdamW changes class; the self-check passes on this torch."""
    params = list(build_model().parameters())
    plain = make_optimizer("adam", params)
    assert type(lean_steps(plain)) is torch.optim.Adam                  # not fused
    rms = make_optimizer("rmsprop", params, fused=True)
    assert type(lean_steps(rms)) is torch.optim.RMSprop                 # torch has no fused RMSprop
    for name in sorted(FUSED):
        assert isinstance(lean_steps(make_optimizer(name, params, fused=True)), optim._LeanStep), name
    assert optim._lean_agrees()


def test_a_failed_self_check_steps_torchs_way(monkeypatch):
    """Were a torch release to change its fused kernels, the self-check fails and every step is torch's."""
    monkeypatch.setattr(optim, "_lean_agrees", lambda: False)
    theirs_model, ours_model, hp = _twin_models("adam")
    ours = lean_steps(make_optimizer("adam", ours_model.parameters(), fused=True, **hp))
    theirs = make_optimizer("adam", theirs_model.parameters(), fused=True, **hp)
    lean = []
    monkeypatch.setattr(optim, "_run", lambda plan: lean.append(1) or True)
    for _ in range(3):
        for a, b in zip(theirs_model.parameters(), ours_model.parameters()):
            a.grad = torch.ones_like(a)
            b.grad = torch.ones_like(b)
        theirs.step()
        ours.step()
    assert not lean and all(torch.equal(a, b) for a, b in zip(theirs_model.parameters(), ours_model.parameters()))
