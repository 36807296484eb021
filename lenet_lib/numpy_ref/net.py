"""The NumPy LeNet-5 family and MLP, layer for layer the same as lenet_lib.core.models (which needs torch).

Layer names match the torch nn.Sequential (c1_conv, c1_bn, c1_act, s2, c3_conv, ..., c5, f6, out), and a
parameter or buffer is addressed "layer.name" exactly like a torch state_dict key, so
`load_torch_state(net, {k: v.numpy() for k, v in model.state_dict().items()})` copies weights one to one.
"""
from __future__ import annotations

import numpy as np

from lenet_lib.base.choices import ARCHS, C3_TABLE, MODEL_DEFAULTS, lenet5_geometry
from lenet_lib.base.checks import check_choice, check_range
from lenet_lib.numpy_ref.layers import (ACTIVATIONS, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear,
                                        MaxPool2d)

# The same choices as lenet_lib.core.models: both take them from lenet_lib.base.choices.
POOLS = {"max": MaxPool2d, "avg": AvgPool2d}


class Sequential:
    """Named layers run in order; backward runs them in reverse and leaves gradients in each layer."""

    def __init__(self, layers: list[tuple[str, Layer]], dtype=np.float32):
        self.layers = dict(layers)
        self.dtype = np.dtype(dtype)
        self.training = True

    def __getitem__(self, name: str) -> Layer:
        return self.layers[name]

    def names(self) -> list[str]:
        return list(self.layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """Gradient of the loss with respect to the logits in; every parameter's gradient left in layer.grads."""
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
            if dout is None:       # a first conv that skips its input gradient
                break
        return dout

    def train(self, mode: bool = True) -> "Sequential":
        self.training = mode
        for layer in self.layers.values():
            layer.training = mode
        return self

    def eval(self) -> "Sequential":
        return self.train(False)

    def parameters(self) -> dict[str, np.ndarray]:
        """Trainable arrays by state_dict key. These are the layers' own arrays: update them in place."""
        return {f"{n}.{k}": v for n, layer in self.layers.items() for k, v in layer.params.items()}

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients from the last backward, with the same keys as parameters()."""
        return {f"{n}.{k}": layer.grads[k] for n, layer in self.layers.items() for k in layer.params}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers (BN running stats, C3 mask), keyed as torch's state_dict."""
        state = {}
        for n, layer in self.layers.items():
            state.update({f"{n}.{k}": v for k, v in layer.params.items()})
            state.update({f"{n}.{k}": v for k, v in layer.buffers.items()})
        return state

    def astype(self, dtype) -> "Sequential":
        self.dtype = np.dtype(dtype)
        for layer in self.layers.values():
            layer.astype(self.dtype)
        return self

    def parameter_table(self) -> list[dict]:
        """Per layer: name, type and trainable parameters (only the connected weights of a sparse C3)."""
        return [{"layer": n, "type": type(layer).__name__, "parameters": layer.parameter_count()}
                for n, layer in self.layers.items()]

    def parameter_count(self) -> int:
        return sum(layer.parameter_count() for layer in self.layers.values())


def load_torch_state(net: Sequential, state: dict[str, np.ndarray]) -> Sequential:
    """Copy a torch state_dict (already converted to NumPy arrays) into net, key for key.

    Keys and shapes must match exactly: a missing, extra or misshapen entry is an error naming it.
    Values are copied into the existing arrays (cast to the net's dtype), so optimizers holding them
    keep working.
    """
    own = net.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"state does not match the network: missing {missing}, unexpected {extra}")
    for key, target in own.items():
        value = np.asarray(state[key])
        if value.shape != target.shape:
            raise ValueError(f"{key}: shape {value.shape} does not match the network's {target.shape}")
        np.copyto(target, value, casting="unsafe")
    return net


def _act(name: str) -> Layer:
    return ACTIVATIONS[name]()


def _conv_block(prefix: str, conv: Layer, channels: int, act: str, bn: str | None, dtype):
    """conv and activation, with BatchNorm where `bn` says (mirrors models._conv_block)."""
    yield prefix + "_conv", conv
    if bn == "before_act":
        yield prefix + "_bn", BatchNorm2d(channels, dtype=dtype)
    yield prefix + "_act", _act(act)
    if bn == "after_act":
        yield prefix + "_bn", BatchNorm2d(channels, dtype=dtype)


def build_lenet5(in_channels: int = 1, input_size: int = 28, num_classes: int = 10,
                 activation: str = MODEL_DEFAULTS["activation"],
                 fc_activation: str | None = MODEL_DEFAULTS["fc_activation"],
                 pool: str = MODEL_DEFAULTS["pool"], bn: bool = MODEL_DEFAULTS["bn"],
                 bn_position: str = MODEL_DEFAULTS["bn_position"], bn_layers: str = MODEL_DEFAULTS["bn_layers"],
                 dropout: float = MODEL_DEFAULTS["dropout"], dropout_at: str = MODEL_DEFAULTS["dropout_at"],
                 conv_dropout: float = MODEL_DEFAULTS["conv_dropout"], c3_table: bool = MODEL_DEFAULTS["c3_table"],
                 padding: str = MODEL_DEFAULTS["padding"], seed: int = 0, dtype=np.float32) -> Sequential:
    """A NumPy LeNet-5 with the arguments and layer names of lenet_lib.core.models.build_lenet5.

    `seed` drives the initial weights (torch's default init distribution) and the dropout masks, each
    from its own numpy Generator.
    """
    fc_activation, c1_pad, side = lenet5_geometry(in_channels, input_size, activation, fc_activation, pool,
                                                  bn_position, bn_layers, dropout, dropout_at, conv_dropout,
                                                  padding)
    init_rng, drop_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))

    bn1 = bn_position if bn else None
    bn3 = bn_position if bn and bn_layers == "conv" else None
    mask = None
    if c3_table:
        mask = np.zeros((16, 6))
        for out_map, in_maps in enumerate(C3_TABLE):
            mask[out_map, list(in_maps)] = 1.0
    layers: list[tuple[str, Layer]] = []
    c1 = Conv2d(in_channels, 6, 5, padding=c1_pad, rng=init_rng, dtype=dtype, input_grad=False)
    layers += _conv_block("c1", c1, 6, activation, bn1, dtype)
    layers.append(("s2", POOLS[pool]()))
    if bn1 == "after_pool":
        layers.append(("s2_bn", BatchNorm2d(6, dtype=dtype)))
    c3 = Conv2d(6, 16, 5, mask=mask, rng=init_rng, dtype=dtype)
    layers += _conv_block("c3", c3, 16, activation, bn3, dtype)
    if conv_dropout > 0:
        layers.append(("c3_drop", Dropout(conv_dropout, drop_rng)))
    layers.append(("s4", POOLS[pool]()))
    if bn3 == "after_pool":
        layers.append(("s4_bn", BatchNorm2d(16, dtype=dtype)))
    layers.append(("flatten", Flatten()))
    layers += [("c5", Linear(16 * side * side, 120, init_rng, dtype)), ("c5_act", _act(fc_activation))]
    if dropout > 0 and dropout_at in ("c5", "c5_f6"):
        layers.append(("c5_drop", Dropout(dropout, drop_rng)))
    layers += [("f6", Linear(120, 84, init_rng, dtype)), ("f6_act", _act(fc_activation))]
    if dropout > 0 and dropout_at in ("f6", "c5_f6"):
        layers.append(("f6_drop", Dropout(dropout, drop_rng)))
    layers.append(("out", Linear(84, num_classes, init_rng, dtype)))
    return Sequential(layers, dtype)


def build_mlp(in_channels: int = 1, input_size: int = 28, num_classes: int = 10, hidden: tuple[int, ...] = (120, 60),
              activation: str = "tanh", dropout: float = 0.0, seed: int = 0, dtype=np.float32) -> Sequential:
    """R5's baseline as lenet_lib.core.models.build_mlp: flatten, hidden Linear + activation (+ dropout), out."""
    check_choice("activation", activation, tuple(ACTIVATIONS))
    check_range("dropout", dropout, 0.0, 1.0, hi_open=True)
    init_rng, drop_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    layers: list[tuple[str, Layer]] = [("flatten", Flatten())]
    width = in_channels * input_size * input_size
    for i, h in enumerate(hidden, start=1):
        layers += [(f"h{i}", Linear(width, h, init_rng, dtype)), (f"h{i}_act", _act(activation))]
        if dropout > 0:
            layers.append((f"h{i}_drop", Dropout(dropout, drop_rng)))
        width = h
    layers.append(("out", Linear(width, num_classes, init_rng, dtype)))
    return Sequential(layers, dtype)


def build_model(arch: str = "lenet5", **kwargs) -> Sequential:
    """'lenet5' or 'mlp' with build_lenet5 / build_mlp's keyword arguments."""
    check_choice("arch", arch, ARCHS)
    return (build_lenet5 if arch == "lenet5" else build_mlp)(**kwargs)
