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


def _decode(args: argparse.Namespace) -> int:
    from coeflow.bench.decode import format_table, run
    report = run(models=tuple(args.models), dtypes=tuple(args.dtypes), batches=tuple(args.batches),
                 engines=tuple(args.engines), new_tokens=args.new_tokens, repeats=args.repeats,
                 progress=_progress)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
