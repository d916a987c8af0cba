"""The hardware model at large batches on a GPU, against published measurements it was not fitted on.

TensorRT-LLM 0.5.0's performance table (docs/source/performance.md, "High Throughput", A100
GPUs, FP16, TP1) gives output tokens/s for LLaMA 7B at batch 16-64 with 128- or 2,048-token
prompts and outputs. LLaMA 7B has Llama-2-7B's shape (only the context limit differs), so the
model costs them with the shipped llama2-7b config on one A100 under the NeMo stack (NeMo's
inference runs TensorRT-LLM; the stack's two overheads were fitted on NeMo at batch 1, nothing
here). Throughput = batch x output tokens / total time (prefill + decode).

Usage: python scripts/batched_gpu_anchors.py [--json]"""

from __future__ import annotations

import json
import sys

from coeflow.hw.generation import generation_cost
from coeflow.hw.shapes import load_shape
from coeflow.hw.spec import load_hardware

# (batch, input tokens, output tokens, published output tokens/s)
TRT_LLM_A100_FP16 = [(64, 128, 128, 3486), (32, 128, 2048, 1459), (32, 2048, 128, 529), (16, 2048, 2048, 592)]


def rows(stack: str = "nemo") -> list[dict]:
    hw, shape = load_hardware("a100"), load_shape("llama2-7b")
    out = []
    for batch, prompt, gen, published in TRT_LLM_A100_FP16:
        c = generation_cost(hw, shape, batch, prompt, gen, tp=1, stack=stack)
        predicted = batch * gen / c.total_s
        out.append({"batch": batch, "prompt": prompt, "gen": gen, "published_tok_s": published,
                    "predicted_tok_s": round(predicted, 1), "error_pct": round(100 * (predicted / published - 1), 1),
                    "ttft_s": round(c.ttft_s, 4), "tpot_s": round(c.tpot_s, 5)})
    return out


def main() -> None:
    result = rows()
    if "--json" in sys.argv:
        print(json.dumps({"hardware": "a100", "model": "llama2-7b", "stack": "nemo", "rows": result}, indent=2))
        return
    print("TensorRT-LLM 0.5.0, A100 FP16, LLaMA 7B, TP1: published vs modelled output tokens/s")
    print(f"{'batch':>5} {'in':>5} {'out':>5} {'published':>10} {'model':>8} {'error':>7}")
    for r in result:
        print(f"{r['batch']:5} {r['prompt']:5} {r['gen']:5} {r['published_tok_s']:10,} "
              f"{r['predicted_tok_s']:8,.0f} {r['error_pct']:+6.1f}%")


if __name__ == "__main__":
    main()
