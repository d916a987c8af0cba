"""Assemble a server from a CoE file: the real backend, store, router, tokenizers, scheduler.
An expert that cannot load its tokenizer or config is marked broken here and answers 503;
the rest serve."""

from __future__ import annotations

import logging
from pathlib import Path

from coeflow.coefile import load_coe
from coeflow.errors import CoeflowError, ConfigError
from coeflow.model import ModelConfig, Tokenizer
from coeflow.scheduler import Scheduler
from coeflow.server.app import CoEServer
from coeflow.server.options import ServerOptions

log = logging.getLogger(__name__)


def build_server(coe_path: str | Path, opts: ServerOptions, store=None) -> CoEServer:
    """`store` replaces the tiered ExpertStore (benchmarks use it to serve a baseline); it
    must hand out weights in the options' dtype and device."""
    from coeflow.backend.real import ExpertRuntime, RealBackend
    from coeflow.router import load_router_for_coe
    from coeflow.store import ExpertStore

    coe = load_coe(coe_path)
    backend = RealBackend(opts.dtype, opts.device, fused=opts.fused)
    if store is None:
        store = ExpertStore(coe, backend, device_mem=opts.device_mem, host_mem=opts.host_mem,
                            policy=opts.policy)
    runtimes = backend.runtimes
    broken: dict[str, str] = {}
    contexts: dict[str, int] = {}
    shapes: dict[tuple, str] = {}  # one expert per shape is enough to compile its decode step
    for spec in coe.experts:
        try:
            tok = Tokenizer.from_dir(spec.path)
            cfg = ModelConfig.from_dir(spec.path)
        except CoeflowError as e:
            broken[spec.name] = str(e)
            log.error("expert %s cannot serve: %s", spec.name, e)
            continue
        runtimes[spec.name] = ExpertRuntime(tok, frozenset(tok.eos_ids))
        contexts[spec.name] = cfg.max_position_embeddings
        shapes.setdefault(cfg.shape_key, spec.name)
    for s in store.status():
        if s.error and s.name not in broken:
            broken[s.name] = s.error
    if not runtimes:
        raise ConfigError(f"{coe.source}: no expert can serve: " + "; ".join(f"{k}: {v}" for k, v in broken.items()))
    router = None
    if coe.router_dir.exists():
        router = load_router_for_coe(coe)
    else:
        log.warning("%s: no trained router at %s; model 'coe' is unavailable", coe.source, coe.router_dir)
    # warm the cache lengths of short requests and of those that leave max_tokens at its default
    lengths = tuple(sorted({32, 16 + opts.limits.default_max_tokens}))
    scheduler = Scheduler(store, backend, list(runtimes), max_batch=opts.max_batch, max_queue=opts.max_queue,
                          max_wait_s=opts.max_wait_s, warm_lengths=lengths)
    warm = [n for n in shapes.values() if n not in broken] if opts.warm_up and opts.fused else []
    return CoEServer(coe, store, scheduler, runtimes, router, opts.limits, opts.api_key, broken, contexts, warm)
