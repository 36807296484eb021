"""The LeNet-5 family and the MLP baseline.

One builder covers every seed report (../shared/SEEDS.md). Layers carry LeCun's names so that tables,
feature maps and weight transfer (to the NumPy reference) speak one language:

    c1 conv -> s2 pool -> c3 conv -> s4 pool -> c5 (120) -> f6 (84) -> out (10)

c5 is a Linear on the flattened s4 output: for a 5x5 map that is exactly LeCun's 5x5 convolution (same
parameter count) and it also serves R2's 28x28 "valid" variant whose s4 output is 4x4.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lenet_lib.base.choices import ARCHS, C3_TABLE, MODEL_DEFAULTS, lenet5_geometry
from lenet_lib.base.checks import check_choice, check_range

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}

class SparseConv2d(nn.Conv2d):
    """C3 with LeCun's connection table: weights outside the table are held at zero by a fixed mask."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size)
        mask = torch.zeros(out_channels, in_channels, 1, 1)
        for out_map, in_maps in enumerate(C3_TABLE):
            mask[out_map, list(in_maps)] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)

    def effective_parameters(self) -> int:
        k = self.kernel_size[0] * self.kernel_size[1]
        return int(self.mask.sum().item()) * k + self.out_channels


def _conv_block(prefix: str, conv: nn.Module, channels: int, act: str, bn: str | None):
    """conv and activation, with BatchNorm where `bn` says. Yields (name, module) pairs."""
    yield prefix + "_conv", conv
    if bn == "before_act":
        yield prefix + "_bn", nn.BatchNorm2d(channels)
    yield prefix + "_act", ACTIVATIONS[act]()
    if bn == "after_act":
        yield prefix + "_bn", nn.BatchNorm2d(channels)


def build_lenet5(
    in_channels: int = 1,
    input_size: int = 28,
    num_classes: int = 10,
    activation: str = MODEL_DEFAULTS["activation"],
    fc_activation: str | None = MODEL_DEFAULTS["fc_activation"],
    pool: str = MODEL_DEFAULTS["pool"],
    bn: bool = MODEL_DEFAULTS["bn"],
    bn_position: str = MODEL_DEFAULTS["bn_position"],
    bn_layers: str = MODEL_DEFAULTS["bn_layers"],
    dropout: float = MODEL_DEFAULTS["dropout"],
    dropout_at: str = MODEL_DEFAULTS["dropout_at"],
    conv_dropout: float = MODEL_DEFAULTS["conv_dropout"],
    c3_table: bool = MODEL_DEFAULTS["c3_table"],
    padding: str = MODEL_DEFAULTS["padding"],
) -> nn.Sequential:
    """A LeNet-5 as an nn.Sequential of named layers.

    padding: see choices.lenet5_geometry. conv_dropout is R3's dropout after c3's activation.
    """
    fc_activation, c1_pad, side = lenet5_geometry(in_channels, input_size, activation, fc_activation, pool,
                                                  bn_position, bn_layers, dropout, dropout_at, conv_dropout,
                                                  padding)

    bn1 = bn_position if bn else None
    bn3 = bn_position if bn and bn_layers == "conv" else None
    layers: list[tuple[str, nn.Module]] = []
    layers += _conv_block("c1", nn.Conv2d(in_channels, 6, 5, padding=c1_pad), 6, activation, bn1)
    layers.append(("s2", POOLS[pool](2)))
    if bn1 == "after_pool":
        layers.append(("s2_bn", nn.BatchNorm2d(6)))
    c3 = SparseConv2d(6, 16, 5) if c3_table else nn.Conv2d(6, 16, 5)
    layers += _conv_block("c3", c3, 16, activation, bn3)
    if conv_dropout > 0:
        layers.append(("c3_drop", nn.Dropout(conv_dropout)))
    layers.append(("s4", POOLS[pool](2)))
    if bn3 == "after_pool":
        layers.append(("s4_bn", nn.BatchNorm2d(16)))
    layers.append(("flatten", nn.Flatten()))
    layers += [("c5", nn.Linear(16 * side * side, 120)), ("c5_act", ACTIVATIONS[fc_activation]())]
    if dropout > 0 and dropout_at in ("c5", "c5_f6"):
        layers.append(("c5_drop", nn.Dropout(dropout)))
    layers += [("f6", nn.Linear(120, 84)), ("f6_act", ACTIVATIONS[fc_activation]())]
    if dropout > 0 and dropout_at in ("f6", "c5_f6"):
        layers.append(("f6_drop", nn.Dropout(dropout)))
    layers.append(("out", nn.Linear(84, num_classes)))
    return nn.Sequential(OrderedDict(layers))


def build_mlp(
    in_channels: int = 1,
    input_size: int = 28,
    num_classes: int = 10,
    hidden: tuple[int, ...] = (120, 60),
    activation: str = "tanh",
    dropout: float = 0.0,
) -> nn.Sequential:
    """R5's baseline: a fully connected net, 784-120-60-10 with tanh by default."""
    check_choice("activation", activation, tuple(ACTIVATIONS))
    check_range("dropout", dropout, 0.0, 1.0, hi_open=True)
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = in_channels * input_size * input_size
    for i, h in enumerate(hidden, start=1):
        layers += [(f"h{i}", nn.Linear(width, h)), (f"h{i}_act", ACTIVATIONS[activation]())]
        if dropout > 0:
            layers.append((f"h{i}_drop", nn.Dropout(dropout)))
        width = h
    layers.append(("out", nn.Linear(width, num_classes)))
    return nn.Sequential(OrderedDict(layers))


# Which keyword arguments each architecture takes: the training spec passes only these through.
MODEL_ARGS = {
    "lenet5": ("activation", "fc_activation", "pool", "bn", "bn_position", "bn_layers", "dropout",
               "dropout_at", "conv_dropout", "c3_table", "padding"),
    "mlp": ("activation", "dropout"),
}


def build_model(arch: str = "lenet5", **kwargs) -> nn.Sequential:
    """Build `arch` ('lenet5' or 'mlp'); unknown arguments are an error naming the valid ones."""
    check_choice("arch", arch, ARCHS)
    shape_args = {"in_channels", "input_size", "num_classes"}
    if arch == "mlp":
        shape_args |= {"hidden"}
    unknown = set(kwargs) - set(MODEL_ARGS[arch]) - shape_args
    if unknown:
        valid = sorted(set(MODEL_ARGS[arch]) | shape_args)
        raise ValueError(f"unknown argument(s) {sorted(unknown)} for arch {arch!r}; valid: {valid}")
    return (build_lenet5 if arch == "lenet5" else build_mlp)(**kwargs)


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters, counting only the connected weights of a sparse C3."""
    if isinstance(module, SparseConv2d):
        return module.effective_parameters()
    own = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
    return own + sum(parameter_count(m) for m in module.children())


@contextmanager
def eval_mode(model: nn.Module):
    """model in eval mode (BatchNorm's running statistics, no dropout) inside the block; its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def layer_table(model: nn.Sequential, input_shape: tuple[int, ...]) -> pd.DataFrame:
    """Per layer: name, type, output shape for one input, trainable parameters, and part (conv / fc)."""
    rows, x = [], torch.zeros(1, *input_shape)
    part = "conv"
    with eval_mode(model), torch.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            if name == "flatten":
                part = "fc"
            rows.append({"layer": name, "type": type(layer).__name__, "output_shape": tuple(x.shape[1:]),
                         "parameters": parameter_count(layer), "part": part})
    return pd.DataFrame(rows)


def forward_features(model: nn.Sequential, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for input x (eval mode, no grad), e.g. for feature maps or t-SNE."""
    wanted, found = set(layers), {}
    missing = wanted - {name for name, _ in model.named_children()}
    if missing:
        raise ValueError(f"unknown layer(s) {sorted(missing)}; valid: {[n for n, _ in model.named_children()]}")
    with eval_mode(model), torch.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            if name in wanted:
                found[name] = x
            if len(found) == len(wanted):
                break
    return found
