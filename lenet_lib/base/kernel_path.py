"""Which kernels a run's training uses, known before it starts (no torch): part of its identity.

"c": lenet_lib's fast path (lenet_lib/fast) with its C kernels (fast/csrc) on the CPU; "pytorch": the fast
path's PyTorch form, when the kernels cannot be had (not x86-64, no working C compiler, no cache folder to
build into) or LENET_C_KERNELS=0; "torch": torch's own layers and optimizers on the CPU, the fast path
switched off (LENET_FAST=0, or TrainSpec.fast False); "cuda": torch's own kernels on a GPU; "numpy" in the
rows the NumPy reference network (numpy_ref) trained, which uses none of them. The paths agree to float
rounding, not bit for bit, so
cached runs of one are never reused for another (running/runner.py puts the path in the run id;
core/train.py records the path that ran, and the runner fails a run whose rows took another path).

The C path is decided by building (or finding) the kernels and loading them, as a kernel will, not by
finding a compiler: a compiler that fails, or a cache folder that cannot be written, gives "pytorch".
The compiled library is cached under $XDG_CACHE_HOME/lenet_lib (default ~/.cache/lenet_lib), named by a
hash of the source and the compile command; when that folder cannot be written, a per-user folder in the
temporary directory takes its place.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from lenet_lib.base.files import atomic_write

KERNEL_PATHS = ("c", "pytorch", "torch", "cuda", "numpy")
CSRC = Path(__file__).resolve().parents[1] / "fast" / "csrc"
SOURCES = sorted(CSRC.glob("*.c"))      # compiled together into one library
HEADERS = sorted(CSRC.glob("*.h"))      # included by them: part of the build's key


class KernelsUnavailable(RuntimeError):
    """The C kernels cannot be built or loaded here; the message says why."""


def compile_command(compiler: str, sources: list[Path], target: Path) -> list[str]:
    # OpenMP only on Linux, where torch's wheels bring libgomp and the kernels then share its thread pool.
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # fp-contract=fast: a * b + c becomes an FMA where the target has one, as in ATen's kernels (conv_tail.c)
    return [compiler, "-O3", "-shared", "-fPIC", "-ffp-contract=fast", *openmp, *map(str, sources), "-o", str(target)]


def cache_dirs(environ=os.environ) -> list[Path]:
    """Where the compiled library may live, in order: $XDG_CACHE_HOME or ~/.cache, then a per-user folder
    in the temporary directory (for a read-only home, e.g. in a container)."""
    home = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or "~").expanduser() / ".cache")
    dirs = [Path(home).expanduser() / "lenet_lib", Path(tempfile.gettempdir()) / f"lenet_lib-{os.getuid()}"]
    return list(dict.fromkeys(dirs))


def _private(folder: Path) -> bool:
    """A folder only this user can write to: a shared temporary folder must not hand us another's library."""
    info = folder.stat()
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def build(environ=os.environ) -> Path:
    """Path of the compiled library: found in a cache folder, else compiled into the first writable one.
    Raises KernelsUnavailable saying why not (the compiler failed; no folder could be written)."""
    compiler = shutil.which(environ.get("CC", "cc"))
    if compiler is None:
        raise KernelsUnavailable(f"no C compiler found (looked for {environ.get('CC', 'cc')!r}; set CC)")
    # the sources' text and the command without its paths: every checkout of the same code shares one build
    command = " ".join(compile_command(compiler, [Path(s.name) for s in SOURCES], Path("lenet_kernels.so")))
    key = hashlib.sha256(b"".join(s.name.encode() + s.read_bytes() for s in [*SOURCES, *HEADERS]) + command.encode())
    name = f"lenet_kernels-{key.hexdigest()[:16]}.so"
    dirs = cache_dirs(environ)
    for folder in dirs:
        if (folder / name).is_file() and (folder == dirs[0] or _private(folder)):
            return folder / name

    def compile_to(tmp: str) -> None:
        done = subprocess.run(compile_command(compiler, SOURCES, Path(tmp)), capture_output=True, text=True,
                              env={**os.environ, **environ})
        if done.returncode != 0:
            raise KernelsUnavailable(f"{compiler} failed (exit {done.returncode}): "
                                     f"{done.stderr.strip()[:500] or 'no message'}")

    refused = []
    for folder in dirs:
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if folder != dirs[0] and not _private(folder):
                raise PermissionError(f"{folder} is not private to this user")
            return atomic_write(folder / name, compile_to)
        except OSError as exc:          # not a folder, read-only, not ours: try the next one
            refused.append(f"{folder} ({exc.strerror or exc})")
    raise KernelsUnavailable("no cache folder to build the kernels into: " + "; ".join(refused)
                             + " (set XDG_CACHE_HOME to a writable folder)")


def why_not_here(environ=os.environ) -> str | None:
    """Why the C kernels are not even tried: switched off, or not an x86-64 CPU; None to try them."""
    if environ.get("LENET_C_KERNELS", "1") == "0":
        return "switched off by LENET_C_KERNELS=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the kernels use SSE2, which this {platform.machine()} CPU lacks"
    return None


@functools.lru_cache(maxsize=16)
def _probe(switch: str, cc: str, cache_home: str, home: str) -> str | None:
    environ = {"LENET_C_KERNELS": switch, "CC": cc, "XDG_CACHE_HOME": cache_home, "HOME": home}
    why = why_not_here(environ)
    if why:
        return why
    try:
        library = build(environ)
    except KernelsUnavailable as exc:
        return str(exc)
    # Loaded in a process of its own: in this one it would bind to the system's libgomp before torch's.
    loaded = subprocess.run([sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", str(library)],
                            capture_output=True, text=True)
    if loaded.returncode != 0:
        return f"{library} does not load: {(loaded.stderr.strip().splitlines() or ['no message'])[-1]}"
    return None


def why_no_c_kernels(environ=os.environ) -> str | None:
    """Why the C kernels cannot run here (switched off, not x86-64, the build or the load failed), or None
    when they build and load. Decided once per process and setting; fast/c_kernels.load follows the
    same steps (why_not_here, build, load)."""
    return _probe(environ.get("LENET_C_KERNELS", "1"), environ.get("CC", "cc"),
                  environ.get("XDG_CACHE_HOME", ""), environ.get("HOME", ""))


def cpu_kernel_path(environ=os.environ) -> str:
    """"c" where the C kernels load and are not switched off, else "pytorch"."""
    return "pytorch" if why_no_c_kernels(environ) else "c"


def fast_path_switched_off(environ=os.environ) -> bool:
    """LENET_FAST=0: training on the CPU runs torch's own layers and optimizers, lenet_lib.fast never imported."""
    return environ.get("LENET_FAST", "1") == "0"


def planned_kernel_path(device: str = "auto", environ=os.environ) -> str:
    """The path a run with this `device` parameter will take on this machine ("auto": CUDA if a GPU is
    visible: an NVIDIA device node and CUDA_VISIBLE_DEVICES not empty)."""
    gpu = bool(glob.glob("/dev/nvidia[0-9]*")) and environ.get("CUDA_VISIBLE_DEVICES", "x") != ""
    if str(device).startswith("cuda") or (device == "auto" and gpu):
        return "cuda"
    return "torch" if fast_path_switched_off(environ) else cpu_kernel_path(environ)
