"""coeflow's CPU linear kernel (`coeflow::cpu_linear`) computes x @ w.T like torch, for the
shapes decode gives it and the odd ones it must not get wrong; it is optional, and the
engine works the same without it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from coeflow.engine import Engine, SamplingParams
from coeflow.model import kernels
from checkpoints import make_checkpoint

needs_kernel = pytest.mark.skipif(not kernels.load(), reason="CPU kernel unavailable here "
                                  "(needs x86-64 Linux, AVX-512 BF16 and gcc)")

# (N, K): K not a multiple of the vector width (16 fp32 / 32 bf16), N below and above the
# size at which rows are split over threads, and the medium model's down projection.
SHAPES = [(1, 1), (7, 33), (63, 45), (64, 16), (130, 257), (200, 100), (768, 2560)]


@needs_kernel
@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5)])
@pytest.mark.parametrize("m", range(1, kernels.MAX_ROWS + 1))
def test_matches_torch_matmul(dtype, rtol, m):
    g = torch.Generator().manual_seed(m)
    for n, k in SHAPES:
        x = torch.randn(m, k, generator=g).to(dtype)
        w = torch.randn(n, k, generator=g).to(dtype)
        got = kernels.cpu_linear(x, w)
        # both accumulate in fp32 from the same bf16 values, so only summation order differs
        want = x.double() @ w.double().T
        assert got.dtype == torch.float32 and got.shape == (m, n)
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=rtol * k ** 0.5 * 4)


@needs_kernel
def test_reads_row_strided_weight_views():
    """The store hands out views into a shared pool; rows may be further apart than K."""
    pool = torch.randn(50, 100).bfloat16()
    w = pool[3:40, 10:79]  # row stride 100, K = 69
    x = torch.randn(3, 69).bfloat16()
    torch.testing.assert_close(kernels.cpu_linear(x, w), x.float() @ w.float().T, rtol=1e-5, atol=1e-4)
    assert not kernels.supports(x, pool.T[:, :69])  # columns not contiguous: refused


@needs_kernel
def test_refuses_what_it_does_not_handle():
    w = torch.randn(8, 16)
    assert kernels.supports(torch.randn(8, 16), w)
    assert not kernels.supports(torch.randn(9, 16), w)  # more than 8 rows
    assert not kernels.supports(torch.randn(2, 16).half(), w.half())  # fp16
    assert not kernels.supports(torch.randn(2, 16).bfloat16(), w)  # mixed dtypes
    with pytest.raises(RuntimeError, match="coeflow::cpu_linear.*1 to 8 rows"):
        kernels.cpu_linear(torch.randn(9, 16), w)
    with pytest.raises(RuntimeError, match="coeflow::cpu_linear: weight 1 .*contiguous columns"):
        kernels.cpu_linear(torch.randn(2, 16), w, torch.randn(16, 8).T)


@needs_kernel
@pytest.mark.parametrize("n", [0, 1, 63, 64, 129, 100_003])
@pytest.mark.parametrize("prefetch", [False, True])
def test_read_sum_is_the_sum(n, prefetch):
    """The benchmarks' read loops time memory; they must read every element exactly once
    (stripes per thread, a tail shorter than a vector)."""
    x = torch.rand(n, generator=torch.Generator().manual_seed(n))
    assert kernels.read_sum(x, prefetch) == pytest.approx(x.double().sum().item(), rel=1e-6, abs=1e-6)
    with pytest.raises(ValueError, match="contiguous float32"):
        kernels.read_sum(x.bfloat16())


@needs_kernel
def test_argmax_rows_is_torchs_argmax():
    """Greedy decoding's choice on the CPU: the same token as torch.argmax, ties (the first)
    and NaNs (the first NaN) included, at lengths that leave a partial vector, in float32 and
    bfloat16 (read as it is; rounding makes ties common there)."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(3, n, generator=g) for n in (1, 15, 16, 17, 1000, 32000)]
    tied = torch.zeros(2, 37)
    tied[0, [5, 20, 36]] = 2.0  # three equal maxima
    nan = torch.randn(2, 50, generator=g)
    nan[0, [7, 30]] = float("nan")
    nan[1, 33] = float("nan")
    ninf = torch.full((1, 40), float("-inf"))
    coarse = torch.randint(-3, 4, (4, 3000), generator=g).float()  # many equal maxima
    for x in rows + [tied, nan, ninf, torch.ones(1, 64), coarse]:
        for y in (x, x.bfloat16()):
            assert kernels.argmax_rows(y) == y.argmax(-1).tolist(), (y.shape, y.dtype)
    assert kernels.argmax_rows(rows[-1][:, ::2]) == rows[-1][:, ::2].argmax(-1).tolist()  # strided
    half = torch.randn(2, 100, generator=g).half()  # other dtypes: torch's own
    assert kernels.argmax_rows(half) == half.argmax(-1).tolist()


@needs_kernel
def test_several_weights_in_one_call_and_the_ctypes_path():
    """q, k and v (or gate and up) in one call give their outputs side by side; the Python
    implementation (used where the C++ op does not build) computes the same."""
    g = torch.Generator().manual_seed(5)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 96, generator=g).to(dtype)
        ws = [torch.randn(n, 96, generator=g).to(dtype) for n in (64, 16, 16)]
        want = x.double() @ torch.cat(ws).double().T
        got = kernels.cpu_linear(x, *ws)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(kernels._cpu_linear_ctypes(x, ws), got)


@needs_kernel
def test_a_decoder_layer_that_fails_to_build_leaves_cpu_linear_op(tmp_path):
    """The layer's sources share the op library; their failing to compile must cost only the
    layer's op, not cpu_linear's C++ op. In a process of its own: loading a library registers
    its ops for the whole process."""
    broken = tmp_path / "decoder_layer.c"
    broken.write_text("this is not C\n")
    script = f"""
import logging, torch
from coeflow.model import kernels
logging.basicConfig(level=logging.WARNING)
h, _, op = kernels.LAYER_SOURCES
kernels.LAYER_SOURCES = (h, kernels.Path({str(broken)!r}), op)
assert kernels.load() and kernels.via == "c++" and not kernels.has_decoder_layer()
x, w = torch.randn(2, 40), torch.randn(70, 40)
torch.testing.assert_close(kernels.cpu_linear(x, w), x @ w.T, rtol=1e-5, atol=1e-4)
assert kernels.calls() == 1
print("ok")
"""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert "the decoder layer's op did not build" in proc.stderr and "decoder_layer.c" in proc.stderr


@needs_kernel
def test_without_gxx_the_kernel_runs_through_ctypes(monkeypatch, tmp_path):
    fresh = torch.library.Library("coeflow", "IMPL")  # the fallback's registration, undone below
    monkeypatch.setattr(kernels, "_LIB", fresh)
    monkeypatch.setattr(kernels, "via", kernels.via)
    monkeypatch.setattr(kernels, "_layer", kernels._layer)
    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    which = kernels.shutil.which
    monkeypatch.setattr(kernels.shutil, "which", lambda name: None if name == "g++" else which(name))
    try:
        assert kernels.load() and kernels.via == "ctypes"
        x, w = torch.randn(1, 40).bfloat16(), torch.randn(70, 40).bfloat16()
        before = kernels.calls()
        torch.testing.assert_close(kernels.cpu_linear(x, w), x.float() @ w.float().T, rtol=1e-5, atol=1e-4)
        assert kernels.calls() == before + 1
    finally:
        fresh._destroy()


@needs_kernel
def test_compiled_batched_decode_uses_kernel_and_matches_eager(tmp_path):
    path = make_checkpoint(tmp_path / "m", "llama-bias", seed=3)  # biases go around the kernel
    prompts = [[1, 17, 42], [1, 5, 6, 250], [9, 8, 7, 6, 5]]  # batch bucket 4
    params = SamplingParams(max_tokens=10, ignore_eos=True)
    want = [c.token_ids for c in Engine.from_checkpoint(path, fused=False).generate(prompts, params)]
    fused = Engine.from_checkpoint(path, fused=True)
    assert fused.runner.layers.kernels
    before = kernels.calls()
    assert [c.token_ids for c in fused.generate(prompts, params)] == want
    assert fused.fused and kernels.calls() > before, "the compiled step did not call the kernel"

    off = Engine.from_checkpoint(path, fused=True, cpu_kernel=False)
    before = kernels.calls()
    assert [c.token_ids for c in off.generate(prompts, params)] == want
    assert not off.runner.layers.kernels and kernels.calls() == before


def test_unavailable_kernel_falls_back(monkeypatch, tmp_path, caplog):
    """No gcc (and nothing cached): `load` says no, and the engine runs without the kernel,
    giving the eager engine's tokens."""
    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: set(kernels.CPU_FLAGS))
    monkeypatch.setattr(kernels.platform, "system", lambda: "Linux")
    monkeypatch.setattr(kernels.platform, "machine", lambda: "x86_64")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(kernels.shutil, "which", lambda name: None)
    assert kernels.load() is False
    assert "gcc not found" in caplog.text
    path = make_checkpoint(tmp_path / "m", "llama-gqa", seed=1)
    engine = Engine.from_checkpoint(path, fused=True)
    assert not engine.runner.layers.kernels
    prompts, params = [[1, 2, 3], [4, 5]], SamplingParams(max_tokens=4, ignore_eos=True)
    want = [c.token_ids for c in Engine.from_checkpoint(path, fused=False).generate(prompts, params)]
    assert [c.token_ids for c in engine.generate(prompts, params)] == want


def test_env_var_disables_kernel(monkeypatch):
    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setenv("COEFLOW_CPU_KERNEL", "0")
    assert kernels.load() is False


@needs_kernel
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_compiled_single_row_uses_kernel_on_large_weights(tmp_path, monkeypatch, dtype):
    """One row goes to the kernel for weights past the size threshold (here: all of them);
    the decoder layers are left to the step's own code, so the linear layers and the output
    head are what call it."""
    from coeflow.engine.layers import cpu as cpu_layers
    path = make_checkpoint(tmp_path / "m", "llama-gqa", seed=4)
    prompt, params = [[1, 17, 42, 99]], SamplingParams(max_tokens=6, ignore_eos=True)
    want = [c.token_ids for c in Engine.from_checkpoint(path, dtype=dtype, fused=False).generate(prompt, params)]
    monkeypatch.setattr(cpu_layers, "KERNEL_ROW_MIN_BYTES", 0)
    monkeypatch.setattr(kernels, "has_decoder_layer", lambda: False)
    fused = Engine.from_checkpoint(path, dtype=dtype, fused=True)
    before = kernels.calls()
    assert [c.token_ids for c in fused.generate(prompt, params)] == want
    assert fused.fused and kernels.calls() > before, f"the compiled {dtype} step did not call the kernel"
