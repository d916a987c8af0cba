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
  augtask=DOMAIN   the same prompts with their values (countries, names, paths...) replaced by
                   words of the corpora, none a task value: the slot must be copied, not recalled

    python scripts/demo_copy_probe.py --phase base --steps 800 --mix text:0.5,copy:0.5 --out /tmp/base
    python scripts/demo_copy_probe.py --phase tune --init /tmp/base --mix augtask=sql:1 --domains sql

Figures: docs/benchmarks-log.md, "Demo tasks (issue 24)"."""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from coeflow.demo import curriculum
from coeflow.demo import tasks as task_set
from coeflow.demo.corpora import CORPORA, take_chars
from coeflow.demo.task_eval import MAX_TOKENS
from coeflow.demo.tokenizer import BOS, EOS, PAD, train_tokenizer
from coeflow.demo.training import ExpertShape, TrainSettings, llama_config, train_expert

POOLS = ("COUNTRIES", "NAMES", "DIRS", "FILES", "PATTERNS", "WORDS", "PYTHON_NAMES", "GENERAL_WORDS")


class Repeat:
    """Rows of random token sequences (4-20 tokens), each shown twice, the second counted."""

    def __init__(self, vocab: int, bos: int):
        self.vocab, self.bos = vocab, bos

    def row(self, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ids: list[int] = []
        mask: list[bool] = []
        while len(ids) < length:
            n = int(torch.randint(4, 21, (1,), generator=gen))
            x = torch.randint(8, self.vocab, (n,), generator=gen).tolist()
            ids += [self.bos, *x, *x]
            mask += [False] * (n + 1) + [True] * n
        return torch.tensor(ids[:length]), torch.tensor(mask[:length])


def augmented_pairs(domains: list[str], words: list[str], n: int) -> list[tuple[str, str]]:
    """Train-split prompts of `domains` whose value pools are redrawn from `words` each time."""
    rng = random.Random(5)
    saved = {k: getattr(task_set, k) for k in POOLS}
    pairs = []
    try:
        for i in range(n):
            pick = lambda k: [rng.choice(words) for _ in range(k)]  # noqa: E731
            task_set.COUNTRIES = [w.capitalize() for w in pick(24)]
            task_set.NAMES = [w.lower() for w in pick(24)]
            task_set.DIRS = ["/" + "/".join(w.strip("/") for w in pick(rng.randint(1, 3))) for _ in range(16)]
            task_set.FILES = [w + rng.choice([".txt", ".log", ".py", ".md", ""]) for w in pick(16)]
            task_set.PATTERNS = ["*." + w[:4].lower() for w in pick(16)]
            task_set.WORDS = [w.lower() for w in pick(16)]
            task_set.PYTHON_NAMES = [w.lower().replace("-", "_").replace(".", "_") for w in pick(24)]
            task_set.GENERAL_WORDS = ([w.lower() for w in pick(64) if w.isalpha()] * 2)[:32]
            for d in domains:
                pairs += curriculum.task_pairs(d, 1, i)
    finally:
        for k, v in saved.items():
            setattr(task_set, k, v)
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=["base", "tune"], required=True)
    ap.add_argument("--mix", required=True, help="sources and weights, e.g. text:0.5,copy:0.5")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
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
    tok: Tokenizer = train_tokenizer(texts, 3072)  # the demo's, with the tasks' train split in its text
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    words = curriculum.copy_words([d for name in docs for d in docs[name]])

    def source(spec: str):
        kind, _, domains = spec.partition("=")
        if kind == "text":
            ids: list[int] = []
            for enc in tok.encode_batch([d for name in docs for d in docs[name]], add_special_tokens=False):
                ids += [bos, *enc.ids, eos]
            return curriculum.Text(torch.tensor(ids))
        if kind == "copy":
            return curriculum.Examples(tok, curriculum.copy_pairs(words, 20_000, 0))
        if kind == "repeat":
            return Repeat(tok.get_vocab_size(), bos)
        if kind == "task":
            return curriculum.Examples(tok, [p for d in domains.split("+") for p in curriculum.task_pairs(d, 8000, 0)])
        if kind == "augtask":
            return curriculum.Examples(tok, augmented_pairs(domains.split("+"), words, 8000))
        raise SystemExit(f"unknown source {spec!r}")

    parts = [item.rsplit(":", 1) for item in args.mix.split(",")]
    sources, weights = [source(name) for name, _ in parts], [float(w) for _, w in parts]
    config = llama_config(ExpertShape(vocab_size=tok.get_vocab_size()), bos, eos, tok.token_to_id(PAD))
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
