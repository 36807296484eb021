"""The NumPy reference (lenet_lib.numpy_ref) against torch: every layer's forward and backward, whole
networks loaded with torch's weights, every optimizer's updates, and a short training run that learns."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lenet_lib.core.models as tm
import lenet_lib.core.optim as topt
import lenet_lib.numpy_ref as nr
from lenet_lib.base.choices import EXTRA_DEFAULTS, OPTIMIZER_NAMES
from lenet_lib.core.data import DataSplits
from lenet_lib.numpy_ref import layers as L, net as nn_np, optim as nopt
from lenet_lib.numpy_ref.compare import numpy_splits, numpy_state, threads, train_numpy
from lenet_lib.numpy_ref.compare import twin as nr_twin
from lenet_lib.analysis.results import MEASURES
from lenet_lib.core.specs import TrainSpec
from lenet_lib.core.train import train as torch_train

RTOL = 1e-8     # float64 on both sides: only rounding order differs


def close(actual, expected, rtol=RTOL, scale=None):
    """Equal up to rtol relative to the largest magnitude (elementwise relative error blows up near 0).

    `scale` overrides that magnitude, e.g. for a gradient that is zero in exact arithmetic.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = scale or max(np.abs(expected).max(initial=0.0), 1e-300)
    assert np.abs(actual - expected).max(initial=0.0) <= rtol * scale, np.abs(actual - expected).max() / scale


def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def test_numpy_ref_does_not_import_torch():
    code = ("import sys, lenet_lib.numpy_ref.net, lenet_lib.numpy_ref.optim, lenet_lib.numpy_ref.train; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- layers against autograd
def check_layer(np_layer, torch_layer, x, rng):
    """Forward output, input gradient and parameter gradients of np_layer equal torch autograd's."""
    torch_layer = torch_layer.double()
    with torch.no_grad():   # same weights on both sides
        for name, p in torch_layer.named_parameters():
            p.copy_(t64(np_layer.params[name]))
    xt = t64(x).requires_grad_(True)
    out_t = torch_layer(xt)
    out = np_layer.forward(x)
    close(out, out_t.detach().numpy())
    dout = rng.standard_normal(out.shape)
    out_t.backward(t64(dout))
    close(np_layer.backward(dout), xt.grad.numpy())
    for name, p in torch_layer.named_parameters():
        close(np_layer.grads[name], p.grad.numpy())


LAYERS = {
    "conv c1 same": (lambda: L.Conv2d(1, 6, 5, padding=2, dtype=np.float64), lambda: nn.Conv2d(1, 6, 5, padding=2),
                     (4, 1, 28, 28)),
    "conv 3ch valid": (lambda: L.Conv2d(3, 6, 5, dtype=np.float64), lambda: nn.Conv2d(3, 6, 5), (3, 3, 32, 32)),
    "conv c3": (lambda: L.Conv2d(6, 16, 5, dtype=np.float64), lambda: nn.Conv2d(6, 16, 5), (4, 6, 14, 14)),
    "maxpool": (L.MaxPool2d, lambda: nn.MaxPool2d(2), (4, 6, 28, 28)),
    "maxpool odd": (L.MaxPool2d, lambda: nn.MaxPool2d(2), (2, 3, 7, 9)),
    "avgpool": (L.AvgPool2d, lambda: nn.AvgPool2d(2), (4, 6, 10, 10)),
    "avgpool odd": (L.AvgPool2d, lambda: nn.AvgPool2d(2), (2, 3, 7, 9)),
    "relu": (L.ReLU, nn.ReLU, (5, 7, 3)),
    "tanh": (L.Tanh, nn.Tanh, (5, 7, 3)),
    "sigmoid": (L.Sigmoid, nn.Sigmoid, (5, 7, 3)),
    "linear": (lambda: L.Linear(400, 120, dtype=np.float64), lambda: nn.Linear(400, 120), (6, 400)),
    "flatten": (L.Flatten, nn.Flatten, (4, 16, 5, 5)),
    "bn train": (lambda: L.BatchNorm2d(6, dtype=np.float64), lambda: nn.BatchNorm2d(6), (4, 6, 10, 10)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_layer_matches_autograd(name):
    make_np, make_torch, shape = LAYERS[name]
    rng = np.random.default_rng(0)
    np_layer = make_np()
    if "bn" in name:   # non-trivial affine parameters
        np_layer.params["weight"][:] = rng.uniform(0.5, 2, 6)
        np_layer.params["bias"][:] = rng.standard_normal(6)
    check_layer(np_layer, make_torch(), rng.standard_normal(shape) * 3, rng)


def test_maxpool_ties_go_to_the_first_maximum_like_torch():
    rng = np.random.default_rng(1)
    x = np.maximum(np.round(rng.standard_normal((4, 6, 12, 12))), 0)   # many equal values in a window
    check_layer(L.MaxPool2d(), nn.MaxPool2d(2), x, rng)


def test_sparse_c3_matches_torch():
    rng = np.random.default_rng(2)
    mask = tm.SparseConv2d(6, 16, 5).mask.numpy()
    np_layer = L.Conv2d(6, 16, 5, mask=mask, dtype=np.float64)
    torch_layer = tm.SparseConv2d(6, 16, 5)
    check_layer(np_layer, torch_layer, rng.standard_normal((3, 6, 14, 14)), rng)
    assert np_layer.parameter_count() == torch_layer.effective_parameters() == 1516


def test_batchnorm_running_stats_and_eval_match_torch():
    rng = np.random.default_rng(3)
    np_bn, t_bn = L.BatchNorm2d(6, dtype=np.float64), nn.BatchNorm2d(6).double()
    for _ in range(3):
        x = rng.standard_normal((5, 6, 4, 4)) * 2 + 1
        np_bn.forward(x)
        t_bn(t64(x))
    for key in ("running_mean", "running_var"):
        close(np_bn.buffers[key], getattr(t_bn, key).numpy())
    assert np_bn.buffers["num_batches_tracked"] == t_bn.num_batches_tracked.item() == 3
    np_bn.training = False
    t_bn.eval()
    check_layer(np_bn, t_bn, rng.standard_normal((5, 6, 4, 4)), rng)


def test_dropout_mask_scaling_and_backward():
    rng = np.random.default_rng(4)
    drop = L.Dropout(0.3, np.random.default_rng(7))
    x = rng.standard_normal((200, 50))
    out = drop.forward(x)
    mask = drop.mask
    assert set(np.unique(mask)) <= {0.0, 1 / 0.7}
    assert abs((mask == 0).mean() - 0.3) < 0.02
    xt = t64(x).requires_grad_(True)
    out_t = xt * t64(mask)           # torch's dropout given the same mask
    dout = rng.standard_normal(x.shape)
    out_t.backward(t64(dout))
    close(out, out_t.detach().numpy())
    close(drop.backward(dout), xt.grad.numpy())
    # The explicit Generator makes masks reproducible; eval is the identity.
    again = L.Dropout(0.3, np.random.default_rng(7))
    again.forward(x)
    assert np.array_equal(again.mask, mask)
    drop.training = False
    assert drop.forward(x) is x


def test_cross_entropy_matches_torch():
    rng = np.random.default_rng(5)
    logits, y = rng.standard_normal((16, 10)) * 5, rng.integers(0, 10, 16)
    lt = t64(logits).requires_grad_(True)
    loss_t = F.cross_entropy(lt, torch.from_numpy(y))
    loss_t.backward()
    loss, grad = L.cross_entropy(logits, y)
    close(loss, loss_t.item())
    close(grad, lt.grad.numpy())
    close(L.cross_entropy(logits, y, reduction="sum")[0], 16 * loss_t.item())


# ---------------------------------------------------------------- whole networks
NETWORKS = {
    "standard": ("lenet5", dict()),
    "R1 bn+dropout": ("lenet5", dict(bn=True, dropout=0.5)),
    "R2 numpy": ("lenet5", dict(activation="tanh", padding="valid")),
    "R2 part II": ("lenet5", dict(input_size=32, bn=True, bn_position="after_pool", dropout=0.4)),
    "R3 cifar": ("lenet5", dict(in_channels=3, input_size=32, conv_dropout=0.5, bn=True, bn_position="before_act")),
    "R4 bn conv": ("lenet5", dict(bn=True, bn_layers="conv", dropout=0.2, dropout_at="c5_f6")),
    "bn conv before_act avg": ("lenet5", dict(bn=True, bn_layers="conv", bn_position="before_act", pool="avg")),
    "bn conv after_pool sigmoid": ("lenet5", dict(bn=True, bn_layers="conv", bn_position="after_pool",
                                                  activation="sigmoid")),
    "R5": ("lenet5", dict(activation="relu", fc_activation="sigmoid")),
    "LeCun sparse": ("lenet5", dict(c3_table=True, activation="tanh", pool="avg")),
    "32 same": ("lenet5", dict(input_size=32, padding="same", fc_activation="tanh")),
    "mlp": ("mlp", dict(activation="tanh", dropout=0.3)),
}


def torch_forward(model, x, np_net):
    """torch model's forward with each Dropout replaced by the NumPy layer's mask from the same step."""
    for name, layer in model.named_children():
        x = x * t64(np_net[name].mask) if isinstance(layer, nn.Dropout) else layer(x)
    return x


@pytest.mark.parametrize("name", NETWORKS)
def test_network_matches_torch(name):
    arch, kwargs = NETWORKS[name]
    channels, size = kwargs.get("in_channels", 1), kwargs.get("input_size", 28)
    torch.manual_seed(0)
    model = tm.build_model(arch, **kwargs).double()
    net = nn_np.build_model(arch, dtype=np.float64, **kwargs)
    assert net.names() == [n for n, _ in model.named_children()]
    nr.load_torch_state(net, numpy_state(model))
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((8, channels, size, size)), rng.integers(0, 10, 8)

    # Training mode: batch statistics, dropout masks replayed, every parameter's gradient.
    logits = net(x)
    logits_t = torch_forward(model, t64(x), net)
    close(logits, logits_t.detach().numpy())
    loss, dlogits = nr.cross_entropy(logits, y)
    loss_t = F.cross_entropy(logits_t, torch.from_numpy(y))
    loss_t.backward()
    close(loss, loss_t.item())
    net.backward(dlogits)
    torch_params = dict(model.named_parameters())
    assert set(net.grads()) == set(torch_params)
    # Relative to the largest gradient: a conv bias just before BN has an exactly zero gradient.
    scale = max(np.abs(p.grad.numpy()).max() for p in torch_params.values())
    for key, grad in net.grads().items():
        close(grad, torch_params[key].grad.numpy(), scale=scale)
    state_t = model.state_dict()
    for key, value in net.state_dict().items():     # running stats updated alike
        close(value, state_t[key].numpy())

    # Eval mode: running statistics, no dropout.
    net.eval(), model.eval()
    close(net(x), model(t64(x)).detach().numpy())

    # Table of parameters per layer as lenet_lib.core.models.layer_table counts them.
    table = tm.layer_table(model.float(), (channels, size, size))
    assert [r["parameters"] for r in net.parameter_table()] == table["parameters"].tolist()


def test_float32_network_gives_torch_logits():
    torch.manual_seed(1)
    model = tm.build_lenet5(bn=True, dropout=0.5).eval()
    net = nr.build_lenet5(bn=True, dropout=0.5, dtype=np.float32)
    nr.load_torch_state(net, numpy_state(model))
    net.eval()
    x = np.random.default_rng(0).standard_normal((32, 1, 28, 28)).astype(np.float32)
    logits = net(x)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_load_torch_state_names_what_does_not_fit():
    net = nr.build_lenet5()
    state = numpy_state(tm.build_lenet5())
    with pytest.raises(ValueError, match="missing.*c1_conv.bias"):
        nr.load_torch_state(net, {k: v for k, v in state.items() if k != "c1_conv.bias"})
    with pytest.raises(ValueError, match="f6.weight: shape"):
        nr.load_torch_state(net, {**state, "f6.weight": np.zeros((84, 121))})


def test_both_frameworks_build_the_same_layer_kinds():
    assert set(nn_np.POOLS) == set(tm.POOLS) and set(L.ACTIVATIONS) == set(tm.ACTIVATIONS)
    with pytest.raises(ValueError, match="pool='min'"):
        nr.build_lenet5(pool="min")
    for arch in ("lenet5", "mlp"):       # the same architectures, parameter for parameter
        assert [p["parameters"] for p in nn_np.build_model(arch).parameter_table()] == \
            tm.layer_table(tm.build_model(arch), (1, 28, 28))["parameters"].tolist()
    for build in (nn_np.build_model, tm.build_model):
        with pytest.raises(ValueError, match="arch='resnet'.*lenet5.*mlp"):
            build("resnet")


# ---------------------------------------------------------------- optimizers
OPTIMIZER_CASES = [(name, {}) for name in OPTIMIZER_NAMES] + [
    (name, {"weight_decay": 0.01}) for name in OPTIMIZER_NAMES] + [
    ("sgd", {"momentum": 0.5, "lr": 0.2}), ("nesterov", {"momentum": 0.7, "weight_decay": 1e-3}),
    ("rmsprop", {"alpha": 0.9, "eps": 1e-6}), ("adam", {"betas": (0.8, 0.99), "lr": 0.01}),
    ("adadelta", {"rho": 0.5, "lr": 0.5}), ("adagrad", {"eps": 1e-6, "lr": 0.1}),
    ("adagrad", {"initial_accumulator_value": 0.1, "lr": 0.1})]


@pytest.mark.parametrize("name,hp", OPTIMIZER_CASES, ids=lambda v: str(v))
def test_optimizer_steps_match_torch(name, hp):
    rng = np.random.default_rng(8)
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5), "c": rng.standard_normal((2, 2, 3))}
    torch_params = {k: t64(v.copy()).requires_grad_(True) for k, v in params.items()}
    opt = nopt.make_optimizer(name, params, **hp)
    opt_t = topt.make_optimizer(name, list(torch_params.values()), **hp)
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        for k, p in torch_params.items():
            p.grad = t64(grads[k].copy())
        opt_t.step()
        opt.step(grads)
        for k in params:
            close(params[k], torch_params[k].detach().numpy(), rtol=1e-12)


def test_optimizer_updates_the_networks_own_arrays_with_per_parameter_state():
    net = nr.build_lenet5(dtype=np.float64)
    opt = nr.make_optimizer("adam", net.parameters())
    x, y = np.random.default_rng(0).standard_normal((4, 1, 28, 28)), np.arange(4)
    before = {k: v.copy() for k, v in net.parameters().items()}
    net.backward(nr.cross_entropy(net(x), y)[1])
    opt.step(net.grads())
    assert set(opt.state) == set(net.parameters())
    for key, array in net.parameters().items():
        assert opt.params[key] is array and net[key.split(".")[0]].params[key.split(".")[1]] is array
        assert not np.array_equal(array, before[key]), key
        assert opt.state[key]["exp_avg"].shape == array.shape
    with pytest.raises(ValueError, match="do not match"):
        opt.step({"c1_conv.weight": np.zeros((6, 1, 5, 5))})


def test_optimizer_names_and_extra_arguments_are_torchs():
    """The NumPy optimizers cover torch's, and every extra argument choices.py allows (with its default)
    is one torch.optim's class takes, with the same default."""
    assert set(topt.OPTIMIZERS) == set(OPTIMIZER_NAMES)     # core/optim's classes cover every name
    for name, (cls, _, _) in topt.OPTIMIZERS.items():
        extras = EXTRA_DEFAULTS.get(name, {})
        defaults = cls([torch.zeros(1)]).defaults
        assert set(extras) <= set(defaults), name          # torch takes every extra argument we allow
        assert all(tuple(np.atleast_1d(defaults[k])) == tuple(np.atleast_1d(v)) for k, v in extras.items()), name


# ---------------------------------------------------------------- training
def subset(data: DataSplits, n_train: int, n_eval: int) -> DataSplits:
    return DataSplits(data.x_train[:n_train], data.y_train[:n_train], data.x_val[:n_eval], data.y_val[:n_eval],
                      data.x_test[:n_eval], data.y_test[:n_eval], {**data.info, "train_size": n_train,
                                                                   "val_size": n_eval, "test_size": n_eval})


def test_layer_times_take_torchs_own_layers_and_leave_the_model_alone(mnist_small, monkeypatch):
    """R5's framework is torch as it comes: the timed copy runs torch's own pooling (lenet_lib's pools
    never call F.max_pool2d), and the model handed in keeps its layers and its mode."""
    from lenet_lib.numpy_ref.compare import layer_times
    import torch.nn.modules.pooling as pooling
    calls, max_pool2d = [], pooling.F.max_pool2d
    monkeypatch.setattr(pooling.F, "max_pool2d", lambda *a, **k: calls.append(1) or max_pool2d(*a, **k))
    spec = TrainSpec(fc_activation="sigmoid", padding="same")
    net, model = nr_twin(spec, mnist_small)
    before = [type(layer) for layer in model]
    times = layer_times(net, model, mnist_small.x_test[:1].numpy(), repeats=2, calls=1)
    assert len(times) == 2 * len(before) and (times[["numpy_s", "torch_s"]] > 0).all().all()
    assert calls and [type(layer) for layer in model] == before and model.training


def test_step_times_put_numpy_against_torchs_own_layers_in_turns(mnist_small, monkeypatch):
    """R5's training-time claim: one row per batch size and round, NumPy and torch per step; the torch
    side is core.timing's "torch" step (torch's own pooling and optimizer), not lenet_lib's fast path."""
    from lenet_lib.numpy_ref import compare
    import torch.nn.modules.pooling as pooling
    pools, max_pool2d = [], pooling.F.max_pool2d
    monkeypatch.setattr(pooling.F, "max_pool2d", lambda *a, **k: pools.append(1) or max_pool2d(*a, **k))
    implementations, training_step = [], compare.training_step
    monkeypatch.setattr(compare, "training_step",
                        lambda spec, data, implementation, batches: implementations.append(implementation)
                        or training_step(spec, data, implementation, batches))
    spec = TrainSpec(fc_activation="sigmoid", padding="same", optimizer="adam", lr=1e-3)
    with threads(1):
        times = compare.step_times(spec, mnist_small, [16, 64], rounds=3, calls=2, warmup=0)
    assert list(times.columns) == ["batch_size", "round", "numpy_s", "torch_s", "threads"]
    assert times[["batch_size", "round"]].values.tolist() == [[b, r] for b in (16, 64) for r in (1, 2, 3)]
    assert (times[["numpy_s", "torch_s"]] > 0).all().all() and set(times["threads"]) == {1}
    assert implementations == ["torch", "torch"] and len(pools) >= 2 * 3 * 2 * 2   # 2 pools per step
    with pytest.raises(ValueError, match="batch size 4000"):
        compare.step_times(spec, mnist_small, [4000], rounds=1, calls=1)


def test_numpy_training_learns_mnist(mnist_small):
    data = numpy_splits(mnist_small)
    net = nr.build_lenet5(seed=0)
    with threads(1):
        rows = nr.train(net, data, "adam", epochs=1, batch_size=64, seed=0, base={"model_id": "numpy"}, lr=3e-3)
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["model_id"] == "numpy"
    assert set(MEASURES) <= set(rows[0])
    assert rows[0]["val_acc"] > 0.6 and rows[0]["test_acc"] > 0.6, rows[0]


def test_numpy_training_follows_torch_from_the_same_start(mnist_small):
    """Same initial weights, same batches, float32 on both sides: the same losses up to rounding."""
    data = subset(mnist_small, 512, 200)
    spec = TrainSpec(optimizer="adam", batch_size=64, epochs=2, activation="tanh", seed=3)
    epochs_done = []
    with threads(1):
        ours = train_numpy(spec, data, on_epoch=lambda *args: epochs_done.append(args))
        theirs = torch_train(spec, data, device="cpu", progress=False).history
    for col in ("train_loss", "val_loss", "test_loss"):
        np.testing.assert_allclose(ours[col], theirs[col], rtol=1e-4)
    assert set(theirs.columns) <= set(ours.columns)
    # provenance: NumPy did the arithmetic, not torch's kernels; progress counted as torch's training does
    assert set(ours["kernels"]) == {"numpy"} and set(theirs["kernels"]) <= {"c", "pytorch"}
    assert epochs_done == [(spec.model_id, 1, 2), (spec.model_id, 2, 2)]


def test_gd_steps_once_per_epoch_and_divergence_is_a_status():
    rng = np.random.default_rng(9)
    data = {k: rng.standard_normal((40, 1, 28, 28)) if k.startswith("x") else rng.integers(0, 10, 40)
            for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    net = nr.build_lenet5(dtype=np.float64)
    start = {k: v.copy() for k, v in net.parameters().items()}
    net.backward(nr.cross_entropy(net(data["x_train"]), data["y_train"])[1])   # whole set as one batch
    grads = {k: g.copy() for k, g in net.grads().items()}
    nr.train(net, data, "gd", epochs=1, batch_size=16, lr=0.1)
    for key, value in net.parameters().items():
        close(value, start[key] - 0.1 * grads[key], rtol=1e-10)
    rows = nr.train(nr.build_lenet5(), data, "sgd", epochs=3, batch_size=20, lr=1e30)
    assert rows[-1]["status"] == "diverged" and len(rows) < 3
