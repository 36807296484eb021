"""lenet_lib's CPU fast path: the same numbers as torch's own layers and optimizers (float rounding), less time.

core/train.py applies it in one place (train.accelerated), unless LENET_FAST=0 or TrainSpec.fast is False:
- accelerate(model): the network to train, sharing model's parameters (layers.py);
- lean_steps(optimizer): torch's fused optimizer, stepped without torch.optim's Python around it (optim.py);
- kernel_path(): "c" where the C kernels (csrc/) load, else "pytorch" (their PyTorch form).
README.md beside this file lists the private torch APIs used here, each with its self-check and fallback;
docs/speed.md says what each piece buys.
"""
from lenet_lib.fast import c_kernels
from lenet_lib.fast.layers import accelerate
from lenet_lib.fast.optim import lean_steps


def kernel_path() -> str:
    """The kernels the fast path runs on CPU here (base/kernel_path.py's names)."""
    return "c" if c_kernels.load() is not None else "pytorch"


__all__ = ["accelerate", "kernel_path", "lean_steps"]
