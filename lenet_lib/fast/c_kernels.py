"""The C kernels in lenet_lib/csrc: compiled with the system's C compiler on first use, cached, loaded by ctypes.

Optional by design: without an x86-64 CPU or a C compiler (or with LENET_C_KERNELS=0) `load()` returns
None and the layers use their PyTorch form, which gives the same numbers more slowly. `describe()` says
which it is and why (`make bench` prints it); no warning, so notebooks' outputs do not depend on it.
The compiled library is cached under $XDG_CACHE_HOME/lenet_lib (default ~/.cache/lenet_lib; a per-user
temporary folder when that cannot be written), named by a hash of the source and the compile command, and
written atomically, so runs side by side share one build (base/kernel_path.build).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
from pathlib import Path

from lenet_lib.base.kernel_path import KernelsUnavailable, build, cache_dirs, why_not_here

_P, _I64, _I, _F, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_double
KERNELS = {   # name: argument types (csrc/*.c say what each does)
    "relu_maxpool2x2_forward": [_P] * 3 + [_I64] * 3,
    "relu_maxpool2x2_backward": [_P] * 3 + [_I64] * 3,
    "tail_forward": [_P] * 4 + [_F] + [_P] * 5 + [_D] * 2 + [_I64] * 4 + [_I],
    "tail_backward": [_P] * 4 + [_F] + [_P] * 5 + [_I64] * 4 + [_I],
    "dropout_apply": [_P, _P, _F, _P, _I64],
    "conv_weight_grad": [_P] * 4 + [_I64] * 6,
    "conv1_forward": [_P] * 4 + [_I64] * 6,
    "conv3_forward": [_P] * 4 + [_I64] * 6,
    "conv3_input_grad": [_P] * 3 + [_I64] * 6,
    "conv3_weight_grad": [_P] * 4 + [_I64] * 6,
    "bn_forward": [_P] * 7 + [_D] * 2 + [_I64] * 3 + [_I],
    "bn_backward": [_P] * 7 + [_I64] * 3 + [_I],
    "conv3_direct": [_I64] * 3,
}
RETURNS = {"conv3_direct": _I}   # the others return nothing


def cache_dir() -> Path:
    """The first folder the compiled library is looked for in (base/kernel_path.cache_dirs has the rest)."""
    return cache_dirs()[0]


def _build() -> Path:
    """Path of the compiled library, compiling it if this source and command have not been built yet."""
    return build()


_why_not: list[str] = []   # why load() returned None, for describe()


@functools.cache
def load():
    """The kernels as a ctypes library, or None when they cannot be had (describe() says why)."""
    _why_not.clear()
    why = why_not_here()       # then build and load: the steps that plan runs (base/kernel_path.py)
    if why:
        _why_not.append(why)
        return None
    try:
        import torch  # noqa: F401  (loaded first, so the kernels bind to torch's libgomp)
        lib = ctypes.CDLL(str(_build()))
        for name, argtypes in KERNELS.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, RETURNS.get(name)
        return lib
    except (OSError, KernelsUnavailable, AttributeError) as exc:     # AttributeError: a kernel is missing
        _why_not.append(str(exc))
        return None


@contextlib.contextmanager
def sse2_only(on: bool = True):
    """Inside the block the kernels take their SSE2 paths even on an AVX-512 CPU (the tests compare both)."""
    flag = ctypes.c_int.in_dll(load(), "lenet_sse2_only")
    before, flag.value = flag.value, int(on)
    try:
        yield
    finally:
        flag.value = before


def describe() -> str:
    """One line: where the C kernels were loaded from, or why the PyTorch fallback is in use."""
    lib = load()
    if lib is not None:
        return f"C kernels: {lib._name}"
    return f"C kernels unavailable ({_why_not[0]}): PyTorch fallback, the same numbers to float rounding, slower"
