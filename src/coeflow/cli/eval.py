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


def run_perplexity(args: argparse.Namespace) -> int:
    from coeflow.demo.perplexity import format_table, perplexity_report, read_samples
    from coeflow.router import load_router_for_coe

    coe = load_coe(args.coe)
    data = Path(args.data) if args.data else coe.source.parent / HELDOUT
    if not data.exists():
        raise ConfigError(f"{data}: no held-out text; pass --data FILE.jsonl with {{\"text\", \"domain\"}} lines")
    if args.max_tokens < 2:
        raise ConfigError("--max-tokens must be at least 2")
    rep = perplexity_report(coe, read_samples(data), load_router_for_coe(coe), args.max_tokens)
    print(json.dumps(rep) if args.json else format_table(rep))
    return 0
