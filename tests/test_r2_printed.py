"""R2 part I's code as printed (core/r2_printed.py): update rules, initialisation, contiguous random slices,
summed gradients and train accuracy on the whole training set, each against numbers worked out by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from lenet_lib.base.validate import check_parameters
from lenet_lib.core.ensemble import train_many
from lenet_lib.core.models import build_lenet5
from lenet_lib.core.r2_printed import (PrintedOptimizer, double_softmax_backward, make_printed_optimizer,
                                      printed_init_, slice_starts)
from lenet_lib.core.specs import TrainSpec
from lenet_lib.core.train import build_for, evaluate, train
from lenet_lib.experiments.runs import base_hyperparameters, lr_grid

G = torch.tensor([0.5, 1.0], dtype=torch.float64)


def approx(rows, **kw):
    return pytest.approx([x for row in rows for x in row], **kw)


def _two_steps(optimizer_for) -> list[float]:
    """p starts at [1, -2]; two steps with the gradient G each; p after each step, one after the other."""
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = optimizer_for([p])
    out = []
    for _ in range(2):
        p.grad = G.clone()
        opt.step()
        out += p.detach().tolist()
    return out


def test_sgd_rule_and_printed_adam_is_sgd_at_its_rate():
    assert _two_steps(lambda ps: PrintedOptimizer(ps, "sgd", lr=0.1)) == approx([[0.95, -2.1], [0.9, -2.2]])
    # R2 l.662-663: Adam's step uses the raw gradient, at its printed rate 0.01
    assert _two_steps(lambda ps: make_printed_optimizer("adam", ps)) == approx([[0.995, -2.01], [0.99, -2.02]])
    assert _two_steps(lambda ps: make_printed_optimizer("gd", ps)) == approx([[0.9995, -2.001], [0.999, -2.002]])


def test_momentum_rule_is_dampened_with_decoupled_reg():
    # v = 0.8 v + 0.2 g; p -= 0.1 v + 0.01 p. Step 1: v = [0.1, 0.2], p = [1 - 0.01 - 0.01, -2 - 0.02 + 0.02].
    # Step 2: v = [0.18, 0.36], p = [0.98 - 0.018 - 0.0098, -2 - 0.036 + 0.02].
    steps = _two_steps(lambda ps: PrintedOptimizer(ps, "momentum", lr=0.1, rho=0.8, reg=0.01))
    assert steps == approx([[0.98, -2.0], [0.9522, -2.016]])
    printed = make_printed_optimizer("momentum", [torch.zeros(1, requires_grad=True)]).param_groups[0]
    assert (printed["lr"], printed["rho"], printed["reg"]) == (1e-4, 0.8, 3e-5)     # R2 l.739-740


def test_rmsprop_rule_keeps_eps_outside_the_square_root():
    # s = 0.1 g^2 = [0.025, 0.1]; step = 0.1 g / (sqrt(s) + 0.1)
    first = [1 - 0.05 / (math.sqrt(0.025) + 0.1), -2 - 0.1 / (math.sqrt(0.1) + 0.1)]
    # s = 0.9 s + 0.1 g^2 = [0.0475, 0.19]
    second = [first[0] - 0.05 / (math.sqrt(0.0475) + 0.1), first[1] - 0.1 / (math.sqrt(0.19) + 0.1)]
    steps = _two_steps(lambda ps: PrintedOptimizer(ps, "rmsprop", lr=0.1, beta=0.9, eps=0.1))
    assert steps == approx([first, second], abs=1e-12)
    assert first[0] != pytest.approx(1 - 0.05 / math.sqrt(0.025 + 0.1))   # eps inside would differ


def test_adagrad_rule_sums_squares_over_steps_with_fudge_outside():
    first = [1 - 0.05 / (0.5 + 0.1), -2 - 0.1 / (1.0 + 0.1)]
    second = [first[0] - 0.05 / (math.sqrt(0.5) + 0.1), first[1] - 0.1 / (math.sqrt(2.0) + 0.1)]
    steps = _two_steps(lambda ps: PrintedOptimizer(ps, "adagrad", lr=0.1, fudge=0.1))
    assert steps == approx([first, second], abs=1e-12)
    assert make_printed_optimizer("adagrad", [torch.zeros(1, requires_grad=True)]).param_groups[0]["fudge"] == 1e-6


def test_printed_rates_seed_the_learning_rate_grid():
    assert [lr_grid(n, [1.0], "r2_printed")[0] for n in ("gd", "sgd", "momentum", "adagrad", "rmsprop", "adam")] \
        == [1e-3, 1e-4, 1e-4, 1e-2, 1e-3, 1e-2]                                  # R2 l.738-744, l.755
    assert base_hyperparameters("momentum", "r2_printed") == {"lr": 1e-4, "momentum": 0.8}
    assert base_hyperparameters("momentum") == {"lr": 0.05}


def test_double_softmax_step_hands_back_prob_minus_onehot_of_softmax_twice():
    net = torch.nn.Linear(2, 3)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, math.log(2.0), 0.0]))     # softmax: [0.25, 0.5, 0.25]
    e = [math.exp(0.25), math.exp(0.5), math.exp(0.25)]
    prob = [v / sum(e) for v in e]                                    # softmax of that again
    x, y = torch.zeros(2, 2), torch.tensor([1, 0])
    logits, loss = double_softmax_backward(net, x, y, scale=2.0)      # scale = N: the batch's sum
    assert logits.tolist() == [[0.0, pytest.approx(math.log(2.0)), 0.0]] * 2
    assert loss.item() == pytest.approx(-(math.log(prob[1]) + math.log(prob[0])) / 2)
    # the bias's gradient: the sum over both images of prob - onehot
    assert net.bias.grad.tolist() == pytest.approx([2 * prob[0] - 1, 2 * prob[1] - 1, 2 * prob[2]])


def test_printed_init_statistics():
    torch.manual_seed(0)
    model = printed_init_(build_lenet5(activation="tanh", padding="valid"))
    # std sqrt(2 / fan_in): c1 fan_in 1 (input channels), c3 6, c5 256 (16*4*4 inputs), f6 120
    for name, fan_in, tol in (("c1_conv", 1, 0.15), ("c3_conv", 6, 0.05), ("c5", 256, 0.03), ("f6", 120, 0.03)):
        std = getattr(model, name).weight.std().item()
        assert std == pytest.approx(math.sqrt(2 / fan_in), rel=tol), name
    biases = torch.cat([m.bias for m in model.modules() if hasattr(m, "bias") and m.bias is not None])
    assert len(biases) == 6 + 16 + 120 + 84 + 10
    assert biases.std().item() == pytest.approx(1.0, rel=0.12) and abs(biases.mean().item()) < 0.2
    torch.manual_seed(0)
    default = build_lenet5(activation="tanh", padding="valid")
    assert default.c1_conv.weight.std().item() < 0.3        # torch's default is not the printed one


def test_slice_starts_span_one_to_n_minus_batch_inclusive_and_follow_the_seed():
    starts = slice_starts(10, 4, 2000, seed=0)
    assert starts.min().item() == 1 and starts.max().item() == 6       # random.randint(1, N - batch)
    assert torch.equal(starts, slice_starts(10, 4, 2000, seed=0))
    assert not torch.equal(starts, slice_starts(10, 4, 2000, seed=1))
    with pytest.raises(ValueError, match="batch_size=10"):
        slice_starts(10, 10, 5, seed=0)


def test_iterations_train_on_printed_slices_with_summed_gradients(mnist_small):
    """The library's run equals a hand-written loop: R2's init, slices x[s:s+16], R2's loss step on the
    batch's sum, p -= lr g."""
    spec = TrainSpec(optimizer="gd", optimizer_rules="r2_printed", init="r2_printed", grad_scale="sum",
                     loss="r2_double_softmax", iterations=20, epochs=2, batch_size=16, activation="tanh", padding="valid", seed=3)
    result = train(spec, mnist_small, device="cpu", progress=False)
    assert result.history["steps"].tolist() == [10, 20]                 # gd steps per batch here
    torch.manual_seed(spec.seed)
    manual = build_for(spec, mnist_small)
    for start in slice_starts(len(mnist_small.y_train), 16, 20, seed=3).tolist():
        manual.zero_grad()
        xb, yb = mnist_small.x_train[start:start + 16], mnist_small.y_train[start:start + 16]
        logits = manual(xb)
        prob = torch.softmax(torch.softmax(logits, 1), 1).detach()
        logits.backward(prob - F.one_hot(yb, 10))
        with torch.no_grad():
            for p in manual.parameters():
                p -= 1e-3 * p.grad
    for p, q in zip(result.model.parameters(), manual.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_summed_gradient_at_lr_equals_mean_gradient_at_lr_times_batch(mnist_small):
    common = dict(optimizer="sgd", iterations=10, epochs=1, batch_size=32, seed=1)
    summed = train(TrainSpec(**common, lr=1e-3, grad_scale="sum"), mnist_small, device="cpu", progress=False)
    mean = train(TrainSpec(**common, lr=32e-3), mnist_small, device="cpu", progress=False)
    other = train(TrainSpec(**common, lr=1e-3), mnist_small, device="cpu", progress=False)
    for p, q, r in zip(summed.model.parameters(), mean.model.parameters(), other.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    assert not all(torch.allclose(p, r) for p, r in zip(summed.model.parameters(), other.model.parameters()))


def test_full_train_accuracy_is_the_trained_model_on_every_training_image(mnist_small):
    common = dict(optimizer="sgd", lr=0.05, iterations=30, epochs=1, batch_size=32, seed=0)
    full = train(TrainSpec(**common, train_acc_on="full_train"), mnist_small, device="cpu", progress=False)
    loss, acc = evaluate(full.model, mnist_small.x_train, mnist_small.y_train)
    row = full.history.iloc[-1]
    assert (row["train_loss"], row["train_acc"], row["train_acc_on"]) == (loss, acc, "full_train")
    running = train(TrainSpec(**common), mnist_small, device="cpu", progress=False).history.iloc[-1]
    assert running["train_acc"] * 30 * 32 == pytest.approx(round(running["train_acc"] * 30 * 32))  # of 960 seen
    assert running["test_acc"] == row["test_acc"]       # the same training either way


def test_bad_values_fail_before_any_work():
    with pytest.raises(ValueError, match="iterations=25001 is not valid with epochs=5"):
        check_parameters({"iterations": 25001, "epochs": 5})
    with pytest.raises(ValueError, match="nesterov"):
        check_parameters({"optimizer_rules": "r2_printed", "optimizers": ["sgd", "nesterov"]})
    for name, valid in (("init", "r2_printed"), ("grad_scale", "sum"), ("train_acc_on", "full_train"),
                        ("train_order", "file"), ("hyperparameters", "r2_printed"), ("loss", "r2_double_softmax")):
        check_parameters({name: valid})
        with pytest.raises(ValueError, match=f"{name}='bogus'"):
            check_parameters({name: "bogus"})
    with pytest.raises(ValueError, match="loss='bogus'"):
        TrainSpec(loss="bogus")
    with pytest.raises(ValueError, match="iterations=7"):
        TrainSpec(iterations=7, epochs=2)
    with pytest.raises(ValueError, match="adadelta"):
        TrainSpec(optimizer="adadelta", optimizer_rules="r2_printed")


def test_stacked_training_refuses_printed_options(mnist_small):
    with pytest.raises(ValueError, match="mode='batched' is not valid"):
        train_many([TrainSpec(init="r2_printed")], mnist_small, device="cpu", mode="batched", progress=False)


def test_file_order_keeps_the_dataset_file_order():
    from lenet_lib.core.data import load_raw, prepare_data
    data = prepare_data("mnist", val_size=100, train_size=None, test_size=10, train_order="file")
    _, labels = load_raw("mnist", True)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[100:].sort().values
    assert torch.equal(data.y_train, labels[order]) and data.info["train_order"] == "file"
