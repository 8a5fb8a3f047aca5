"""Building and loading the fused C kernels (``nf.c``, ``nsf.c``, ``fm.c``, ``adam.c``).

Each C file is compiled on first use with the system's C compiler into a cache folder
(``$FLOWSCOPE_CACHE``, else ``$XDG_CACHE_HOME/flowscope`` or ``~/.cache/flowscope``), keyed
by the source (with the headers beside it, e.g. ``gemm.h``), the flags, the compiler and
the CPU, and loaded with ctypes. Where no
compiler works, or ``FLOWSCOPE_NO_KERNEL=1`` is set, :func:`load` returns ``None`` and the
trainer computes with PyTorch operations instead: same math, same results to rounding.
``FLOWSCOPE_CFLAGS`` adds compiler flags (part of the cache key), e.g. ``-mno-avx512f`` to
build and measure the code an AVX2-only CPU would run.
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

__all__ = ["available", "cache_dir", "disabled", "load"]

_HERE = Path(__file__).parent
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
_REAL = {torch.float32: ("float", "f32"), torch.float64: ("double", "f64")}
_P, _I, _D = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
_SIGNATURES = {
    # kernel: (C file, function stem, argument types)
    "nf": ("nf.c", "nf_nll", [_I, _I, _I, _I, _I, _D, _D, _P, _P, _I, _P, _P, _P, _P]),
    "nsf": ("nsf.c", "nsf_nll", [_I] * 6 + [_D] * 5 + [_P, _P, _I, _P, _P, _P, _P]),
    "fm": ("fm.c", "fm_loss", [_I] * 6 + [_D] + [_P] * 9),
    "fm_euler": ("fm.c", "fm_euler", [_I] * 6 + [_D] + [_P] * 4 + [_I, _P, _P, _I, _P, _P]),
    "adam": ("adam.c", "adam_step", [ctypes.c_long, _P, _P, _P, _P, _P, _D, _D, _D, _D]),
}


def cache_dir() -> Path:
    """Where built kernels (and their measured speeds) are kept."""
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


def _private_tmp() -> Path:
    """A folder under the system's temporary folder that only this user can write."""
    folder = Path(tempfile.gettempdir()) / f"flowscope-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PermissionError(f"{folder} is not a private folder of this user")
    return folder


def _compile(cc: str, source: Path, defs: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    obj = tmp + ".o"
    try:
        for cmd in (
            [cc, *_FLAGS, *defs, "-c", str(source), "-o", obj],
            [cc, "-shared", obj, "-o", tmp, "-lm"],
        ):
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        os.replace(tmp, target)  # atomic: concurrent processes never load a partial file
    finally:
        Path(tmp).unlink(missing_ok=True)
        Path(obj).unlink(missing_ok=True)


@cache
def _load(which: str, dtype: torch.dtype):
    if dtype not in _REAL:
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    filename, stem, argtypes = _SIGNATURES[which]
    extra = os.environ.get("FLOWSCOPE_CFLAGS", "").split()  # e.g. -mno-avx512f: another target
    source = _HERE / filename
    real, suffix = _REAL[dtype]
    name = f"{stem}_{suffix}"
    defs = [f"-DREAL={real}", f"-DNAME={name}", *extra]
    try:
        version = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        text = source.read_text() + "".join(h.read_text() for h in sorted(_HERE.glob("*.h")))
        key = hashlib.sha256(
            "\0".join([text, " ".join(_FLAGS + defs), version, _cpu_id()]).encode()
        ).hexdigest()[:16]
        target = cache_dir() / f"{name}_{key}.so"
        if not target.exists():
            try:
                _compile(cc, source, defs, target)
            except OSError:  # no writable cache folder: a private temporary one
                target = _private_tmp() / target.name
                if not target.exists():
                    _compile(cc, source, defs, target)
        fn = getattr(ctypes.CDLL(str(target)), name)
    except (OSError, AttributeError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", "") or err
        warnings.warn(
            f"flowscope: the fused {which} kernel could not be built ({detail}); "
            "falling back to PyTorch operations (same results, slower training)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    fn.build_key = target.stem  # names the source, flags, compiler and CPU
    return fn


def load(which: str, dtype: torch.dtype):
    """The ctypes function of kernel ``which`` (``"nf"``, ``"nsf"``, ``"fm"``, ...) for
    ``dtype`` (float32 or float64), built on first use; ``None`` where it cannot be built
    or ``FLOWSCOPE_NO_KERNEL`` is set."""
    if disabled():
        return None
    return _load(which, dtype)


def disabled() -> bool:
    """Whether ``FLOWSCOPE_NO_KERNEL`` (any non-empty value) turns the kernels off."""
    return bool(os.environ.get("FLOWSCOPE_NO_KERNEL"))


def available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether the fused training kernels (``nf``, ``nsf``, ``fm``) can be built and used
    for ``dtype``."""
    return all(load(which, dtype) is not None for which in ("nf", "nsf", "fm"))
