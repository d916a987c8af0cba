"""Decode steps on a GPU: the compiled step captured and replayed as CUDA graphs, and greedy
decoding with the device one step ahead of the host.

A replay is three small copies into the graph's inputs and one launch: no Python per kernel, no
Dynamo guards. A graph holds the addresses it was captured with, so there is one per (rows,
blocks) bucket of the engine's KV pool and per set of weight addresses (a device-tier slot): a
switch into a slot seen before replays, a new one is captured (a real step's time and the
capture, on the request path). The runner captures the graphs itself rather than through
Inductor's CUDA-graph trees (mode "reduce-overhead"), which add bookkeeping to every step and
were seen to fall back to eager for every engine after the first in one process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

from coeflow.engine.layers import DeviceLayers
from coeflow.engine.paged import KVPool
from coeflow.engine.runners.base import StepRunner
from coeflow.engine.runners.compiled import CompiledRunner
from coeflow.model.llama import Transformer

log = logging.getLogger(__name__)


@dataclass
class _Captured:
    graph: "torch.cuda.CUDAGraph"
    tokens: Tensor  # the graph's inputs and output, at fixed addresses
    positions: Tensor
    blocks: Tensor
    logits: Tensor


class CudaGraphRunner(CompiledRunner):
    name = "cuda-graphs"
    MAX_GRAPHS = 64  # least recently used dropped beyond this (each keeps a private memory pool)

    def __init__(self, model: Transformer, layers: DeviceLayers) -> None:
        super().__init__(model, layers)
        # capture cannot use the default stream; one side stream for all of them, since cuBLAS
        # keeps a workspace per stream it has run on
        self._side = torch.cuda.Stream(model.inv_freq.device)
        self._graphs: dict[tuple, _Captured] = {}
        self._weight_ids: dict[tuple, int] = {}
        self._weights = -1
        self.capture_failed = False

    @property
    def cuda_graphs(self) -> list["torch.cuda.CUDAGraph"]:
        return [g.graph for g in self._graphs.values()]

    def attach(self, weights: dict[str, Tensor]) -> tuple:
        made = super().attach(weights)
        key = (tuple((k, t.shape, t.stride(), t.dtype, t.data_ptr()) for k, t in sorted(weights.items())), made)
        self._weights = self._weight_ids.setdefault(key, len(self._weight_ids))
        return made

    def step(self, pool: KVPool, tokens: Tensor, positions: Tensor, blocks: Tensor) -> Tensor:
        if self.capture_failed or self._step is None:
            return super().step(pool, tokens, positions, blocks)
        try:
            g = self._graph(pool, tokens, positions, blocks)
        except Exception:  # capture refused: the compiled step alone still runs
            log.warning("CUDA graph capture of the decode step failed; running it without", exc_info=True)
            self.capture_failed, self._graphs = True, {}
            return super().step(pool, tokens, positions, blocks)
        g.tokens.copy_(tokens)
        g.positions.copy_(positions)
        g.blocks.copy_(blocks)
        with torch.cuda.device(self._side.device):  # replay launches on the current device's stream
            g.graph.replay()
        return g.logits

    def _graph(self, pool: KVPool, tokens: Tensor, positions: Tensor, blocks: Tensor) -> _Captured:
        key = (id(pool), tokens.shape, blocks.shape, self._weights)
        g = self._graphs.pop(key, None)
        if g is None:
            g = self._capture(self._compiled_step, pool, tokens, positions, blocks)
            if len(self._graphs) >= self.MAX_GRAPHS:  # the least recently used goes
                del self._graphs[next(iter(self._graphs))]
        self._graphs[key] = g  # (re)inserted last: most recently used
        return g

    def _capture(self, step: Callable[..., Tensor], pool: KVPool, tokens: Tensor, positions: Tensor,
                 blocks: Tensor) -> _Captured:
        tokens, positions, blocks = tokens.clone(), positions.clone(), blocks.clone()
        side = self._side
        main = torch.cuda.current_stream(side.device)
        side.wait_stream(main)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(side):
            # once for real first: compiles on first use, and its cache writes are the ones the
            # replay makes again
            step(pool, tokens, positions, blocks)
            side.synchronize()
            # `torch.cuda.graph` would also synchronize the whole device and empty the allocator's
            # cache on every capture, which a capture on the request path cannot afford;
            # thread_local: the store's loader threads may copy other experts meanwhile
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                logits = step(pool, tokens, positions, blocks)
            finally:
                graph.capture_end()
        main.wait_stream(side)
        return _Captured(graph, tokens, positions, blocks, logits)


class RunAhead(StepRunner):
    """Greedy decoding with the device one step ahead of the host, around another runner: each
    step's tokens are chosen on the device (argmax) and fed straight to the next step, which is
    queued before the host waits for this step's tokens, so the host's work between steps
    (detokenizing, stop checks) overlaps the device's. The cost: where every sequence stops
    early, one step computed past the end, whose result is dropped. On a device that computes
    on the calling thread (the CPU) there is nothing to overlap; the tests run it there."""

    def __init__(self, inner: StepRunner) -> None:
        self.inner = inner
        self.name = f"{inner.name}, run ahead"
        self.model, self.layers = inner.model, inner.layers

    def __getattr__(self, name: str):
        return getattr(self.inner, name)  # what the inner runner shows (its graphs, its counts)

    @property
    def compiled(self) -> bool:
        return self.inner.compiled

    def attach(self, weights: dict[str, Tensor]) -> tuple:
        return self.inner.attach(weights)

    def step(self, pool: KVPool, tokens: Tensor, positions: Tensor, blocks: Tensor) -> Tensor:
        return self.inner.step(pool, tokens, positions, blocks)

    def greedy(self, pool: KVPool, tokens: list[int], positions: list[int], blocks: Tensor,
               steps: int) -> Iterator[list[int]]:
        dev, n, rows = blocks.device, len(tokens), blocks.shape[0]
        cuda = dev.type == "cuda"
        tok = torch.zeros(rows, dtype=torch.long)
        pos = torch.zeros(rows, 1, dtype=torch.long)
        tok[:n], pos[:n, 0] = torch.tensor(tokens), torch.tensor(positions)
        live = (torch.arange(rows) < n).long()[:, None].to(dev)  # padding rows stay at position 0
        pos = pos.to(dev)
        host = torch.empty(rows, dtype=torch.long, pin_memory=cuda)
        stream = torch.cuda.current_stream(dev) if cuda else None  # where tok is computed
        copied = torch.cuda.Event() if cuda else None
        try:
            tok = self.inner.step(pool, tok.to(dev)[:, None], pos, blocks).argmax(-1)
            for step in range(steps):
                host.copy_(tok, non_blocking=True)
                if copied is not None:
                    copied.record(stream)
                if step + 1 < steps:
                    pos = pos + live
                    tok = self.inner.step(pool, tok[:, None], pos, blocks).argmax(-1)  # read before the
                    #                                                                  next replay reuses it
                if copied is not None:
                    copied.synchronize()
                yield host[:n].tolist()
        finally:
            # a step still queued reads the expert's weights, which the store may overwrite as
            # soon as the caller releases them
            if stream is not None:
                stream.synchronize()
