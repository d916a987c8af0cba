"""Generation for one model shape: prefill, then decode steps, the keys and values in the
engine's paged KV pool."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from coeflow.engine.paged import KVPool
from coeflow.engine.runners import StepRunner, choose_runner, prefill_layers
from coeflow.engine.runners.base import step_tokens
from coeflow.engine.sampling import InvalidRequestError, SamplingParams, sample
from coeflow.engine.text import TextStream
from coeflow.model import ModelConfig, attach_weights, build_skeleton, load_weights, parse_dtype, resolve_device
from coeflow.model.llama import Transformer

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
MIN_TABLE_WIDTH = 8  # block table widths are powers of two from this: few compiled shapes
# Bytes of the engine's KV pool (at most; a small model's pool is smaller: KVPool.for_budget).
# Outside the store's device budget, which leaves a tenth of the free GPU memory for the pool
# and activations.
KV_CACHE_BUDGET = 1 << 30


def _bucket(n: int, buckets: tuple[int, ...]) -> int:
    for b in buckets:
        if n <= b:
            return b
    raise InvalidRequestError(f"batch of {n} is larger than the engine's maximum {buckets[-1]}")


def _width(blocks: int) -> int:
    """A block table's width: the next power of two, so few distinct shapes (and compiled steps)."""
    w = MIN_TABLE_WIDTH
    while w < blocks:
        w *= 2
    return w


@dataclass
class Completion:
    prompt_tokens: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None  # "stop" (EOS or stop string), "length", "cancelled" or "error"
    error: str | None = None  # why the sequence failed (finish_reason "error"); the batch went on
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
    error: str | None = None  # with finish_reason "error": why this sequence failed


@dataclass
class _Sequence:
    """One prompt's generation in a batch."""
    index: int
    params: SamplingParams
    completion: Completion
    text: TextStream | None
    generator: torch.Generator | None = None
    failure: Exception | None = None  # met while choosing this sequence's token: it ends

    @property
    def done(self) -> bool:
        return self.completion.finish_reason is not None

    def fail(self, error: Exception) -> Delta:
        """End this sequence alone: what went wrong is its own, and the batch goes on."""
        c = self.completion
        c.finish_reason, c.error = "error", f"{type(error).__name__}: {error}"
        return Delta(self.index, -1, "", "error", len(c.token_ids), c.error)

    def take(self, token: int, eos: frozenset[int]) -> Delta:
        """Add the step's token (an EOS ends the sequence without being added)."""
        c, text = self.completion, self.text
        reason = None
        if token in eos and not self.params.ignore_eos:
            reason, delta = "stop", text.flush() if text else ""
        else:
            c.token_ids.append(token)
            delta = text.push(token) if text else ""
            if text and text.stopped:
                reason = "stop"
            elif len(c.token_ids) >= self.params.max_tokens:
                reason = "length"
                delta += text.flush() if text else ""
        c.finish_reason = reason
        if text:
            c.text = text.text
        return Delta(self.index, token, delta, reason, len(c.token_ids))


class Engine:
    """Generation for one model shape, on one device.

    The engine owns a skeleton (parameters without storage of their own) that experts of this
    shape attach their tensors to (`set_weights`: no copy), a paged KV pool (coeflow.engine.paged,
    made on first use), and a step runner (coeflow.engine.runners), chosen once by device and
    capability, that runs its decode steps; prefill runs eagerly on the skeleton (on a GPU with
    q/k/v and gate/up joined: `prefill_layers`). Every expert of the shape reuses the runner's
    compiled step: a switch never recompiles.

    `fused`: run decode steps compiled (else eagerly). `cpu_kernel`, `cpu_replay`, `triton_gemv`
    turn off one capability each (`choose_runner`). `kv_cache_budget`: bytes of the KV pool, at
    most. `runner`: build the step runner from the skeleton yourself (tests
    and benchmarks), instead of the device's choice."""

    def __init__(self, cfg: ModelConfig, dtype: str | torch.dtype = "fp32",
                 device: str | torch.device = "auto", fused: bool = True, cpu_kernel: bool = True,
                 kv_cache_budget: int = KV_CACHE_BUDGET, triton_gemv: bool = True, cpu_replay: bool = True,
                 runner: Callable[[Transformer], StepRunner] | None = None):
        self.cfg = cfg
        self.dtype = parse_dtype(dtype)
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = build_skeleton(cfg, self.device)
        self.runner = (runner(self.model) if runner is not None else
                       choose_runner(self.model, self.device, fused, cpu_kernel, cpu_replay, triton_gemv))
        self.prefill_layers = prefill_layers(self.device)  # after the runner copied the plain skeleton
        self.prefill_layers.swap(self.model)
        self.kv_cache_budget = kv_cache_budget
        self._pool: KVPool | None = None
        self.loaded: str | None = None  # name of the weights now attached
        self._attached: dict[str, Tensor] = {}  # the tensors now attached, by name

    @property
    def fused(self) -> bool:
        """Whether decode steps run compiled (False for an eager engine, or after compiling failed)."""
        return self.runner.compiled

    @property
    def pool(self) -> KVPool:
        """The KV pool, made on first use (it takes up to `kv_cache_budget` bytes at once)."""
        if self._pool is None:
            self._pool = KVPool.for_budget(self.cfg, self.kv_cache_budget, self.dtype, self.device)
        return self._pool

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
        """Attach tensors already in memory (the store's host or device tier): no copy. Tensors
        attached already (a batch on the same expert as the batch before) are left as they are."""
        if len(weights) == len(self._attached) and all(self._attached.get(k) is t for k, t in weights.items()):
            self.loaded = name
            return
        attach_weights(self.model, weights)
        self.prefill_layers.after_attach(self.model)
        self.runner.attach(weights)
        self.loaded, self._attached = name, dict(weights)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                 eos_ids: set[int] | frozenset[int] = frozenset(),
                 detokenize: Callable[[list[int]], str] | None = None) -> list[Completion]:
        """Run to completion; returns one Completion per prompt."""
        completions: list[Completion] = []
        for completions, _ in self._run(prompts, params, eos_ids, detokenize):
            pass
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

    def _check(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]
               ) -> list[SamplingParams]:
        """One SamplingParams per prompt; refuses what the engine cannot run."""
        if not self._attached:
            raise InvalidRequestError("no weights loaded into the engine")
        if not prompts:
            raise InvalidRequestError("no prompts")
        plist = list(params) if isinstance(params, list) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise InvalidRequestError("one SamplingParams per prompt, or one for all")
        for p in prompts:
            if not p:
                raise InvalidRequestError("empty prompt: at least one token is needed")
            if max(p) >= self.cfg.vocab_size or min(p) < 0:
                raise InvalidRequestError(f"token id out of range for vocabulary {self.cfg.vocab_size}")
        for prompt, p in zip(prompts, plist):
            if len(prompt) + p.max_tokens > self.cfg.max_position_embeddings:
                raise InvalidRequestError(
                    f"prompt ({len(prompt)} tokens) + max_tokens ({p.max_tokens}) exceeds the model's context "
                    f"of {self.cfg.max_position_embeddings} tokens")
        return plist

    def _reserve(self, prompts: list[list[int]], plist: list[SamplingParams]) -> list[list[int]]:
        """Each sequence's blocks, for its prompt and every token it may generate (refused, with
        nothing taken, when the pool cannot hold them all)."""
        pool = self.pool
        lengths = [len(prompt) + p.max_tokens for prompt, p in zip(prompts, plist)]
        if max(lengths) > pool.max_positions:
            raise InvalidRequestError(f"a sequence of {max(lengths)} tokens is longer than the KV pool's "
                                      f"{pool.max_positions} positions")
        need = [pool.blocks_for(n) for n in lengths]
        if sum(need) > pool.free_blocks:
            raise InvalidRequestError(f"the KV cache has room for {pool.free_blocks * pool.block_size} more "
                                      f"tokens; this batch needs {sum(need) * pool.block_size}")
        return [pool.allocate(n) for n in need]

    def _prefill(self, prompt: list[int], blocks: list[int]) -> Tensor:
        """One prompt's pass, its keys written into its blocks; the last position's logits [V]."""
        dev, pool = self.device, self.pool
        table = pool.table([blocks], 1, len(blocks))
        tokens = torch.tensor([prompt], device=dev)
        positions = torch.arange(len(prompt), device=dev)[None]
        return self.model.forward_cached(tokens, positions, pool.keys(), pool.values(), table, last_only=True,
                                         rope=pool.rope())[0, -1]

    def _run(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
             eos_ids: set[int] | frozenset[int], detokenize: Callable[[list[int]], str] | None,
             cancelled: Callable[[int], bool] | None = None) -> Iterator[tuple[list[Completion], list[Delta]]]:
        plist = self._check(prompts, params)
        rows = _bucket(len(prompts), BATCH_BUCKETS)
        owned = self._reserve(prompts, plist)
        try:
            yield from self._generate(prompts, plist, owned, rows, eos_ids, detokenize, cancelled)
        finally:
            for blocks in owned:
                self.pool.release(blocks)

    def _generate(self, prompts: list[list[int]], plist: list[SamplingParams], owned: list[list[int]], rows: int,
                  eos_ids: set[int] | frozenset[int], detokenize: Callable[[list[int]], str] | None,
                  cancelled: Callable[[int], bool] | None) -> Iterator[tuple[list[Completion], list[Delta]]]:
        t0 = time.perf_counter()
        first = [self._prefill(prompt, blocks) for prompt, blocks in zip(prompts, owned)]
        logits = torch.zeros(rows, first[0].shape[-1], dtype=first[0].dtype, device=first[0].device)
        logits[:len(first)] = torch.stack(first)
        blocks = self.pool.table(owned, rows, _width(max(len(b) for b in owned)))
        starts = [len(p) for p in prompts] + [0] * (rows - len(prompts))
        steps = max(p.max_tokens for p in plist)
        seqs = [_Sequence(i, p, Completion(prompt_tokens=len(prompt)),
                          TextStream(detokenize, p.stop) if detokenize else None)
                for i, (prompt, p) in enumerate(zip(prompts, plist))]
        for s in seqs:
            try:
                s.generator = s.params.generator()
            except Exception as e:  # noqa: BLE001  one sequence's own parameters: it fails alone
                s.failure = e
        tokens = self._tokens(logits, seqs, starts, blocks, steps)
        eos, last = frozenset(eos_ids), t0
        try:
            for step, chosen in enumerate(tokens):
                now = time.perf_counter()
                deltas = []
                for seq in (s for s in seqs if not s.done):
                    if cancelled is not None and cancelled(seq.index):
                        seq.completion.finish_reason = "cancelled"
                        continue
                    if step == 0:
                        seq.completion.prefill_s = now - t0
                    else:
                        seq.completion.decode_s += now - last
                    deltas.append(self._advance(seq, chosen[seq.index], eos))
                last = now
                yield [s.completion for s in seqs], deltas
                if all(s.done for s in seqs):
                    break
        finally:
            tokens.close()

    @staticmethod
    def _advance(seq: _Sequence, token: int, eos: frozenset[int]) -> Delta:
        """The sequence's step: its token taken, or its failure, which ends it alone."""
        if seq.failure is None:
            try:
                return seq.take(token, eos)
            except Exception as e:  # noqa: BLE001  e.g. its text's decoding: this sequence's alone
                seq.failure = e
        return seq.fail(seq.failure)

    def _tokens(self, logits: Tensor, seqs: list[_Sequence], starts: list[int], blocks: Tensor,
                steps: int) -> Iterator[list[int]]:
        """Each step's tokens for every sequence: greedy as the runner chooses them, else sampled
        on the host, each sequence with its own parameters and generator."""
        if all(s.params.greedy for s in seqs):
            return self.runner.greedy(self.pool, logits, len(seqs), starts, blocks, steps)

        def draw(logits: Tensor) -> list[int]:
            host = logits.float().cpu()
            return [self._draw(s, host[s.index]) for s in seqs]
        return step_tokens(self.runner, self.pool, logits, len(seqs), starts, blocks, steps, draw)

    @staticmethod
    def _draw(seq: _Sequence, logits: Tensor) -> int:
        """A sequence's sampled token; a failure (logits that are not numbers) ends it alone."""
        if seq.done or seq.failure is not None:
            return 0
        try:
            return sample(logits, seq.params, seq.generator)
        except Exception as e:  # noqa: BLE001
            seq.failure = e
            return 0
