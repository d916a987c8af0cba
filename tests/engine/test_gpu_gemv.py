"""coeflow's Triton kernel for one-row products on a GPU (`coeflow.model.kernels.gpu_gemv`),
checked here through Triton's interpreter, which runs it on CPU tensors: in a process of its
own (gemv_interpreted.py), since the interpreter is chosen when Triton is imported. How fast
it is, and so whether the engine takes it, is for the GPU (tests/gpu, bench decode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coeflow.engine import Engine
from coeflow.model import ModelConfig
from coeflow.model.kernels import gpu_gemv

pytestmark = pytest.mark.slow

pytest.importorskip("triton", reason="Triton is installed by .ci/run; without it the GPU kernel is off")


@pytest.fixture(scope="module")
def interpreted(checkpoints, tmp_path_factory) -> dict:
    paths = [str(checkpoints[f]) for f in ("llama-bias", "llama-tied")]
    scratch = str(tmp_path_factory.mktemp("packed") / "int8")
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("gemv_interpreted.py")), *paths, scratch],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"paths": paths, **json.loads(proc.stdout.strip().splitlines()[-1])}


def test_every_config_computes_the_product_in_every_dtype(interpreted):
    """Whole tiles and ragged edges, with and without a bias: the kernel's float32 sums,
    rounded once to the input's dtype, against float32 products."""
    tolerance = {"torch.float32": 1e-5, "torch.bfloat16": 1e-2, "torch.float16": 2e-3}
    rows = interpreted["kernel"]
    assert len(rows) == 3 * 4 * len(gpu_gemv.CONFIGS)
    for r in rows:
        assert r["shape"] == [1, r["n"]] and r["out_dtype"] == r["dtype"], r
        assert r["rel_err"] <= tolerance[r["dtype"]], r


def test_the_packed_kernel_computes_the_product_of_int8_and_int4_weights(interpreted):
    """Read packed, unpacked and scaled in the kernel: against float32 products with the
    dequantized weights, a scale a row or a group, whole tiles and ragged edges."""
    tolerance = {"torch.float32": 1e-5, "torch.bfloat16": 1e-2}
    rows = interpreted["packed"]
    assert {(r["bits"], r["group"]) for r in rows} == {(8, None), (4, 32), (4, 128)}
    for r in rows:
        assert r["shape"] == [1, r["n"]] and r["rel_err"] <= tolerance[r["dtype"]], r


def test_decode_of_a_quantized_checkpoint_through_the_packed_kernel_gives_transformers_tokens(interpreted):
    d = interpreted["quantized"]
    assert d["calls"] > 0 and d["tokens"] == d["want"]


def _product_shapes(path: str, joined: bool) -> list[tuple[int, int]]:
    """[out, in] of each distinct product a decode step makes, from config.json."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    groups = {(q + 2 * kv, h), (2 * i, h)} if joined else {(q, h), (kv, h), (i, h)}
    return sorted(groups | {(h, q), (h, i), (v, h)})


def test_decode_through_the_kernel_gives_transformers_greedy_tokens(interpreted):
    """Every one-row product of the decode steps (joined q/k/v with biases, o, joined
    gate/up, down, the tied output layer) through the kernel: the same tokens as
    transformers' own `generate`; weights not back to back: each layer on its own."""
    for path in interpreted["paths"]:
        d = interpreted["decode"][path]
        assert d["tokens"] == d["want"], path
        assert [tuple(s) for s in d["shapes"]] == _product_shapes(path, joined=True), path
    d = interpreted["separate"]
    assert d["tokens"] == d["want"]
    assert [tuple(s) for s in d["shapes"]] == _product_shapes(interpreted["paths"][0], joined=False)


def test_off_the_gpu_the_engine_keeps_its_products():
    """No GPU: nothing measured, nothing routed (the CPU's own layers)."""
    from coeflow.engine.layers.cuda import GemvLinear
    assert not gpu_gemv.available(torch.device("cpu"))
    cfg = ModelConfig.from_dict({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                 "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 100})
    engine = Engine(cfg, device="cpu", triton_gemv=True)
    assert not any(isinstance(m, GemvLinear) for m in engine.runner.model.modules())


def test_a_gpu_takes_the_kernel_by_default_and_COEFLOW_GPU_GEMV_0_turns_it_off(monkeypatch):
    """A fused step's layers on a GPU may use the kernel without being asked (the choice of
    layers needs no GPU to be made); `triton_gemv=False` and the environment variable keep cuBLAS."""
    from coeflow.engine.runners import decode_layers
    cuda = torch.device("cuda")
    assert decode_layers(cuda).gemv
    assert not decode_layers(cuda, triton_gemv=False).gemv
    monkeypatch.setenv("COEFLOW_GPU_GEMV", "0")
    assert not gpu_gemv.available(cuda)
    assert not decode_layers(cuda).gemv


def test_products_the_kernel_cannot_read_stay_with_torch(monkeypatch):
    """Only one row of x, a weight with unit column stride and a bias with unit stride go to
    the kernel (it reads them so); anything else keeps F.linear."""
    monkeypatch.setattr(gpu_gemv, "ON", ("cpu",))
    c = gpu_gemv.CONFIGS[0]
    w, b, x = torch.randn(8, 16), torch.randn(16), torch.randn(1, 1, 16)
    assert gpu_gemv.takes(x, w, b[:8], c)
    assert not gpu_gemv.takes(x, w, b[::2], c)  # strided bias
    assert not gpu_gemv.takes(x, torch.randn(16, 8).t(), None, c)  # transposed weight
    assert not gpu_gemv.takes(torch.randn(2, 1, 16), w, None, c)  # two rows
    assert not gpu_gemv.takes(x, w, None, None)  # no config chosen
