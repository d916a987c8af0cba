"""Operator graphs of a decoder LLM: what one forward pass of prefill or decode computes and
moves, per device, under tensor parallelism.

An `Op` counts FLOPs and bytes by where they live (weights, KV cache, activations) so each
mapper can decide what stays on chip. `eager_kernels` and `eager_bytes` say what an unfused
PyTorch implementation launches and moves: e.g. an eager RMSNorm is 5 kernels (pow, mean,
rsqrt, mul, mul) each reading and writing the activation; eager attention materialises the
score matrix and, for grouped KV heads, copies K and V once per query head (`repeat_kv`).
`op_kernels`/`op_bytes` are the coarser granularity of a graph compiler that runs each
framework operator (RMSNorm, SiLU-mul, matmul, softmax) as one kernel: the paper's Unfused.

Tensor parallelism (Megatron): q/k/v, gate/up column-split, o/down row-split, so each layer
has two all-reduces of the activation (one for parallel attention+MLP, as in Falcon)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from coeflow.errors import ConfigError
from coeflow.hw.shapes import BYTES_BF16, DecoderShape

B = BYTES_BF16


@dataclass(frozen=True)
class Op:
    name: str
    kind: str  # gemm | attention | norm | elementwise | collective | embedding | sampling
    flops: float = 0.0
    weight_bytes: float = 0.0  # read once per pass
    kv_read_bytes: float = 0.0
    kv_write_bytes: float = 0.0
    in_bytes: float = 0.0  # activations read
    out_bytes: float = 0.0  # activations written
    comm_bytes: float = 0.0  # collective payload per device
    eager_kernels: int = 1  # kernels in an unfused (eager PyTorch) implementation
    eager_bytes: float = 0.0  # extra HBM traffic of the eager version (intermediates)
    op_kernels: int = 1  # kernels when each graph-level operator is its own kernel (RDU unfused)
    op_bytes: float = 0.0  # extra HBM traffic at that granularity (attention scores)

    @property
    def fused_bytes(self) -> float:
        """HBM bytes when run as its own (already fused) kernel."""
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes + self.in_bytes \
            + self.out_bytes


@dataclass(frozen=True)
class Graph:
    """One forward pass: `layer_ops` run `layers` times, then `head_ops` once."""

    shape: DecoderShape
    phase: str  # prefill | decode
    batch: int
    new_tokens: int  # per sequence: the prompt for prefill, 1 for decode
    context: int  # tokens already in the KV cache before this pass
    tp: int
    layer_ops: tuple[Op, ...]
    head_ops: tuple[Op, ...]

    @property
    def layers(self) -> int:
        return self.shape.layers

    def all_ops(self):
        """(op, repeat count) pairs."""
        return [(op, self.layers) for op in self.layer_ops] + [(op, 1) for op in self.head_ops]

    def total(self, field: str) -> float:
        return sum(getattr(op, field) * n for op, n in self.all_ops())


def _attended(shape: DecoderShape, new: int, context: int) -> float:
    """Mean number of keys each new query attends to (causal, capped by a sliding window)."""
    if new == 1:
        keys = context + 1
        return float(min(keys, shape.sliding_window or keys))
    w = shape.sliding_window
    total = 0.0
    # causal: query i sees context + i + 1 keys; closed form of the mean, capped by the window
    first, last = context + 1, context + new
    if w is None or last <= w:
        total = (first + last) / 2 * new
    else:
        below = max(0, min(last, w) - first + 1)
        total = (first + first + below - 1) / 2 * below + w * (new - below)
    return total / new


@lru_cache(maxsize=4096)
def decoder_graph(shape: DecoderShape, phase: str, batch: int, new_tokens: int, context: int = 0,
                  tp: int = 1, logits: int = 1) -> Graph:
    """The per-device operator graph of one prefill (new_tokens = prompt) or decode pass
    (new_tokens = 1, context = tokens already cached). `logits`: positions per sequence that
    need the LM head (1 for generation; k + 1 when a pass verifies k speculated tokens, since
    every position's distribution is compared with the draft's)."""
    if phase not in ("prefill", "decode"):
        raise ConfigError(f"phase must be prefill or decode, not {phase!r}")
    if batch < 1 or new_tokens < 1 or context < 0:
        raise ConfigError("batch and token counts must be positive")
    if not 1 <= logits <= new_tokens:
        raise ConfigError(f"logits positions ({logits}) must be between 1 and the new tokens "
                          f"({new_tokens})")
    if tp < 1 or shape.heads % tp or shape.intermediate % tp:
        raise ConfigError(f"{shape.name}: tensor parallel degree {tp} must divide the "
                          f"{shape.heads} heads and the {shape.intermediate} MLP width")
    h, d, s = shape.hidden, shape.head_dim, shape
    m = batch * new_tokens  # tokens in this pass
    hq = s.heads // tp
    hkv = max(1, s.kv_heads // tp)  # KV heads are replicated when fewer than tp
    act = m * h * B  # one hidden-state activation
    keys = _attended(s, new_tokens, context)
    kv_len = min(context + new_tokens, s.sliding_window or 10**12)

    wb = s.product_bytes_per_param(B)  # a quantized shape's products read fewer bytes, same FLOPs

    def gemm(name: str, k: int, n: int, bias: bool = False) -> Op:
        return Op(name, "gemm", flops=2.0 * m * k * n, weight_bytes=k * n * wb + (n if bias else 0) * B,
                  in_bytes=m * k * B, out_bytes=m * n * B)

    def norm(name: str) -> Op:
        kernels = 6 if s.layer_norm else 5  # eager: (mean, var,) pow, mean, rsqrt, mul, mul
        return Op(name, "norm", flops=(8.0 if s.layer_norm else 5.0) * m * h,
                  weight_bytes=(2 if s.layer_norm else 1) * h * B, in_bytes=act, out_bytes=act,
                  eager_kernels=kernels, eager_bytes=(kernels - 1) * 2 * act)

    def elementwise(name: str, width: int, reads: int = 1, kernels: int = 1) -> Op:
        nbytes = m * width * B
        return Op(name, "elementwise", flops=float(m * width), in_bytes=reads * nbytes,
                  out_bytes=nbytes, eager_kernels=kernels,
                  eager_bytes=(kernels - 1) * 2 * nbytes)

    def all_reduce(name: str) -> Op:
        return Op(name, "collective", comm_bytes=act, in_bytes=act, out_bytes=act)

    qkv_n = (hq + 2 * hkv) * d
    ops: list[Op] = [norm("attn_norm"),
                     gemm("qkv_proj", h, qkv_n, s.linear_bias or s.qkv_bias)]
    if s.rotary:
        ops.append(elementwise("rope", (hq + hkv) * d, kernels=6))  # eager: slice, neg, cat, 2 mul, add
    kv_new = batch * new_tokens * 2 * hkv * d * B
    ops.append(Op("kv_write", "elementwise", kv_write_bytes=kv_new, in_bytes=kv_new))
    # attention: QK^T and PV, 2 FLOPs per MAC each
    scores = batch * hq * new_tokens * keys  # score elements
    kv_read = batch * kv_len * 2 * hkv * d * B
    repeat = (hq // hkv) > 1
    eager_extra = (
        2 * scores * B  # QK^T writes scores, softmax reads them
        + 2 * scores * 4  # softmax in float32: write, and the cast back reads them
        + 2 * scores * B  # cast writes bf16 scores, PV reads them
        + (2 * batch * kv_len * 2 * hq * d * B if repeat else 0)  # repeat_kv: write + read copies
    )
    op_extra = 4 * scores * B + (2 * batch * kv_len * 2 * hq * d * B if repeat else 0)
    ops.append(Op("attention", "attention", flops=4.0 * scores * d, kv_read_bytes=kv_read,
                  in_bytes=m * hq * d * B, out_bytes=m * hq * d * B,
                  eager_kernels=5 + (2 if repeat else 0), eager_bytes=eager_extra,
                  op_kernels=3 + (1 if repeat else 0), op_bytes=op_extra))
    ops.append(gemm("o_proj", hq * d, h, s.linear_bias))
    if not s.parallel_attn:
        if tp > 1:
            ops.append(all_reduce("attn_all_reduce"))
        ops.append(elementwise("attn_residual", h, reads=2))
        ops.append(norm("mlp_norm"))
    elif s.layer_norm:
        ops.append(norm("mlp_norm"))  # Falcon-40B: a second LayerNorm on the same input
    inter = s.intermediate // tp
    if s.gated_mlp:
        ops.append(gemm("gate_up_proj", h, 2 * inter, s.linear_bias))
        ops.append(elementwise("silu_mul", inter, reads=2, kernels=2))
    else:
        ops.append(gemm("up_proj", h, inter, s.linear_bias))
        ops.append(elementwise("gelu", inter, kernels=1))
    ops.append(gemm("down_proj", inter, h, s.linear_bias))
    if tp > 1:
        ops.append(all_reduce("mlp_all_reduce"))
    ops.append(elementwise("mlp_residual", h, reads=3 if s.parallel_attn else 2,
                           kernels=2 if s.parallel_attn else 1))

    # head: embedding gather, final norm, LM head on the last `logits` positions of each
    # sequence, sampling
    last = batch * logits
    vocab_shard = s.vocab // tp if s.vocab % tp == 0 else -(-s.vocab // tp)
    head = [
        Op("embedding", "embedding", weight_bytes=m * h * B, out_bytes=act),
        Op("final_norm", "norm", flops=5.0 * last * h, weight_bytes=h * B,
           in_bytes=last * h * B, out_bytes=last * h * B, eager_kernels=5,
           eager_bytes=4 * 2 * last * h * B),
        Op("lm_head", "gemm", flops=2.0 * last * h * vocab_shard,
           weight_bytes=h * vocab_shard * B, in_bytes=last * h * B,
           out_bytes=last * vocab_shard * 4),
    ]
    if tp > 1:
        head.append(Op("logits_gather", "collective", comm_bytes=last * vocab_shard * 4,
                       in_bytes=last * vocab_shard * 4, out_bytes=last * s.vocab * 4))
    head.append(Op("sampling", "sampling", flops=2.0 * last * s.vocab,
                   in_bytes=last * s.vocab * 4, out_bytes=last * 8, eager_kernels=3,
                   eager_bytes=2 * last * s.vocab * 4))
    return Graph(shape=s, phase=phase, batch=batch, new_tokens=new_tokens, context=context, tp=tp,
                 layer_ops=tuple(ops), head_ops=tuple(head))
