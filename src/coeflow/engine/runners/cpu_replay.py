"""Decode steps on the CPU replayed from C in one call, where coeflow's AVX-512 kernels take
every layer and the head.

Such a step is the embedding and rotary rows, one `coeflow::decoder_layer` call a layer, the
final RMSNorm and the head through `coeflow::cpu_linear`. `coeflow_decode_step`
(decoder_layer.c) runs those kernels in that order from one ctypes call, on arguments laid out
once per batch shape and attach of weights: the CPU's counterpart of replaying a CUDA graph. Called
from Python instead, each op call and the call into a compiled graph run with the caches cold
from the weights the step streams, while the second thread waits. Batch shapes the kernels do not
take (more than 8 rows, fp16) get the compiled step (`CompiledRunner`)."""

from __future__ import annotations

import ctypes
from typing import Iterator

import torch
from torch import Tensor

from coeflow.engine.layers.cpu import CpuLayers, kernel_takes, layer_kernel_fits
from coeflow.engine.paged import KVPool
from coeflow.engine.runners.compiled import CompiledRunner
from coeflow.model import kernels
from coeflow.model.llama import Transformer

_p, _i, _l, _f = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float


class _LayerArgs(ctypes.Structure):
    """decoder_layer.h's coeflow_layer_args, field for field."""
    _fields_ = [("bf16", _i), ("B", _i), ("D", _i), ("H", _i), ("Hkv", _i), ("hd", _i), ("I", _i), ("S", _i),
                ("window", _l), ("eps", _f), ("nthreads", _i), ("x", _p), ("out", _p), ("ln1", _p), ("ln2", _p),
                ("qkv_w", _p * 3), ("qkv_ld", _l * 3), ("qkv_b", _p * 3), ("o_w", _p), ("o_ld", _l),
                ("gu_w", _p * 2), ("gu_ld", _l * 2), ("down_w", _p), ("down_ld", _l), ("kc", _p), ("vc", _p),
                ("c_sblk", _l), ("c_sh", _l), ("c_ss", _l), ("nblocks", _l), ("bs", _l), ("nb", _l),
                ("blocks", _p), ("q_pos", _p), ("cos", _p), ("sin", _p), ("work", _p)]


class _StepArgs(ctypes.Structure):
    """decoder_layer.h's coeflow_step_args, field for field."""
    _fields_ = [("nlayers", _i), ("layers", ctypes.POINTER(_LayerArgs)), ("bf16", _i), ("B", _i), ("D", _i),
                ("V", _i), ("hd", _i), ("S", _l), ("eps", _f), ("nthreads", _i), ("embed", _p),
                ("embed_ld", _l), ("rope_cos", _p), ("rope_sin", _p), ("norm", _p), ("head", _p),
                ("head_ld", _l), ("h", _p), ("rows", _p), ("work", _p), ("logits", _p)]


def _lib() -> ctypes.CDLL | None:
    """The kernel library with its step function declared, or None (not built, or built
    from sources whose structs these mirrors do not match)."""
    lib = kernels._lib
    if lib is None or not kernels.has_decoder_layer():
        return None
    fn = lib.coeflow_decode_step
    if fn.argtypes is None:
        for name in ("coeflow_layer_args_size", "coeflow_step_args_size", "coeflow_decode_step_work"):
            getattr(lib, name).restype = ctypes.c_long
        lib.coeflow_decode_step_work.argtypes = [_i] * 8
        for f in (fn, lib.coeflow_decode_greedy):
            f.restype = ctypes.c_int
            f.argtypes = [ctypes.POINTER(_StepArgs), _p, _p, _p]
    if (lib.coeflow_layer_args_size() != ctypes.sizeof(_LayerArgs)
            or lib.coeflow_step_args_size() != ctypes.sizeof(_StepArgs)):
        return None
    return lib


class CpuStep:
    """One model's decode step for `rows` rows whose block tables have `width` entries into a KV
    pool, as one C call. Holds raw pointers to the attached weights and to the pool (and keeps
    their storages alive): build another after the weights change. Runs on as many threads as
    torch had when it was built."""

    def __init__(self, lib: ctypes.CDLL, args: _StepArgs, layers: ctypes.Array, keep: list[Tensor],
                 logits: Tensor, width: int) -> None:
        self._fn, self._args, self._layers, self._keep = lib.coeflow_decode_step, args, layers, keep
        self._greedy_fn = lib.coeflow_decode_greedy
        self._ref = ctypes.byref(args)
        self.logits, self.width = logits, width
        self._tokens = (ctypes.c_int64 * args.B)()  # greedy's tokens: in, then the argmax out
        self._positions = (ctypes.c_int64 * args.B)()

    @classmethod
    def build(cls, model: Transformer, pool: KVPool, rows: int, width: int) -> "CpuStep | None":
        """The step of `model` (its weights as attached now) on `pool`, or None where the compiled
        step would not run every part through the kernels, so that replaying these would not be
        that step."""
        lib = _lib()
        cfg, layers = model.config, list(model.model.layers)
        keys, values = pool.keys(), pool.values()
        b, dtype, embed = rows, keys[0].dtype, model.model.embed_tokens.weight
        head = getattr(model.lm_head, "weight", None)  # None: a quantized head (the kernels read dense ones)
        if (lib is None or head is None or keys[0].device.type != "cpu"
                or not all(layer_kernel_fits(layer, b, dtype, k) for layer, k in zip(layers, keys))
                or not kernel_takes(torch.empty(b, cfg.hidden_size, dtype=dtype), (model.lm_head,))
                or embed.dtype != dtype or embed.stride(1) != 1 or model.model.norm.weight.dtype != dtype
                or not all(t.is_contiguous() and t.dtype == dtype for t in pool.rope())):
            return None
        nthreads = torch.get_num_threads()
        d, v, hd, s = cfg.hidden_size, cfg.vocab_size, cfg.head_dim, width * pool.block_size
        work = torch.empty(lib.coeflow_decode_step_work(b, d, cfg.num_heads, cfg.num_kv_heads, hd,
                                                        cfg.intermediate_size, s, nthreads))
        h = torch.empty(2, b, d, dtype=dtype)
        rope_rows = torch.empty(2, b, hd, dtype=dtype)
        logits = torch.empty(b, v)
        arr = (_LayerArgs * len(layers))()
        for a, layer, kc, vc in zip(arr, layers, keys, values):
            _layer_args(a, layer, cfg, b, s, nthreads, dtype)
            a.kc, a.vc = kc.data_ptr(), vc.data_ptr()
            a.c_sblk, a.c_sh, a.c_ss = kc.stride(0), kc.stride(1), kc.stride(2)
            a.nblocks, a.bs, a.nb = pool.num_blocks, pool.block_size, width
        args = _StepArgs(
            nlayers=len(layers), layers=arr, bf16=int(dtype == torch.bfloat16), B=b, D=d, V=v, hd=hd,
            S=pool.max_positions, eps=model.model.norm.eps, nthreads=nthreads, embed=embed.data_ptr(),
            embed_ld=embed.stride(0), rope_cos=pool.rope()[0].data_ptr(), rope_sin=pool.rope()[1].data_ptr(),
            norm=model.model.norm.weight.data_ptr(), head=head.data_ptr(), head_ld=head.stride(0),
            h=h.data_ptr(), rows=rope_rows.data_ptr(), work=work.data_ptr(), logits=logits.data_ptr())
        # the storages pointed at stay alive with this step (a Parameter would follow a re-attach)
        keep = [work, h, rope_rows, logits, *pool.rope(), *keys, *values, *(p.detach() for p in model.parameters())]
        return cls(lib, args, arr, keep, logits, width)

    def __call__(self, tokens: Tensor, q_pos: Tensor, blocks: Tensor) -> Tensor:
        """Float32 logits [B, V] of one step; tokens and q_pos [B, 1], blocks [B, width], all
        int64 on the CPU. The tensor returned is this step's own, overwritten by its next call."""
        b = self._args.B
        for t, n in ((tokens, b), (q_pos, b), (blocks, b * self.width)):
            if t.dtype != torch.int64 or not t.is_contiguous() or t.numel() != n:
                raise ValueError(f"decode step inputs: contiguous int64, {b} tokens and positions and {b} block "
                                 f"tables of {self.width}; got {t.dtype} {tuple(t.shape)}")
        self._run(self._fn, tokens.data_ptr(), q_pos.data_ptr(), blocks)
        return self.logits

    def greedy(self, blocks: Tensor, tokens: list[int], positions: list[int]) -> list[int]:
        """Greedy decoding's step, with no torch call: for `tokens` (the first rows; rows past
        them keep the tokens the last call chose) at `positions` (every row), with the rows'
        block tables `blocks` (contiguous int64 [B, width]). Returns the argmax of each of the
        first len(tokens) rows' logits (the first largest, NaN largest; `self.logits` holds
        the logits)."""
        n = len(tokens)
        if n > self._args.B or len(positions) != self._args.B:
            raise ValueError(f"decode step inputs: up to {self._args.B} tokens and {self._args.B} positions")
        self._tokens[:n] = tokens
        self._positions[:] = positions
        self._run(self._greedy_fn, self._tokens, self._positions, blocks)
        return self._tokens[:n]

    def _run(self, fn, tokens, positions, blocks: Tensor) -> None:
        if fn(self._ref, tokens, positions, blocks.data_ptr()) != 0:
            raise ValueError("decode step: a token, position or block out of the pool's range, or sizes the "
                             "kernels refuse")


def _layer_args(a: _LayerArgs, layer, cfg, rows: int, positions: int, nthreads: int, dtype: torch.dtype) -> None:
    """The weights' part of one layer's arguments."""
    at, mlp = layer.self_attn, layer.mlp
    a.bf16, a.B, a.D, a.H, a.Hkv, a.hd, a.I, a.S = (int(dtype == torch.bfloat16), rows, cfg.hidden_size,
                                                   at.num_heads, at.num_kv_heads, cfg.head_dim,
                                                   cfg.intermediate_size, positions)
    a.window, a.eps, a.nthreads = at.window or 0, layer.input_layernorm.eps, nthreads
    a.ln1, a.ln2 = layer.input_layernorm.weight.data_ptr(), layer.post_attention_layernorm.weight.data_ptr()
    for j, lin in enumerate(at.joinable()):
        a.qkv_w[j], a.qkv_ld[j] = lin.weight.data_ptr(), lin.weight.stride(0)
        a.qkv_b[j] = lin.bias.data_ptr() if lin.bias is not None else None
    a.o_w, a.o_ld = at.o_proj.weight.data_ptr(), at.o_proj.weight.stride(0)
    for j, lin in enumerate(mlp.joinable()):
        a.gu_w[j], a.gu_ld[j] = lin.weight.data_ptr(), lin.weight.stride(0)
    a.down_w, a.down_ld = mlp.down_proj.weight.data_ptr(), mlp.down_proj.weight.stride(0)


class CpuReplayRunner(CompiledRunner):
    """The C replay for every batch shape the kernels take, the compiled step (called without
    Dynamo after a shape's first step) for the rest."""

    name = "cpu-replay"

    def __init__(self, model: Transformer) -> None:
        super().__init__(model, CpuLayers(kernels=True), direct=True)
        self._replays: dict[tuple, CpuStep | None] = {}  # by (pool, rows, table width)
        self.replayed_steps = 0  # steps run from C (the tests check the path is taken)

    def attach(self, weights: dict[str, Tensor]) -> tuple:
        self._replays.clear()  # they point at the old weights
        return super().attach(weights)

    def _replay(self, pool: KVPool, rows: int, width: int) -> CpuStep | None:
        key = (id(pool), rows, width)
        if key not in self._replays:
            self._replays[key] = CpuStep.build(self.model, pool, rows, width)
        return self._replays[key]

    def step(self, pool: KVPool, tokens: Tensor, positions: Tensor, blocks: Tensor) -> Tensor:
        replay = self._replay(pool, *blocks.shape)
        if replay is None:
            return super().step(pool, tokens, positions, blocks)
        self.replayed_steps += 1
        return replay(tokens, positions, blocks)

    def greedy(self, pool: KVPool, tokens: list[int], positions: list[int], blocks: Tensor,
               steps: int) -> Iterator[list[int]]:
        """Each step chooses its own tokens in C: no torch call between two steps."""
        replay = self._replay(pool, *blocks.shape)
        if replay is None:
            yield from super().greedy(pool, tokens, positions, blocks, steps)
            return
        blocks = blocks.contiguous()
        n = len(tokens)
        pos = list(positions) + [0] * (blocks.shape[0] - n)
        chosen = list(tokens)
        for _ in range(steps):
            self.replayed_steps += 1
            chosen = replay.greedy(blocks, chosen, pos)
            yield chosen
            pos[:n] = [p + 1 for p in pos[:n]]
