"""`coeflow route --coe FILE "prompt"`: which expert the router picks, how sure it is, and
why (the runner-ups, and the nearest training prompts for kNN or the deciding n-grams for
the linear model)."""

from __future__ import annotations

import argparse
import json
import sys

from coeflow.coefile import load_coe
from coeflow.router import load_router_for_coe


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("route", help=help_text, description=help_text)
    p.add_argument("--coe", required=True, help="the CoE file (coe.yaml) whose trained router to use")
    p.add_argument("prompt", help="the prompt to route; '-' reads it from standard input (raw bytes)")
    p.add_argument("--top", type=int, default=3, help="how many runner-ups and examples to show (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    coe = load_coe(args.coe)
    router = load_router_for_coe(coe)
    prompt: str | bytes = sys.stdin.buffer.read() if args.prompt == "-" else args.prompt
    d = router.route(prompt)
    nearest = router.nearest_examples(prompt, args.top)
    terms = router.top_terms(prompt, d.top, args.top + 2)
    if args.json:
        print(json.dumps({
            "expert": d.expert, "confidence": d.confidence, "fell_back": d.fell_back, "top": d.top,
            "reason": d.reason, "candidates": d.candidates,
            "nearest_examples": [{"prompt": p, "expert": e, "similarity": s} for p, e, s in nearest],
            "top_terms": [{"term": t, "weight": w} for t, w in terms],
        }))
        return 0
    print(f"expert:     {d.expert}")
    print(f"confidence: {d.confidence:.3f} (threshold {router.threshold:.2f})")
    if d.fell_back:
        print(f"fell back:  {d.reason}; the router's top choice was {d.top}")
    print("candidates: " + ", ".join(f"{e} {p:.3f}" for e, p in d.candidates[: args.top + 1]))
    if nearest:
        print("nearest training prompts:")
        for p, e, s in nearest:
            print(f"  {s:.2f}  [{e}] {_short(p)}")
    if terms:
        print(f"features pointing to {d.top}: " + ", ".join(f"{t!r} {w:+.2f}" for t, w in terms))
    return 0


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
