"""`coeflow serve`: a CoE behind one OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse
import os


def add_server_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `serve` and `demo`; their defaults are ServerOptions' and Limits'."""
    from coeflow.server import Limits, ServerOptions
    g = p.add_argument_group("memory tiers")
    g.add_argument("--device-mem", metavar="BYTES", default=None,
                   help="device tier budget, e.g. 6GB or 512MiB (default: unlimited). On a CPU-only "
                        "machine the device tier is the set of experts the engine may attach at once")
    g.add_argument("--host-mem", metavar="BYTES", default=None,
                   help="host DRAM tier budget, e.g. 40GB (default: unlimited)")
    g.add_argument("--kv-mem", metavar="BYTES", default=None,
                   help="KV cache of each model shape, in blocks of 16 tokens its experts share (default 1GiB, "
                        "or what 64 full-context sequences need if less). A request waits for room; it is "
                        "refused only if it could never fit")
    g.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false", default=ServerOptions.prefix_cache,
                   help="prefill every prompt whole, instead of reusing the KV blocks of a prefix (a shared "
                        "system prompt, a chat's history) that an earlier prompt to the same expert computed")
    g.add_argument("--policy", default=ServerOptions.policy, help="eviction policy of the tiers (default %(default)s)")
    e = p.add_argument_group("engine")
    e.add_argument("--dtype", default=ServerOptions.dtype, choices=["auto", "fp32", "bf16", "fp16"],
                   help="weight dtype of experts whose CoE entry names none (default %(default)s: each "
                        "checkpoint's own, fp16 served as bf16 on a CPU)")
    e.add_argument("--device", default=ServerOptions.device,
                   help="auto (cuda if present, else cpu), cpu, cuda (default %(default)s)")
    e.add_argument("--engine", default="fused" if ServerOptions.fused else "eager", choices=["fused", "eager"],
                   help="fused: compiled decode step shared by experts of one shape; eager: plain PyTorch "
                        "(default %(default)s)")
    e.add_argument("--max-batch", type=int, default=ServerOptions.max_batch,
                   help="most requests of one expert batched together (default %(default)s)")
    e.add_argument("--schedule", default=ServerOptions.schedule, choices=["continuous", "static"],
                   help="continuous: requests join and leave an expert's batch between any two steps, and "
                        "the device moves between experts at step granularity; static: a batch runs to "
                        "completion before the next starts (default %(default)s)")
    e.add_argument("--slice", type=float, default=ServerOptions.slice_s, metavar="SECONDS", dest="slice_s",
                   help="with others waiting, an expert keeps the device at least this long "
                        "(default %(default)s)")
    e.add_argument("--prefill-chunk", type=int, default=ServerOptions.prefill_chunk, metavar="TOKENS",
                   help="most prompt tokens prefilled in one step, so a long prompt stalls the running "
                        "requests for one chunk at most (default %(default)s)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-queue", type=int, default=ServerOptions.max_queue,
                     help="waiting requests before new ones get HTTP 429 (default %(default)s)")
    lim.add_argument("--max-wait", type=float, default=ServerOptions.max_wait_s, metavar="SECONDS",
                     help="a request waiting longer than this runs next, even if its expert must be "
                          "loaded first: the bound on starvation (default %(default)s)")
    lim.add_argument("--max-tokens", type=int, default=Limits.max_tokens,
                     help="largest max_tokens a request may ask (default %(default)s)")
    lim.add_argument("--max-prompt-tokens", type=int, default=Limits.max_prompt_tokens,
                     help="longest prompt in tokens (default %(default)s)")
    lim.add_argument("--request-timeout", type=float, default=ServerOptions.request_timeout_s, metavar="SECONDS",
                     help="a request not answered within this many seconds is cancelled with HTTP 408 (a stream "
                          "ends with the error); a client may ask for less with the X-Request-Timeout header "
                          "(default: no deadline)")
    lim.add_argument("--max-body", metavar="BYTES", default=str(Limits.max_body_bytes),
                     help="largest request body; a larger one is refused (HTTP 413) before it is read "
                          "(default %(default)s)")
    p.add_argument("--no-warmup", dest="warm_up", action="store_false", default=ServerOptions.warm_up,
                   help="do not compile the decode step before serving")


def add_listen_options(p: argparse.ArgumentParser) -> None:
    """Where `serve` and `demo` listen, and the key they ask for."""
    from coeflow.server import DEFAULT_HOST, DEFAULT_PORT
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health and /ready, /metrics and "
                        "/docs included (or set COEFLOW_API_KEY)")
    p.add_argument("--admin-key", default=None,
                   help="require this key, and no other, for the admin actions (POST /v1/experts/NAME/load|"
                        "unload|pin); it opens the other routes too (or set COEFLOW_ADMIN_KEY)")
    p.add_argument("--public-metrics", action="store_true",
                   help="leave /metrics open to scrapers even with --api-key")
    p.add_argument("--no-console", action="store_false", dest="console",
                   help="serve no web console at / (by default: chat, experts and their tiers, routing, charts; "
                        "its page is open, what it shows needs the keys)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", dest="cors_origins",
                   help="let browser pages from ORIGIN (e.g. http://localhost:3000; repeat for more) call the "
                        "server; default: none (CORS off)")


def server_options(args: argparse.Namespace):
    from coeflow.server import Limits, ServerOptions
    from coeflow.store import parse_bytes
    return ServerOptions(
        device_mem=parse_bytes(args.device_mem) if args.device_mem else None,
        host_mem=parse_bytes(args.host_mem) if args.host_mem else None,
        kv_mem=parse_bytes(args.kv_mem) if args.kv_mem else None, prefix_cache=args.prefix_cache,
        dtype=args.dtype, device=args.device, fused=args.engine == "fused", policy=args.policy,
        max_batch=args.max_batch, max_queue=args.max_queue, max_wait_s=args.max_wait,
        schedule=args.schedule, slice_s=args.slice_s, prefill_chunk=args.prefill_chunk,
        limits=Limits(max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens,
                      max_body_bytes=parse_bytes(args.max_body)),
        api_key=args.api_key if args.api_key is not None else os.environ.get("COEFLOW_API_KEY"),
        admin_key=args.admin_key if args.admin_key is not None else os.environ.get("COEFLOW_ADMIN_KEY"),
        public_metrics=args.public_metrics, cors_origins=tuple(args.cors_origins),
        request_timeout_s=args.request_timeout, warm_up=args.warm_up, console=args.console)


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("serve", help=help_text, description=(
        "Serve a CoE behind one OpenAI-compatible endpoint. 'model' in a request is an expert's "
        "name, or 'coe' to let the router choose. Routes: POST /v1/chat/completions, "
        "POST /v1/completions, GET /v1/models, GET /v1/experts (tiers, hits, switch times), "
        "POST /v1/experts/NAME/load|unload|pin (admin), POST /v1/route (the router's decision, nothing generated), "
        "GET /v1/stats (the last minutes), GET /metrics (Prometheus), GET /health (alive), "
        "GET /ready (warm-up done, not draining), GET / (the web console)."))
    p.add_argument("--coe", required=True, metavar="FILE", help="the CoE file (coe.yaml) or its directory")
    add_listen_options(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    from coeflow.server.logs import LOG_FORMATS
    p.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                   help="text (default) or json: one JSON object a line (time, level, logger, message), "
                        "uvicorn's access lines included, for log collectors")
    p.add_argument("--record-trace", metavar="FILE", default=None,
                   help="append one JSONL trace line per accepted request to FILE (arrival time, "
                        "model, prompt text and length, max_tokens): replay it with `coeflow "
                        "simulate trace`. The file holds users' prompts")
    add_server_options(p)
    r = p.add_argument_group("Ray Serve (pip install 'coeflow[ray]')")
    r.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="serve on Ray Serve: an ingress (these routes, the router) in front of expert replicas, "
                        "each a whole coeflow core with the memory tiers above as its own budgets; requests go "
                        "to a replica that already holds their expert. ADDRESS: a running cluster's (e.g. "
                        "auto, or ray://head:10001); none: start Ray on this machine")
    r.add_argument("--replicas", type=int, default=2, help="expert replicas (default %(default)s)")
    r.add_argument("--replica-cpus", type=float, default=1.0, metavar="N",
                   help="CPUs each expert replica reserves, and its torch threads (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from coeflow.server import build_server, serve
    from coeflow.server.logs import configure
    configure(args.log_level, args.log_format)
    if args.ray is not None:
        return run_on_ray(args)
    srv = build_server(args.coe, server_options(args))
    if args.record_trace:
        from coeflow.trace import TraceRecorder
        srv.recorder = TraceRecorder(args.record_trace, clock=srv.scheduler.clock.now)
        print(f"coeflow: recording requests to {args.record_trace}", flush=True)
    print(f"coeflow: serving {len(srv.coe.experts)} experts of {srv.coe.source} at http://{args.host}:{args.port}/v1"
          + (" (API key required)" if srv.opts.api_key else ""), flush=True)
    if srv.opts.console:
        print(f"coeflow: web console at http://{args.host}:{args.port}/", flush=True)
    for name, why in srv.health.report(srv.coe.expert_names)["failed"].items():
        print(f"coeflow: expert {name} is unavailable: {why}", flush=True)
    try:
        serve(srv, args.host, args.port, args.log_level, own_logging=args.log_format == "text")
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        pass
    finally:
        if srv.recorder is not None:
            srv.recorder.close()
    print("coeflow: stopped", flush=True)
    return 0


def run_on_ray(args: argparse.Namespace) -> int:
    from coeflow.errors import ConfigError
    from coeflow.extras import require
    require(("ray",), "coeflow serve --ray", "ray")
    if args.record_trace:
        raise ConfigError("--record-trace is not available with --ray yet: record on one process")
    if args.replicas < 1 or args.replica_cpus <= 0:
        raise ConfigError("--replicas must be at least 1 and --replica-cpus more than 0")
    from coeflow.cluster.deploy import serve_on_ray
    print(f"coeflow: serving {args.coe} on Ray ({args.replicas} expert replicas) at "
          f"http://{args.host}:{args.port}/v1; Ctrl-C stops", flush=True)
    serve_on_ray(args.coe, server_options(args), None if args.ray == "local" else args.ray, args.host, args.port,
                 args.replicas, args.replica_cpus)
    print("coeflow: stopped", flush=True)
    return 0
