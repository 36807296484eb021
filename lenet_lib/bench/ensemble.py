"""Ensemble speed: model-images/s of K models trained as one stacked network vs one at a time.

    python -m lenet_lib.bench.ensemble [--quick]

Same data, same run, same specs (BN LeNet-5, SGD momentum, batch 128, seeds 0..K-1). Throughput counts
training only (the rows' train_seconds; validation is empty and the test set one image). One at a time
runs at most SEQUENTIAL_MODELS models: its speed per model does not depend on K. Next to each figure: the
time one model's MNIST epoch (55,000 images) takes at that speed, and the FLOP limit for it. On the
CPU each figure is the best of 3 interleaved runs (the CPU may be shared).
"""
from __future__ import annotations

import argparse
import copy
import time

import pandas as pd
import torch
import torch.nn.functional as F

from lenet_lib.core.data import prepare_data
from lenet_lib.core.ensemble import train_many
from lenet_lib.core.specs import TrainSpec

# LeNet-5 (28x28, same padding) multiply-adds per image: c1 28*28*6*25 + c3 10*10*16*150 + c5 400*120
# + f6 120*84 + out 84*10 = 416,520. Forward 2 FLOP each, forward+backward ~3x: ~2.5 MFLOP per image,
# ~1.4e11 FLOP per 55,000-image epoch.
FLOP_PER_IMAGE = 3 * 2 * 416_520
EPOCH_IMAGES = 55_000
PEAK_FLOPS = {"cuda": 60e12}       # H100, fp32-ish; no figure for the CPU
SEQUENTIAL_MODELS = 4


def _throughput(specs, data, device, precision, mode) -> float:
    """Model-images per second of training, from the rows' train_seconds."""
    results = train_many(specs, data, device=device, precision=precision, mode=mode, progress=False)
    seconds = sum(r.history.train_seconds.sum() for r in results)
    return sum(len(data.y_train) * s.epochs for s in specs) / seconds


def _section(device: str, ks, images: int, epochs: int, precision: str = "fp32", repeats: int = 1) -> list[dict]:
    data = prepare_data("mnist", val_size=0, train_size=images, test_size=1, device=device)
    base = dict(bn=True, optimizer="momentum", batch_size=128, epochs=epochs)
    warm = [TrainSpec(**base, seed=s, model_id=f"w{s}") for s in range(2)]
    _throughput(warm, data, device, precision, "batched")          # kernels, allocator, cuDNN
    _throughput(warm[:1], data, device, precision, "sequential")
    rows = []
    for k in ks:
        specs = [TrainSpec(**base, seed=s, model_id=f"m{s}") for s in range(k)]
        alone, together = 0.0, 0.0
        for _ in range(repeats):       # interleaved, best of: load from other work hits both alike
            alone = max(alone, _throughput(specs[:SEQUENTIAL_MODELS], data, device, precision, "sequential"))
            together = max(together, _throughput(specs, data, device, precision, "batched"))
        for mode, speed, timed in (("one at a time", alone, min(k, SEQUENTIAL_MODELS)),
                                   ("ensemble", together, k)):
            peak = PEAK_FLOPS.get(torch.device(device).type)
            rows.append({"device": device, "precision": precision, "K": k, "mode": mode, "models_timed": timed,
                         "images": images, "epochs": epochs, "model_images_per_s": round(speed),
                         "ensemble_speedup": round(together / alone, 2),
                         "achieved_tflops": speed * FLOP_PER_IMAGE / 1e12,
                         "model_epoch_s": EPOCH_IMAGES / speed,
                         "flop_limit_model_epoch_s": EPOCH_IMAGES * FLOP_PER_IMAGE / peak if peak else float("nan")})
        print(f"{device} {precision} K={k:>3}: ensemble {together:,.0f} vs one at a time {alone:,.0f} "
              f"model-images/s, ratio {together / alone:.2f}", flush=True)
    return rows


def run(quick: bool = False) -> pd.DataFrame:
    """The CPU section always (small); the GPU section when CUDA is present.

    The CPU stops at K=32: stacked throughput there falls as K grows (K models' activations outgrow the
    caches), so K=128 would take many minutes to say nothing new."""
    rows = _section("cpu", (1, 8) if quick else (1, 8, 32), 1024, 1, repeats=3)
    if torch.cuda.is_available():
        ks = (1, 8) if quick else (1, 8, 32, 128)
        rows += _section("cuda", ks, 8192 if quick else 55_000, 1)
        if not quick:
            rows += _section("cuda", (128,), 55_000, 1, precision="bf16")
    return pd.DataFrame(rows)


def step_designs(k: int = 8, device: str = "cpu", steps: int = 15) -> dict[str, float]:
    """ms per training step (forward, backward, SGD) of K BN LeNet-5s at batch 128, three ways: one model
    at a time, the stacked network (grouped convolutions + batched matmuls, batched.py), torch.func.vmap.
    The measurement behind the choice in batched.py; run it on a GPU to compare there."""
    from torch.func import functional_call, stack_module_state, vmap
    from lenet_lib.core.batched import StackedNet
    from lenet_lib.core.models import build_model
    torch.manual_seed(0)
    models = [build_model(bn=True).to(device) for _ in range(k)]
    x = torch.randn(k, 128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (k, 128), device=device)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    net = StackedNet([copy.deepcopy(m).cpu() for m in models], (1, 28, 28)).to(device)
    net_opt = torch.optim.SGD(net.parameters(), lr=0.05)
    stacked_x = x.transpose(0, 1).flatten(1, 2).contiguous()
    params, buffers = stack_module_state([copy.deepcopy(m) for m in models])
    vmap_opt = torch.optim.SGD(list(params.values()), lr=0.05)
    skeleton = copy.deepcopy(models[0]).to("meta")
    loss_of_one = vmap(lambda p, b, xi, yi: F.cross_entropy(functional_call(skeleton, (p, b), (xi,)), yi),
                       randomness="different")

    def one_at_a_time():
        for m, o, xi, yi in zip(models, opts, x, y):
            o.zero_grad(set_to_none=True)
            F.cross_entropy(m(xi), yi).backward()
            o.step()

    def stacked():
        net_opt.zero_grad(set_to_none=True)
        logits = net(stacked_x, {})
        F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1).sum().backward()
        net_opt.step()

    def vmapped():
        vmap_opt.zero_grad(set_to_none=True)
        loss_of_one(params, buffers, x, y).sum().backward()
        vmap_opt.step()

    designs = {"one at a time": one_at_a_time, "stacked": stacked, "vmap": vmapped}
    for step in designs.values():
        step(), step()
    samples = {name: [] for name in designs}
    for _ in range(steps):          # interleaved, so that load from other work hits all three alike
        for name, step in designs.items():
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device != "cpu":
                torch.cuda.synchronize()
            samples[name].append(time.perf_counter() - start)
    # lower quartile: robust on a shared machine
    times = {name: 1e3 * sorted(s)[len(s) // 4] for name, s in samples.items()}
    return times


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 1 and 8 on a small subset")
    parser.add_argument("--designs", action="store_true", help="also ms/step: one at a time, stacked, vmap")
    args = parser.parse_args()
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(run(quick=args.quick))
    if args.designs:
        for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
            print(device, {name: f"{ms:.1f}" for name, ms in step_designs(8, device).items()}, "ms/step, K=8")
