"""Which kernels a run's training uses, known before it starts (no torch): part of its identity.

"c": lenet_lib's C kernels (fast/csrc) on the CPU; "pytorch": the CPU layers' PyTorch form, when the
kernels cannot be built (not x86-64, no C compiler) or LENET_C_KERNELS=0; "cuda": torch's own kernels
on a GPU; "numpy" in the rows the NumPy reference network (numpy_ref) trained, which uses none of them.
The paths agree to float rounding, not bit for bit, so cached runs of one are never reused for another
(running/runner.py puts the path in the run id; core/train.py records the path that ran).
"""
from __future__ import annotations

import glob
import os
import platform
import shutil

KERNEL_PATHS = ("c", "pytorch", "cuda", "numpy")


def why_no_c_kernels(environ=os.environ) -> str | None:
    """Why the C kernels cannot run here (fast/c_kernels.py says it), or None when they can be built."""
    if environ.get("LENET_C_KERNELS", "1") == "0":
        return "switched off by LENET_C_KERNELS=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the kernels use SSE2, which this {platform.machine()} CPU lacks"
    if shutil.which(environ.get("CC", "cc")) is None:
        return f"no C compiler found (looked for {environ.get('CC', 'cc')!r}; set CC)"
    return None


def cpu_kernel_path(environ=os.environ) -> str:
    """"c" where the C kernels can be built and are not switched off, else "pytorch"."""
    return "pytorch" if why_no_c_kernels(environ) else "c"


def planned_kernel_path(device: str = "auto", environ=os.environ) -> str:
    """The path a run with this `device` parameter will take on this machine ("auto": CUDA if a GPU is
    visible: an NVIDIA device node and CUDA_VISIBLE_DEVICES not empty)."""
    gpu = bool(glob.glob("/dev/nvidia[0-9]*")) and environ.get("CUDA_VISIBLE_DEVICES", "x") != ""
    if str(device).startswith("cuda") or (device == "auto" and gpu):
        return "cuda"
    return cpu_kernel_path(environ)
