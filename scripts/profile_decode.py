"""Where a fused decode step's time goes on a GPU: for issue 2's check (weights streamed at 80%
of the device's copy rate), run by `device_check.sh profile`. Prints, for each model shape:
- each weight's product with one and with eight rows, streamed from memory (not from L2),
  in device time (CUDA-graph replays: no launch time), through cuBLAS and cuBLASLt (at one
  row also coeflow's Triton kernel in its fastest config, and, with --autotune, Inductor's
  autotuned Triton products): what the products alone reach;
- one replay of the engine's decode-step CUDA graph (device time), its products through
  cuBLAS, through cuBLASLt, through coeflow's kernel where faster, and (--autotune) as
  Inductor's autotuning picks them;
- the step's kernels without the graph (name, launches and device time a step).
Random weights made on the device (no checkpoint), laid out as `load_weights` lays them out
(q/k/v and gate/up joined), bf16.

    python scripts/profile_decode.py --models 1b 7b [--device cuda] [--steps 20] [--autotune]"""

from __future__ import annotations

import argparse
import contextlib
import math
import time

import torch
import torch.nn.functional as F

from coeflow.bench.decode import CONFIGS, replay_ms, streamed_bytes
from coeflow.bench.machine import device_copy_gbps
from coeflow.engine import Engine, SamplingParams
from coeflow.engine.layers.cuda import adjacent_view
from coeflow.model import ModelConfig, expected_shapes
from coeflow.model.checkpoint import pooled_views
from coeflow.model.kernels import gpu_gemv


def random_weights(cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Laid out as `load_weights` lays a checkpoint out (one buffer, groups back to back)."""
    g = torch.Generator(device).manual_seed(0)
    out = pooled_views(expected_shapes(cfg), cfg, dtype, device)
    for name, t in out.items():
        if name.endswith("norm.weight"):
            t.fill_(1)
        else:
            t.copy_(torch.randn(t.shape, generator=g, device=device) * 0.02)
    return out


def timed(fn, reps: int, device: torch.device) -> float:
    """Seconds a call, device time (CUDA events) or wall time on the CPU."""
    fn()
    if device.type != "cuda":
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


# Each product reads its weight from one of enough copies to overflow the GPU's L2 cache
# (50 MB on an H100/H200), as a decode step does (its weights are far larger than the cache).
STREAM_BYTES = 256 << 20


def product_s(linear, x: torch.Tensor, w: torch.Tensor, device: torch.device) -> float:
    """Device seconds of one `linear(x, w)` streaming w from memory. On CUDA the calls are
    captured into one graph (`gpu_gemv.streamed_call_s`), so the host's launch time (~12 us a
    call from Python, more than a small product takes) is not counted."""
    copies = [w] + [w.clone() for _ in range(math.ceil(STREAM_BYTES / w.nbytes) - 1)]
    if device.type != "cuda":
        return timed(lambda: [linear(x, c) for c in copies], 3, device) / len(copies)
    return gpu_gemv.streamed_call_s(lambda c: linear(x, c), copies, device)


def gemv_table(cfg: ModelConfig, w: dict[str, torch.Tensor], device: torch.device, batch: int,
               autotune: bool) -> None:
    p = "model.layers.0."
    x = torch.randn(batch, cfg.hidden_size, dtype=w[p + "mlp.up_proj.weight"].dtype, device=device)
    xi = torch.randn(batch, cfg.intermediate_size, dtype=x.dtype, device=device)
    a = p + "self_attn."
    cases = [("q", x, w[a + "q_proj.weight"]), ("k", x, w[a + "k_proj.weight"]),
             ("o", x, w[a + "o_proj.weight"]), ("gate", x, w[p + "mlp.gate_proj.weight"]),
             ("down", xi, w[p + "mlp.down_proj.weight"]),
             ("qkv as one", x, adjacent_view([w[a + f"{n}_proj.weight"] for n in "qkv"])),
             ("gate+up as one", x, adjacent_view([w[p + f"mlp.{n}_proj.weight"] for n in ("gate", "up")]))]
    if "lm_head.weight" in w:
        cases.append(("lm_head", x, w["lm_head.weight"]))
    variants: list[tuple[str, object]] = [("F.linear", F.linear)]
    if device.type == "cuda" and hasattr(torch.backends.cuda, "preferred_blas_library"):
        variants = [("cuBLAS", "cublas"), ("cuBLASLt", "cublaslt")]
    if device.type == "cuda" and batch == 1:  # coeflow's kernel, its fastest config
        variants.append(("coeflow Triton GEMV", "gemv"))
    if autotune:  # Inductor's own Triton products against cuBLAS, picked by timing each
        variants.append(("Inductor autotuned", torch.compile(F.linear, mode="max-autotune-no-cudagraphs",
                                                             dynamic=False)))
    print(f"  products with {batch} row(s), weights streamed from memory: us (GB/s)")
    print("    " + " " * 32 + "".join(f"{v:>22}" for v, _ in variants))
    for name, xx, ww in cases:
        cells = []
        for _, how in variants:
            if how == "gemv":
                s = min(product_s(lambda x, w, c=c: gpu_gemv.linear(x, w, None, c), xx, ww, device)
                        for c in gpu_gemv.CONFIGS)
            elif isinstance(how, str):
                torch.backends.cuda.preferred_blas_library(how)
                s = product_s(F.linear, xx, ww, device)
            else:
                s = product_s(how, xx, ww, device)
            cells.append(f"{s * 1e6:9.1f} ({ww.nbytes / s / 1e9:5.0f} GB/s)")
        print(f"    {name:15} {tuple(ww.shape)!s:16} " + "".join(f"{c:>22}" for c in cells))
    if device.type == "cuda" and hasattr(torch.backends.cuda, "preferred_blas_library"):
        torch.backends.cuda.preferred_blas_library("cublas")


def step_kernels(engine: Engine, prompt: list[int], steps: int) -> None:
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if engine.device.type == "cuda" else [])
    params = SamplingParams(max_tokens=steps + 1, ignore_eos=True)
    with profile(activities=acts) as prof:
        engine.generate([prompt], params)
    rows = []
    for e in prof.key_averages():
        dev_t = getattr(e, "self_device_time_total", None)
        if dev_t is None:
            dev_t = getattr(e, "self_cuda_time_total", 0)
        if engine.device.type == "cuda" and dev_t > 0 and e.count >= steps:
            rows.append((dev_t / steps, e.count / steps, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    launches = sum(r[1] for r in rows)
    print(f"  kernels without the graph: {launches:.0f} launches, {total:.0f} us of device time a step")
    for us, n, key in rows[:25]:
        print(f"    {us:8.1f} us  x{n:5.1f}  {key[:110]}")


def step_variants(device: torch.device, autotune: bool) -> list[str]:
    """How the step's products may run: cuBLAS (torch's default), cuBLASLt, coeflow's Triton
    kernel where it measured faster than cuBLAS (`Engine(triton_gemv=True)`), and (--autotune)
    Inductor choosing per shape between cuBLAS and its Triton templates, which can also fold
    the residual adds and the activation into the products."""
    if device.type != "cuda":
        return ["default"]
    return (["cuBLAS", "cuBLASLt", "coeflow Triton GEMV where faster"]
            + (["Inductor autotuned products"] if autotune else []))


@contextlib.contextmanager
def variant_set(variant: str):
    from coeflow.engine.runners import compiled
    options = compiled.INDUCTOR_OPTIONS
    if variant == "cuBLASLt":
        torch.backends.cuda.preferred_blas_library("cublaslt")
    if variant == "Inductor autotuned products":
        compiled.INDUCTOR_OPTIONS = {**options, "max_autotune_gemm": True,
                                     "max_autotune_gemm_backends": "ATEN,TRITON"}
    try:
        yield
    finally:
        compiled.INDUCTOR_OPTIONS = options
        if variant == "cuBLASLt":
            torch.backends.cuda.preferred_blas_library("cublas")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["1b"], choices=sorted(CONFIGS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-kernels", action="store_true", help="skip the profiler's kernel table")
    ap.add_argument("--autotune", action="store_true",
                    help="also time Inductor's autotuned Triton products (compiles for minutes)")
    args = ap.parse_args()
    device, dtype = torch.device(args.device), torch.bfloat16
    if device.type == "cuda":
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}; "
              f"device copy {device_copy_gbps(str(device)):.0f} GB/s (read + write)")
    for name in args.models:
        cfg = ModelConfig.from_dict({"model_type": "llama", **CONFIGS[name]})
        w = random_weights(cfg, dtype, device)
        step_bytes = streamed_bytes(cfg, dtype)
        print(f"== {name}: {cfg.num_params() / 1e9:.2f} B params, {step_bytes / 1e9:.2f} GB streamed a step")
        for batch in (1, 8):
            gemv_table(cfg, w, device, batch, args.autotune and batch == 1)
        prompt = list(range(3, 19))
        for variant in step_variants(device, args.autotune):
            with variant_set(variant):
                torch._dynamo.reset()
                engine = Engine(cfg, dtype=dtype, device=device, fused=True,
                                triton_gemv=variant == "coeflow Triton GEMV where faster")
                engine.set_weights(w, name=name)
                assert engine.runner.model.model.layers[0].mlp.joined_weight is not None, "weights not joined"
                t = time.perf_counter()
                engine.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))  # compile, capture
                first_s = time.perf_counter() - t
                ms = replay_ms(engine)
                if ms is not None:
                    print(f"  step, {variant:32}: graph replay {ms:.3f} ms = "
                          f"{step_bytes / ms / 1e6:.0f} GB/s of weights (first call {first_s:.0f} s)")
                if engine.runner.layers.gemv:
                    print("    kernel chosen for: " + ", ".join(
                        f"[{k[1]}, {k[2]}] {c}" for k, c in gpu_gemv._chosen.items() if c is not None))
                if not args.no_kernels and variant in ("cuBLAS", "coeflow Triton GEMV where faster"):
                    engine.runner.inner.capture_failed = True  # the compiled step's kernels one by one
                    step_kernels(engine, prompt, args.steps)
                del engine
        del w
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
