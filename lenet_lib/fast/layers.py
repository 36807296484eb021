"""CPU speed tricks for LeNet-5's layers, all in one place: torch's numbers, less time.

Where they live: conv.py (c1 and c3), pool.py (max-pool, ReLU + max-pool), fused.py (conv tails, BatchNorm,
dropout), one_node.py (a whole network as one autograd node), csrc/ (the C kernels). This module builds a
model's fused form from its layers (fuse_relu_max_pool) and its form with torch's own (with_torch_layers).

Measured on a 2-core CPU, batch 128 (`make bench` shows the effect on whole epochs):
- MaxPool2d: ATen's CPU max_pool2d branches on every comparison; on unsorted values its forward and
  backward take 1.8 ms for a 128x6x28x28 batch, three strided `torch.maximum` and their masks 0.64 ms.
  Same values, and the gradient goes to the same element (the first maximum of the window in row-major
  order, as ATen picks it), so training is bit-identical. Whole MNIST epochs: -2 % training time, and
  test-set evaluation about twice as fast.
- Conv2d (c3: 6 -> 16 channels): ATen's CPU convolution backward takes 1.19 ms for c3 at batch 128; the
  same gradients as forward convolutions 0.92 ms: the weight gradient is a convolution of the input by
  the output gradient (batch as channels), the input gradient a transposed convolution. They agree with
  ATen's to float32 rounding (another summation order) and are as close to a float64 reference. Whole
  epochs: -2 %. c1 keeps ATen's backward: with one or three input channels its weight gradient is
  faster there. So does bf16 autocast, which casts inside ATen's convolution.
- ReLU + max-pool, fused (fuse_relu_max_pool; train() uses it on CPU): about a quarter of a step went to
  ReLU and pooling as separate ops, each reading and writing a whole activation. C kernels
  (csrc/relu_maxpool.c, OpenMP on torch's own thread pool, compiled on first use by c_kernels) do each
  direction in one pass: forward + backward for c1's 128x6x28x28 in 0.26 ms against 0.73 ms for ReLU and
  the tournament. Training steps 1.30-1.40x faster (20-step turns), whole epochs 1.25-1.35x; bit-identical
  numbers. SSE2 takes four windows at a time and is compute-bound (0.7 ns per input element); with
  AVX-512 (csrc/pool16.h) a whole row's windows go in one masked step: c1's forward at batch 64 310 ->
  91 us. Without x86-64 or a C compiler: pooling first, then ReLU on a quarter of the values (max-pool
  commutes with ReLU), 1.08x per step.
- Every conv layer's tail, fused (fused.ConvTail; csrc/conv_tail.c): [BatchNorm] activation [BatchNorm]
  [dropout] 2x2 max or average pool in one pass each way, BatchNorm's batch statistics included
  (csrc/bn_stats.c). Covers BN after the activation in c1 or both convs (R1, R4), before it (R3), conv
  dropout, tanh and sigmoid (R2 part I, R5) and avg-pool. AVX-512 as above (R1's BN tail forward +
  backward 1.54x the SSE2 path; its training forward pass, mostly BN's statistics, 636 -> 374 us at
  batch 128). An average pool after a ReLU (no BatchNorm) keeps each window's ReLU tests as 4 bits, and
  the backward pass reads that byte instead of the 4 inputs: c1's backward at batch 128 281 -> 175 us,
  avg-pool steps 1.02x. Forward values are torch's bit for bit, gradients to float rounding where
  BatchNorm sums in another order (tests/test_conv_tail.py: every pattern, both paths; tests/test_fused.py:
  whole models against torch's layers and a float64 reference).
- BatchNorm2d outside a tail (R2 part II's, after the pool; fused.BatchNorm, csrc/batch_norm.c): ATen's
  CPU BatchNorm sums each channel in one sequential double (0.28 ms forward, 0.13 ms backward for R2's
  64x6x14x14); here 0.09 and 0.13 ms, torch's outputs and running statistics bit for bit.
- c1 and c3 convolutions in C (csrc/conv1.c, csrc/conv3.c): oneDNN's per-call overhead dominates at
  6 output maps and at batch 16-64, and its c3 runs at 30-75 GF/s. With AVX-512 (this CPU, one thread,
  batch 128, 14x14 -> 10x10), c3 runs direct, each kernel at ~100-120 GF/s against oneDNN's 30-90:
  forward 0.55 ms (oneDNN 0.67-0.83; the 16 maps are the lanes, x an embedded broadcast, no im2col; the
  same numbers as the im2col path bit for bit), weight gradient 0.48 (oneDNN 1.4-2.3), input gradient 0.44
  (oneDNN 1.3; 16 images in the lanes, in and out through 16 x 16 transposes). c1's forward writes whole
  output rows from its registers: 0.51 -> 0.27-0.36 ms, same numbers bit for bit (the old layout's copy of
  padded rows cost as much as the arithmetic). Preset-like epochs in turns against the previous main:
  1.24x less time (R1 BN + dropout 1.46x, R1 plain 1.31x, R2 part II 1.25x, R4 1.25x, R5 batch 16
  1.12x). Without AVX-512: im2col and small matrix products in registers for c3 up to C3_SMALL, oneDNN
  above, and c3's input gradient with each col2im row built in a register. Evaluation runs c1's forward in
  C too (about 2x oneDNN); c3's stays oneDNN's, as fast at batch 256.
- Deterministic mode's NaN fill of every new tensor is off during training (train.set_determinism): ~1 %.
- Dropout's noise (fused.Dropout, csrc/dropout_rng.c): torch's own mt19937 stream drawn 20x faster, the
  same bits, checked against torch's bernoulli_ once per process (else torch draws).
- Not a layer, but the same kind of trick: on CPU train() steps torch's fused optimizers (core/optim.FUSED:
  SGD, Adagrad, Adam, AdamW in one pass; 2-10 % of a step, the same numbers to float rounding), and steps
  them lean (optim._LeanStep: after torch's first step, the fused kernel is called as torch calls it, without
  torch.optim's Python around it; bit for bit torch's numbers; one thread, Adam 177 -> 98 us per step, SGD
  with momentum 98 -> 49, Adagrad 190 -> 77). Batches are taken by index_select (DataSplits.train_batch:
  x[idx]'s values at a third of its cost, 58 -> 21 us at batch 128). Together, from make bench's ratios
  against torch's unchanged layers: batch-16 steps 1.11x faster with SGD + momentum, 1.20x with Adam (R5).
- A fused network trains as one autograd node (one_node.OneNodeSequential, which fuse_relu_max_pool
  returns): each layer's training function in a loop, forward, then in reverse, with the calls the layers'
  own nodes make, so the numbers are the same bit for bit. It saves what one module call and one autograd
  node per layer cost: training steps in turns against the same layers one node each, 1.06x (plain, batch
  128) to 1.16x (plain, batch 16), every preset variant 1.05x or more. Inside it a tanh or sigmoid tail
  overwrites its convolution's output, which nothing else keeps (R2 part I: 1-3 % of a step).
- Training batches skip the autograd engine (OneNodeSequential.cross_entropy_backward, which train() calls):
  forward, cross-entropy by its ATen calls, the loss's backward and the one node's, each gradient stored as
  AccumulateGrad stores it (contiguous; added to a gradient already there). It saves the loss's two nodes,
  the node's Python entry and exit and a node per parameter: steps in turns against the one node under
  autograd 1.21x (plain, batch 16), 1.18x (R5, batch 16), 1.10x (R2 part I, batch 64), 1.08x (R2 part II),
  1.10x (plain, batch 128), 1.05x (R1); the same numbers bit for bit (tests/test_engine_free.py; a default
  report's 1190 model-epochs gave the tidy results of the code before it, every value equal).
- Measured with `make bench` (per-variant table, training steps in turns, this 2-core CPU, 20 rounds,
  fused optimizers included): on one thread (each kernel of a report on 2 cores) lenet_lib / torch's own
  layers 2.99x (avg-pool) to 3.55x (R5 sigmoid FC, batch 64); R1 3.19-3.43x, R4 3.13-3.16x, R2 part II
  3.31x, R2 part I tanh 3.04x, R5 3.54x at batch 16, plain batch 16 3.16x, R3 3.08x: spread 19 %; on 2
  threads 2.88x to 3.41x: spread 18 % (two more one-thread runs: 21 % and 23 %, the last's 95 % interval
  16-31 %; per-variant CIs +-2-7 %; before the engine-free steps 26-32 %). Every variant >= 2.8x, but not within 10 %: a variant's ratio is
  torch's time over ours, and the two do not shrink together. Where torch's layers are slow (ATen's
  max-pool and BatchNorm), or torch.optim's unfused Adam (R5) costs it more than ours, the ratio is high;
  where torch's are fast (average pooling) or a cost is the same on both sides (tanh: both run ATen's over
  the whole conv output) it is lower. Within the variants a preset's time figures compare, the spread is
  6-8 % (R1), 10-13 % (R4), 0-2 % (R5's batch sizes).
  So training seconds from runs are never used to compare variants or batch sizes: time claims, and the
  batch_size notebook's time per epoch, come from timing.time_variants, which times every variant with
  torch's own layers (and ours beside them) in turns.
- Not sped up: the MLP (Linear layers only: ATen's BLAS matmuls; nothing to fuse, so it trains as
  nn.Sequential) and the FC part of LeNet-5 (c5/f6/out, the same matmuls, inside the one node above);
  CUDA, where the layers call torch's own kernels (there one fused kernel beats several small ones).

Measured and left out (whole epochs of the standard LeNet-5 unless said):
- channels_last with torch's layers: 1.14x per training step in 20-step turns, but whole epochs stayed
  within this machine's noise; and CPU BatchNorm after ReLU loses precision in it (5e-5 relative error in
  the forward, 7e-3 in gradients, against 5e-7 / 5e-6 in NCHW; float64 reference).
- torch.compile (inductor, CPU): 10.1 vs 6.4 ms per step. bf16 autocast: slower, `make bench` shows it.
- A C max-pool for channels_last (ctypes): 0.48 ms forward vs ATen's 0.60; no better than the tournament.
  The fused kernel in plain C left to gcc's auto-vectorizer: 0.85x per step; SSE2 by hand is what pays.
  Its planes split over Python threads instead of OpenMP: 1.22x per step against 1.31x. For scale,
  ReLU and pooling that cost nothing (wrong numbers, right shapes) would give 1.41x.
- Optimizer foreach (Adam 241 -> 182 us per step; fused, above, is what pays), OMP_WAIT_POLICY=ACTIVE,
  glibc malloc thresholds: no measurable change in whole epochs. (Measured again: the timing harness's
  steps page-fault 130-500 times each under glibc's defaults, training itself ~15; raised thresholds left
  the per-variant ratios within noise.)
- c1's weight gradient (csrc/conv1.c, ~55 GF/s against c3's ~130) with its shift groups' size a constant:
  gcc then keeps every accumulator in a register (a group size read at run time made it spill five), the
  same numbers, but no faster (0.75-1.10x, in turns). Without the dot products the kernel still takes 40 %
  of its time (219 of 536 us at batch 128): copying each image's gradient rows into the padded layout. Where
  c1's padded row is 32 floats (28-wide outputs, k = 5) the rows could be read in place with masked loads.
- The FC part alone, flatten to logits, as one autograd node making autograd's own ATen calls (the same
  numbers bit for bit): 0.92-0.99x per step in turns, at batch 16 and 128. autograd's C++ nodes cost no
  more than the Python that replaces them; what the whole network in one node saves is the Python nodes'
  and module calls' cost. Flushing denormals: no change (they appear only when a step is repeated
  thousands of times on the same few batches).
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from lenet_lib.fast.conv import Conv2d
from lenet_lib.fast.fused import ACTIVATIONS, BatchNorm, ConvTail, Dropout, fusable_bn
from lenet_lib.fast.one_node import OneNodeSequential
from lenet_lib.fast.pool import MaxPool2d, ReLUMaxPool2d, is_2x2


def _is_avg_2x2(pool: nn.Module) -> bool:
    return (type(pool) is nn.AvgPool2d and pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2))
            and pool.padding in (0, (0, 0)) and not pool.ceil_mode and pool.divisor_override is None)


def _tail_at(children: list[tuple[str, nn.Module]], i: int) -> int:
    """How many layers from i on make a tail that fused.ConvTail computes (0: none):
    [BatchNorm] activation [BatchNorm] [dropout] 2x2 max or average pool, one BatchNorm at most."""
    layers = [layer for _, layer in children[i:i + 5]]
    j = 0
    bn_before = j < len(layers) and fusable_bn(layers[j])
    j += bn_before
    if j >= len(layers) or type(layers[j]) not in ACTIVATIONS or (bn_before and type(layers[j]) is not nn.ReLU):
        return 0
    j += 1
    j += not bn_before and j < len(layers) and fusable_bn(layers[j])
    j += j < len(layers) and type(layers[j]) is nn.Dropout
    return j + 1 if j < len(layers) and (is_2x2(layers[j]) or _is_avg_2x2(layers[j])) else 0


def fuse_relu_max_pool(model: nn.Module) -> nn.Module:
    """model for training on CPU: each conv layer's tail as one layer, each other dropout drawing faster,
    each other BatchNorm2d (R2 part II's, after the pool) through the C kernels (fused.BatchNorm).

    A tail is [BatchNorm] activation [BatchNorm] [dropout] then a 2x2 max or average pool (fused.ConvTail;
    a ReLU right before a max-pool alone: ReLUMaxPool2d). Returns a new nn.Sequential holding model's own
    layers (so its parameters, buffers and training flags): the pool's name holds the fused layer, the
    other names of the tail an Identity; the same numbers (BatchNorm's gradients to float rounding).
    model itself keeps its layers, so feature maps by name (forward_features) still see each one.
    Anything else (not a Sequential, nothing to fuse) comes back as model.
    """
    if not isinstance(model, nn.Sequential):
        return model
    layers, fused, children = [], False, list(model.named_children())
    i = 0
    while i < len(children):
        name, layer = children[i]
        count = _tail_at(children, i)
        if count:
            run = [child for _, child in children[i:i + count]]
            one = ReLUMaxPool2d() if count == 2 and type(run[0]) is nn.ReLU and is_2x2(run[1]) else ConvTail(run)
            layers += [(n, one if k == count - 1 else nn.Identity()) for k, (n, _) in enumerate(children[i:i + count])]
            fused, i = True, i + count
            continue
        layers.append((name, Dropout(layer) if type(layer) is nn.Dropout else BatchNorm(layer) if fusable_bn(layer)
                       else layer))
        fused |= type(layer) is nn.Dropout or fusable_bn(layer)
        i += 1
    return OneNodeSequential(OrderedDict(layers)) if fused else model


def with_torch_layers(model: nn.Module) -> nn.Module:
    """model with torch's own Conv2d and MaxPool2d in place of the ones above, sharing their parameters.

    For comparisons: `make bench` times the reports' way with it, the tests check the layers against it.
    """
    for name, child in model.named_children():
        if type(child) is Conv2d:
            # built on "meta": no initialization, so torch's generator (dropout's noise later) is left alone
            plain = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, padding=child.padding,
                              bias=child.bias is not None, device="meta")
            plain.weight, plain.bias = child.weight, child.bias
            setattr(model, name, plain)
        elif type(child) is MaxPool2d:
            setattr(model, name, nn.MaxPool2d(child.kernel_size, child.stride, child.padding, child.dilation,
                                              ceil_mode=child.ceil_mode))
        else:
            with_torch_layers(child)
    return model
