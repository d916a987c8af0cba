"""Generation for one model shape: prefill, then decode steps, the keys and values in the
engine's paged KV pool."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from coeflow.engine.paged import KVPool
from coeflow.engine.runners import StepRunner, choose_runner, prefill_layers
from coeflow.engine.runners.base import argmax_rows, step_tokens
from coeflow.engine.sampling import Constraint, InvalidRequestError, Pick, SamplingParams, allowed_rows, pick
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
    logprob: float | None = None  # of token_id, when the request asked for logprobs
    top_logprobs: tuple[tuple[int, float], ...] = ()  # (token id, logprob), likeliest first


@dataclass
class Sequence:
    """One request's generation, live in the engine's KV pool from `Engine.open` to
    `Engine.close`: its blocks, the prompt tokens prefilled so far, and what it generated.
    Between two steps the caller may add sequences, cancel or close them, or run another
    expert's: a sequence's keys stay in its blocks until it is closed."""
    index: int  # the caller's key for it (Delta.index)
    prompt: list[int]
    params: SamplingParams
    blocks: list[int]
    eos: frozenset[int]
    completion: Completion
    text: TextStream | None
    generator: torch.Generator | None = None
    failure: Exception | None = None  # met while choosing this sequence's token: it ends
    prefilled: int = 0  # prompt tokens whose keys are in the pool
    digests: list[bytes] = field(default_factory=list)  # of its prompt's whole blocks (prefix reuse)
    reused: int = 0  # leading blocks taken from the prefix cache, not prefilled
    started: float = 0.0  # perf_counter when its prefill began
    last: float = 0.0  # perf_counter of its latest token
    picked: Pick | None = None  # the latest pick's log-probabilities, for its Delta
    constraint: Constraint | None = None  # what its output must match (structured output)

    @property
    def plain(self) -> bool:
        """Its next token is the argmax of the model's logits: a runner may choose it on the device."""
        return self.params.plain and self.constraint is None

    @property
    def masked_greedy(self) -> bool:
        """Its next token is the argmax of the logits its constraint allows."""
        return self.params.plain and self.constraint is not None

    @property
    def done(self) -> bool:
        return self.completion.finish_reason is not None

    @property
    def decoding(self) -> bool:
        """Prefilled, with a token chosen and not yet fed to a step."""
        return not self.done and self.prefilled == len(self.prompt) and bool(self.completion.token_ids)

    @property
    def position(self) -> int:
        """Where its latest token goes in the cache."""
        return len(self.prompt) + len(self.completion.token_ids) - 1

    @property
    def steps_left(self) -> int:
        return self.params.max_tokens - len(self.completion.token_ids)

    def cancel(self) -> None:
        if not self.done:
            self.completion.finish_reason = "cancelled"

    def fail(self, error: Exception) -> Delta:
        """End this sequence alone: what went wrong is its own, and the batch goes on."""
        c = self.completion
        c.finish_reason, c.error = "error", f"{type(error).__name__}: {error}"
        return Delta(self.index, -1, "", "error", len(c.token_ids), c.error)

    def take(self, token: int) -> Delta:
        """Add the step's token (an EOS ends the sequence without being added)."""
        c, text = self.completion, self.text
        reason, p = None, self.picked
        if token in self.eos and not self.params.ignore_eos:
            reason, delta, p = "stop", text.flush() if text else "", None  # the EOS is not output
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
        return Delta(self.index, token, delta, reason, len(c.token_ids),
                     logprob=p.logprob if p else None, top_logprobs=p.top if p else ())


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
        self._pool_lock = threading.Lock()
        self.prompt_tokens = self.reused_tokens = 0  # of sequences opened; reused: from the prefix cache
        self.loaded: str | None = None  # name of the weights now attached
        self._attached: dict[str, Tensor] = {}  # the tensors now attached, by name

    @property
    def fused(self) -> bool:
        """Whether decode steps run compiled (False for an eager engine, or after compiling failed)."""
        return self.runner.compiled

    @property
    def pool(self) -> KVPool:
        """The KV pool, made on first use (it takes up to `kv_cache_budget` bytes at once)."""
        with self._pool_lock:  # a server's HTTP threads check requests against it too
            if self._pool is None:
                self._pool = KVPool.for_budget(self.cfg, self.kv_cache_budget, self.dtype, self.device)
            return self._pool

    @property
    def made_pool(self) -> KVPool | None:
        """The KV pool if it was made (reading it makes nothing)."""
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

    # -- a batch at once ----------------------------------------------------------------
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
        """Yield the deltas of each step (prefill's first tokens, then each decode step).
        `cancelled(i)` is asked before each step: a cancelled sequence finishes at once
        (reason "cancelled"), and the batch stops when none is left running."""
        with torch.inference_mode():
            for _, deltas in self._run(prompts, params, eos_ids, detokenize, cancelled):
                if deltas:
                    yield deltas

    def _run(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
             eos_ids: set[int] | frozenset[int], detokenize: Callable[[list[int]], str] | None,
             cancelled: Callable[[int], bool] | None = None) -> Iterator[tuple[list[Completion], list[Delta]]]:
        """The batch through the sequence interface below: all prefilled, then decoded together,
        a finished or cancelled row leaving the batch at once."""
        if not prompts:
            raise InvalidRequestError("no prompts")
        plist = list(params) if isinstance(params, list) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise InvalidRequestError("one SamplingParams per prompt, or one for all")
        for prompt, p in zip(prompts, plist):
            self.check(prompt, p)
        _bucket(len(prompts), BATCH_BUCKETS)
        need = sum(self.blocks_needed(prompt, p) for prompt, p in zip(prompts, plist))
        if need > self.pool.free_blocks:
            raise InvalidRequestError(f"the KV cache has room for {self.pool.free_blocks * self.pool.block_size} "
                                      f"more tokens; this batch needs {need * self.pool.block_size}")
        seqs = [self.open(prompt, p, eos_ids, detokenize, index=i) for i, (prompt, p) in enumerate(zip(prompts, plist))]
        completions = [s.completion for s in seqs]
        asked = (lambda s: cancelled(s.index)) if cancelled is not None else (lambda s: False)
        try:
            for s in seqs:
                if asked(s):
                    s.cancel()
            yield completions, [d for d in (self.prefill(s) for s in seqs if not s.done) if d is not None]
            live = [s for s in seqs if not s.done]
            while live:
                steps = self.decode(live, max(s.steps_left for s in live))
                try:
                    for deltas in steps:
                        yield completions, deltas
                        for s in live:
                            if asked(s):
                                s.cancel()
                        if any(s.done for s in live):
                            break
                finally:
                    steps.close()
                live = [s for s in live if not s.done]
        finally:
            for s in seqs:
                self.close(s)

    @torch.inference_mode()
    def warm(self, max_rows: int) -> int:
        """Run one decode step of every shape a batch of up to `max_rows` sequences can take
        (row buckets x block-table widths up to the pool's longest sequence), on the weights
        attached now, so that no step compiles on a request's path. The rows are padding:
        block 0 only is written. Returns the shapes run."""
        pool = self.pool
        dev = self.device
        widths, w = [], MIN_TABLE_WIDTH
        while True:
            widths.append(w)
            if w >= pool.blocks_for(pool.max_positions):
                break
            w *= 2
        shapes = [(r, w) for r in BATCH_BUCKETS if r <= _bucket(max_rows, BATCH_BUCKETS) for w in widths]
        for rows, width in shapes:
            tokens, positions = (torch.zeros(rows, 1, dtype=torch.long, device=dev) for _ in range(2))  # not one
            self.runner.step(pool, tokens, positions, torch.zeros(rows, width, dtype=torch.long, device=dev))  # tensor
        return len(shapes)

    # -- one sequence at a time, between steps ----------------------------------------------
    def check(self, prompt: list[int], params: SamplingParams) -> None:
        """Refuse what this engine can never run (InvalidRequestError, saying why)."""
        if not prompt:
            raise InvalidRequestError("empty prompt: at least one token is needed")
        if max(prompt) >= self.cfg.vocab_size or min(prompt) < 0:
            raise InvalidRequestError(f"token id out of range for vocabulary {self.cfg.vocab_size}")
        if len(prompt) + params.max_tokens > self.cfg.max_position_embeddings:
            raise InvalidRequestError(
                f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds the model's context "
                f"of {self.cfg.max_position_embeddings} tokens")
        if len(prompt) + params.max_tokens > self.pool.max_positions:
            raise InvalidRequestError(f"a sequence of {len(prompt) + params.max_tokens} tokens is longer than "
                                      f"the KV pool's {self.pool.max_positions} positions")

    def blocks_needed(self, prompt: list[int], params: SamplingParams) -> int:
        """KV blocks a request takes for its prompt and every token it may generate."""
        return self.pool.blocks_for(len(prompt) + params.max_tokens)

    def open(self, prompt: list[int], params: SamplingParams, eos_ids: set[int] | frozenset[int] = frozenset(),
             detokenize: Callable[[list[int]], str] | None = None, index: int = 0,
             prefix: str | None = None, constraint: Constraint | None = None) -> Sequence:
        """A new sequence with the blocks its prompt and max_tokens need, taken now
        (InvalidRequestError when it can never run, or when the pool has no room for it now:
        ask `blocks_needed` against `pool.free_blocks` first to wait instead). With `prefix`
        (the key of the weights attached when it runs: the expert's name), the leading whole
        blocks of its prompt that an earlier sequence of that key prefilled are taken from the
        pool's prefix cache instead of being prefilled, and its own are cached once prefilled.
        With `constraint`, each token is chosen among those it allows."""
        self.check(prompt, params)
        pool = self.pool
        digests = pool.digests(prefix, prompt) if prefix is not None else []
        reused = pool.reuse(digests[:(len(prompt) - 1) // pool.block_size])  # the last token is computed
        try:
            blocks = reused + pool.allocate(self.blocks_needed(prompt, params) - len(reused))
        except InvalidRequestError:
            pool.release(reused)
            raise
        seq = Sequence(index, list(prompt), params, blocks, frozenset(eos_ids), Completion(prompt_tokens=len(prompt)),
                       TextStream(detokenize, params.stop) if detokenize else None,
                       prefilled=len(reused) * pool.block_size, digests=digests, reused=len(reused),
                       constraint=constraint)
        self.prompt_tokens += len(prompt)
        self.reused_tokens += seq.prefilled
        try:
            seq.generator = params.generator()
        except Exception as e:  # noqa: BLE001  one sequence's own parameters: it fails alone
            seq.failure = e
        return seq

    def close(self, seq: Sequence) -> None:
        """Give the sequence's blocks back (it may be closed at any time, more than once)."""
        if seq.blocks:
            self.pool.release(seq.blocks)
            seq.blocks = []
        seq.cancel()

    def _reuse_since_open(self, seq: Sequence) -> None:
        """Prompt blocks that another sequence prefilled after this one opened (the n choices of
        one prompt open together), taken instead of its own, which go back to the pool."""
        pool = self.pool
        more = pool.reuse(seq.digests[seq.reused:(len(seq.prompt) - 1) // pool.block_size])
        if more:
            own = seq.blocks[seq.reused:seq.reused + len(more)]
            seq.blocks[seq.reused:seq.reused + len(more)] = more
            pool.release(own)
            seq.reused += len(more)
            seq.prefilled = seq.reused * pool.block_size
            self.reused_tokens += len(more) * pool.block_size

    @torch.inference_mode()
    def prefill(self, seq: Sequence, budget: int | None = None) -> Delta | None:
        """Up to `budget` more of the sequence's prompt tokens (all: None) into its blocks, on
        the weights attached now; once its whole prompt is in, its first token (the Delta)."""
        if not self._attached:
            raise InvalidRequestError("no weights loaded into the engine")
        now = time.perf_counter()
        if not seq.started:
            seq.started = now
        if seq.prefilled == seq.reused * self.pool.block_size:
            self._reuse_since_open(seq)
        start = seq.prefilled
        end = len(seq.prompt) if budget is None else min(len(seq.prompt), start + max(1, budget))
        dev, pool = self.device, self.pool
        table = pool.table([seq.blocks], 1, len(seq.blocks))
        tokens = torch.tensor([seq.prompt[start:end]], device=dev)
        positions = torch.arange(start, end, device=dev)[None]
        logits = self.model.forward_cached(tokens, positions, pool.keys(), pool.values(), table, last_only=True,
                                           rope=pool.rope())[0, -1]
        seq.prefilled = end
        if end < len(seq.prompt):
            return None
        for i in range(seq.reused, len(seq.digests)):  # its whole prompt blocks, for later prompts
            pool.register(seq.blocks[i], seq.digests[i])
        if seq.plain:
            token = argmax_rows(logits[None], 1)[0]
        else:
            token = self._draw(seq, logits.float().cpu())
        seq.last = time.perf_counter()
        seq.completion.prefill_s = seq.last - seq.started
        return self._advance(seq, token)

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence], steps: int) -> Iterator[list[Delta]]:
        """Up to `steps` decode steps of `seqs` together (each prefilled, on the weights attached
        now), yielding each step's deltas. A sequence that finishes stays a row, its tokens
        dropped, until the caller closes the iterator (after any step) and decodes the others
        anew: only the caller knows whether others wait to join."""
        if not seqs or steps < 1:
            return
        if not all(s.decoding for s in seqs):
            raise InvalidRequestError("decode takes prefilled, unfinished sequences")
        rows = _bucket(len(seqs), BATCH_BUCKETS)
        blocks = self.pool.table([s.blocks for s in seqs], rows, _width(max(len(s.blocks) for s in seqs)))
        tokens = [s.completion.token_ids[-1] for s in seqs]
        positions = [s.position for s in seqs]
        if all(s.plain for s in seqs):
            chosen = self.runner.greedy(self.pool, tokens, positions, blocks, steps)
        else:
            # the plain rows' argmax where the logits are, as on the greedy path; only the
            # others' logits go to the host to be sampled, masked or penalised
            drawn = [i for i, s in enumerate(seqs) if not s.plain]  # the host rows' sequences, in order
            on_host = torch.tensor(drawn, device=self.device)
            masked = [row for row, i in enumerate(drawn) if seqs[i].masked_greedy]  # host rows

            def draw(logits: Tensor) -> list[int]:
                picks = argmax_rows(logits, len(seqs)) if len(drawn) < len(seqs) else [0] * len(seqs)
                host = (logits if len(drawn) == len(seqs) else logits.index_select(0, on_host)).float().cpu()
                found = (dict(zip(masked, self._masked_argmax([seqs[drawn[row]] for row in masked], host[masked])))
                         if masked else {})
                for row, i in enumerate(drawn):
                    token = found.get(row)
                    picks[i] = token if token is not None else self._draw(seqs[i], host[row])
                return picks
            chosen = step_tokens(self.runner, self.pool, tokens, positions, blocks, steps, draw)
        try:
            for picked in chosen:
                now = time.perf_counter()
                deltas = []
                for s, token in zip(seqs, picked):
                    if not s.done:
                        s.completion.decode_s += now - s.last
                        s.last = now
                        deltas.append(self._advance(s, token))
                yield deltas
                if all(s.done for s in seqs):
                    return
        finally:
            chosen.close()

    @staticmethod
    def _advance(seq: Sequence, token: int) -> Delta:
        """The sequence's step: its token taken, or its failure, which ends it alone."""
        if seq.failure is None:
            try:
                return seq.take(token)
            except Exception as e:  # noqa: BLE001  e.g. its text's decoding: this sequence's alone
                seq.failure = e
        return seq.fail(seq.failure)

    @staticmethod
    def _masked_argmax(seqs: list[Sequence], logits: Tensor) -> list[int | None]:
        """Greedy picks of constrained rows (logits [rows, V] on the CPU), their masks made
        together and applied in one operation, one a sequence. None for a row that is done, or
        whose mask fails or allows nothing: `_draw` then takes it (and ends it alone)."""
        out: list[int | None] = [None] * len(seqs)
        live = [row for row, s in enumerate(seqs) if not s.done and s.failure is None]
        if not live:
            return out
        try:
            allowed = allowed_rows([seqs[row].constraint for row in live], logits.shape[1]).numpy()
        except Exception:  # noqa: BLE001  one row's grammar: each is tried alone
            return out
        # in numpy: on rows of a few thousand logits, each torch call costs more than its work
        best = np.where(allowed, logits.numpy()[live], -np.inf).argmax(1).tolist()
        for row, token, some in zip(live, best, allowed.any(1).tolist()):
            seq = seqs[row]
            if not some:
                continue
            try:
                seq.constraint.accept(token)
            except Exception as e:  # noqa: BLE001
                seq.failure = e
                token = 0
            seq.picked = Pick(token)
            out[row] = token
        return out

    @staticmethod
    def _draw(seq: Sequence, logits: Tensor) -> int:
        """A sequence's token by its sampling parameters (its pick kept for the Delta); a
        failure (logits that are not numbers) ends it alone."""
        if seq.done or seq.failure is not None:
            return 0
        try:
            allowed = seq.constraint.allowed(logits.numel()) if seq.constraint is not None else None
            seq.picked = pick(logits, seq.params, seq.generator, seq.prompt, seq.completion.token_ids, allowed)
            if seq.constraint is not None:
                seq.constraint.accept(seq.picked.token)
        except Exception as e:  # noqa: BLE001
            seq.failure = e
            return 0
        return seq.picked.token
