"""The C kernels in lenet_lib/csrc: compiled with the system's C compiler on first use, cached, loaded by ctypes.

Optional by design: without an x86-64 CPU or a C compiler (or with LENET_C_KERNELS=0) `load()` returns
None and the layers use their PyTorch form, which gives the same numbers more slowly. `describe()` says
which it is and why (`make bench` prints it); no warning, so notebooks' outputs do not depend on it.
The compiled library is cached under $XDG_CACHE_HOME/lenet_lib (default ~/.cache/lenet_lib), named by a
hash of the source and the compile command, and written atomically, so runs side by side share one build.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lenet_lib.base.files import atomic_write
from lenet_lib.base.kernel_path import why_no_c_kernels

SOURCES = sorted(Path(__file__).with_name("csrc").glob("*.c"))   # compiled together into one library
HEADERS = sorted(Path(__file__).with_name("csrc").glob("*.h"))   # included by them: part of the build's key
_P, _I64, _I, _F, _D, _U64 = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_double,
                              ctypes.c_uint64)
KERNELS = {   # name: argument types (csrc/*.c say what each does)
    "relu_maxpool2x2_forward": [_P] * 3 + [_I64] * 3,
    "relu_maxpool2x2_backward": [_P] * 3 + [_I64] * 3,
    "tail_forward": [_P] * 4 + [_F] + [_P] * 5 + [_D] * 2 + [_I64] * 4 + [_I],
    "tail_backward": [_P] * 4 + [_F] + [_P] * 5 + [_I64] * 4 + [_I],
    "bernoulli_keep": [_P, _P, _I64, _U64],
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
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "lenet_lib"


def _compile_command(compiler: str, sources: list[Path], target: Path) -> list[str]:
    # OpenMP only on Linux, where torch's wheels bring libgomp and the kernels then share its thread pool.
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # fp-contract=fast: a * b + c becomes an FMA where the target has one, as in ATen's kernels (conv_tail.c)
    return [compiler, "-O3", "-shared", "-fPIC", "-ffp-contract=fast", *openmp, *map(str, sources), "-o", str(target)]


def _build() -> Path:
    """Path of the compiled library, compiling it if this source and command have not been built yet."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    # the sources' text and the command without its paths: every checkout of the same code shares one build
    command = " ".join(_compile_command(compiler, [Path(s.name) for s in SOURCES], Path("lenet_kernels.so")))
    key = hashlib.sha256(b"".join(s.name.encode() + s.read_bytes() for s in [*SOURCES, *HEADERS]) + command.encode())
    target = cache_dir() / f"lenet_kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target

    def compile_to(tmp: str) -> None:
        done = subprocess.run(_compile_command(compiler, SOURCES, Path(tmp)), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[:500]}")

    atomic_write(target, compile_to)
    return target


_why_not: list[str] = []   # why load() returned None, for describe()


@functools.cache
def load():
    """The kernels as a ctypes library, or None when they cannot be had (describe() says why)."""
    _why_not.clear()
    why = why_no_c_kernels()   # the same rule plans runs (base/kernel_path.py)
    if why:
        _why_not.append(why)
        return None
    try:
        import torch  # noqa: F401  (loaded first, so the kernels bind to torch's libgomp)
        lib = ctypes.CDLL(str(_build()))
        for name, argtypes in KERNELS.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, RETURNS.get(name)
        return lib
    except (OSError, RuntimeError) as exc:
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
