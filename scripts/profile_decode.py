"""Where a fused decode step's time goes on a GPU: for issue 2's check (weights streamed at 80%
of the device's copy rate), run by `device_check.sh profile`. Prints, for each model shape:
- each weight's product with one row (F.linear, cuBLAS) alone, in GB/s, and q/k/v and gate/up
  as one product each: what the matrix products alone reach, and what fusing them would gain;
- one replay of the engine's decode-step CUDA graph (device time), per attention variant;
- the step's kernels without the graph (name, launches and device time a step).
Random weights made on the device (no checkpoint), bf16, batch 1.

    python scripts/profile_decode.py --models 1b 7b [--device cuda] [--steps 20]"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from coeflow.bench.decode import CONFIGS, streamed_bytes
from coeflow.bench.machine import device_copy_gbps
from coeflow.engine import Engine, SamplingParams
from coeflow.model import ModelConfig, expected_shapes, llama
from coeflow.model.checkpoint import pooled_views


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


def gemv_table(cfg: ModelConfig, w: dict[str, torch.Tensor], device: torch.device, batch: int) -> None:
    p = "model.layers.0."
    x = torch.randn(batch, cfg.hidden_size, dtype=w[p + "mlp.up_proj.weight"].dtype, device=device)
    xi = torch.randn(batch, cfg.intermediate_size, dtype=x.dtype, device=device)
    a = p + "self_attn."
    qkv = torch.cat([w[a + "q_proj.weight"], w[a + "k_proj.weight"], w[a + "v_proj.weight"]])
    gate_up = torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]])
    cases = [("q", x, w[a + "q_proj.weight"]), ("k", x, w[a + "k_proj.weight"]),
             ("v", x, w[a + "v_proj.weight"]), ("o", x, w[a + "o_proj.weight"]),
             ("gate", x, w[p + "mlp.gate_proj.weight"]), ("up", x, w[p + "mlp.up_proj.weight"]),
             ("down", xi, w[p + "mlp.down_proj.weight"]), ("qkv as one", x, qkv),
             ("gate+up as one", x, gate_up)]
    if "lm_head.weight" in w:
        cases.append(("lm_head", x, w["lm_head.weight"]))
    total_sep = 0.0
    print(f"  products with {batch} row(s) (F.linear):")
    for name, xx, ww in cases:
        s = timed(lambda: F.linear(xx, ww), 200, device)
        if name in ("q", "k", "v", "o", "gate", "up", "down"):
            total_sep += s
        print(f"    {name:15} {tuple(ww.shape)!s:16} {s * 1e6:8.1f} us  {ww.nbytes / s / 1e9:7.0f} GB/s")
    fused = sum(timed(lambda: F.linear(xx, ww), 200, device) for n, xx, ww in cases
                if n in ("qkv as one", "o", "gate+up as one", "down"))
    print(f"  a layer's products: {total_sep * 1e6:.1f} us as 7, {fused * 1e6:.1f} us as 4")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["1b"], choices=sorted(CONFIGS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-kernels", action="store_true", help="skip the profiler's kernel table")
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
            gemv_table(cfg, w, device, batch)
        prompt = list(range(3, 19))
        for variant, attention_on in (("sdpa", ("cpu",)), ("multiply-reduce", ("cpu", "cuda"))):
            llama.DECODE_ATTENTION_ON = attention_on
            torch._dynamo.reset()
            engine = Engine(cfg, dtype=dtype, device=device, fused=True)
            engine.set_weights(w, name=name)
            assert engine.model.model.layers[0].mlp.joined_weight is not None, "weights not joined"
            engine.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))  # compile, capture
            graphs = engine.cuda_graphs
            if graphs:
                s = timed(lambda: graphs[0].replay(), 50, device)
                print(f"  attention {variant:16}: graph replay {s * 1e3:.3f} ms = "
                      f"{step_bytes / s / 1e9:.0f} GB/s of weights")
            if not args.no_kernels and variant == "sdpa":
                engine._graphs = None  # the compiled step's kernels one by one
                step_kernels(engine, prompt, args.steps)
            del engine
        llama.DECODE_ATTENTION_ON = ("cpu",)
        del w
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
