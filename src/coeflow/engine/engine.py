"""Generation for one model shape: prefill, then decode on a preallocated KV cache.

An Engine owns one skeleton (parameters without data of their own) per model shape. Loading
an expert points the skeleton's parameters at that expert's tensors; the compiled decode
step takes the skeleton as an input, so every expert of that shape reuses the same compiled
graph: a switch never recompiles."""

from __future__ import annotations

import itertools
import logging
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from coeflow.engine.cpu_step import CpuStep
from coeflow.engine.kv_cache import KVCache
from coeflow.engine.sampling import InvalidRequestError, SamplingParams, sample
from coeflow.engine.text import TextStream
from coeflow.model import (ModelConfig, Transformer, attach_weights, build_skeleton, kernels,
                           load_weights, parse_dtype, resolve_device)
from coeflow.model import llama
from coeflow.model.kernels import gpu_gemv

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
MIN_SEQ_BUCKET = 128
# Bytes of KV caches an engine keeps across buckets (Engine._cache). Outside the store's
# device budget, which leaves a tenth of the free GPU memory for caches and activations.
KV_CACHE_BUDGET = 1 << 30
# Compiled variants allowed per code object (each engine has its own: `_own_step`); every
# (batch, length) bucket takes one, and past torch's default of 8 a fullgraph compile fails
# and the engine falls back to eager.
RECOMPILE_LIMIT = 256
# Devices where greedy decoding runs a step ahead of the host (_GreedyAhead): those that
# compute asynchronously. A CPU computes on the calling thread, so there is nothing to overlap.
RUN_AHEAD_ON = ("cuda",)


def _bucket(n: int, buckets: tuple[int, ...]) -> int:
    for b in buckets:
        if n <= b:
            return b
    raise InvalidRequestError(f"batch of {n} is larger than the engine's maximum {buckets[-1]}")


def _seq_bucket(n: int) -> int:
    """Cache length: next power of two, so few distinct shapes (and compiled graphs) exist."""
    s = MIN_SEQ_BUCKET
    while s < n:
        s *= 2
    return s


def _decode_step(model: Transformer, cache: KVCache, tokens: Tensor, q_pos: Tensor,
                 slots: Tensor) -> Tensor:
    """One token for every row: the function that is compiled. Returns logits [B, V]."""
    cache.slot_pos.index_copy_(1, slots, q_pos)
    logits = model.forward_cached(tokens, q_pos, cache.keys(), cache.values(), cache.slot_pos, slots,
                                  rope=cache.rope())
    return logits[:, -1]


_engines_made = itertools.count()


def _own_step() -> Callable[..., Tensor]:
    """`_decode_step` under a code object of its own, so that each engine's compiled variants
    sit in their own Dynamo cache: a call checks only its engine's entries, and none of
    another engine's can be picked for it.

    That is what lets the compiled step skip Dynamo's guards on the skeleton (~1,600 guards
    on module structure and parameters, ~0.4 ms a step on the medium model): within one engine
    the skeleton's structure never changes, attached weights always have its shapes and
    dtypes (`load` checks the shape), and weights laid out otherwise (other strides) get a
    step compiled for them (`set_weights`). The guards kept are those on the step's other
    inputs (the KV cache and the token tensors: batch and length buckets) and global state."""
    code = _decode_step.__code__.replace(co_name=f"_decode_step_{next(_engines_made)}")
    return types.FunctionType(code, _decode_step.__globals__, code.co_name)


def compile_options() -> dict:
    """`torch.compile` options of the decode step. Guards: see `_own_step`. Inductor's own
    check of every input's size and stride (~190 a step, 0.17 ms of a medium bf16 step)
    repeats Dynamo's guards on the cache and token inputs and `Engine.set_weights`' layout
    check on the weights: off. On CUDA the engine captures CUDA graphs of the compiled step
    itself (`_CudaGraphs`), so Inductor's own (mode "reduce-overhead") stay off."""
    options: dict = {"size_asserts": False}
    if hasattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe"):  # torch with guard filters
        options["guard_filter_fn"] = _skip_skeleton_guards
    return options


def _skip_skeleton_guards(entries: list) -> list[bool]:
    """Dynamo guard filter for `_own_step`: drop the guards on the `model` argument (the
    skeleton), keep the rest. The KV cache is an nn.Module too, and the guards on its
    tensors' shapes are what tell the (batch, length) buckets apart, so torch's
    `skip_guard_on_all_nn_modules_unsafe` would let one bucket's graph run on another's."""
    return [not (e.name == "model" or e.name.startswith(("model.", "model[", "dict(type(model)")))
            for e in entries]


@dataclass
class Completion:
    prompt_tokens: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None  # "stop" (EOS or stop string) or "length"
    prefill_s: float = 0.0
    decode_s: float = 0.0


@dataclass
class Delta:
    """What one decode step produced for one sequence of the batch."""
    index: int
    token_id: int
    text: str
    finish_reason: str | None
    completion_tokens: int  # generated so far (an EOS that ends it is not counted)


class Engine:
    def __init__(self, cfg: ModelConfig, dtype: str | torch.dtype = "fp32",
                 device: str | torch.device = "auto", fused: bool = True, cpu_kernel: bool = True,
                 kv_cache_budget: int = KV_CACHE_BUDGET, triton_gemv: bool = True, cpu_step: bool = True):
        """`fused`: compile the decode step. `cpu_kernel`: on the CPU, let the compiled step
        use coeflow's AVX-512 kernels (linear layers, whole decoder layers) where they build
        and the CPU supports them (else, and with COEFLOW_CPU_KERNEL=0, Inductor's code; see
        coeflow.model.kernels).
        `kv_cache_budget`: bytes of KV caches kept for the batch and length buckets met so
        far (`_cache`); the one in use is always allocated, whatever its size. `triton_gemv`:
        on a GPU, let the compiled step run one-row products through coeflow's Triton kernel
        for the weight shapes where it measures faster than cuBLAS (`llama.choose_gemv`; else,
        without Triton and with COEFLOW_GPU_GEMV=0, cuBLAS). `cpu_step`: on the CPU, where
        the kernels take every layer and the head, replay the compiled step's kernels from one
        C call after a cache's first step (coeflow.engine.cpu_step)."""
        self.cfg = cfg
        self.dtype = parse_dtype(dtype)
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = build_skeleton(cfg, self.device)
        self.fused = fused
        self.loaded: str | None = None  # name of the weights now attached
        self._attached: dict[str, Tensor] = {}  # the tensors now attached, by name
        self._caches: dict[tuple[int, int], KVCache] = {}  # by bucket, least recently used first
        self.kv_cache_budget = kv_cache_budget
        # whether compiled steps call the kernel (decided once: the graph is traced with it)
        self.cpu_kernel = fused and cpu_kernel and self.device.type == "cpu" and kernels.load()
        self.triton_gemv = fused and triton_gemv and gpu_gemv.available(self.device)
        llama.use_cpu_kernel(self.model, self.cpu_kernel)
        if fused:
            dynamo = torch._dynamo.config
            dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
        self._step: Callable[..., Tensor] = _decode_step  # the compiled one once weights attach
        # fused: one compiled step per layout of the weights (shapes, strides, dtypes, device)
        self._steps: dict[tuple, Callable[..., Tensor]] = {}
        self._recorders: dict[tuple, _Recorder] = {}  # fused on the CPU: each step's graphs
        self._recorder: _Recorder | None = None  # the one of the step in use
        # fused on CUDA: the compiled step replayed as CUDA graphs, one per bucket and weights
        self._graphs = _CudaGraphs(self.device) if fused and self.device.type == "cuda" else None
        # fused on the CPU: the compiled step's graph called without Dynamo (_DirectCalls;
        # its backend needs torch's Inductor wrapper, private API: without it, Dynamo's calls)
        self._direct = (_DirectCalls(replay=cpu_step and self.cpu_kernel) if fused and self.device.type == "cpu"
                        and hasattr(torch, "_TorchCompileInductorWrapper") else None)

    @property
    def cuda_graphs(self) -> list["torch.cuda.CUDAGraph"]:
        """The CUDA graphs the decode step is replayed from now (none off CUDA, unfused, or
        after a capture failed and the engine went on without them)."""
        return [] if self._graphs is None else [g.graph for g in self._graphs.captured()]

    @property
    def kv_buckets(self) -> list[tuple[int, int]]:
        """(batch, length) buckets whose KV caches are kept now, least recently used first."""
        return list(self._caches)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> "Engine":
        engine = cls(ModelConfig.from_dir(path), **kwargs)
        engine.load(path)
        return engine

    def load(self, path: str | Path) -> None:
        """Read a checkpoint of this engine's shape and attach it."""
        cfg = ModelConfig.from_dir(path)
        if cfg.shape_key != self.cfg.shape_key:
            raise InvalidRequestError(f"{path}: checkpoint shape differs from this engine's")
        self.set_weights(load_weights(path, cfg, self.dtype, self.device), name=str(path))

    def set_weights(self, weights: dict[str, Tensor], name: str | None = None) -> None:
        """Attach tensors already in memory (the store's host or device tier): no copy. The
        tensors attached already (a batch on the expert of the batch before) are left as they
        are: attaching, joining and the layout key cost ~1.4 ms on the medium model."""
        if len(weights) == len(self._attached) and all(
                self._attached.get(k) is t for k, t in weights.items()):
            self.loaded = name
            return
        if self._direct is not None:  # its input lists and replays point at the old weights
            self._direct.use_weights()
        joined = attach_weights(self.model, weights)
        self.loaded, self._attached = name, dict(weights)
        if self.fused:
            # The compiled step skips Dynamo's guards on the weights (`_own_step`), and its code
            # assumes their strides and which groups are joined: weights laid out otherwise get
            # a step of their own (kept, so experts of two layouts alternating do not recompile).
            items = sorted(weights.items())
            if self.device.type not in llama.JOINED_PRODUCTS_ON:
                joined = ()  # the step does not read the joined weights here
            gemvs = llama.choose_gemv(self.model) if self.triton_gemv else ()
            layout = (tuple((k, t.shape, t.stride(), t.dtype, t.device) for k, t in items), joined, gemvs)
            if layout not in self._steps:
                if self._steps:
                    log.info("weights laid out unlike earlier experts'; compiling a decode step for them")
                options, backend = compile_options(), "inductor"
                if self._direct is not None:  # the recorder runs Inductor with its options itself
                    guards = {k: options.pop(k) for k in ("guard_filter_fn",) if k in options}
                    backend, options = _Recorder(options), guards
                    self._recorders[layout] = backend
                self._steps[layout] = torch.compile(_own_step(), fullgraph=True, dynamic=False,
                                                    backend=backend, options=options)
            self._step = self._steps[layout]
            self._recorder = self._recorders.get(layout)
            if self._graphs is not None:
                self._graphs.use_weights(layout, tuple(t.data_ptr() for _, t in items))

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                 eos_ids: set[int] | frozenset[int] = frozenset(),
                 detokenize: Callable[[list[int]], str] | None = None) -> list[Completion]:
        """Run to completion; returns one Completion per prompt."""
        completions: list[Completion] | None = None
        for completions, _ in self._run(prompts, params, eos_ids, detokenize):
            pass
        assert completions is not None
        return completions

    def stream(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
               eos_ids: set[int] | frozenset[int] = frozenset(),
               detokenize: Callable[[list[int]], str] | None = None,
               cancelled: Callable[[int], bool] | None = None) -> Iterator[list[Delta]]:
        """Yield the deltas of each step (prefill's first token, then each decode step).
        `cancelled(i)` is asked before each step: a cancelled sequence finishes at once
        (reason "cancelled"), and the batch stops when none is left running."""
        with torch.inference_mode():
            for _, deltas in self._run(prompts, params, eos_ids, detokenize, cancelled):
                if deltas:
                    yield deltas

    def _cache(self, batch: int, seq: int) -> KVCache:
        """The KV cache of a (batch, length) bucket. Caches of buckets used before are kept,
        least recently used first out, while they fit `kv_cache_budget` together with the
        one asked for, so a server whose batches change size neither reallocates them nor,
        on CUDA, captures their graphs again (a capture is a real step and more, on the
        request path)."""
        key = (batch, seq)
        cache = self._caches.pop(key, None)
        if cache is None:
            need = KVCache.bytes_for(self.cfg, batch, seq, self.dtype)
            kept = sum(c.nbytes for c in self._caches.values())
            while self._caches and kept + need > self.kv_cache_budget:
                kept -= self._drop_oldest_cache()
            try:
                cache = KVCache(self.cfg, batch, seq, self.dtype, self.device)
            except torch.OutOfMemoryError:
                if not self._caches:
                    raise
                log.warning("out of device memory for a KV cache of batch %d x %d tokens; dropping "
                            "the %d kept for other buckets", batch, seq, len(self._caches))
                while self._caches:
                    self._drop_oldest_cache()
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                cache = KVCache(self.cfg, batch, seq, self.dtype, self.device)
        self._caches[key] = cache  # (re)inserted last: most recently used
        cache.reset()
        return cache

    def _drop_oldest_cache(self) -> int:
        """Let the least recently used KV cache go, with its graphs; returns its bytes."""
        old = self._caches.pop(next(iter(self._caches)))
        if self._graphs is not None:
            self._graphs.forget(old)  # they point into it
        if self._direct is not None:
            self._direct.forget(old)
        return old.nbytes

    def _run(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
             eos_ids, detokenize, cancelled: Callable[[int], bool] | None = None,
             ) -> Iterator[tuple[list[Completion], list[Delta]]]:
        if not self._attached:
            raise InvalidRequestError("no weights loaded into the engine")
        n = len(prompts)
        if n == 0:
            raise InvalidRequestError("no prompts")
        plist = list(params) if isinstance(params, list) else [params] * n
        if len(plist) != n:
            raise InvalidRequestError("one SamplingParams per prompt, or one for all")
        for p in prompts:
            if not p:
                raise InvalidRequestError("empty prompt: at least one token is needed")
            if max(p) >= self.cfg.vocab_size or min(p) < 0:
                raise InvalidRequestError(f"token id out of range for vocabulary {self.cfg.vocab_size}")
        longest = max(len(p) for p in prompts)
        steps = max(p.max_tokens for p in plist)
        need = longest + steps
        if need > self.cfg.max_position_embeddings:
            raise InvalidRequestError(
                f"prompt ({longest} tokens) + max_tokens ({steps}) exceeds the model's context "
                f"of {self.cfg.max_position_embeddings} tokens")
        dev = self.device
        cache = self._cache(_bucket(n, BATCH_BUCKETS), _seq_bucket(need))
        b = cache.batch

        # Prefill: prompts left-padded to the longest; padding slots stay empty (-1).
        tokens = torch.zeros(b, longest, dtype=torch.long)
        q_pos = torch.zeros(b, longest, dtype=torch.long)
        slot_pos = torch.full((b, longest), -1, dtype=torch.long)
        lengths = torch.tensor([len(p) for p in prompts] + [longest] * (b - n))
        for i, p in enumerate(prompts):
            off = longest - len(p)
            tokens[i, off:] = torch.tensor(p)
            q_pos[i, off:] = slot_pos[i, off:] = torch.arange(len(p))
        for i in range(n, b):  # unused rows: harmless copies of position 0.. so nothing is empty
            q_pos[i] = slot_pos[i] = torch.arange(longest)
        slots = torch.arange(longest, device=dev)
        cache.slot_pos[:, :longest] = slot_pos.to(dev)
        t0 = time.perf_counter()
        logits = self.model.forward_cached(tokens.to(dev), q_pos.to(dev), cache.keys(), cache.values(),
                                           cache.slot_pos, slots, last_only=True, rope=cache.rope())[:, -1]

        gens = [p.generator() for p in plist]
        texts = [TextStream(detokenize, p.stop) if detokenize else None for p in plist]
        done = [Completion(prompt_tokens=len(p)) for p in prompts]
        eos = set(eos_ids)
        starts = lengths.tolist()  # each row's position at decode step 0: then one on a step
        next_tok = torch.zeros(b, 1, dtype=torch.long)
        step_t = t0
        all_greedy = all(p.greedy for p in plist)
        replayed: list[int] | None = None  # the next tokens, where the C replay chose them
        ahead = (_GreedyAhead(self, cache, logits, lengths, longest)
                 if all_greedy and dev.type in RUN_AHEAD_ON else None)
        try:
            for step in range(steps):
                if ahead is not None:
                    chosen = ahead.tokens(n, launch_next=step + 1 < steps)
                elif replayed is not None:  # chosen by the C step that made the logits
                    chosen = replayed
                elif all_greedy and dev.type == "cpu":  # the kernel reads bf16 logits as they are
                    chosen = kernels.argmax_rows(logits if n == b else logits[:n])
                else:
                    logits_cpu = logits.float().cpu()
                    chosen = kernels.argmax_rows(logits_cpu[:n]) if all_greedy else [
                        sample(logits_cpu[i], plist[i], gens[i]) for i in range(n)]
                now = time.perf_counter()
                deltas: list[Delta] = []
                for i, c in enumerate(done):
                    if c.finish_reason is not None:
                        continue
                    if cancelled is not None and cancelled(i):
                        c.finish_reason = "cancelled"
                        continue
                    tok = chosen[i]
                    if step == 0:
                        c.prefill_s = now - t0
                    else:
                        c.decode_s += now - step_t
                    reason = None
                    if tok in eos and not plist[i].ignore_eos:
                        reason = "stop"
                        delta = texts[i].flush() if texts[i] else ""
                    else:
                        c.token_ids.append(tok)
                        delta = texts[i].push(tok) if texts[i] else ""
                        if texts[i] and texts[i].stopped:
                            reason = "stop"
                        elif len(c.token_ids) >= plist[i].max_tokens:
                            reason = "length"
                            delta += texts[i].flush() if texts[i] else ""
                    c.finish_reason = reason
                    if texts[i]:
                        c.text = texts[i].text
                    deltas.append(Delta(i, tok, delta, reason, len(c.token_ids)))
                step_t = now
                live = [c.finish_reason is None for c in done]
                yield done, deltas
                if not any(live):
                    break
                if ahead is not None:
                    continue
                if all_greedy and self._direct is not None:  # through the C replay, where built
                    replayed = self._direct.greedy(cache, longest + step, chosen, [p + step for p in starts])
                    if replayed is not None:
                        continue
                next_tok[:n, 0] = torch.tensor(chosen)
                slot = torch.tensor([longest + step], device=dev)
                q_pos = torch.tensor([p + step for p in starts])[:, None]
                logits = self._decode(cache, next_tok.to(dev), q_pos.to(dev), slot)
        finally:
            if ahead is not None:
                ahead.finish()

    def _decode(self, cache: KVCache, tokens: Tensor, q_pos: Tensor, slot: Tensor) -> Tensor:
        if self._graphs is not None and self._step is not _decode_step:
            try:
                return self._graphs.run(self._step, self.model, cache, tokens, q_pos, slot)
            except Exception:  # capture refused: the compiled step alone still runs
                log.warning("CUDA graph capture of the decode step failed; running it without",
                            exc_info=True)
                self._graphs = None
        try:
            if self._direct is not None and self._recorder is not None and self._step is not _decode_step:
                return self._direct.run(self._step, self._recorder, self.model, cache, tokens, q_pos, slot)
            return self._step(self.model, cache, tokens, q_pos, slot)
        except Exception as e:  # a compiler missing or failing must not stop generation
            if self._step is _decode_step:
                raise
            log.warning("compiled decode step failed (%s: %s); falling back to eager",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "", exc_info=True)
            self._step, self.fused, self._graphs, self._direct = _decode_step, False, None, None
            return self._step(self.model, cache, tokens, q_pos, slot)


@dataclass
class _Captured:
    graph: "torch.cuda.CUDAGraph"
    tokens: Tensor  # the graph's inputs and output, at fixed addresses
    q_pos: Tensor
    slot: Tensor
    logits: Tensor


class _CudaGraphs:
    """The compiled decode step replayed as CUDA graphs: a step is three small copies into
    the graph's inputs and one replay, with no Python per kernel and no Dynamo guards. A
    graph holds the addresses it was captured with, so there is one per KV cache (batch and
    length bucket) and per set of weight addresses (a device-tier slot): a switch into a slot
    seen before replays, a new one is captured (a real step's time and the capture, on the
    request path). The engine keeps the KV caches of recent buckets within a byte budget
    (`Engine._cache`); a cache it lets go takes its graphs with it. Captured by the engine
    rather than by Inductor's CUDA-graph trees (mode "reduce-overhead"), which add Python
    bookkeeping to every step and under which, on torch 2.11, every engine after the first in
    a `bench serve` process failed with an AssertionError and fell back to eager."""

    MAX_GRAPHS = 64  # least recently used dropped beyond this (each keeps a private memory pool)

    def __init__(self, device: torch.device) -> None:
        # capture cannot use the default stream; one side stream for all of them, since
        # cuBLAS keeps a workspace per stream it has run on
        self._side = torch.cuda.Stream(device)
        self._graphs: dict[tuple, _Captured] = {}
        self._weight_ids: dict[tuple, int] = {}
        self._weights = -1

    def use_weights(self, layout: tuple, addresses: tuple[int, ...]) -> None:
        """The weights now attached: their layout and data pointers pick the graphs."""
        self._weights = self._weight_ids.setdefault((layout, addresses), len(self._weight_ids))

    def forget(self, cache: KVCache) -> None:
        """Drop the graphs captured on `cache` (called while it is still alive, so that its
        id is not yet another cache's)."""
        for key in [k for k in self._graphs if k[0] == id(cache)]:
            del self._graphs[key]

    def captured(self) -> list[_Captured]:
        return list(self._graphs.values())

    def run(self, step: Callable[..., Tensor], model: Transformer, cache: KVCache, tokens: Tensor,
            q_pos: Tensor, slot: Tensor) -> Tensor:
        key = (id(cache), self._weights)
        g = self._graphs.pop(key, None)
        if g is None:
            g = self._capture(self._side, step, model, cache, tokens, q_pos, slot)
            if len(self._graphs) >= self.MAX_GRAPHS:  # the least recently used goes
                del self._graphs[next(iter(self._graphs))]
        self._graphs[key] = g  # (re)inserted last: most recently used
        g.tokens.copy_(tokens)
        g.q_pos.copy_(q_pos)
        g.slot.copy_(slot)
        with torch.cuda.device(self._side.device):  # replay launches on the current device's stream
            g.graph.replay()
        return g.logits

    @staticmethod
    def _capture(side: "torch.cuda.Stream", step: Callable[..., Tensor], model: Transformer, cache: KVCache,
                 tokens: Tensor, q_pos: Tensor, slot: Tensor) -> _Captured:
        tokens, q_pos, slot = tokens.clone(), q_pos.clone(), slot.clone()
        main = torch.cuda.current_stream(side.device)  # the engine's device, whichever is current
        side.wait_stream(main)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(side):
            # once for real first: compiles on first use, and its cache writes are the ones
            # the replay makes again
            step(model, cache, tokens, q_pos, slot)
            side.synchronize()
            # `torch.cuda.graph` would also synchronize the whole device and empty the
            # allocator's cache on every capture; a capture per new weights address can't
            # afford that on the request path.
            # thread_local: the store's loader threads may copy other experts meanwhile.
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                logits = step(model, cache, tokens, q_pos, slot)
            finally:
                graph.capture_end()
        main.wait_stream(side)
        return _Captured(graph, tokens, q_pos, slot, logits)


@dataclass
class _Graph:
    """One graph Inductor compiled for a decode step: the callable Dynamo calls, and where
    Dynamo takes each of its inputs from (its source names, `L['cache']._buffers['k0']`...)."""
    fn: Callable[..., list[Tensor]]
    sources: list[str]


class _Recorder:
    """torch.compile backend: Inductor with `options` (Inductor's own; Dynamo's guard filter
    goes to torch.compile), as `backend="inductor"` runs it, which also keeps each graph it
    compiles (by the key the engine sets before calling the step), so that `_DirectCalls` can
    call it without Dynamo."""

    def __init__(self, options: dict) -> None:
        self.inductor = torch._TorchCompileInductorWrapper(None, options, False)
        self.key: tuple | None = None
        self.graphs: dict[tuple, _Graph] = {}

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list, **_) -> Callable:
        fn = self.inductor(gm, example_inputs)
        try:
            sources = [n.meta["grapharg"].source.name for n in gm.graph.nodes if n.op == "placeholder"]
            outputs = gm.graph.output_node().args[0]
            one_output = isinstance(outputs, (tuple, list)) and len(outputs) == 1
        except (AttributeError, KeyError, TypeError):  # another torch's internals: Dynamo only
            sources, one_output = [], False
        if self.key is not None and one_output and all(isinstance(s, str) for s in sources):
            self.graphs[self.key] = _Graph(fn, sources)
        return fn


@dataclass
class _Direct:
    fn: Callable[..., list[Tensor]]
    args: list[Tensor]  # the graph's inputs: the skeleton's weights, the cache, and these
    tokens: Tensor
    q_pos: Tensor
    slot: Tensor

    def __call__(self, tokens: Tensor, q_pos: Tensor, slot: Tensor) -> Tensor:
        self.tokens.copy_(tokens)
        self.q_pos.copy_(q_pos)
        self.slot.copy_(slot)
        return self.fn(*self.args)[0]


class _DirectCalls:
    """The compiled decode step on the CPU, called without Dynamo. Each call through Dynamo
    evaluates its guards (~250 checks) and collects the step's inputs from the module tree (141
    on the medium model, 111 of them weights at seven dictionary lookups each); with the caches
    cold from the weights a step streams, that took 0.1-0.5 ms of a 4-6 ms medium step while the
    second thread waited (BENCHMARKS.md, decode, session 10). As with CUDA graphs
    (`_CudaGraphs`), the first step of a KV cache (a batch and length bucket) runs through
    Dynamo, which compiles on first use and picks the graph; later steps copy the tokens
    into that graph's own inputs and call it with the input list built once. What the
    guards would check holds by construction: the list is rebuilt for each cache and each
    attach of weights (`use_weights`), the weights' layout has a step of its own
    (`Engine.set_weights`), and the inputs' shapes are the cache's.

    With `replay`, where the kernels take the whole model, later steps skip Python between
    the graph's op calls too: the same kernels run from one C call (cpu_step.CpuStep)."""

    MAX = 64  # the oldest dropped beyond this (each holds a cache's tensors)

    def __init__(self, replay: bool = True) -> None:
        self.replay = replay
        self._calls: dict[int, _Direct | CpuStep] = {}  # by id(cache)
        self.direct_steps = 0  # steps called directly so far (tests check the path is taken)
        self.replayed_steps = 0  # of which replayed from C

    def use_weights(self) -> None:
        """New weights attached: the input lists hold the old ones."""
        self._calls.clear()

    def forget(self, cache: KVCache) -> None:
        self._calls.pop(id(cache), None)

    def greedy(self, cache: KVCache, slot: int, tokens: list[int], positions: list[int]) -> list[int] | None:
        """Greedy decoding's step through the C replay built for `cache` and the weights
        attached now (`CpuStep.greedy`: the step chooses the next tokens itself, and the
        engine's loop makes no torch call a token); None where there is none."""
        replay = self._calls.get(id(cache))
        if not isinstance(replay, CpuStep):
            return None
        self.direct_steps += 1
        self.replayed_steps += 1
        return replay.greedy(slot, tokens, positions)

    def run(self, step: Callable[..., Tensor], recorder: _Recorder, model: Transformer, cache: KVCache,
            tokens: Tensor, q_pos: Tensor, slot: Tensor) -> Tensor:
        d = self._calls.get(id(cache))
        if d is not None:
            self.direct_steps += 1
            self.replayed_steps += isinstance(d, CpuStep)
            return d(tokens, q_pos, slot)
        key = (tuple(tokens.shape), tuple(q_pos.shape), tuple(slot.shape), tuple(cache.slot_pos.shape))
        recorder.key = key
        try:
            logits = step(model, cache, tokens, q_pos, slot)  # compiles on first use
        finally:
            recorder.key = None
        graph = recorder.graphs.get(key)
        replay = CpuStep.build(model, cache) if self.replay and graph is not None else None
        if replay is not None:
            self._keep(cache, replay)
        elif graph is not None:
            tokens, q_pos, slot = tokens.clone(), q_pos.clone(), slot.clone()
            scope = {"L": {"model": model, "cache": cache, "tokens": tokens, "q_pos": q_pos, "slots": slot},
                     "G": _decode_step.__globals__, "__builtins__": {}}
            try:  # Dynamo's source names are Python expressions over the frame's locals and globals
                args = [eval(s, scope) for s in graph.sources]  # noqa: S307 (names Dynamo wrote)
            except Exception:
                log.debug("decode step: an input's source did not evaluate; staying with Dynamo",
                          exc_info=True)
                return logits
            if all(isinstance(a, Tensor) for a in args):
                self._keep(cache, _Direct(graph.fn, args, tokens, q_pos, slot))
        return logits

    def _keep(self, cache: KVCache, call: _Direct | CpuStep) -> None:
        if len(self._calls) >= self.MAX:
            del self._calls[next(iter(self._calls))]
        self._calls[id(cache)] = call


class _GreedyAhead:
    """Greedy decoding on a GPU with the device one step ahead of the host. Each step's
    tokens are chosen on the device (argmax) and fed straight to the next step, which is
    launched before the host waits for this step's tokens; so the host's per-step work
    (guards, CUDA-graph bookkeeping, detokenising, stop checks) overlaps the device's
    instead of adding to it. The cost: one step computed past the end when every sequence
    stops early, whose result is dropped."""

    def __init__(self, engine: Engine, cache: KVCache, logits: Tensor, lengths: Tensor, longest: int):
        dev = logits.device
        self.engine, self.cache = engine, cache
        self.tok = logits.argmax(-1)
        self.pos = lengths[:, None].to(dev)
        self.slot = torch.tensor([longest], device=dev)
        cuda = dev.type == "cuda"
        self.host = torch.empty(self.tok.shape, dtype=torch.long, pin_memory=cuda)
        self.stream = torch.cuda.current_stream(dev) if cuda else None  # where tok is computed
        self.copied = torch.cuda.Event() if cuda else None

    def tokens(self, n: int, launch_next: bool) -> list[int]:
        """This step's first n tokens; with `launch_next`, the next step is queued first."""
        self.host.copy_(self.tok, non_blocking=True)
        if self.copied is not None:
            self.copied.record(self.stream)
        if launch_next:
            logits = self.engine._decode(self.cache, self.tok[:, None], self.pos, self.slot)
            self.tok = logits.argmax(-1)  # read before the next replay reuses the graph's output
            self.pos += 1
            self.slot += 1
        if self.copied is not None:
            self.copied.synchronize()
        return self.host[:n].tolist()

    def finish(self) -> None:
        """Wait for a step still queued (one launched past the end when every sequence
        stopped early): it reads the expert's weights, which the store may overwrite as soon
        as the caller releases them."""
        if self.stream is not None:
            self.stream.synchronize()
