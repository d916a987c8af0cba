"""From files to a replay: the CoE (a CoE file, or N copies of one config), the machine
(a shipped spec or a probed one), and the trace resolved into SimRequests (routing done,
prompt lengths counted)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from coeflow.sim.modelled import Machine
from coeflow.sim.replay import ReplayOptions, SimRequest
from coeflow.errors import ConfigError
from coeflow.hw.shapes import DecoderShape, load_shape
from coeflow.quantization import DEFAULT_GROUP, DELTA_GROUP
from coeflow.trace.format import ROUTED, TraceRequest

WORDS_TO_TOKENS = 4 / 3  # stated guess for prompts given only as text with no tokenizer at hand


@dataclass
class ModelledCoE:
    shapes: dict[str, DecoderShape]
    route: Callable[[str], str] | None = None  # prompt text -> expert (the CoE's trained router)
    count_tokens: Callable[[str, str], int] | None = None  # (expert, text) -> tokens


def quantized_shape(shape: DecoderShape, bits: int, group: int | None = None) -> DecoderShape:
    """`shape` as `coeflow quantize --to int{bits}` or a CoE entry's `quantize:` stores it: int8
    a scale a row, int4 a scale a group of 128 inputs (or of `group`)."""
    return shape.quantized(bits, group or DEFAULT_GROUP[bits])


def coe_of_copies(n: int, config: str, bits: int | None = None, delta_bits: int | None = None) -> ModelledCoE:
    """N experts e0..e{N-1} of one shape (a shipped name like llama2-7b or a config.json),
    quantized to `bits` if given, or stored as `delta_bits`-bit deltas from one base of that
    shape (`coeflow delta`'s default groups): no checkpoints needed."""
    if n < 1:
        raise ConfigError("--experts must be >= 1")
    shape = load_shape(config)
    if delta_bits:
        shape = shape.delta(delta_bits, None if delta_bits == 1 else DELTA_GROUP, base=shape.name)
    elif bits:
        shape = quantized_shape(shape, bits)
    return ModelledCoE({f"e{i}": shape for i in range(n)})


def coe_from_file(path: str | Path, use_router: bool = True) -> ModelledCoE:
    """A CoE file's experts with the shapes of their config.json files; its trained router
    (if any) routes `coe` requests and its tokenizers count prompt tokens."""
    from coeflow.coefile import load_coe
    coe = load_coe(path)
    shapes = {e.name: quantized_shape(load_shape(str(e.path)), e.quantize) if e.quantize else load_shape(str(e.path))
              for e in coe.experts}
    tokenizers: dict = {}

    def count(expert: str, text: str) -> int:
        from coeflow.model import Tokenizer
        if expert not in tokenizers:
            tokenizers[expert] = Tokenizer.from_dir(coe.expert(expert).path)
        return max(1, len(tokenizers[expert].encode(text)))

    route = None
    if use_router and coe.router_dir.exists():
        from coeflow.router import load_router_for_coe
        router = load_router_for_coe(coe)
        route = lambda text: router.route(text).expert  # noqa: E731
    return ModelledCoE(shapes, route, count)


def resolve(trace: list[TraceRequest], coe: ModelledCoE) -> list[SimRequest]:
    """Decide each request's expert and prompt length, with errors naming the request."""
    out = []
    for i, r in enumerate(trace):
        where = f"trace request {i + 1} (arrival {r.arrival_s} s)"
        expert = r.expert
        if expert == ROUTED:
            if coe.route is not None and r.prompt is not None:
                expert = coe.route(r.prompt)
            elif r.route is not None:
                expert = r.route
            else:
                raise ConfigError(f"{where}: routed ('coe') but there is no router to run on its "
                                  "prompt and no recorded 'route'")
        if expert not in coe.shapes:
            known = list(coe.shapes)
            raise ConfigError(f"{where}: no expert {expert!r} in the CoE (known: "
                              f"{', '.join(known[:8])}{', ...' if len(known) > 8 else ''})")
        if r.prompt_tokens is not None:
            prompt = r.prompt_tokens
        elif coe.count_tokens is not None:
            prompt = coe.count_tokens(expert, r.prompt or "")
        else:
            prompt = max(1, round(len((r.prompt or "").split()) * WORDS_TO_TOKENS))
        out.append(SimRequest(r.arrival_s, expert, prompt, max(1, r.gen_tokens), r.id))
    return out


def resolve_machine(name: str, stack: str | None = None, tp: int | None = None) -> Machine:
    """A shipped system by name, or a system YAML; a probed spec (`coeflow hw probe`) also
    carries the disk rate and the CPU's pointer-swap device tier."""
    from coeflow.hw.probed import is_probed_spec, load_probed, probed_stack
    if is_probed_spec(name):
        m = load_probed(name)
        return Machine(m.hw, probed_stack(m, stack) if stack else m.stack, tp, m.disk_read_bps,
                       m.disk_read_latency_s, m.device_is_host, m.bytes_per_param)
    from coeflow.hw.spec import load_hardware
    return Machine(load_hardware(name), stack, tp)


PROCEDURES = ("server", "paper")


def options_for(procedure: str, **kw) -> ReplayOptions:
    """`server`: what coeflow's server does (prefetch on arrival, batches up to max_batch,
    routing off the compute). `paper`: Samba-CoE's procedure (route a batch, copy, run each
    pair at batch 1 to completion, no overlap)."""
    if procedure == "paper":
        kw.update(max_batch=1, prefetch=False, route_on_compute=True, schedule="static")
    elif procedure != "server":
        raise ConfigError(f"unknown procedure {procedure!r}; one of {', '.join(PROCEDURES)}")
    return ReplayOptions(**{k: v for k, v in kw.items() if v is not None})
