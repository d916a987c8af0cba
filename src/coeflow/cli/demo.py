"""`coeflow demo build`: build the demo CoE (five tiny experts, a router, coe.yaml) on this
machine's CPU. Serving it (`coeflow demo` with no sub-command) is added separately."""

from __future__ import annotations

import argparse

DEFAULT_DIR = "demo-coe"


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("demo", help=help_text, description=help_text)
    dsub = p.add_subparsers(dest="demo_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    b = dsub.add_parser(
        "build",
        help="build the demo CoE: python, math, sql, shell and general experts, and a router",
        description="Train a shared tokenizer, five tiny Llama experts (python, math, sql, shell; general is the "
        "fallback) and the router on this CPU, from text shipped with Python or generated here, and write "
        "DIR/coe.yaml. Deterministic for a seed; a second run with the same seed returns at once.",
    )
    b.add_argument("--dir", default=DEFAULT_DIR, help=f"where to build (default ./{DEFAULT_DIR})")
    b.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    b.add_argument("--force", action="store_true", help="rebuild even if a build with this seed is there")
    b.add_argument("--quick", action="store_true", help="a much smaller build in seconds (for tests and trials)")
    b.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from coeflow.demo.build import FULL, QUICK, build_demo

    result = build_demo(args.dir, args.seed, QUICK if args.quick else FULL, force=args.force)
    if result.cached:
        print(f"demo CoE already built with seed {args.seed}: {result.coe_file}")
    else:
        print(f"built the demo CoE in {result.seconds:.0f} s: {result.coe_file}")
    print(f"try: coeflow route --coe {result.coe_file} \"how do I undo a git commit?\"")
    print(f"     coeflow eval perplexity --coe {result.coe_file}")
    return 0
