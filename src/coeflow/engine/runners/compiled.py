"""Decode steps compiled by torch.compile (Inductor), on a skeleton of the runner's own that
carries the device's layers (coeflow.engine.layers).

The step takes the skeleton as an input, so its weights are graph inputs, not constants: every
expert of the same shape reuses the compiled step, and a switch never recompiles. Each runner
compiles under a code object of its own, so its variants sit in their own Dynamo cache and
Dynamo's guards on the skeleton can be dropped: within a runner the skeleton's structure never
changes, and weights laid out otherwise (other strides, other joined groups) get a step of
their own (`attach`). The guards kept are those on the token inputs and the block tables,
whose shapes tell the (rows, blocks) buckets apart.

With `direct` (the CPU), a step after a bucket's first calls the compiled graph without Dynamo,
whose guards and input collection otherwise run on every step with the caches cold from the
weights the step streams: what the guards would check holds by construction (the inputs are
gathered once per bucket and per attach of weights, from the graph Dynamo picked for that
bucket's first step)."""

from __future__ import annotations

import itertools
import logging
import types
from typing import Callable

import torch
from torch import Tensor

from coeflow.engine import torch_compat
from coeflow.engine.paged import KVPool
from coeflow.engine.layers import DeviceLayers
from coeflow.engine.runners.base import StepRunner, decode_step
from coeflow.model.llama import Transformer

log = logging.getLogger(__name__)

# Compiled variants allowed per code object: every (rows, blocks) bucket takes one, and past
# torch's default of 8 a fullgraph compile fails.
RECOMPILE_LIMIT = 256

_runners_made = itertools.count()


def _own_step() -> Callable[..., Tensor]:
    """`decode_step` under a code object of its own (see the module's docstring)."""
    code = decode_step.__code__.replace(co_name=f"decode_step_{next(_runners_made)}")
    return types.FunctionType(code, decode_step.__globals__, code.co_name)


# Inductor's own check of every input's size and stride repeats Dynamo's guards on the token
# inputs and block tables and `attach`'s layout key on the weights.
INDUCTOR_OPTIONS = {"size_asserts": False}


class CompiledRunner(StepRunner):
    name = "compiled"

    def __init__(self, model: Transformer, layers: DeviceLayers, direct: bool = False) -> None:
        super().__init__(model, layers)
        self.direct = direct
        self._steps: dict[tuple, tuple[Callable[..., Tensor], torch_compat.GraphRecorder | None]] = {}
        self._step: Callable[..., Tensor] | None = None
        self._recorder: torch_compat.GraphRecorder | None = None
        self._calls: dict[tuple, _DirectCall] = {}  # by the step's input shapes
        self.failed = False
        self.direct_steps = 0  # steps that skipped Dynamo (the tests check the path is taken)

    @property
    def compiled(self) -> bool:
        return not self.failed

    def attach(self, weights: dict[str, Tensor]) -> tuple:
        made = super().attach(weights)
        layout = (tuple((k, t.shape, t.stride(), t.dtype, t.device) for k, t in sorted(weights.items())), made)
        self._calls.clear()  # their inputs are the old weights'
        if self.failed:
            return made
        if layout not in self._steps:
            if self._steps:
                log.info("weights laid out unlike earlier experts'; compiling a decode step for them")
            self._steps[layout] = self._compile()
        self._step, self._recorder = self._steps[layout]
        return made

    def _compile(self) -> tuple[Callable[..., Tensor], torch_compat.GraphRecorder | None]:
        options: dict = {}
        if torch_compat.guard_filters_supported():
            options["guard_filter_fn"] = torch_compat.skip_guards_on("model")
        if self.direct:
            recorder = torch_compat.GraphRecorder(INDUCTOR_OPTIONS)
            return torch.compile(_own_step(), fullgraph=True, dynamic=False, backend=recorder,
                                 options=options), recorder
        return torch.compile(_own_step(), fullgraph=True, dynamic=False,
                             options={**INDUCTOR_OPTIONS, **options}), None

    def step(self, pool: KVPool, tokens: Tensor, positions: Tensor, blocks: Tensor) -> Tensor:
        if self._step is None:  # compiling failed before
            return self._eager(pool, tokens, positions, blocks)
        try:
            return self._compiled_step(pool, tokens, positions, blocks)
        except Exception as e:  # a compiler missing or failing must not stop generation
            log.warning("compiled decode step failed (%s: %s); going on without compiling",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "", exc_info=True)
            self.failed, self._step, self._steps = True, None, {}
            return self._eager(pool, tokens, positions, blocks)

    def _eager(self, pool: KVPool, tokens: Tensor, positions: Tensor, blocks: Tensor) -> Tensor:
        """The step on the engine's own skeleton: the device's layers are written for a compiler
        to fuse, and run eagerly some are far slower than the model's own modules."""
        return decode_step(self.plain, pool, tokens, positions, blocks)

    def _compiled_step(self, pool: KVPool, tokens: Tensor, positions: Tensor, blocks: Tensor) -> Tensor:
        key = (id(pool), tokens.shape, blocks.shape)
        call = self._calls.get(key)
        if call is not None:
            self.direct_steps += 1
            return call(tokens, positions, blocks)
        args = (self.model, pool, tokens, positions, blocks)
        graph = self._recorder.graphs.get(key) if self._recorder is not None else None
        if graph is not None:  # compiled for this layout before another expert was attached:
            inputs = graph.inputs(args)  # the same graph, on the new weights, without Dynamo
            if inputs is not None:
                call = self._calls[key] = _DirectCall(graph, inputs)
                self.direct_steps += 1
                return call(tokens, positions, blocks)
        torch_compat.raise_recompile_limit(RECOMPILE_LIMIT)  # in this thread, which may compile
        if self._recorder is None:
            return self._step(*args)
        self._recorder.expect(key, args)
        try:
            logits = self._step(*args)  # through Dynamo, which compiles on first use
        finally:
            self._recorder.expect(None, ())
        graph = self._recorder.graphs.get(key)
        inputs = graph.inputs(args) if graph is not None else None
        if inputs is not None:
            self._calls[key] = _DirectCall(graph, inputs)
        return logits


class _DirectCall:
    """A recorded graph with its inputs gathered: a call puts the step's tokens, positions and
    block tables in their places and runs the graph."""

    def __init__(self, graph: torch_compat.RecordedGraph, inputs: list[Tensor]) -> None:
        self.fn, self.inputs = graph.fn, inputs
        # the inputs that are arguments of the step (2: tokens, 3: positions, 4: blocks)
        self.places = [(i, what) for i, (where, what) in enumerate(graph.sources) if where == "arg"]

    def __call__(self, tokens: Tensor, positions: Tensor, blocks: Tensor) -> Tensor:
        step_args = (None, None, tokens, positions, blocks)
        for i, which in self.places:
            self.inputs[i] = step_args[which]
        return self.fn(*self.inputs)[0]
