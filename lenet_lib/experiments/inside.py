"""Looking inside trained networks (R5's analyses): per-layer forward time, feature maps, embeddings of the
penultimate layer, and which classes the network confuses.

Every function works on any model built by models.build_model (an nn.Sequential of named layers) and on
any dataset of data.DATASETS: class names come from CLASS_NAMES, shapes from the tensors themselves.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from torch import nn
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score

from lenet_lib.analysis import plots
from lenet_lib.core.models import eval_mode
from lenet_lib.core.specs import TrainSpec

CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                      "bag", "ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}
FEATURE_LAYER_TYPES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)   # the layers whose outputs are maps
PREDICT_BATCH = 1000


def class_names(dataset: str) -> list[str]:
    if dataset not in CLASS_NAMES:
        raise ValueError(f"dataset={dataset!r} is not valid; choose one of {list(CLASS_NAMES)}")
    return CLASS_NAMES[dataset]


def labelled(labels, dataset: str) -> pd.Categorical:
    """Class names for integer labels, as a categorical in class order (legends list classes in order)."""
    names = class_names(dataset)
    return pd.Categorical([names[i] for i in torch.as_tensor(labels).cpu().tolist()], categories=names)


# ---------------------------------------------------------------- the models R5 compares
def lenet_and_mlp_specs(seeds, *, epochs: int, batch_size: int, optimizer: str, lr: float,
                        activation: str, fc_activation: str, mlp_optimizer: str, mlp_lr: float,
                        mlp_activation: str) -> list[TrainSpec]:
    """One LeNet-5 and one MLP baseline per seed, each with its own optimizer (R5: Adam vs AdaGrad).

    model_id is "<arch>-s<seed>", so the two families never collide within a run.
    """
    specs = []
    for seed in seeds:
        specs.append(TrainSpec(arch="lenet5", activation=activation, fc_activation=fc_activation,
                               optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=epochs, seed=seed))
        specs.append(TrainSpec(arch="mlp", activation=mlp_activation, optimizer=mlp_optimizer, lr=mlp_lr,
                               batch_size=batch_size, epochs=epochs, seed=seed))
    return specs


# ---------------------------------------------------------------- per-layer forward time
def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without a sync the clock would stop before the work is done.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def layer_times(model: nn.Sequential, input_shape, batch_sizes=(1, 64), repeats: int = 15,
                calls: int = 10, warmup: int = 3) -> pd.DataFrame:
    """Forward time of each layer on its own input, on the model's device, in eval mode.

    One row per (batch_size, layer, repeat): seconds per call averaged over `calls` calls, and
    us_per_image. Each layer is timed on the real output of the layers before it (random input images),
    so shapes and sizes are those of a forward pass. Summaries take the median over repeats.
    """
    device = next(model.parameters()).device
    rows = []
    with eval_mode(model), torch.inference_mode():
        for batch_size in batch_sizes:
            x = torch.randn(batch_size, *input_shape, device=device)
            inputs = []                     # the input each layer sees in a forward pass
            for name, layer in model.named_children():
                inputs.append((name, layer, x))
                x = layer(x)
            for name, layer, inp in inputs:
                for _ in range(warmup):
                    layer(inp)
                for repeat in range(repeats):
                    _sync(device)
                    start = time.perf_counter()
                    for _ in range(calls):
                        layer(inp)
                    _sync(device)
                    seconds = (time.perf_counter() - start) / calls
                    rows.append({"batch_size": batch_size, "layer": name, "type": type(layer).__name__,
                                 "repeat": repeat, "seconds": seconds,
                                 "us_per_image": 1e6 * seconds / batch_size})
    return pd.DataFrame(rows)


def layer_time_table(times: pd.DataFrame) -> pd.DataFrame:
    """Median time per layer, layers in network order: us per image and per batch at each batch size,
    and each layer's share of the forward pass at the smallest batch size."""
    order = list(dict.fromkeys(times["layer"]))
    median = times.groupby(["layer", "batch_size"])["seconds"].median().unstack("batch_size").loc[order]
    table = pd.DataFrame(index=pd.Index(order, name="layer"))
    for batch_size in median.columns:
        table[f"us_per_batch_{batch_size}"] = 1e6 * median[batch_size]
        table[f"us_per_image_{batch_size}"] = 1e6 * median[batch_size] / batch_size
    smallest = median.columns.min()
    table[f"share_{smallest}"] = median[smallest] / median[smallest].sum()
    return table


def layer_time_medians(times: pd.DataFrame) -> pd.DataFrame:
    """Median us_per_image of each layer at each batch size, layers in network order, with a 'batch'
    label column for plot legends. The median, not the mean: a busy machine adds rare long outliers."""
    medians = times.groupby(["batch_size", "layer"], sort=False, as_index=False)["us_per_image"].median()
    return medians.assign(batch=[f"batch {b}" for b in medians["batch_size"]])


def multiply_adds(model: nn.Sequential, input_shape) -> pd.DataFrame:
    """Multiply-adds per layer for one image: a conv's weights are applied at every output position,
    a linear layer's once. Activations, pooling and BatchNorm count 0 (little arithmetic next to those)."""
    rows, x = [], torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with eval_mode(model), torch.inference_mode():
        for name, layer in model.named_children():
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                count = layer.weight.numel() * x.shape[2] * x.shape[3]
            elif isinstance(layer, nn.Linear):
                count = layer.weight.numel()
            else:
                count = 0
            rows.append({"layer": name, "multiply_adds": int(count)})
    return pd.DataFrame(rows)


def time_by_part(times: pd.DataFrame, layers: pd.DataFrame, macs: pd.DataFrame) -> pd.DataFrame:
    """Per batch size and part (conv / fc): share of forward time, of parameters and of multiply-adds.

    layers: models.layer_table; macs: multiply_adds. Time is the median of each layer summed per part.
    """
    part_of = layers.set_index("layer")["part"]
    median = times.groupby(["batch_size", "layer"], as_index=False)["seconds"].median()
    median["part"] = median["layer"].map(part_of)
    per_part = median.groupby(["batch_size", "part"], as_index=False)["seconds"].sum()
    per_part["time_share"] = per_part["seconds"] / per_part.groupby("batch_size")["seconds"].transform("sum")
    for share, column, frame in (("parameter_share", "parameters", layers),
                                 ("multiply_add_share", "multiply_adds", macs)):
        totals = frame.assign(part=frame["layer"].map(part_of)).groupby("part")[column].sum()
        per_part[share] = per_part["part"].map(totals / totals.sum())
    return per_part


# ---------------------------------------------------------------- feature maps
def one_per_class(labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Index of the first example of each class 0..num_classes-1, in class order."""
    labels = labels.cpu()
    found = []
    for c in range(num_classes):
        hits = torch.nonzero(labels == c).flatten()
        if len(hits) == 0:
            raise ValueError(f"class {c} has no example among the {len(labels)} given")
        found.append(int(hits[0]))
    return torch.tensor(found)


def feature_layers(model: nn.Sequential) -> list[str]:
    """Names of the convolution and pooling layers, in network order."""
    return [name for name, layer in model.named_children() if isinstance(layer, FEATURE_LAYER_TYPES)]


def displayable(images: torch.Tensor) -> np.ndarray:
    """Images scaled to [0, 1] one by one (normalized data is not a valid RGB image), as NumPy."""
    x = images.detach().float().cpu()
    flat = x.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    scaled = (flat - lo[:, None]) / (hi - lo).clamp_min(1e-12)[:, None]
    return scaled.view_as(x).numpy()


def tile_maps(maps: torch.Tensor) -> np.ndarray:
    """One example's maps (C x H x W) as one image: a near-square grid of maps, each scaled to [0, 1]
    on its own, separated by a one-pixel NaN gap (drawn as background).

    One image per example keeps a figure at 10 axes: one axes per map (up to 160 per layer) made
    matplotlib's layout take seconds per figure.
    """
    channels, height, width = maps.shape
    cols = int(np.ceil(np.sqrt(channels)))
    rows = int(np.ceil(channels / cols))
    scaled = displayable(maps.unsqueeze(1))[:, 0]
    mosaic = np.full((rows * (height + 1) - 1, cols * (width + 1) - 1), np.nan, dtype=np.float32)
    for c in range(channels):
        top, left = (c // cols) * (height + 1), (c % cols) * (width + 1)
        mosaic[top:top + height, left:left + width] = scaled[c]
    return mosaic


def plot_feature_maps(maps: torch.Tensor, names, title: str = ""):
    """plots.image_grid of the maps of N examples (N x C x H x W): one tile of C maps per example,
    titled with the example's name (maps numbered left to right, top to bottom)."""
    tiles = np.stack([tile_maps(m) for m in maps])
    return plots.image_grid(tiles, titles=list(names), rows=2 if len(tiles) > 5 else 1, title=title,
                            scale=1.9)


# ---------------------------------------------------------------- predictions and confusions
def predict(model: nn.Module, x: torch.Tensor,
            batch_size: int = PREDICT_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, softmax probabilities) for every row of x, in eval mode, returned on the CPU."""
    device = next(model.parameters()).device
    probs = []
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(x), batch_size):
            probs.append(torch.softmax(model(x[start:start + batch_size].to(device)).float(), dim=1).cpu())
    probs = torch.cat(probs) if probs else torch.zeros(0, 0)
    return probs.argmax(1), probs


def confusion_matrix(y_true, y_pred, num_classes: int = 10) -> np.ndarray:
    """Counts: rows are true classes, columns predicted ones; sums to the number of examples."""
    y_true = torch.as_tensor(y_true).cpu().long()
    y_pred = torch.as_tensor(y_pred).cpu().long()
    flat = torch.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes).numpy()


def confused_pairs(matrix: np.ndarray, names, top: int = 5) -> pd.DataFrame:
    """The off-diagonal cells with the most examples: true, predicted, count, share of that true class."""
    rows = []
    for t in range(len(matrix)):
        for p in range(len(matrix)):
            if t != p and matrix[t, p] > 0:
                rows.append({"true": names[t], "predicted": names[p], "count": int(matrix[t, p]),
                             "share_of_true_class": matrix[t, p] / matrix[t].sum()})
    table = pd.DataFrame(rows, columns=["true", "predicted", "count", "share_of_true_class"])
    # Ties in count keep class order (stable sort), so the table is the same on every machine.
    return table.sort_values("count", ascending=False, kind="stable").head(top).reset_index(drop=True)


def most_confused(y_true, probs: torch.Tensor, top: int = 10) -> pd.DataFrame:
    """The misclassified examples the model was most sure about: index, true, predicted, confidence
    (probability of the wrong class), probability of the true class; most confident first."""
    y_true = torch.as_tensor(y_true).cpu()
    pred = probs.argmax(1)
    wrong = torch.nonzero(pred != y_true).flatten()
    confidence = probs[wrong, pred[wrong]]
    order = torch.argsort(confidence, descending=True, stable=True)[:top]
    wrong = wrong[order]
    return pd.DataFrame({"index": wrong.numpy(), "true": y_true[wrong].numpy(),
                         "predicted": pred[wrong].numpy(), "confidence": confidence[order].numpy(),
                         "p_true": probs[wrong, y_true[wrong]].numpy()})


def mistake_titles(mistakes: pd.DataFrame, names) -> list[str]:
    """'true→predicted' over '(confidence)' for each row of most_confused, for plots.image_grid
    (two lines: class names like 'sandal→ankle boot' fill a small panel's width)."""
    return [f"{names[t]}→{names[p]}\n({c:.2f})"
            for t, p, c in zip(mistakes["true"], mistakes["predicted"], mistakes["confidence"])]


# ---------------------------------------------------------------- embeddings
def penultimate_layer(model: nn.Sequential) -> str:
    """The last layer before the output layer that is not dropout (LeNet-5: f6_act; MLP: h2_act)."""
    names = [name for name, layer in model.named_children() if not isinstance(layer, nn.Dropout)]
    if names[-1] != "out":
        raise ValueError(f"expected the last layer to be 'out', got {names[-1]!r}")
    return names[-2]


def tsne(features, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of the rows of features. Perplexity must stay below the number of points: it is capped
    at (n - 1) / 3, so that a small subset still works."""
    features = np.asarray(torch.as_tensor(features).detach().float().cpu().flatten(1))
    if not np.isfinite(features).all() or not features.std(axis=0).any():
        # scikit-learn's t-SNE crashes the process (segmentation fault) on identical points
        raise ValueError("t-SNE needs finite features that differ between points (a diverged model's do not)")
    perplexity = min(perplexity, (len(features) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def class_separation(features, labels) -> float:
    """Silhouette score of the classes in feature space (Euclidean): 1 well apart, 0 overlapping."""
    features = np.asarray(torch.as_tensor(features).detach().float().cpu().flatten(1))
    return float(silhouette_score(features, np.asarray(torch.as_tensor(labels).cpu())))
