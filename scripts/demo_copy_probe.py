"""Can the demo's experts (1.8M-parameter Llamas, trained on this CPU) learn to carry a value from
the prompt into the answer, which every checkable task of `coeflow eval tasks` but arithmetic
needs? Trains one model from sources mixed by weight and probes it: a base (`--phase base`) is
asked to repeat held-out task values and to continue random token sequences it has seen once
(induction); a fine-tune (`--phase tune --init DIR`) is scored on held-out tasks, greedily, with
the checks of coeflow.demo.tasks. Sources (`--mix NAME:WEIGHT,...`):

  text             the demo's training corpora, every domain
  copy             chat examples "Repeat: X" -> X (coeflow.demo.curriculum; no task value in X)
  repeat           random token sequences shown twice, the second counted
  task=DOMAIN      the tasks' train split
  augtask=DOMAIN   training tasks whose values (countries, names, paths...) are words of the
                   corpora drawn afresh each time (tasks(..., words=)), none a task value: the
                   slot must be copied, not recalled

    python scripts/demo_copy_probe.py --phase base --steps 800 --mix text:0.5,copy:0.5 --out /tmp/base
    python scripts/demo_copy_probe.py --phase tune --init /tmp/base --mix augtask=sql:1 --domains sql

Figures: docs/benchmarks-log.md, "Demo tasks (issue 24)"."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from coeflow.demo import curriculum
from coeflow.demo import tasks as task_set
from coeflow.demo.corpora import CORPORA, take_chars
from coeflow.demo.task_eval import MAX_TOKENS
from coeflow.demo.tokenizer import BOS, EOS, PAD, train_tokenizer
from coeflow.demo.training import ExpertShape, TrainSettings, llama_config, train_expert

POOLS = ("COUNTRIES", "NAMES", "DIRS", "FILES", "PATTERNS", "WORDS", "PYTHON_NAMES", "GENERAL_WORDS")  # task values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=["base", "tune"], required=True)
    ap.add_argument("--mix", required=True, help="sources and weights, e.g. text:0.5,copy:0.5")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat-len", default="4-20", help="the repeat source's sequence lengths, MIN-MAX")
    ap.add_argument("--kv-heads", type=int, default=2, help="key/value heads (the demo's 2; 6 is full multi-head)")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--values-in-base", action="store_true",
                    help="the tasks' values (both splits) in the tokenizer's text and among the words copied")
    ap.add_argument("--init", type=Path, help="the checkpoint a fine-tune starts from")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--domains", default=",".join(task_set.DOMAINS), help="the domains a fine-tune is scored on")
    ap.add_argument("-n", type=int, default=40, help="held-out tasks a domain")
    args = ap.parse_args()
    from tokenizers import Tokenizer
    torch.set_num_threads(args.threads)
    docs = {name: corpus(0, 1_200_000, "train") for name, corpus in CORPORA.items()}
    texts = [t for name in CORPORA for t in take_chars(docs[name], 250_000)]
    texts += [f"{p}\n{a}" for d in task_set.DOMAINS for p, a in curriculum.task_pairs(d, 2000, 0)]
    values = sorted({str(v) for k in POOLS for v in getattr(task_set, k)})
    if args.values_in_base:
        texts += [" ".join(values) + "\n" + " ".join(f"'{v}'" for v in values)] * 8
    tok: Tokenizer = train_tokenizer(texts, 3072)  # the demo's, with the tasks' train split in its text
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    words = curriculum.copy_words([d for name in docs for d in docs[name]])  # no task value among them
    copied = words
    if args.values_in_base:
        copied = sorted(set(words) | set(values)) + values * 20  # drawn often enough to be practised

    def source(spec: str):
        kind, _, domains = spec.partition("=")
        if kind == "text":
            ids: list[int] = []
            for enc in tok.encode_batch([d for name in docs for d in docs[name]], add_special_tokens=False):
                ids += [bos, *enc.ids, eos]
            return curriculum.Text(torch.tensor(ids))
        if kind == "copy":
            return curriculum.Examples(tok, curriculum.copy_pairs(copied, 20_000, 0))
        if kind == "repeat":
            return curriculum.Repeats(tok.get_vocab_size(), bos, low=8, lengths=tuple(map(int, args.repeat_len.split("-"))))
        if kind == "task":
            return curriculum.Examples(tok, [p for d in domains.split("+") for p in curriculum.task_pairs(d, 8000, 0)])
        if kind == "augtask":
            return curriculum.Examples(tok, [(t.prompt, t.answer) for d in domains.split("+")
                                             for t in task_set.tasks(d, "train", 8000, 0, words=words)])
        raise SystemExit(f"unknown source {spec!r}")

    parts = [item.rsplit(":", 1) for item in args.mix.split(",")]
    sources, weights = [source(name) for name, _ in parts], [float(w) for _, w in parts]
    config = llama_config(ExpertShape(vocab_size=tok.get_vocab_size(), num_kv_heads=args.kv_heads, num_layers=args.layers),
                          bos, eos, tok.token_to_id(PAD))
    t0 = time.perf_counter()
    model, loss = train_expert(sources, weights, config, TrainSettings(steps=args.steps, batch_size=args.batch,
                               seq_len=args.seq, lr=args.lr, warmup=20), seed=1, desc=args.phase, init=args.init)
    report: dict = {"steps": args.steps, "seconds": round(time.perf_counter() - t0, 1), "loss": round(loss, 3)}
    if args.out:
        model.save_pretrained(args.out)
    fmt = curriculum.ChatFormat.of(tok)

    @torch.no_grad()
    def answer(prompt: str, max_new: int) -> str:
        ids = fmt.example(tok, prompt, "")[0][:-1]  # the prompt's turn, up to the answer
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, eos_token_id=eos,
                             pad_token_id=eos)
        return tok.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)

    model.eval()
    if args.phase == "base":
        values = ["Finland", "Morocco", "Cuba", "/srv/www", "errors.txt", "*.toml"]  # held-out task values
        report["repeated"] = {v: answer(f"Repeat: {v}", 10) for v in values}
        gen, right = torch.Generator().manual_seed(99), 0
        for _ in range(30):
            x = torch.randint(8, tok.get_vocab_size(), (8,), generator=gen).tolist()
            out = model.generate(torch.tensor([[bos, *x, x[0]]]), max_new_tokens=7, do_sample=False, pad_token_id=eos)
            right += out[0, -7:].tolist() == x[1:]
        report["induction"] = right / 30
    else:
        for d in args.domains.split(","):
            todo = task_set.tasks(d, "heldout", args.n, 0)
            got = [answer(t.prompt, MAX_TOKENS[d]) for t in todo]
            report[d] = {"accuracy": sum(map(task_set.check, todo, got)) / len(todo),
                         "first": [todo[0].prompt, got[0], todo[0].answer]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
