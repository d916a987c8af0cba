"""`coeflow demo`: build the demo CoE if missing, serve it, show a table of routed answers.
`coeflow demo build`: only build it (five tiny experts, a router, coe.yaml) on this CPU."""

from __future__ import annotations

import argparse

from coeflow.extras import require

DEFAULT_DIR = "demo-coe"


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    from coeflow.cli.serve import add_listen_options, add_server_options

    p = sub.add_parser("demo", help=help_text, description=(
        "Build the demo CoE if it is missing (python, math, sql, shell and general experts and a "
        "router, trained on this CPU), serve it on loopback, send eight held-out tasks of mixed "
        "domains (never seen in training, each answer checked) through the official openai client "
        "and print what happened to each (expert, router confidence, tier the expert was in, switch "
        "time, time to first token, tokens/s, whether the answer is right, the answer), then the "
        "build's accuracy figures: the routed CoE against the best single expert and a monolith of "
        "the same training compute. Then keep serving until Ctrl-C, or exit with --once."))
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"where the demo CoE lives (default ./{DEFAULT_DIR})")
    p.add_argument("--seed", type=int, default=0, help="random seed of the build (default 0)")
    p.add_argument("--once", action="store_true", help="exit after the table instead of serving on")
    p.add_argument("--quick", action="store_true", help="a much smaller build in seconds (for tests and trials)")
    add_listen_options(p)
    add_server_options(p)
    dsub = p.add_subparsers(dest="demo_command", metavar="SUBCOMMAND")
    p.set_defaults(func=run_demo)
    b = dsub.add_parser(
        "build",
        help="build the demo CoE: python, math, sql, shell and general experts, and a router",
        description="Train a shared tokenizer, a tiny Llama base, five experts fine-tuned from it on their "
        "domain's checkable tasks and text (python, math, sql, shell; general is the fallback), a monolith "
        "tuned on all of it with the experts' compute, and the router, on this CPU, from text shipped with "
        "Python or generated here; write DIR/coe.yaml (and coe-delta1.yaml, coe-monolith.yaml), then measure "
        "every system on held-out tasks (DIR/data/tasks_eval.json). Deterministic for a seed; a second run "
        "with the same seed returns at once.",
    )
    b.add_argument("--dir", default=DEFAULT_DIR, help=f"where to build (default ./{DEFAULT_DIR})")
    b.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    b.add_argument("--force", action="store_true", help="rebuild even if a build with this seed is there")
    b.add_argument("--quick", action="store_true", help="a much smaller build in seconds (for tests and trials)")
    b.set_defaults(func=run_build)


def run_demo(args: argparse.Namespace) -> int:
    require(("transformers", "tqdm", "openai"), "coeflow demo", "demo")
    from coeflow.cli.serve import server_options
    from coeflow.demo.showcase import run_demo as showcase

    showcase(args.dir, server_options(args), args.host, args.port, once=args.once, seed=args.seed,
             quick=args.quick)
    return 0


def run_build(args: argparse.Namespace) -> int:
    require(("transformers", "tqdm", "openai"), "coeflow demo build", "demo")  # openai: the build's eval tasks
    from coeflow.demo.build import FULL, MONOLITH_FILE, QUICK, build_demo

    result = build_demo(args.dir, args.seed, QUICK if args.quick else FULL, force=args.force)
    if result.cached:
        print(f"demo CoE already built with seed {args.seed}: {result.coe_file}")
    else:
        print(f"built the demo CoE in {result.seconds:.0f} s: {result.coe_file}")
    print(f"try: coeflow route --coe {result.coe_file} \"how do I undo a git commit?\"")
    print(f"     coeflow eval tasks --coe {result.coe_file} --monolith {result.directory / MONOLITH_FILE}")
    print(f"     coeflow eval perplexity --coe {result.coe_file}")
    return 0
