import pytest
import torch
from torch import nn

from lenet_lib.core.models import build_model, forward_features, layer_table, parameter_count

# Each seed report's model (../shared/SEEDS.md) with its parameter count.
REPORT_MODELS = {
    "standard": (dict(), (1, 28, 28), 61_706),
    "same-padded bn+dropout": (dict(bn=True, bn_position="after_act", dropout=0.5), (1, 28, 28), 61_706 + 12),
    # R1 l.118: c5 a 4x4 conv 16 -> 120, so valid convolutions on 28x28 (c5 reads 16*4*4 inputs)
    "R1 bn+dropout": (dict(bn=True, bn_position="after_act", dropout=0.5, padding="valid"), (1, 28, 28),
                      44_426 + 12),
    "R2 part I numpy": (dict(activation="tanh", padding="valid"), (1, 28, 28), 44_426),
    "R2 part II": (dict(bn=True, bn_position="after_pool", dropout=0.4), (1, 32, 32), 61_706 + 12),
    "R3 cifar dropout+bn": (dict(in_channels=3, input_size=32, conv_dropout=0.5, bn=True,
                                 bn_position="before_act"), (3, 32, 32), 62_006 + 12),
    "R4 bn in conv part": (dict(bn=True, bn_layers="conv", dropout=0.2, dropout_at="c5_f6"),
                           (1, 28, 28), 61_706 + 12 + 32),
    "R4 32x32 valid": (dict(bn=True, bn_layers="conv", dropout=0.2, padding="valid"), (1, 32, 32), 61_706 + 12 + 32),
    "R5": (dict(activation="relu", fc_activation="sigmoid"), (1, 28, 28), 61_706),
    "LeCun sparse C3": (dict(c3_table=True, activation="tanh", pool="avg"), (1, 28, 28), 61_706 - 2416 + 1516),
}


@pytest.mark.parametrize("name", REPORT_MODELS)
def test_report_models_shapes_and_parameter_counts(name):
    kwargs, shape, expected = REPORT_MODELS[name]
    kwargs = {**kwargs, "input_size": shape[1]} if "input_size" not in kwargs else kwargs
    model = build_model("lenet5", **kwargs)
    assert model(torch.randn(4, *shape)).shape == (4, 10)
    table = layer_table(model, shape)
    assert table["parameters"].sum() == parameter_count(model) == expected


def test_r1_valid_geometry_feeds_a_4x4_c5():
    """R1 l.118: c1 5x5 on 28x28 without padding (24x24 maps), s4 16x4x4, c5 a 4x4 conv 16 -> 120, which
    on a 4x4 map is a Linear over 256 inputs: 120 * 256 + 120 parameters, as a 4x4 conv has."""
    model = build_model(bn=True, dropout=0.5, padding="valid")
    shapes = layer_table(model, (1, 28, 28)).set_index("layer")["output_shape"]
    assert shapes["c1_conv"] == (6, 24, 24) and shapes["s2"] == (6, 12, 12) and shapes["c3_conv"] == (16, 8, 8)
    assert shapes["s4"] == (16, 4, 4) and shapes["c5"] == (120,)
    assert model.c5.weight.shape == (120, 256) and parameter_count(model.c5) == 30_840
    conv = nn.Conv2d(16, 120, 4)
    conv.weight.data.copy_(model.c5.weight.data.view(120, 16, 4, 4))
    conv.bias.data.copy_(model.c5.bias.data)
    x = torch.randn(3, 16, 4, 4)
    assert torch.allclose(conv(x).flatten(1), model.c5(x.flatten(1)), atol=1e-5)
    assert layer_table(build_model(padding="auto"), (1, 28, 28)).set_index("layer").loc["s4", "output_shape"] \
        == (16, 5, 5)                                                      # "auto" pads 28x28: not R1's net


def test_r5_conv_and_fc_totals():
    table = layer_table(build_model(fc_activation="sigmoid"), (1, 28, 28))
    totals = table.groupby("part")["parameters"].sum()
    assert totals["conv"] == 2_572 and totals["fc"] == 59_134
    assert table.set_index("layer").loc["s4", "output_shape"] == (16, 5, 5)


def test_mlp_baseline():
    model = build_model("mlp")
    assert parameter_count(model) == 784 * 120 + 120 + 120 * 60 + 60 + 60 * 10 + 10
    assert isinstance(model.h1_act, nn.Tanh)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_layer_order_follows_bn_and_dropout_placement():
    names = lambda m: [n for n, _ in m.named_children()]
    assert names(build_model(bn=True, bn_position="before_act"))[:3] == ["c1_conv", "c1_bn", "c1_act"]
    assert names(build_model(bn=True, bn_position="after_act"))[:3] == ["c1_conv", "c1_act", "c1_bn"]
    assert names(build_model(bn=True, bn_position="after_pool"))[:4] == ["c1_conv", "c1_act", "s2", "s2_bn"]
    r3 = names(build_model(conv_dropout=0.5))
    assert r3.index("c3_drop") == r3.index("c3_act") + 1 and r3.index("c3_drop") < r3.index("s4")
    r1 = names(build_model(dropout=0.5))
    assert r1[-3:] == ["f6_act", "f6_drop", "out"] and "c5_drop" not in r1
    assert isinstance(build_model(pool="avg").s2, nn.AvgPool2d)


def test_sparse_c3_keeps_unconnected_weights_at_zero_effect():
    model = build_model(c3_table=True)
    x = torch.randn(2, 6, 14, 14)
    conv = model.c3_conv
    y = conv(x)
    x2 = x.clone()
    x2[:, 3] += 10.0      # map 3 feeds only some C3 maps; map 0 of C3 reads S2 maps 0,1,2
    assert torch.allclose(conv(x2)[:, 0], y[:, 0])
    assert not torch.allclose(conv(x2)[:, 1], y[:, 1])


def test_forward_features_returns_named_layers():
    model = build_model()
    feats = forward_features(model, torch.randn(3, 1, 28, 28), ["c1_act", "s4", "f6_act"])
    assert feats["c1_act"].shape == (3, 6, 28, 28) and feats["f6_act"].shape == (3, 84)
    with pytest.raises(ValueError, match="unknown layer"):
        forward_features(model, torch.randn(1, 1, 28, 28), ["conv9"])


@pytest.mark.parametrize("bad, message", [
    (dict(activation="gelu"), "activation='gelu'.*relu"),
    (dict(pool="min"), "pool='min'"),
    (dict(dropout=1.0), "dropout=1.0"),
    (dict(bn_position="middle"), "bn_position='middle'"),
    (dict(in_channels=2), "in_channels=2"),
    (dict(widht=3), "unknown argument.*widht"),
])
def test_bad_model_arguments_name_value_and_choices(bad, message):
    with pytest.raises(ValueError, match=message):
        build_model("lenet5", **bad)
    with pytest.raises(ValueError, match="arch='resnet'"):
        build_model("resnet")


def test_eval_mode_restores_the_mode_it_found_even_after_an_error():
    from lenet_lib.core.models import eval_mode
    model = build_model(bn=True, dropout=0.5)
    for start_training in (True, False):
        model.train(start_training)
        with pytest.raises(RuntimeError), eval_mode(model):
            assert not model.training and not model.c1_bn.training
            raise RuntimeError("inside the block")
        assert model.training is start_training and model.c1_bn.training is start_training
