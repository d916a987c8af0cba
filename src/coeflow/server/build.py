"""Assemble a server from a CoE file: the real backend, store, router, tokenizers, scheduler.
An expert that cannot load its tokenizer or config is marked failed here and answers 503 (the
admin route's load reads them again); the rest serve."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from coeflow.coefile import SAMPLING_DEFAULTS, CoEFile, load_coe
from coeflow.sampling_ranges import RANGES
from coeflow.errors import CoeflowError, ConfigError
from coeflow.model import ModelConfig, Tokenizer
from coeflow.model.convert import with_quantized_experts
from coeflow.scheduler import Scheduler
from coeflow.server.app import CoEServer
from coeflow.server.health import ExpertHealth
from coeflow.server.options import ServerOptions
from coeflow.server.tools import FORMATS, ToolFormat, detect

log = logging.getLogger(__name__)


def build_server(coe_path: str | Path, opts: ServerOptions, store=None) -> CoEServer:
    """`store` replaces the tiered ExpertStore (benchmarks use it to serve a baseline); it
    must hand out weights in the options' dtype and device."""
    from coeflow.backend.real import RealBackend
    from coeflow.store import ExpertStore

    coe, runtime_errors = with_quantized_experts(load_coe(coe_path))
    backend = RealBackend(opts.dtype, opts.device, fused=opts.fused, kv_mem=opts.kv_mem,
                          prefix_cache=opts.prefix_cache, dtypes={e.name: e.dtype for e in coe.experts if e.dtype})
    if store is None:
        store = ExpertStore(coe, backend, device_mem=opts.device_mem, host_mem=opts.host_mem,
                            policy=opts.policy)
    front = Runtimes(coe, backend.runtimes, runtime_errors)
    shapes: dict[tuple, str] = {}  # one expert per shape is enough to compile its decode step
    for name, rt in backend.runtimes.items():
        shapes.setdefault((rt.config.shape_key, backend.serving_dtype(name)), name)
    health = ExpertHealth(store, front.paths, runtime_errors, front.load)
    scheduler = Scheduler(store, backend, coe.expert_names, max_batch=opts.max_batch, max_queue=opts.max_queue,
                          max_wait_s=opts.max_wait_s, slice_s=opts.slice_s, prefill_chunk=opts.prefill_chunk,
                          schedule=opts.schedule)
    warm = [n for n in shapes.values() if health.failure(n) is None] if opts.warm_up and opts.fused else []
    return CoEServer(coe, store, scheduler, front.runtimes, _router(coe), health, opts, front.contexts, warm,
                     tool_formats=front.tool_formats)


def build_ingress(coe_path: str | Path, opts: ServerOptions, scheduler: Any, store: Any) -> CoEServer:
    """The HTTP side of a server whose experts run elsewhere (`coeflow serve --ray`): the same
    routes, router, tokenizers and checks, with coeflow.cluster.front's RemoteScheduler and
    ClusterStatus in place of the scheduler and the store."""
    coe = load_coe(coe_path)
    errors: dict[str, str] = {}
    front = Runtimes(coe, {}, errors)
    health = ExpertHealth(store, front.paths, errors, front.load)
    return CoEServer(coe, store, scheduler, front.runtimes, _router(coe), health, opts, front.contexts,
                     tool_formats=front.tool_formats)


def _router(coe: CoEFile) -> Any | None:
    from coeflow.router import load_router_for_coe
    if coe.router_dir.exists():
        return load_router_for_coe(coe)
    log.warning("%s: no trained router at %s; model 'coe' is unavailable", coe.source, coe.router_dir)
    return None


class Runtimes:
    """Each expert's tokenizer, config, context and sampling defaults, read from its checkpoint
    (into `runtimes`); an expert whose files cannot be read is left out with the reason in
    `errors` (it answers 503), and `load(name)` reads it again."""

    def __init__(self, coe: CoEFile, runtimes: dict[str, Any], errors: dict[str, str]) -> None:
        self.coe, self.runtimes = coe, runtimes
        self.contexts: dict[str, int] = {}
        self.tool_formats: dict[str, ToolFormat | None] = {}
        self.paths = {spec.name: spec.path for spec in coe.experts}
        for spec in coe.experts:
            if spec.name in errors:
                log.error("expert %s cannot serve: %s", spec.name, errors[spec.name])
                continue
            try:
                self.load(spec.name)
            except CoeflowError as e:
                errors[spec.name] = str(e)
                log.error("expert %s cannot serve: %s", spec.name, e)
        if not self.runtimes:
            raise ConfigError(f"{coe.source}: no expert can serve: "
                              + "; ".join(f"{k}: {v}" for k, v in errors.items()))

    def load(self, name: str) -> None:
        """The expert's tokenizer, config and sampling defaults, read (raises CoeflowError when
        they cannot be)."""
        from coeflow.backend.real import ExpertRuntime
        spec = self.coe.expert(name)
        tok, cfg = Tokenizer.from_dir(spec.path), ModelConfig.from_dir(spec.path)
        if spec.chat_template is not None:  # the CoE file's, instead of the checkpoint's own
            try:
                tok = dataclasses.replace(tok, chat_template=spec.chat_template.read_text())
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"expert {name}: its chat_template {spec.chat_template.name} cannot be read: "
                                  f"{e}") from None
        _ = tok.max_token_chars  # the prompt-length check's bound: a scan of the vocabulary, now, not at a request
        self.runtimes[name] = ExpertRuntime(tok, frozenset(tok.eos_ids), cfg,
                                            generation_defaults(spec.path) | dict(spec.sampling))
        self.contexts[name] = min(cfg.max_position_embeddings, spec.max_context or cfg.max_position_embeddings)
        self.tool_formats[name] = (FORMATS[spec.tool_call_format] if spec.tool_call_format
                                   else detect(tok.chat_template))


def generation_defaults(checkpoint: Path) -> dict[str, float]:
    """The sampling defaults a checkpoint's generation_config.json gives (temperature, top_p,
    top_k, min_p, repetition_penalty), as vLLM takes them; one out of coeflow's range is left
    out with a warning rather than failing every request that leaves it unset."""
    try:
        raw = json.loads((Path(checkpoint) / "generation_config.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for key in SAMPLING_DEFAULTS:
        value = raw.get(key) if isinstance(raw, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            why = RANGES[key].problem(value)
            if why:
                log.warning("%s: generation_config.json's %s ignored: it %s", checkpoint, key, why)
                continue
            out[key] = int(value) if key == "top_k" else value
    return out
