"""What structured output costs the decode loop: one demo expert's engine generates the same
number of tokens per sequence with and without a JSON-schema constraint (llguidance's mask
applied to every pick), at batch 1 and 8, every row sampled (temperature 1: the host path in
both cases); plain greedy rows (the runner's own argmax) are shown for reference. The schema
is an array of at least 1,000 small integers, so no row can end before the others (and none
does: EOS is ignored in every case). Prints one
JSON object of tokens/s by case and the constrained/unconstrained ratio.

    python scripts/structured_cost.py --coe demo-coe/coe.yaml"""

from __future__ import annotations

import argparse
import json
import time

from coeflow.backend.real import ExpertRuntime
from coeflow.coefile import load_coe
from coeflow.engine import Engine, SamplingParams
from coeflow.model import ModelConfig, Tokenizer
from coeflow.server.structured import GrammarConstraint, grammar_for

SCHEMA = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "minItems": 1000}


def tokens_per_s(engine: Engine, runtime: ExpertRuntime, rows: int, tokens: int, params: SamplingParams,
                 grammar: str | None) -> float:
    """Decode tokens/s of `rows` sequences (after their prefill), every row making `tokens`."""
    seqs = [engine.open([1, 30 + i, 31, 32], params, runtime.eos_ids, runtime.tokenizer.decode, index=i,
                        constraint=GrammarConstraint(runtime, grammar) if grammar else None) for i in range(rows)]
    for s in seqs:
        engine.prefill(s)
    t = time.perf_counter()
    made = sum(len(d) for d in engine.decode(seqs, tokens - 1))
    seconds = time.perf_counter() - t
    if made != rows * (tokens - 1) or any(s.completion.finish_reason != "length" for s in seqs):
        raise RuntimeError(f"a row ended early: {[s.completion.finish_reason for s in seqs]}")
    for s in seqs:
        engine.close(s)
    return made / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coe", required=True)
    p.add_argument("--tokens", type=int, default=200, help="tokens per sequence")
    p.add_argument("--repeats", type=int, default=3, help="runs per case; the best is kept")
    args = p.parse_args()
    spec = load_coe(args.coe).experts[0]
    engine = Engine.from_checkpoint(spec.path, fused=True)
    engine.warm(8)
    tok = Tokenizer.from_dir(spec.path)
    runtime = ExpertRuntime(tok, frozenset(tok.eos_ids), ModelConfig.from_dir(spec.path))
    grammar = grammar_for({"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}})
    sampled = SamplingParams(max_tokens=args.tokens, temperature=1.0, seed=0, ignore_eos=True)
    greedy = SamplingParams(max_tokens=args.tokens, ignore_eos=True)
    out: dict = {"expert": spec.name, "tokens_per_sequence": args.tokens, "schema": SCHEMA}
    for rows in (1, 8):
        case = {}
        for name, params, g in (("greedy", greedy, None), ("sampled", sampled, None), ("sampled_schema", sampled, grammar)):
            case[name] = max(tokens_per_s(engine, runtime, rows, args.tokens, params, g) for _ in range(args.repeats))
        case["schema_over_sampled"] = case["sampled_schema"] / case["sampled"]
        out[f"batch_{rows}"] = case
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
