"""`coeflow bench ...`: each benchmark compares coeflow with the peer a user would pick and with
the physical limit measured in the same run. Sub-commands register themselves below."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from coeflow.extras import require

SERVE_SERVERS = ("coeflow", "coeflow_no_host_tier", "baseline", "ceiling")  # bench.serve.SERVERS
SERVE_SIZES = ("100MB", "1.2GB")  # bench.serve.EXPERT_SIZES
DECODE_MODELS = ("tiny", "medium", "1b", "7b")  # bench.decode.CONFIGS
CHAOS_CASES = ("oversized", "malformed", "bad_seed", "bad_field", "disconnect")  # bench.chaos.CASES


def _progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("bench", help=help_text, description="Benchmarks (figures go in BENCHMARKS.md).")
    bsub = p.add_subparsers(dest="bench", metavar="BENCHMARK")
    p.set_defaults(func=lambda a: p.print_help() or 2)

    d = bsub.add_parser("decode", help="decode tokens/s: transformers generate vs coeflow eager vs fused",
                        description=(
                            "Decode speed of random-weight Llama checkpoints (tiny ~7M, medium ~140M, "
                            "1b ~1.1B, 7b ~6.7B parameters, the last two for GPUs) for hf-transformers generate, coeflow-eager and coeflow-fused, "
                            "side by side, with the machine's memory read bandwidth measured in the "
                            "same run, before and after each timed run (each row is judged against "
                            "the reads beside its own runs). Takes several minutes on a 2-core CPU (the fused engine compiles "
                            "once per shape)."))
    d.add_argument("--models", nargs="*", default=None, choices=list(DECODE_MODELS),
                   help="random-weight models (default tiny medium, unless --checkpoint is given)")
    d.add_argument("--checkpoint", action="append", default=[], metavar="DIR",
                   help="a checkpoint directory to bench as it is, e.g. a demo expert (repeatable)")
    d.add_argument("--json-schema", action="store_true",
                   help="also time each coeflow engine decoding under a JSON schema (an array of small "
                        "integers), greedily like its plain row: what structured output costs; needs "
                        "--checkpoint with a tokenizer")
    d.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where every engine runs (default cpu); on cuda the device's copy bandwidth is "
                        "measured too")
    d.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16", "int8", "int4"],
                   help="weight dtypes (default fp32 bf16); int8 and int4: the checkpoint quantized by "
                        "`coeflow quantize --lm-head` (coeflow rows only), weight GB/s counting packed bytes")
    d.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    d.add_argument("--engines", nargs="+", default=["hf-transformers", "coeflow-eager", "coeflow-fused"],
                   choices=["hf-transformers", "coeflow-eager", "coeflow-fused", "coeflow-fused-inductor",
                            "coeflow-fused-cublas"],
                   help="coeflow-fused-inductor: the fused engine without coeflow's CPU linear kernel; "
                        "coeflow-fused-cublas: without coeflow's Triton kernel for one-row products "
                        "(GPU; coeflow-fused takes it where it measures faster than cuBLAS)")
    d.add_argument("--peer-llama-bench", default=None, metavar="PATH", type=Path,
                   help="also time llama.cpp (a built llama-bench, inside its source tree) at batch 1 on each "
                        "--checkpoint, converted to GGUF by its converter: bf16, Q8_0 for int8, Q4_0 for int4")
    d.add_argument("--new-tokens", type=int, default=32, help="decode steps timed per run (default 32)")
    d.add_argument("--repeats", type=int, default=5,
                   help="timed runs per row, each between two reads of memory; the median (default 5)")
    d.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    d.set_defaults(func=_decode)

    s = bsub.add_parser("switch", help="expert switch: coeflow store vs from_pretrained vs load_state_dict",
                        description=(
                            "Time to ready and to first token after switching to a ~300 MB random-weight "
                            "Llama expert from each tier (disk cold/warm page cache, host, device) for the "
                            "coeflow store, transformers from_pretrained and safetensors load_file + "
                            "load_state_dict on the same files, with raw sequential read and memory copy "
                            "bandwidth measured in the same run. Takes a few minutes."))
    s.add_argument("--sizes", nargs="+", default=["300MB"], choices=["300MB", "1.2GB"],
                   help="expert sizes (default 300MB)")
    s.add_argument("--repeats", type=int, default=3, help="median of N runs (default 3)")
    s.add_argument("--load-threads", type=int, default=4, help="store read threads (default 4)")
    s.add_argument("--compute-threads", type=int, default=1,
                   help="torch threads for every contender (default 1; 0 = torch's default)")
    s.add_argument("--workdir", default=None, help="where to write the checkpoints (default: a temp dir)")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s.set_defaults(func=_switch)

    c = bsub.add_parser("cache", help="eviction policies vs Belady on Zipf and shifting traces",
                        description=(
                            "Replay request traces (Zipf at several skews, a shifting working set) over "
                            "32+ experts with a device tier of 4, for LRU, LFU, FIFO and LRFU against "
                            "Belady's optimum: hit rate and bytes moved. A simulation; seconds."))
    c.add_argument("--experts", type=int, default=32, help="number of experts (default 32)")
    c.add_argument("--capacity", type=int, default=4, help="experts the device tier holds (default 4)")
    c.add_argument("--requests", type=int, default=20000, help="requests per trace (default 20000)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--weights", nargs="+", default=["bf16"], choices=["bf16", "int8", "int4"],
                   help="experts stored as these (default bf16): the device tier keeps --capacity bf16 experts' "
                        "bytes, which hold more int8 or int4 experts (sized as a quantized Llama-2-7B against "
                        "its bf16 self)")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    c.set_defaults(func=_cache)

    s = bsub.add_parser("serve", help="load test on loopback: tiered store vs reload-from-disk baseline",
                        description=(
                            "A bounded load generator (official openai client, streaming) against a live "
                            "server on 127.0.0.1, Zipf traffic over random-weight experts, device tier "
                            "holding a few: coeflow (host tier holds every expert) against a baseline that "
                            "reloads an expert from disk on every switch, in one run; also coeflow without a "
                            "host tier, and a ceiling with every expert resident (no switches at all)."))
    s.add_argument("--workload", default="zipf", choices=["zipf", "mixed"],
                   help="zipf (default): closed-loop clients, equal short outputs, the tiered store against "
                        "reloading; mixed: open-loop Poisson arrivals, outputs of 8-512 tokens, a shared "
                        "system text, continuous batching against static (`--schedule static`) and a "
                        "reloading baseline, on the demo CoE or --coe")
    s.add_argument("--ray", action="store_true",
                   help="zipf on Ray Serve (pip install 'coeflow[ray]'): the same experts and trace served by one "
                        "process and by a Ray cluster of --nodes nodes started on this machine (an expert replica "
                        "a worker node), then on Ray with one replica killed halfway; affinity, added latency, "
                        "lost requests")
    s.add_argument("--nodes", type=int, default=3, help="--ray: nodes of the cluster, the head included (default 3)")
    s.add_argument("--host-slots", type=int, default=5,
                   help="--ray: experts each replica's host tier holds (the single process: all replicas' "
                        "together; default 5)")
    s.add_argument("--coe", default=None, help="mixed: the CoE file to serve (default: the demo CoE in "
                                                "./demo-coe, built if missing)")
    s.add_argument("--rate", type=float, default=4.0, help="mixed: arrivals per second (default 4)")
    s.add_argument("--slice", type=float, default=None, dest="slice_s", metavar="SECONDS",
                   help="mixed: coeflow's --slice (default: the server's)")
    s.add_argument("--peer-llama-server", default=None, metavar="PATH", type=Path,
                   help="mixed: also run llama.cpp's server in router mode as the peer: PATH is a llama-server "
                        "built inside a llama.cpp source tree, whose convert_hf_to_gguf.py converts the experts "
                        "(needs its Python requirements, e.g. sentencepiece)")
    s.add_argument("--peer-threads", default=None, metavar="N", type=int,
                   help="mixed: the peer's threads per model (llama-server -t; default: llama.cpp's, every "
                        "core for each of the experts' processes)")
    s.add_argument("--peer-models", default=None, metavar="DIR", type=Path,
                   help="mixed: where the experts' GGUF files are written and reused (default: gguf/ beside "
                        "the CoE file)")
    s.add_argument("--requests", type=int, default=300, help="requests per run (default 300)")
    s.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    s.add_argument("--experts", type=int, default=8, help="experts in the CoE (default 8)")
    s.add_argument("--device-slots", type=int, default=2, help="experts the device tier holds (default 2)")
    s.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of expert popularity (default 1.0)")
    s.add_argument("--max-tokens", type=int, default=16, help="tokens per request (default 16)")
    s.add_argument("--engine", default="fused", choices=["fused", "eager"])
    s.add_argument("--expert-size", default="100MB", choices=list(SERVE_SIZES),
                   help="size of each random-weight expert (fp32 on disk; default 100MB)")
    s.add_argument("--servers", nargs="+", default=list(SERVE_SERVERS), choices=list(SERVE_SERVERS),
                   help="which servers to run (default all four)")
    s.add_argument("--client", default="process", choices=["process", "thread"],
                   help="where the load generator runs: its own process (default), or a thread of the "
                        "server's process, sharing its interpreter lock")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s.set_defaults(func=_serve)

    v = bsub.add_parser("validate", help="the modelled backend's predictions vs a real run on this machine",
                        description=(
                            "Serve the CoE for real (in-process, budgets of whole experts), play a generated "
                            "trace open-loop, and replay the realized workload on the probed spec (run "
                            "`coeflow hw probe` first). The serving path's costs (per request, per token, per "
                            "load) are fitted on a calibration trace (--seed) and the model is judged on a "
                            "second trace and run (--seed + 1). Takes minutes."))
    v.add_argument("--coe", required=True, help="the CoE file to serve")
    v.add_argument("--engine", default="eager", choices=["eager", "fused"])
    v.add_argument("--requests", type=int, default=60, help="requests per trace (default 60)")
    v.add_argument("--rate", type=float, default=2.0, help="arrivals per second (default 2)")
    v.add_argument("--max-tokens", type=int, default=16, help="tokens per request (default 16)")
    v.add_argument("--device-experts", type=int, default=2, help="experts the device tier holds (default 2)")
    v.add_argument("--host-experts", type=int, default=3, help="experts the host tier holds (default 3)")
    v.add_argument("--hw", default="local-cpu", help="the probed spec to predict with (default local-cpu)")
    v.add_argument("--seed", type=int, default=0, help="the calibration trace's seed (default 0)")
    v.add_argument("--rows", default=None, help="write the measured rows (JSONL)")
    v.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    v.set_defaults(func=_validate)

    k = bsub.add_parser("chaos", help="well-formed traffic beside hostile clients and a kill -9, on loopback",
                        description=(
                            "Serve a CoE from a process of its own (`python -m coeflow serve`) and play three "
                            "phases of well-formed requests (the official openai client, Zipf over the served "
                            "models, greedy): alone; beside hostile clients (bodies over --max-body, malformed "
                            "JSON, out-of-range seeds, bad fields, slow-loris connections, clients that leave "
                            "mid-request); and again with the server killed (-9) and restarted partway through. "
                            "Prints what completed, the well-formed requests that failed outside the kill window "
                            "(must be 0), the hostile answers by HTTP status, latency p50/p99 without and with "
                            "the hostile mix, and the server's RSS before and after. About a minute per 200 "
                            "requests a phase on a 2-core CPU."))
    k.add_argument("--coe", default=None, metavar="FILE",
                   help="the CoE file to serve (default: a test CoE of three small random-weight experts and "
                        "a trained router, written to a temp dir)")
    k.add_argument("--requests", type=int, default=200, help="well-formed requests a phase (default 200)")
    k.add_argument("--concurrency", type=int, default=4, help="concurrent well-formed clients (default 4)")
    k.add_argument("--max-tokens", type=int, default=16, help="tokens per well-formed request (default 16)")
    k.add_argument("--hostile-rate", type=float, default=20.0,
                   help="hostile requests a second, all cases together, besides the slow-loris connections "
                        "(default 20)")
    k.add_argument("--slow-loris", type=int, default=4, help="slow-loris connections (default 4)")
    k.add_argument("--cases", nargs="+", default=list(CHAOS_CASES), choices=list(CHAOS_CASES),
                   help="the hostile cases besides slow loris (default all; disconnect: a long request whose "
                        "client leaves mid-request)")
    k.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of model popularity (default 1.0)")
    k.add_argument("--engine", default="eager", choices=["eager", "fused"],
                   help="the server's engine (default eager: no compile before the first phase)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    k.set_defaults(func=_chaos)


def _serve(args: argparse.Namespace) -> int:
    require(("transformers", "openai"), "coeflow bench serve", "bench")
    if args.workload == "mixed":
        return _serve_mixed(args)
    if args.ray:
        return _serve_ray(args)
    from coeflow.bench.serve import format_table, run
    report = run(requests=args.requests, concurrency=args.concurrency, experts=args.experts,
                 device_slots=args.device_slots, zipf_s=args.zipf, max_tokens=args.max_tokens,
                 engine=args.engine, expert_size=args.expert_size, servers=tuple(args.servers), client=args.client,
                 progress=_progress)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _serve_ray(args: argparse.Namespace) -> int:
    require(("ray",), "coeflow bench serve --ray", "ray")
    from coeflow.bench.ray_serve import format_table, run
    from coeflow.errors import ConfigError
    if args.nodes < 2:
        raise ConfigError("--nodes must be at least 2: a head for the ingress and a worker for the experts")
    with contextlib.redirect_stdout(sys.stderr):  # Ray's own messages, so that --json's output parses
        report = run(requests=args.requests, concurrency=args.concurrency, nodes=args.nodes, experts=args.experts,
                     expert_size=args.expert_size, device_slots=args.device_slots, host_slots=args.host_slots,
                     zipf_s=args.zipf, max_tokens=args.max_tokens, engine=args.engine, progress=_progress)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _serve_mixed(args: argparse.Namespace) -> int:
    from coeflow.bench.mixed import format_mixed, run_mixed
    coe = args.coe
    if coe is None:
        from coeflow.cli.demo import DEFAULT_DIR
        from coeflow.demo.build import build_demo
        coe = build_demo(DEFAULT_DIR).coe_file
    report = run_mixed(Path(coe), requests=args.requests, rate=args.rate, engine=args.engine, slice_s=args.slice_s,
                       peer_server=args.peer_llama_server, peer_models=args.peer_models,
                       peer_threads=args.peer_threads, progress=_progress)
    print(json.dumps(report, indent=2) if args.json else format_mixed(report))
    return 0


def _decode(args: argparse.Namespace) -> int:
    require(("transformers",), "coeflow bench decode", "bench")
    from coeflow.bench.decode import format_table, run
    from pathlib import Path
    models = args.models if args.models is not None else ([] if args.checkpoint else ["tiny", "medium"])
    report = run(models=tuple(models), dtypes=tuple(args.dtypes), batches=tuple(args.batches),
                 engines=tuple(args.engines), new_tokens=args.new_tokens, repeats=args.repeats,
                 device=args.device, progress=_progress, checkpoints=tuple(Path(c) for c in args.checkpoint),
                 json_schema=args.json_schema, peer_llama_bench=args.peer_llama_bench)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _switch(args: argparse.Namespace) -> int:
    from pathlib import Path

    require(("transformers",), "coeflow bench switch", "bench")
    from coeflow.bench.switch import format_table, run
    report = run(sizes=tuple(args.sizes), repeats=args.repeats, load_threads=args.load_threads,
                 compute_threads=args.compute_threads or None, workdir=Path(args.workdir) if args.workdir else None, progress=_progress)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _cache(args: argparse.Namespace) -> int:
    from coeflow.bench.cache import format_table, run
    report = run(experts=args.experts, capacity=args.capacity, length=args.requests, seed=args.seed,
                 progress=_progress, weights=tuple(args.weights))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _validate(args: argparse.Namespace) -> int:
    require(("openai",), "coeflow bench validate", "bench")
    from coeflow.bench.validate import format_report, run
    report = run(args.coe, engine=args.engine, requests=args.requests, rate=args.rate, max_tokens=args.max_tokens,
                 device_experts=args.device_experts, host_experts=args.host_experts, hw=args.hw, seed=args.seed,
                 rows_path=args.rows, progress=_progress)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def _chaos(args: argparse.Namespace) -> int:
    require(("transformers", "openai"), "coeflow bench chaos", "bench")
    from coeflow.bench.chaos import format_report, run
    report = run(requests=args.requests, concurrency=args.concurrency, max_tokens=args.max_tokens,
                 hostile_rate=args.hostile_rate, slow_loris=args.slow_loris, cases=tuple(args.cases), zipf_s=args.zipf,
                 engine=args.engine, coe=args.coe, seed=args.seed, progress=_progress)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["failed_normal"] == 0 else 1
