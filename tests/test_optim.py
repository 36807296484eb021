import pytest
import torch

from lenet_lib.core.models import build_model
from lenet_lib.base.choices import resolve_hyperparameters
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
    (dict(name="adagrad", initial_accumulator_value=-0.1), "initial_accumulator_value=-0.1"),
    (dict(name="adam", initial_accumulator_value=0.1), "unknown argument.*initial_accumulator_value"),
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


def test_fused_is_torchs_own_optimizer():
    """core keeps torch's public fused optimizers; the lean steps are the fast path's (lenet_lib.fast.optim)."""
    for name in sorted(FUSED):
        opt = make_optimizer(name, build_model().parameters(), fused=True)
        assert type(opt) is OPTIMIZERS[name][0] and opt.defaults["fused"], name


@pytest.mark.parametrize("fused", [False, True])
def test_adagrad_initial_accumulator_is_torchs_argument(fused):
    """R5's TF1-style MLP: AdaGrad's squared-gradient sum starts at 0.1, as torch.optim.Adagrad's
    initial_accumulator_value says; the first step is lr * g / sqrt(0.1 + g^2), not lr * sign(g)."""
    p = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    opt = make_optimizer("adagrad", [p], fused=fused, lr=0.01, initial_accumulator_value=0.1)
    assert opt.defaults["initial_accumulator_value"] == 0.1
    grads = [torch.tensor([0.3, -0.2, 1.0]), torch.tensor([-0.1, 0.4, 0.2]), torch.tensor([0.5, 0.5, -0.5])]
    expected, total = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), torch.full((3,), 0.1, dtype=torch.float64)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        total += g.double() ** 2
        expected -= 0.01 * g.double() / (total.sqrt() + 1e-10)
    torch.testing.assert_close(p.detach().double(), expected, rtol=1e-6, atol=1e-7)
    plain = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    zero = make_optimizer("adagrad", [plain], fused=fused, lr=0.01)
    plain.grad = grads[0].clone()
    zero.step()     # torch's default: the first step moves every weight by lr
    torch.testing.assert_close((plain.detach() - torch.tensor([1.0, -2.0, 0.5])).abs(), torch.full((3,), 0.01))


def test_train_spec_carries_the_initial_accumulator():
    from lenet_lib.core.specs import TrainSpec
    spec = TrainSpec(arch="mlp", optimizer="adagrad", lr=0.01, initial_accumulator_value=0.1)
    assert spec.hyperparameters() == {"lr": 0.01, "weight_decay": 0.0, "initial_accumulator_value": 0.1}
    assert spec.columns()["initial_accumulator_value"] == 0.1
    assert "initial_accumulator_value" not in TrainSpec(optimizer="adagrad").hyperparameters()   # torch's 0
    with pytest.raises(ValueError, match="initial_accumulator_value.*optimizer 'adam'"):
        TrainSpec(optimizer="adam", initial_accumulator_value=0.1)


@pytest.mark.parametrize("parameters, message", [
    ({"mlp_adagrad_init": -0.1}, "mlp_adagrad_init=-0.1"),
    ({"mlp_adagrad_init": 0.1, "mlp_optimizer": "adam"}, "mlp_adagrad_init=0.1 .* mlp_optimizer='adam'"),
    ({"normalize": "zscore"}, "normalize='zscore'.*'unit'"),
    ({"step_batch_sizes": [16, 0]}, r"step_batch_sizes\[1\]=0"),
])
def test_r5_reading_parameters_are_checked_before_any_run(parameters, message):
    from lenet_lib.base.validate import check_parameters
    with pytest.raises(ValueError, match=message):
        check_parameters(parameters)
    check_parameters({"mlp_adagrad_init": 0.1, "mlp_optimizer": "adagrad", "normalize": "unit",
                      "step_batch_sizes": [16, 32, 64, 128]})
