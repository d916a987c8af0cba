"""`coeflow eval perplexity --coe FILE`: held-out perplexity of every expert and of the
routed CoE, per domain and on the mixed set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coeflow.coefile import load_coe
from coeflow.errors import ConfigError

HELDOUT = Path("data") / "heldout_text.jsonl"


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("eval", help=help_text, description=help_text)
    esub = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    pp = esub.add_parser("perplexity", help="per-domain and mixed held-out perplexity of each expert and the CoE",
                         description="Perplexity of every expert and of the routed CoE (the router picks the expert "
                         "per sample) on held-out text, per domain and on the mixed set.")
    pp.add_argument("--coe", required=True, help="the CoE file (coe.yaml)")
    pp.add_argument("--data", help=f'{{"text", "domain"}} per line (default: {HELDOUT} beside the CoE file)')
    pp.add_argument("--max-tokens", type=int, default=512, help="tokens scored per sample (default 512)")
    pp.add_argument("--json", action="store_true", help="print one JSON object")
    pp.set_defaults(func=run_perplexity)
    tp = esub.add_parser("tasks", help="accuracy on held-out checkable tasks: each expert, the routed CoE, oracle routing",
                         description="Ask held-out tasks whose answers are checked (arithmetic, English to SQL run in "
                         "sqlite, English to a shell command, Python functions run against tests, word puzzles) of "
                         "every single expert, of the routed CoE ('coe') and of oracle routing (each task to its "
                         "domain's expert), greedily, through the server; print accuracy per domain and on the mixed "
                         "set. Needs experts named math, sql, shell, python and general (the demo CoE's). Python "
                         "answers run in a separate interpreter, code that imports or opens files refused unrun.")
    tp.add_argument("--coe", required=True, help="the CoE file (coe.yaml)")
    tp.add_argument("--n", type=int, default=40, help="held-out tasks per domain (default 40)")
    tp.add_argument("--seed", type=int, default=0, help="which tasks are drawn (default 0)")
    tp.add_argument("--monolith", metavar="FILE",
                    help="also ask a CoE file of one expert every task, as the system 'monolith' (the demo's "
                    "coe-monolith.yaml: one model tuned on every domain's tasks with the five experts' compute)")
    tp.add_argument("--json", action="store_true", help='print one JSON object: "rows" of system, domain, n, accuracy')
    tp.set_defaults(func=run_tasks)


def run_perplexity(args: argparse.Namespace) -> int:
    from coeflow.demo.perplexity import format_table, perplexity_report, read_samples
    from coeflow.model.convert import with_quantized_experts
    from coeflow.router import load_router_for_coe

    coe, failed = with_quantized_experts(load_coe(args.coe))
    if failed:
        raise ConfigError("; ".join(f"expert {k}: {v}" for k, v in failed.items()))
    data = Path(args.data) if args.data else coe.source.parent / HELDOUT
    if not data.exists():
        raise ConfigError(f"{data}: no held-out text; pass --data FILE.jsonl with {{\"text\", \"domain\"}} lines")
    if args.max_tokens < 2:
        raise ConfigError("--max-tokens must be at least 2")
    rep = perplexity_report(coe, read_samples(data), load_router_for_coe(coe), args.max_tokens)
    print(json.dumps(rep) if args.json else format_table(rep))
    return 0


def run_tasks(args: argparse.Namespace) -> int:
    from coeflow.extras import require
    require(("openai", "tqdm"), "coeflow eval tasks", "demo")
    from coeflow.demo.task_eval import evaluate, format_table
    if args.n < 1:
        raise ConfigError("--n must be at least 1")
    report = evaluate(args.coe, n=args.n, seed=args.seed, monolith=args.monolith)
    print(json.dumps(report) if args.json else format_table(report))
    return 0
