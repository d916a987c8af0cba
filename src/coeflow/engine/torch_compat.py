"""Every private PyTorch API the engine relies on, in one place. tests/engine/test_torch_compat.py
checks each of them, so that a torch release that changes one fails there, by name, rather
than somewhere inside a decode step.

- Dynamo's limit on compiled variants per code object (`raise_recompile_limit`): each (batch,
  block table width) bucket of a decode step is a variant of its own. Dynamo's config is
  per thread, so the limit is raised by the thread that compiles (a server's worker).
- Dynamo's guard entries, by name (`skip_guards_on`): a decode step drops the guards on its
  skeleton argument, which its runner keeps consistent by construction.
- Inductor called from a backend of our own (`GraphRecorder`), which keeps each graph it
  compiles and where each of the graph's inputs comes from, so that later steps can call the
  graph without Dynamo (Dynamo hands a backend the very tensors the call was given)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor


def raise_recompile_limit(limit: int) -> None:
    """In the calling thread: Dynamo reads its config per thread."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, limit)


def guard_filters_supported() -> bool:
    """Whether torch.compile takes a `guard_filter_fn` option (torch 2.7 and later)."""
    return hasattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe")


def skip_guards_on(argument: str) -> Callable[[list], list[bool]]:
    """A Dynamo guard filter that drops the guards on one argument of the compiled function (a
    module: its structure and its tensors) and keeps the rest."""
    prefixes = (f"{argument}.", f"{argument}[", f"dict(type({argument})")

    def keep(entries: list) -> list[bool]:
        return [not (e.name == argument or e.name.startswith(prefixes)) for e in entries]
    return keep


# Where one input of a recorded graph comes from: ("arg", i) the i-th argument of the call, or
# (i, "name") the named parameter or buffer of the call's i-th argument (a module).
Source = tuple[Any, Any]


@dataclass
class RecordedGraph:
    fn: Callable[..., list[Tensor]]  # called with the inputs positionally; returns the outputs
    sources: list[Source]

    def inputs(self, args: tuple) -> list[Tensor] | None:
        """The graph's inputs for a call with `args`, or None where a source is missing."""
        out, tensors = [], {}  # tensors: each module argument's, by name, gathered once
        for where, what in self.sources:
            if where == "arg":
                out.append(args[what])
                continue
            if where not in tensors:
                tensors[where] = dict(args[where].named_parameters(remove_duplicate=False))
                tensors[where].update(args[where].named_buffers(remove_duplicate=False))
            if what not in tensors[where]:
                return None
            out.append(tensors[where][what])
        return out


class GraphRecorder:
    """A torch.compile backend: Inductor with `options` (Inductor's own configuration), which
    also records each graph it compiles under the key set in `expect` before the call, with
    the source of each of its inputs among that call's arguments."""

    def __init__(self, options: dict) -> None:
        self.options = options
        self.graphs: dict[Any, RecordedGraph] = {}
        self._key: Any = None
        self._args: tuple = ()

    def expect(self, key: Any, args: tuple) -> None:
        """The next call of the compiled function is for `key`, with `args` (None: not recording)."""
        self._key, self._args = key, args

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list, **_) -> Callable:
        from torch._inductor.compile_fx import compile_fx
        fn = compile_fx(gm, example_inputs, config_patches=self.options)
        if self._key is not None:
            sources = self._sources(example_inputs)
            if sources is not None and _single_output(gm):
                self.graphs[self._key] = RecordedGraph(fn, sources)
        return fn

    def _sources(self, example_inputs: list) -> list[Source] | None:
        where: dict[int, Source] = {}
        for i, a in enumerate(self._args):
            if isinstance(a, torch.nn.Module):
                for name, t in [*a.named_parameters(remove_duplicate=False),
                                *a.named_buffers(remove_duplicate=False)]:
                    where.setdefault(id(t), (i, name))
            elif isinstance(a, Tensor):
                where[id(a)] = ("arg", i)
        sources = [where.get(id(t)) for t in example_inputs]
        return None if any(s is None for s in sources) else sources


def _single_output(gm: torch.fx.GraphModule) -> bool:
    outputs = gm.graph.output_node().args[0]
    return isinstance(outputs, (tuple, list)) and len(outputs) == 1
