"""Why the demo's monolith beats its experts at the same total compute: fine-tune one expert from
a built demo's base for more steps (the monolith's 600, say) with the build's own data mix, and
score it greedily on held-out tasks of its domain (transformers' generate, the checks of
coeflow.demo.tasks).

    python scripts/demo_expert_steps.py demo-coe sql 600

Figures: docs/benchmarks-log.md, "The demo built on tasks"."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from coeflow.demo.build import FULL, _expert_mix, _token_stream
from coeflow.demo.corpora import CORPORA
from coeflow.demo.curriculum import ChatFormat, copy_words
from coeflow.demo.experts import EXPERTS
from coeflow.demo.task_eval import MAX_TOKENS
from coeflow.demo.tasks import check, tasks
from coeflow.demo.training import train_expert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("demo", type=Path, help="a built demo's directory (seed 0, FULL settings)")
    ap.add_argument("expert", choices=[e.name for e in EXPERTS])
    ap.add_argument("steps", type=int)
    ap.add_argument("-n", type=int, default=40, help="held-out tasks scored")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = Tokenizer.from_file(str(args.demo / "tokenizer" / "tokenizer.json"))
    fmt = ChatFormat.of(tok)
    docs = {n: f(0, FULL.train_chars, "train") for n, f in CORPORA.items()}
    streams = {n: _token_stream(tok, x, fmt.bos, fmt.eos) for n, x in docs.items()}
    words = copy_words([x for n in CORPORA for x in docs[n]])
    data, mix = _expert_mix(args.expert, [e.name for e in EXPERTS], tok, streams, words, 0, FULL)
    config = AutoModelForCausalLM.from_pretrained(args.demo / "base").config
    t0 = time.perf_counter()
    model, loss = train_expert(data, mix, config, replace(FULL.train, steps=args.steps), seed=7, desc=args.expert,
                               init=args.demo / "base", progress=False)
    todo = tasks(args.expert, "heldout", args.n, 0)
    right = 0
    with torch.no_grad():
        for t in todo:
            ids = fmt.example(tok, t.prompt, "")[0][:-1]
            out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS[args.expert], do_sample=False,
                                 eos_token_id=fmt.eos, pad_token_id=fmt.eos)
            right += check(t, tok.decode(out[0, len(ids):].tolist(), skip_special_tokens=True))
    print(f"{args.expert}: {args.steps} steps in {time.perf_counter() - t0:.0f} s, loss {loss:.3f}, "
          f"held-out {right}/{len(todo)}")


if __name__ == "__main__":
    main()
