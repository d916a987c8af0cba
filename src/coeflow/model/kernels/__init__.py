"""A hand-written CPU kernel for decode's linear layers: y = x @ w.T for 1 to 8 rows of x.

Why: batched decode (2-8 rows) otherwise goes to MKL's small-M GEMMs, which on this
machine reach neither the memory's read rate nor the compute peak, so batch 8 gained only
2-3x over batch 1. `linear_avx512.c` reads each weight row once, as one sequential stream,
for all rows of x (BENCHMARKS.md, decode).

The C source ships with the package and is compiled on first use with gcc into a per-user
cache (keyed by the source, the compiler flags and the CPU's flags), then loaded with
ctypes. It is exposed as the op `coeflow::cpu_linear` (with a fake implementation), so a
compiled decode step calls it without a graph break and the weights stay graph inputs.
Anything missing (not x86-64 Linux, no AVX-512 BF16, no gcc, a failed build) leaves the
kernel unavailable, logged once; callers then keep their previous path. COEFLOW_CPU_KERNEL=0
turns it off."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("linear_avx512.c")
CFLAGS = ["-O3", "-shared", "-fPIC", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl",
          "-mavx512bf16", "-mfma"]
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "fma")
MAX_ROWS = 8  # rows of x per call; the C file's MAXM
DTYPES = (torch.float32, torch.bfloat16)

_lib: ctypes.CDLL | None = None
_tried = False
calls = 0  # kernel invocations, for tests that must know the kernel ran


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "coeflow" / "kernels"


def _build(flags: set[str]) -> Path:
    """Compile the source unless a build for this source, these flags and this CPU exists."""
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join(CFLAGS).encode()
                         + " ".join(sorted(f for f in flags if f in CPU_FLAGS)).encode()).hexdigest()[:16]
    out = cache_dir() / f"{SOURCE.stem}-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc not found")
    # build beside the target, then rename: a concurrent first use never loads half a file
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([gcc, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"gcc failed: {proc.stderr.strip()[:500]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load() -> bool:
    """Build and load the kernel once per process; True if it can be used."""
    global _lib, _tried
    if _tried:
        return _lib is not None
    _tried = True
    if os.environ.get("COEFLOW_CPU_KERNEL", "1") == "0":
        log.info("CPU linear kernel disabled by COEFLOW_CPU_KERNEL=0")
        return False
    flags = _cpu_flags()
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64") \
            or not set(CPU_FLAGS) <= flags:
        log.info("CPU linear kernel unavailable: needs x86-64 Linux with %s", ", ".join(CPU_FLAGS))
        return False
    try:
        lib = ctypes.CDLL(str(_build(flags)))
        fn = lib.coeflow_linear
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_long,
                       ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_long, ctypes.c_int,
                       ctypes.c_int]
    except (OSError, RuntimeError, AttributeError) as e:
        log.warning("CPU linear kernel unavailable (%s); using the default path", e)
        return False
    _lib = lib
    return True


def supports(x: Tensor, w: Tensor) -> bool:
    """Whether `cpu_linear(x, w)` may be called for these operands (the kernel loaded)."""
    return (_lib is not None and x.device.type == "cpu" and x.dtype == w.dtype and x.dtype in DTYPES
            and x.dim() == 2 and 1 <= x.shape[0] <= MAX_ROWS and w.dim() == 2
            and w.shape[1] == x.shape[1] and w.stride(1) == 1)


def _cpu_linear(x: Tensor, w: Tensor) -> Tensor:
    """x [M, K] @ w[N, K].T -> float32 [M, N], for M <= 8, fp32 or bf16 (fp32 accumulation).
    Only valid where `supports(x, w)`; `w` may be any row-strided view (the store's pool)."""
    global calls
    if _lib is None or not supports(x, w):
        raise RuntimeError(f"coeflow::cpu_linear: kernel not loaded or unsupported operands "
                           f"x {tuple(x.shape)} {x.dtype}, w {tuple(w.shape)} {w.dtype}")
    x = x.contiguous()
    m, k = x.shape
    n = w.shape[0]
    y = torch.empty((m, n), dtype=torch.float32)
    _lib.coeflow_linear(x.dtype == torch.bfloat16, x.data_ptr(), k, w.data_ptr(), w.stride(0),
                        y.data_ptr(), n, m, n, k, torch.get_num_threads())
    calls += 1
    return y


# Defined with torch.library.Library rather than the @custom_op decorator: a decode step
# makes ~85 calls, and the decorator's wrapper costs about 5 us more per call (11 vs 6 us).
_LIB = torch.library.Library("coeflow", "DEF")
_LIB.define("cpu_linear(Tensor x, Tensor w) -> Tensor")
_LIB.impl("cpu_linear", _cpu_linear, "CPU")


@torch.library.register_fake("coeflow::cpu_linear")
def _(x: Tensor, w: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], w.shape[0]), dtype=torch.float32)


def cpu_linear(x: Tensor, w: Tensor) -> Tensor:
    """The op `coeflow::cpu_linear`: x [M, K] @ w[N, K].T as float32 [M, N] (M <= 8)."""
    return torch.ops.coeflow.cpu_linear.default(x, w)
