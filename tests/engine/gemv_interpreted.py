"""Run by test_gpu_gemv.py in a process of its own, with TRITON_INTERPRET=1 set before Triton
is imported: Triton's interpreter runs coeflow's GPU kernel on CPU tensors. Prints one JSON
object of findings; the test asserts on them. argv: checkpoint directories, then a new directory
for a quantized copy of the first."""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from coeflow.engine import Engine, SamplingParams
from coeflow.engine.layers.cuda import CudaLayers
from coeflow.engine.runners import EagerRunner
from coeflow.model.kernels import gpu_gemv

PROMPT = [1, 17, 42, 99, 7, 250, 3, 64]


def kernel_errors() -> list[dict]:
    """Each config against F.linear, for shapes with and without whole tiles, with and without
    a bias, in every dtype: the largest error relative to the output's scale."""
    out = []
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for n, k, bias in ((96, 200, False), (64, 512, True), (50, 64, True), (128, 256, False)):
            x = torch.randn(1, k, generator=g).to(dtype)
            w = torch.randn(n, k, generator=g).to(dtype)
            b = torch.randn(n, generator=g).to(dtype) if bias else None
            want = F.linear(x.float(), w.float(), None if b is None else b.float())
            for config in gpu_gemv.CONFIGS:
                y = gpu_gemv.linear(x, w, b, config)
                out.append(dict(dtype=str(dtype), n=n, k=k, bias=bias, config=list(config),
                                shape=list(y.shape), out_dtype=str(y.dtype),
                                rel_err=((y.float() - want).abs().max() / want.abs().max()).item()))
    return out


def packed_errors() -> list[dict]:
    """The packed kernel against x @ dequantized w, for 8 and 4 bits, a scale a row or a group
    of 32, whole tiles and ragged ones, x in float32 and bfloat16."""
    from coeflow.model.quant import dequantize, quantize
    out = []
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.bfloat16):
        for bits, group in ((8, None), (4, 32), (4, 128)):
            for n, k in ((96, 256), (50, 128), (40, 384)):
                if group and k % group:
                    continue
                w = torch.randn(n, k, generator=g)
                packed, scale = quantize(w, bits, group)
                x = torch.randn(1, k, generator=g).to(dtype)
                want = x.float() @ dequantize(packed, scale, bits, torch.float32).T
                y = gpu_gemv.packed_linear(x, packed, scale.to(dtype), bits)
                out.append(dict(dtype=str(dtype), bits=bits, group=group, n=n, k=k, shape=list(y.shape),
                                rel_err=((y.float() - want).abs().max() / want.abs().max()).item()))
    return out


def decode_quantized(path: str, out: str) -> dict:
    """Greedy decode of `path` quantized to int8 (a scale a row) with every one-row product of
    the layers through the packed kernel, against transformers decoding the same file."""
    from coeflow.model.convert import quant_scheme, quantize_checkpoint
    quantize_checkpoint(path, out, quant_scheme(8))
    gpu_gemv.ON = ("cpu",)
    calls = []
    packed = gpu_gemv.packed_linear
    gpu_gemv.packed_linear = lambda x, p, s, bits: calls.append(tuple(p.shape)) or packed(x, p, s, bits)
    engine = Engine.from_checkpoint(out, runner=lambda m: EagerRunner(m, CudaLayers(gemv=True)))
    got = engine.generate([PROMPT], SamplingParams(max_tokens=6, ignore_eos=True))[0].token_ids
    gpu_gemv.packed_linear = packed
    return dict(tokens=got, want=hf_greedy(out, 6), calls=len(calls))


def hf_greedy(path: str, n: int) -> list[int]:
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.inference_mode():
        ids = torch.tensor([PROMPT])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(PROMPT):].tolist()


def decode_through_kernel(path: str, separate: bool = False) -> dict:
    """Greedy decode with every one-row product sent to the kernel, as `choose_gemv` would
    set it up on a GPU where the kernel wins everywhere: joined groups as one product each,
    or, with `separate` (weights not back to back), every layer on its own. The GPU's layers
    run eagerly here, on the CPU."""
    gpu_gemv.ON = ("cpu",)
    gpu_gemv.fastest = lambda n, k, dtype, device, bias=False: gpu_gemv.CONFIGS[1]
    calls = []
    linear = gpu_gemv.linear
    gpu_gemv.linear = lambda x, w, b, c: calls.append(tuple(w.shape)) or linear(x, w, b, c)
    engine = Engine.from_checkpoint(path, runner=lambda m: EagerRunner(m, CudaLayers(gemv=True)))
    if separate:
        engine.set_weights({k: v.clone() for k, v in engine._attached.items()})
    got = engine.generate([PROMPT], SamplingParams(max_tokens=6, ignore_eos=True))[0].token_ids
    gpu_gemv.linear = linear
    return dict(tokens=got, want=hf_greedy(path, 6), shapes=sorted(set(calls)))


if __name__ == "__main__":
    *paths, scratch = sys.argv[1:]
    print(json.dumps(dict(kernel=kernel_errors(), decode={p: decode_through_kernel(p) for p in paths},
                          separate=decode_through_kernel(paths[0], separate=True),
                          packed=packed_errors(), quantized=decode_quantized(paths[0], scratch))))
