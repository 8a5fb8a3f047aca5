"""Loader of the fused normalizing-flow kernel (``_nf_kernel.c``).

The C file is compiled on first use with the system's C compiler into a cache folder
(``$FLOWSCOPE_CACHE``, else ``$XDG_CACHE_HOME/flowscope`` or ``~/.cache/flowscope``), keyed
by the source, the flags, the compiler and the CPU, and loaded with ctypes. Where no
compiler works, or ``FLOWSCOPE_NO_KERNEL=1`` is set, :func:`kernel` returns ``None`` and
the flow computes with PyTorch operations instead: same math, same results to rounding.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch

__all__ = ["kernel", "available"]

_SOURCE = Path(__file__).with_name("_nf_kernel.c")
# Reassociation lets the compiler vectorise the sums over the batch. No -ffast-math: it
# assumes finite values and (linked into a shared library) can flush denormals to zero
# for the whole process.
_FLAGS = [
    "-O3",
    "-march=native",
    "-fPIC",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fassociative-math",
    "-fno-signed-zeros",
]
_VARIANTS = {torch.float32: ("float", "nf_nll_f32"), torch.float64: ("double", "nf_nll_f64")}


def _cache_dir() -> Path:
    env = os.environ.get("FLOWSCOPE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flowscope"


def _cpu_id() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compile(cc: str, real: str, name: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        obj = tmp + ".o"
        defs = [f"-DREAL={real}", f"-DNAME={name}"]
        for cmd in (
            [cc, *_FLAGS, *defs, "-c", str(_SOURCE), "-o", obj],
            [cc, "-shared", obj, "-o", tmp, "-lm"],
        ):
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        Path(obj).unlink()
        os.replace(tmp, target)  # atomic: concurrent processes never load a partial file
    finally:
        Path(tmp).unlink(missing_ok=True)


@cache
def kernel(dtype: torch.dtype):
    """The compiled kernel function for ``dtype`` (float32 or float64), or ``None``."""
    if os.environ.get("FLOWSCOPE_NO_KERNEL") or dtype not in _VARIANTS:
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    real, name = _VARIANTS[dtype]
    try:
        version = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        key = hashlib.sha256(
            "\0".join([_SOURCE.read_text(), " ".join(_FLAGS), real, version, _cpu_id()]).encode()
        ).hexdigest()[:16]
        target = _cache_dir() / f"nf_kernel_{real}_{key}.so"
        if not target.exists():
            try:
                _compile(cc, real, name, target)
            except PermissionError:
                target = Path(tempfile.gettempdir()) / "flowscope" / target.name
                if not target.exists():
                    _compile(cc, real, name, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", "") or err
        warnings.warn(
            f"flowscope: the fused flow kernel could not be built ({detail}); "
            "falling back to PyTorch operations (same results, slower training)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    fn = getattr(lib, name)
    p, i, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    fn.argtypes = [i, i, i, i, i, d, d, p, p, i, p, p, p, p]
    fn.restype = ctypes.c_int
    return fn


def available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether the fused kernel is in use for ``dtype``."""
    return kernel(dtype) is not None
