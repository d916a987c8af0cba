"""`coeflow bench ...`: each benchmark compares coeflow with the peer a user would pick and with
the physical limit measured in the same run. Sub-commands register themselves below."""

from __future__ import annotations

import argparse
import json
import sys


def _progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("bench", help=help_text, description="Benchmarks (figures go in BENCHMARKS.md).")
    bsub = p.add_subparsers(dest="bench", metavar="BENCHMARK")
    p.set_defaults(func=lambda a: p.print_help() or 2)

    d = bsub.add_parser("decode", help="decode tokens/s: transformers generate vs coeflow eager vs fused",
                        description=(
                            "Decode speed of random-weight Llama checkpoints (tiny ~7M, medium ~140M "
                            "parameters) for hf-transformers generate, coeflow-eager and coeflow-fused, "
                            "side by side, with the machine's memory read bandwidth measured in the "
                            "same run. Takes several minutes on a 2-core CPU (the fused engine compiles "
                            "once per shape)."))
    d.add_argument("--models", nargs="+", default=["tiny", "medium"], choices=["tiny", "medium"])
    d.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    d.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    d.add_argument("--engines", nargs="+", default=["hf-transformers", "coeflow-eager", "coeflow-fused"],
                   choices=["hf-transformers", "coeflow-eager", "coeflow-fused"])
    d.add_argument("--new-tokens", type=int, default=32, help="decode steps timed per run (default 32)")
    d.add_argument("--repeats", type=int, default=3, help="best of N runs (default 3)")
    d.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    d.set_defaults(func=_decode)

    s = bsub.add_parser("serve", help="load test on loopback: tiered store vs reload-from-disk baseline",
                        description=(
                            "A bounded load generator (official openai client, streaming) against a live "
                            "server on 127.0.0.1, Zipf traffic over random-weight experts, device tier "
                            "holding a few: coeflow (host tier holds every expert) against a baseline that "
                            "reloads an expert from disk on every switch, in one run."))
    s.add_argument("--requests", type=int, default=300, help="requests per run (default 300)")
    s.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    s.add_argument("--experts", type=int, default=8, help="experts in the CoE (default 8)")
    s.add_argument("--device-slots", type=int, default=2, help="experts the device tier holds (default 2)")
    s.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of expert popularity (default 1.0)")
    s.add_argument("--max-tokens", type=int, default=16, help="tokens per request (default 16)")
    s.add_argument("--engine", default="fused", choices=["fused", "eager"])
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from coeflow.bench.serve import format_table, run
    report = run(requests=args.requests, concurrency=args.concurrency, experts=args.experts,
                 device_slots=args.device_slots, zipf_s=args.zipf, max_tokens=args.max_tokens,
                 engine=args.engine, progress=_progress)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _decode(args: argparse.Namespace) -> int:
    from coeflow.bench.decode import format_table, run
    report = run(models=tuple(args.models), dtypes=tuple(args.dtypes), batches=tuple(args.batches),
                 engines=tuple(args.engines), new_tokens=args.new_tokens, repeats=args.repeats,
                 progress=_progress)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
