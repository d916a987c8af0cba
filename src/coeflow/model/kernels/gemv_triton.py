"""The Triton kernel and op behind `gpu_gemv` (which see), in a module of their own so that
Triton is imported only when a GPU product needs it."""

import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, K, stride_wn,
                 HAS_BIAS: tl.constexpr, EVEN: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        if EVEN:  # N and K multiples of the tile: no masks
            x = tl.load(x_ptr + rk)
            w = tl.load(w_ptr + rn[:, None] * stride_wn + rk[None, :], eviction_policy="evict_first")
        else:
            x = tl.load(x_ptr + rk, mask=rk < K, other=0.0)
            w = tl.load(w_ptr + rn[:, None] * stride_wn + rk[None, :],
                        mask=(rn[:, None] < N) & (rk[None, :] < K), other=0.0,
                        eviction_policy="evict_first")
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty), mask=rn < N)

@triton_op("coeflow::gpu_gemv", mutates_args=())
def gpu_gemv(x: Tensor, w: Tensor, b: Tensor | None, block_n: int, block_k: int,
             num_warps: int, num_stages: int) -> Tensor:
    """x [1, K] contiguous, w [N, K] with unit column stride -> [1, N] in x's dtype."""
    n, k = w.shape
    y = x.new_empty(1, n)
    even = n % block_n == 0 and k % block_k == 0
    wrap_triton(_gemv_kernel)[(triton.cdiv(n, block_n),)](
        x, w, w if b is None else b, y, n, k, w.stride(0), HAS_BIAS=b is not None, EVEN=even,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps, num_stages=num_stages)
    return y


@triton.jit
def _packed_gemv_kernel(x_ptr, w_ptr, s_ptr, y_ptr, N, K, stride_wn, GROUPS,
                        BITS: tl.constexpr, GROUP: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # w: compressed-tensors pack-quantized int32 words, 32 // BITS values a word, element k of a
    # row at bits (k % per_word) * BITS of word k // per_word, stored as q + 2^(BITS-1)
    PER_WORD: tl.constexpr = 32 // BITS
    WORDS: tl.constexpr = BLOCK_K // PER_WORD
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    shifts = tl.arange(0, PER_WORD) * BITS
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        rw = k0 // PER_WORD + tl.arange(0, WORDS)
        words = tl.load(w_ptr + rn[:, None] * stride_wn + rw[None, :],
                        mask=(rn[:, None] < N) & (rw[None, :] < K // PER_WORD), other=0,
                        eviction_policy="evict_first")
        q = (words[:, :, None] >> shifts[None, None, :]) & ((1 << BITS) - 1)
        q = tl.reshape(q, (BLOCK_N, BLOCK_K)).to(tl.float32) - (1 << (BITS - 1))
        s = tl.load(s_ptr + rn[:, None] * GROUPS + rk[None, :] // GROUP,
                    mask=(rn[:, None] < N) & (rk[None, :] < K), other=0.0).to(tl.float32)
        x = tl.load(x_ptr + rk, mask=rk < K, other=0.0).to(tl.float32)
        acc += q * s * x[None, :]
    y = tl.sum(acc, axis=1)
    tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty), mask=rn < N)


@triton_op("coeflow::gpu_packed_gemv", mutates_args=())
def gpu_packed_gemv(x: Tensor, packed: Tensor, scale: Tensor, bits: int, block_n: int, block_k: int,
                    num_warps: int, num_stages: int) -> Tensor:
    """x [1, K] contiguous, `packed` int32 [N, K * bits / 32] with unit column stride, `scale`
    [N, groups] contiguous -> [1, N] in x's dtype: x @ w.T, w read packed (8 or 4 bits)."""
    n, k = packed.shape[0], x.shape[1]
    y = x.new_empty(1, n)
    wrap_triton(_packed_gemv_kernel)[(triton.cdiv(n, block_n),)](
        x, packed, scale, y, n, k, packed.stride(0), scale.shape[1], BITS=bits, GROUP=k // scale.shape[1],
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps, num_stages=num_stages)
    return y
