"""The private PyTorch behaviour the engine relies on (coeflow.engine.torch_compat), each
checked on its own, so that a torch release that changes one fails here, by name."""

from __future__ import annotations

import torch
from torch import nn

from coeflow.engine import torch_compat


class _Model(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(8, 8)
        self.register_buffer("scale", torch.full((8,), 2.0))


class _Cache(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("rows", torch.zeros(4, 8))


def _step(model: _Model, cache: _Cache, x: torch.Tensor, at: torch.Tensor) -> tuple[torch.Tensor]:
    cache.rows.index_copy_(0, at, x)
    return (model.proj(cache.rows) * model.scale,)


def test_the_recompile_limit_is_raised_and_never_lowered():
    config = torch._dynamo.config
    before = config.recompile_limit
    try:
        config.recompile_limit = 8
        torch_compat.raise_recompile_limit(300)
        assert config.recompile_limit == 300
        torch_compat.raise_recompile_limit(10)
        assert config.recompile_limit == 300
    finally:
        config.recompile_limit = before


def test_the_recompile_limit_raised_in_a_thread_holds_for_that_thread():
    """Dynamo's config is per thread (torch 2.13): the runner raises the limit in the thread
    that compiles, a server's worker, which then compiles more variants than the default 8."""
    import threading
    f = torch.compile(lambda x: x * 2, fullgraph=True, dynamic=False)
    errors: list[BaseException] = []

    def compile_many() -> None:
        try:
            torch_compat.raise_recompile_limit(64)
            for n in range(1, 13):
                f(torch.ones(n))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    t = threading.Thread(target=compile_many)
    t.start()
    t.join()
    assert errors == []


def test_guards_on_the_module_argument_are_named_after_it_and_dropped():
    """Dynamo names the guards on an argument after it ("model", "model._modules[...]"): the
    filter drops exactly those, so a module whose tensors change (an expert attached) reuses
    the compiled code, while the other argument's guards stay."""
    assert torch_compat.guard_filters_supported()
    names: list[str] = []
    keep = torch_compat.skip_guards_on("model")

    def recording(entries: list) -> list[bool]:
        names.extend(e.name for e in entries)
        return keep(entries)

    def f(model: _Model, x: torch.Tensor) -> torch.Tensor:
        return model.proj(x)
    compiled = torch.compile(f, fullgraph=True, options={"guard_filter_fn": recording})
    with torch.inference_mode():
        compiled(_Model(0), torch.randn(2, 8))
    on_model = [n for n in names if n == "model" or n.startswith("model.")]
    assert on_model and "x" in names, names
    kept = keep([type("Entry", (), {"name": n})() for n in names])
    assert not any(k for n, k in zip(names, kept) if n in on_model)
    assert kept[names.index("x")]


def test_the_recorder_keeps_a_graph_callable_without_dynamo():
    """The backend is handed the call's own tensors: each graph input is found among the
    call's arguments, and the graph, called with the inputs gathered from other arguments of
    the same shapes (another model, another cache), computes what the function computes."""
    recorder = torch_compat.GraphRecorder({"size_asserts": False})
    compiled = torch.compile(_step, fullgraph=True, dynamic=False, backend=recorder)
    model, cache = _Model(0), _Cache()
    x, at = torch.randn(1, 8), torch.tensor([2])
    with torch.inference_mode():
        recorder.expect("k", (model, cache, x, at))
        want = compiled(model, cache, x, at)[0].clone()
        recorder.expect(None, ())
        graph = recorder.graphs["k"]
        assert {(0, "proj.weight"), (0, "proj.bias"), (0, "scale"), (1, "rows"), ("arg", 2), ("arg", 3)} \
            == set(graph.sources)
        other, other_cache = _Model(1), _Cache()
        args = (other, other_cache, torch.randn(1, 8), torch.tensor([1]))
        got = graph.fn(*graph.inputs(args))[0]
        torch.testing.assert_close(got, _step(other, _Cache(), *args[2:])[0])
        assert other_cache.rows[1].equal(args[2][0]), "the graph did not write into the cache it was given"
        torch.testing.assert_close(graph.fn(*graph.inputs((model, _Cache(), x, at)))[0], want)
