"""A hand-written CPU kernel for decode's linear layers: y = x @ w.T for 1 to 8 rows of x,
for one weight or several that read the same x.

Why: batched decode (2-8 rows) otherwise goes to MKL's small-M GEMMs, which reach neither the
memory's read rate nor the compute peak. `linear_avx512.c` reads each weight row once, as one
sequential stream, for all rows of x.

The sources ship with the package and are compiled on first use into a per-user cache
(keyed by the sources, the flags, the CPU's flags and torch's version). The kernel is the op
`coeflow::cpu_linear` (schema and fake implementation here), so a compiled decode step calls
it without a graph break and the weights stay graph inputs. Its CPU implementation is
`cpu_linear_op.cpp`, built with g++ against torch's headers; where that build fails, a
Python implementation calls the C kernel through ctypes (slower a call). Anything
missing (not x86-64 Linux, no AVX-512 BF16, no gcc, a failed build) leaves the kernel
unavailable, logged once; callers then keep their previous path. COEFLOW_CPU_KERNEL=0 turns
it off; COEFLOW_CPU_KERNEL=emulate builds it on a CPU without AVX-512, its intrinsics emulated in
portable code (SIMDe's headers, `emulate_avx512.h`): far slower, for running the kernels' tests
there.

The same library holds `coeflow::decoder_layer` (`decoder_layer.c`, `decoder_layer_op.cpp`): a
whole decoder layer of decode in one call, its products through the same kernel, instead of
~10 kernels a layer, each a parallel region and a call from Inductor's wrapper. It has no ctypes
path: without the C++ op library, layers keep the step's own code (`has_decoder_layer`)."""

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

from coeflow.cache import cache_root

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("linear_avx512.c")
OP_SOURCE = Path(__file__).with_name("cpu_linear_op.cpp")
# coeflow::decoder_layer: its C half (built with CFLAGS) and its op, in the op library only
LAYER_SOURCES = tuple(Path(__file__).with_name(n) for n in
                      ("decoder_layer.h", "decoder_layer.c", "decoder_layer_op.cpp"))
CFLAGS = ["-O3", "-fPIC", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mfma"]
EMULATE_HEADER = Path(__file__).with_name("emulate_avx512.h")
EMULATE_CFLAGS = ["-O2", "-fPIC", "-fopenmp", "-mavx2", "-mfma", "-include", str(EMULATE_HEADER)]
CXXFLAGS = ["-O2", "-std=c++20", "-fPIC", "-fopenmp",
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "fma")
MAX_ROWS = 8  # rows of x per call; the C file's MAXM
MAX_WEIGHTS = 16  # weights per call; cpu_linear_op.cpp's kMaxWeights
DTYPES = (torch.float32, torch.bfloat16)

_lib: ctypes.CDLL | None = None
_tried = False
_layer = False  # coeflow::decoder_layer built and loaded
via: str | None = None  # once loaded: "c++" (the op's own implementation) or "ctypes"

# The op's schema and fake implementation; its CPU implementation is registered by `load`.
_LIB = torch.library.Library("coeflow", "DEF")
_LIB.define("cpu_linear(Tensor x, Tensor[] ws) -> Tensor")
_LIB.define("decoder_layer(Tensor x, Tensor ln1, Tensor[] qkv_w, Tensor[] qkv_b, Tensor o_w, Tensor ln2, "
            "Tensor[] gate_up_w, Tensor down_w, Tensor(a!) k_pool, Tensor(b!) v_pool, Tensor blocks, "
            "Tensor q_pos, Tensor cos, Tensor sin, int num_heads, float eps, int window) -> Tensor")


@torch.library.register_fake("coeflow::cpu_linear")
def _(x: Tensor, ws: list[Tensor]) -> Tensor:
    return x.new_empty((x.shape[0], sum(w.shape[0] for w in ws)), dtype=torch.float32)


@torch.library.register_fake("coeflow::decoder_layer")
def _(x: Tensor, *args) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


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
    return cache_root() / "kernels"


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed: {proc.stderr.strip()[-500:]}")


def _emulating() -> bool:
    return os.environ.get("COEFLOW_CPU_KERNEL") == "emulate"


def _build(flags: set[str], op: bool, layer: bool = True) -> Path:
    """Compile unless a build of these sources, flags, CPU and torch exists. `op`: the torch
    op library (C kernel + cpu_linear_op.cpp, and with `layer` the decoder layer's op), else
    the C kernel alone (for ctypes)."""
    cflags = EMULATE_CFLAGS if _emulating() else CFLAGS
    key = [" ".join(sorted(f for f in flags if f in CPU_FLAGS)).encode()]
    if _emulating():
        key.append(EMULATE_HEADER.read_bytes())
    if not op:
        return build_library(SOURCE.stem, [SOURCE], cflags, [], key)
    if layer:
        key.append(LAYER_SOURCES[0].read_bytes())  # the header both halves include
    return build_library("cpu_linear_op" if layer else "cpu_linear_op_nolayer",
                         [SOURCE, *([LAYER_SOURCES[1]] if layer else [])], cflags,
                         [OP_SOURCE, *([LAYER_SOURCES[2]] if layer else [])], key)


def build_library(stem: str, c_sources: list[Path], cflags: list[str], cpp_sources: list[Path],
                  key: list[bytes]) -> Path:
    """The shared library of these C sources (gcc with `cflags`) and, when `cpp_sources` are
    given, torch op bindings (g++ against torch's headers), compiled unless a build of the same
    sources, flags, `key` (what else it depends on: the CPU's flags) and torch exists in the
    cache."""
    parts = [*(p.read_bytes() for p in c_sources + cpp_sources), " ".join(cflags).encode(), *key]
    if cpp_sources:
        parts += [" ".join(CXXFLAGS).encode(), torch.__version__.encode()]
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    out = cache_dir() / f"{stem}-{digest}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc not found")
    # build beside the target, then rename: a concurrent first use never loads half a file
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        so = Path(tmp) / "kernel.so"
        if not cpp_sources:
            _run([gcc, *cflags, "-shared", *map(str, c_sources), "-o", str(so)])
        else:
            gxx = shutil.which("g++")
            if gxx is None:
                raise RuntimeError("g++ not found")
            from torch.utils import cpp_extension  # imports setuptools: only when building
            objs = [Path(tmp) / f"{i}.o" for i in range(len(c_sources))]
            for src, obj in zip(c_sources, objs):
                _run([gcc, *cflags, "-c", str(src), "-o", str(obj)])
            torch_lib = cpp_extension.library_paths()[0]
            _run([gxx, *CXXFLAGS, "-shared", *(f"-I{d}" for d in cpp_extension.include_paths()),
                  *map(str, cpp_sources), *map(str, objs), "-o", str(so),
                  f"-L{torch_lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_lib}"])
        os.replace(so, out)
    return out


def load() -> bool:
    """Build and load the kernel once per process; True if it can be used."""
    global _lib, _tried, via, _layer
    if _tried:
        return _lib is not None
    _tried = True
    if os.environ.get("COEFLOW_CPU_KERNEL", "1") == "0":
        log.info("CPU linear kernel disabled by COEFLOW_CPU_KERNEL=0")
        return False
    flags = _cpu_flags()
    if _emulating():
        log.warning("CPU kernels built with emulated AVX-512 intrinsics (COEFLOW_CPU_KERNEL=emulate): slow")
    elif platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64") \
            or not set(CPU_FLAGS) <= flags:
        log.info("CPU linear kernel unavailable: needs x86-64 Linux with %s", ", ".join(CPU_FLAGS))
        return False
    try:
        mode = "ctypes"
        # the op library with the decoder layer's op; without it, should only that fail to
        # build (cpu_linear's op is cheaper a call than the ctypes path); else ctypes
        for layer in (True, False):
            try:
                path = _build(flags, op=True, layer=layer)
                torch.ops.load_library(str(path))  # registers the ops' CPU implementations
                mode = "c++"
                break
            except (OSError, RuntimeError, ImportError) as e:
                if "gcc not found" in str(e):
                    raise
                log.warning("CPU kernels: %s did not build (%s)",
                            "the decoder layer's op" if layer else "the C++ op", e)
                if "g++ not found" in str(e):
                    break
        if mode == "ctypes":
            log.info("CPU linear kernel: calling the kernel through ctypes")
            path, layer = _build(flags, op=False), False
        lib = ctypes.CDLL(str(path))
        fn = lib.coeflow_linear
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_void_p,
                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_int,
                       ctypes.c_int, ctypes.c_int]
        lib.coeflow_calls.restype = ctypes.c_longlong
        lib.coeflow_read.restype = ctypes.c_double
        lib.coeflow_read.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_int]
        lib.coeflow_argmax.restype = ctypes.c_long
        lib.coeflow_argmax.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int]
        if layer:
            lib.coeflow_layer_calls.restype = ctypes.c_longlong
    except (OSError, RuntimeError, AttributeError, ImportError) as e:
        log.warning("CPU linear kernel unavailable (%s); using the default path", e)
        return False
    if mode == "ctypes":
        _LIB.impl("cpu_linear", _cpu_linear_ctypes, "CPU")
    _lib, via, _layer = lib, mode, layer
    return True


def calls() -> int:
    """Kernel invocations so far in this process, by any path (tests check that it ran)."""
    return int(_lib.coeflow_calls()) if _lib is not None else 0


def layer_calls() -> int:
    """`coeflow::decoder_layer` calls so far in this process (tests check that it ran)."""
    return int(_lib.coeflow_layer_calls()) if has_decoder_layer() else 0


def read_sum(x: Tensor, prefetch: bool = False) -> float:
    """The sum of a contiguous float32 CPU tensor by the C file's plain read loop, on torch's
    threads (coeflow.bench.machine times it as the memory's read rate); with `prefetch`, each
    line asked for ahead as the products do."""
    if _lib is None:
        raise RuntimeError("coeflow's CPU kernels are not loaded")
    if x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous():
        raise ValueError(f"read_sum needs a contiguous float32 CPU tensor, got {x.dtype} on {x.device}")
    return float(_lib.coeflow_read(x.data_ptr(), x.numel(), torch.get_num_threads(), int(prefetch)))


def argmax_rows(x: Tensor) -> list[int]:
    """`x.argmax(-1).tolist()` for a 2-D tensor of logits: by the C file's loop for contiguous
    float32 or bfloat16 rows on the CPU (several times faster than torch's), by torch
    otherwise or without the kernel. Ties and NaNs as torch: the first largest, NaN
    largest."""
    if _lib is None or x.dtype not in DTYPES or x.device.type != "cpu" or x.dim() != 2 \
            or not x.is_contiguous() or x.shape[1] == 0:
        return x.argmax(-1).tolist()
    n, ptr, es, bf16 = x.shape[1], x.data_ptr(), x.element_size(), int(x.dtype == torch.bfloat16)
    return [int(_lib.coeflow_argmax(ptr + i * n * es, n, bf16)) for i in range(x.shape[0])]


def supports(x: Tensor, *ws: Tensor) -> bool:
    """Whether `cpu_linear(x, *ws)` may be called for these operands (the kernel loaded)."""
    return (_lib is not None and x.device.type == "cpu" and x.dtype in DTYPES and x.dim() == 2
            and 1 <= x.shape[0] <= MAX_ROWS and 1 <= len(ws) <= MAX_WEIGHTS
            and all(w.dtype == x.dtype and w.dim() == 2 and w.shape[1] == x.shape[1] and w.stride(1) == 1
                    and w.device.type == "cpu" for w in ws))


def _cpu_linear_ctypes(x: Tensor, ws: list[Tensor]) -> Tensor:
    """The op's implementation where the C++ one did not build: x [M, K] @ cat(ws).T ->
    float32 [M, sum of the ws' rows], for M <= 8, fp32 or bf16 (fp32 accumulation); each w
    may be any row-strided view (the store's pool)."""
    if _lib is None or not supports(x, *ws):
        raise RuntimeError(f"coeflow::cpu_linear: kernel not loaded or unsupported operands "
                           f"x {tuple(x.shape)} {x.dtype}, w {[(tuple(w.shape), w.dtype) for w in ws]}")
    x = x.contiguous()
    m, k = x.shape
    nw = len(ws)
    ns = [w.shape[0] for w in ws]
    y = torch.empty((m, sum(ns)), dtype=torch.float32)
    _lib.coeflow_linear(x.dtype == torch.bfloat16, x.data_ptr(), k, nw,
                        (ctypes.c_void_p * nw)(*[w.data_ptr() for w in ws]),
                        (ctypes.c_long * nw)(*[w.stride(0) for w in ws]), (ctypes.c_long * nw)(*ns),
                        y.data_ptr(), y.shape[1], m, k, torch.get_num_threads())
    return y


def cpu_linear(x: Tensor, *ws: Tensor) -> Tensor:
    """The op `coeflow::cpu_linear`: x [M, K] @ w.T as float32 [M, N] (M <= 8); given several
    weights that read the same x (q, k, v), their outputs side by side, from one call."""
    return torch.ops.coeflow.cpu_linear.default(x, list(ws))


def has_decoder_layer() -> bool:
    """Whether `coeflow::decoder_layer` may be called: it is in the C++ op library only (no
    ctypes path), so it needs that library loaded."""
    return _lib is not None and _layer


def decoder_layer(x: Tensor, ln1: Tensor, qkv_w: list[Tensor], qkv_b: list[Tensor], o_w: Tensor, ln2: Tensor,
                  gate_up_w: list[Tensor], down_w: Tensor, k_pool: Tensor, v_pool: Tensor, blocks: Tensor,
                  q_pos: Tensor, cos: Tensor, sin: Tensor, num_heads: int, eps: float, window: int) -> Tensor:
    """The op `coeflow::decoder_layer`: one decoder layer for 1 to 8 rows of one token each
    (x [B, 1, D]) at positions q_pos [B, 1], with the rows' block tables `blocks` [B, nb] into
    the paged KV pools [blocks, Hkv, block size, hd] (coeflow.engine.paged): writes the token's
    key and value at its position and attends over the row's keys up to it; cos and sin [B, hd]
    are the rotary table rows at q_pos; window 0 for none. Returns the layer's output, x's
    shape (decoder_layer.c)."""
    return torch.ops.coeflow.decoder_layer.default(
        x, ln1, qkv_w, qkv_b, o_w, ln2, gate_up_w, down_w, k_pool, v_pool, blocks, q_pos, cos, sin,
        num_heads, eps, window)
