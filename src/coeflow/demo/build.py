"""`build_demo(dir, seed)`: the demo CoE from nothing, on a CPU, in a few minutes.

Steps: corpora (shipped stdlib text + generators) -> shared BPE tokenizer -> a tiny Llama
base trained on every domain's text alike, on chat examples asking for words back and on
repeated random sequences (which teach it to copy what the prompt says: demo/curriculum.py) ->
five experts fine-tuned from it on their
domain's checkable tasks (demo/tasks.py) and text (python, math, sql, shell; general is the
fallback: word puzzles and prose), as Samba-CoE's experts are fine-tunes of a few bases ->
coe.yaml -> router trained beside it -> each expert also as a 1-bit delta from the base
(deltas/, coe-delta1.yaml: the same CoE served from its deltas, coeflow.model.delta). Beside the
experts, a **monolith**: the base fine-tuned on the union of the five experts' data for as many
steps as the five together (coe-monolith.yaml), the one model of the same training compute the
CoE is measured against. Held-out text for `coeflow eval perplexity` goes to
data/heldout_text.jsonl; last, `coeflow eval tasks` runs on held-out tasks and its report goes to
data/tasks_eval.json (the demo's closing line).

Cached: a stamp records the seed, the settings, the Python version and a digest of the
files the build reads (`stamp.py`: data files and pipeline code); a second run with the
same ones returns at once, an edit to a data file or to that code rebuilds what depends on
it, and an interrupted build resumes at the first expert not yet saved."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import random
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from typing import TYPE_CHECKING

import yaml
from tqdm import tqdm

from coeflow.coefile import load_coe
from coeflow.demo.corpora import CORPORA, take_chars
from coeflow.demo.curriculum import Examples, Repeats, Source, Text, copy_pairs, copy_words, task_pairs
from coeflow.demo.experts import EXPERTS, FALLBACK
from coeflow.demo.prompts import generate_router_prompts, pasted_lines
from coeflow.demo.stamp import EXPERT_INPUTS, PIPELINE_INPUTS, input_digest
from coeflow.demo.task_eval import evaluate, format_table
from coeflow.demo.tasks import tasks
from coeflow.demo.tokenizer import SPECIAL_TOKENS
from coeflow.demo.training import ExpertShape, TrainSettings, llama_config, train_expert
from coeflow.router import examples_from_coe, read_jsonl, train_router

if TYPE_CHECKING:  # torch is slow to import: a cached build should not wait for it
    import torch

STAMP = ".coeflow-demo.json"
BASE_THREADS = 2  # the base trains alone, on this many threads whatever the machine: same weights
DELTA_BITS = 1
DISTILL_CHARS, DISTILL_STEPS, DISTILL_LR = 200_000, 50, 2e-4  # a delta's scales: on this much of its expert's text
MONOLITH, MONOLITH_FILE = "monolith", "coe-monolith.yaml"
TASKS_EVAL = Path("data") / "tasks_eval.json"  # the build's `eval tasks` report, beside coe.yaml


@dataclass(frozen=True)
class DemoSettings:
    vocab_size: int = 3072
    # Full multi-head attention (6 key/value heads): with grouped queries the base did not learn
    # to copy within the build's steps (docs/benchmarks-log.md, "can the experts learn to copy?").
    shape: ExpertShape = field(default_factory=lambda: ExpertShape(vocab_size=3072, num_kv_heads=6))
    base_train: TrainSettings = field(default_factory=lambda: TrainSettings(steps=1000, batch_size=32, seq_len=64))
    train: TrainSettings = field(default_factory=lambda: TrainSettings(steps=120, batch_size=32, seq_len=64, lr=2e-3,
                                                                       warmup=10))  # fine-tunes; the monolith x5
    # The base's rows: repeated random sequences, chat examples asking for words back, every
    # domain's text (docs/benchmarks-log.md, "can the experts learn to copy?": runs N-T).
    base_shares: tuple[float, float, float] = (0.4, 0.3, 0.3)
    copy_examples: int = 20_000
    task_share: float = 0.8  # an expert's rows of its tasks; the rest: its domain's text
    task_examples: int = 8000  # per domain, values drawn from the corpora's words
    train_chars: int = 1_200_000  # per domain
    tokenizer_chars: int = 250_000  # per domain
    generalist_prose_share: float = 0.6  # of the general expert's text; the rest is split over the other domains
    heldout_samples: int = 40  # per domain
    heldout_chars: int = 1000  # per sample (about 250-400 tokens)
    router_prompts: int = 400  # per expert
    router_pasted: int = 150  # pasted-line prompts drawn from, per expert
    # Training tasks' prompts among the router's, per expert: more route held-out tasks better and
    # the hand-written held-out prompts worse (docs/demo.md).
    router_tasks: int = 10
    eval_tasks: int = 20  # held-out tasks per domain in the build's `eval tasks` report
    workers: int | None = None  # expert-training processes; None: one per CPU core


FULL = DemoSettings()
# For tests: the same pipeline, small enough to run in seconds.
QUICK = DemoSettings(
    vocab_size=512,
    shape=ExpertShape(vocab_size=512, hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                      intermediate_size=128, max_positions=256),
    base_train=TrainSettings(steps=80, batch_size=8, seq_len=64, lr=5e-3, warmup=8),
    train=TrainSettings(steps=30, batch_size=8, seq_len=64, lr=2e-3, warmup=4),
    task_examples=200,
    copy_examples=500,
    train_chars=120_000,
    tokenizer_chars=40_000,
    heldout_samples=6,
    heldout_chars=400,
    router_prompts=80,
    router_pasted=20,
    router_tasks=4,
    eval_tasks=2,
    workers=1,  # starting worker processes would cost more than these tiny trainings
)


@dataclass
class DemoResult:
    directory: Path
    coe_file: Path
    cached: bool
    seconds: float
    train_loss: dict[str, float]


def build_demo(directory: str | Path = "demo-coe", seed: int = 0, settings: DemoSettings = FULL,
               force: bool = False, progress: bool = True, workers: int | None = None) -> DemoResult:
    """Build (or find cached) the demo CoE in `directory`. Experts train in `workers`
    processes (default: one per CPU core), each on one thread: the weights are the same
    whatever the number of workers, and a busy machine slows the build gently (several
    threads per process collapse when another process competes for the cores)."""
    t0 = time.perf_counter()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key, full_key = _stamp_keys(seed, settings)
    stamp = d / STAMP
    if not force and _stamp_matches(stamp, full_key) and _complete(d):
        losses = json.loads(stamp.read_text())["train_loss"]
        return DemoResult(d, d / "coe.yaml", True, time.perf_counter() - t0, losses)
    if stamp.exists():
        stamp.unlink()
    say = (lambda msg: tqdm.write(f"[{time.perf_counter() - t0:4.0f} s] {msg}")) if progress else (lambda msg: None)

    say("demo: preparing corpora")
    train_docs = {n: f(seed, settings.train_chars, "train") for n, f in CORPORA.items()}
    heldout = _heldout_samples(seed, settings, train_docs)
    (d / "data").mkdir(exist_ok=True)
    with open(d / "data" / "heldout_text.jsonl", "w", encoding="utf-8") as f:
        for s in heldout:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")

    from coeflow.demo.tokenizer import BOS, EOS, PAD, save_tokenizer, train_tokenizer

    say("demo: training the tokenizer")
    task_text = [f"{p}\n{a}" for n in CORPORA for p, a in task_pairs(n, 500, seed)]
    tok_texts = [t for n in CORPORA for t in take_chars(train_docs[n], settings.tokenizer_chars)] + task_text
    tok = train_tokenizer(tok_texts, settings.vocab_size)
    tok_dir = d / "tokenizer"
    save_tokenizer(tok, tok_dir, settings.shape.max_positions)
    bos, eos, pad = tok.token_to_id(BOS), tok.token_to_id(EOS), tok.token_to_id(PAD)
    streams = {n: _token_stream(tok, docs, bos, eos) for n, docs in train_docs.items()}
    config = llama_config(replace(settings.shape, vocab_size=tok.get_vocab_size()), bos, eos, pad)

    names = [e.name for e in EXPERTS]
    words = copy_words([doc for n in CORPORA for doc in train_docs[n]])  # none of them a task's value
    losses: dict[str, float] = {}
    base_dir = d / "base"
    base_key = {**key, "expert": "base"}
    if force or not _stamp_matches(base_dir / STAMP, base_key) or not (base_dir / "model.safetensors").exists():
        say(f"demo: training the base on every domain's text, repeats and copying, {BASE_THREADS} threads")
        shares = settings.base_shares
        job = _Job("base", [Repeats(tok.get_vocab_size(), bos, low=len(SPECIAL_TOKENS)),
                            Examples(tok, copy_pairs(words, settings.copy_examples, seed))]
                   + [Text(streams[n]) for n in CORPORA], [shares[0], shares[1]] + [shares[2] / len(CORPORA)] * len(CORPORA),
                   config, settings.base_train, seed * 1000 + len(EXPERTS), base_dir, tok_dir, base_key)
        _, loss = _run_job(job, 0, progress, threads=BASE_THREADS)
        say(f"demo: base trained, final loss {loss:.3f}")
    mixes = {spec.name: _expert_mix(spec.name, names, tok, streams, words, seed, settings) for spec in EXPERTS}
    jobs = []
    monolith_key = {**key, "expert": MONOLITH}
    if force or not _stamp_matches(d / MONOLITH / STAMP, monolith_key) or not (d / MONOLITH / "model.safetensors").exists():
        # the union of the experts' rows, each expert's share equal, for the five fine-tunes' steps together;
        # first, so that one worker trains it while the other trains the experts
        jobs.append(_Job(MONOLITH, [src for data, _ in mixes.values() for src in data],
                         [w / len(EXPERTS) for _, mix in mixes.values() for w in mix], config,
                         replace(settings.train, steps=settings.train.steps * len(EXPERTS)), seed * 1000 + len(EXPERTS) + 1,
                         d / MONOLITH, tok_dir, monolith_key, init=base_dir))
    for i, spec in enumerate(EXPERTS):
        out = d / "experts" / spec.name
        expert_key = {**key, "expert": spec.name}
        if not force and _stamp_matches(out / STAMP, expert_key) and (out / "model.safetensors").exists():
            losses[spec.name] = json.loads((out / STAMP).read_text())["train_loss"]
            continue
        data, mix = mixes[spec.name]
        jobs.append(_Job(spec.name, data, mix, config, settings.train, seed * 1000 + i, out, tok_dir, expert_key,
                         init=base_dir))
    workers = max(1, min(workers or settings.workers or _cpu_count(), len(jobs)))
    say(f"demo: fine-tuning {len(jobs)} model(s) from the base on tasks and text, {workers} at a time, one thread each")
    for name, loss in _run_jobs(jobs, workers, progress):
        if name != MONOLITH:
            losses[name] = loss
        say(f"demo: {name} trained, final loss {loss:.3f}")
    stale = [n for n in names if n in {job.name for job in jobs} or not (d / "deltas" / n / "config.json").exists()]
    if stale:
        say(f"demo: writing {len(stale)} expert(s) as {DELTA_BITS}-bit deltas from the base, scales distilled on their text")
        _write_deltas(d, base_dir, {n: take_chars(train_docs[n], DISTILL_CHARS) for n in stale}, progress)

    coe_file = _write_coe_file(d)
    _write_coe_file(d, "deltas", f"coe-delta{DELTA_BITS}.yaml")
    _write_monolith_file(d)
    say("demo: training the router")
    coe = load_coe(coe_file)
    prompts = generate_router_prompts(
        seed, settings.router_prompts,
        {n: pasted_lines(n, train_docs[n], settings.router_pasted, seed) for n in CORPORA},
    )  # and a few of the prompts the experts were tuned on (train split: held-out ones are worded otherwise)
    prompts += [{"prompt": t.prompt, "expert": n} for n in CORPORA for t in tasks(n, "train", settings.router_tasks, seed)]
    with open(d / "data" / "router_train.jsonl", "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    data = examples_from_coe(coe) + read_jsonl(d / "data" / "router_train.jsonl", coe.expert_names)
    router = train_router(data, coe.expert_names, coe.fallback, seed=seed)
    router.save(coe.router_dir)
    from coeflow.server import ServerOptions
    say(f"demo: asking every expert, the routed CoE and the monolith {settings.eval_tasks} held-out tasks a domain")
    report = evaluate(coe_file, n=settings.eval_tasks, seed=seed, progress=progress,
                      options=ServerOptions(fused=False, warm_up=False), monolith=d / MONOLITH_FILE)
    (d / TASKS_EVAL).write_text(json.dumps(report, indent=1) + "\n")
    say(format_table(report))
    stamp.write_text(json.dumps({**full_key, "train_loss": losses}))
    seconds = time.perf_counter() - t0
    say(f"demo: built {coe_file} in {seconds:.0f} s")
    return DemoResult(d, coe_file, False, seconds, losses)


@dataclass
class _Job:
    name: str
    sources: list[Source]
    mix: list[float]
    config: object
    train: TrainSettings
    seed: int
    out: Path
    tok_dir: Path
    stamp_key: dict
    init: Path | None = None  # the checkpoint a fine-tune starts from


def _run_job(job: _Job, position: int = 0, progress: bool = True, threads: int = 1) -> tuple[str, float]:
    import torch

    torch.set_num_threads(threads)
    model, loss = train_expert(job.sources, job.mix, job.config, job.train, job.seed, job.name, progress, position,
                               init=job.init)
    _save_expert(model, job.tok_dir, job.out)
    (job.out / STAMP).write_text(json.dumps({**job.stamp_key, "train_loss": loss}))
    return job.name, loss


def _run_jobs(jobs: list[_Job], workers: int, progress: bool):
    import torch

    if workers == 1:
        threads = torch.get_num_threads()
        try:
            for job in jobs:
                yield _run_job(job, 0, progress)
        finally:
            torch.set_num_threads(threads)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_run_job, job, i % workers, progress) for i, job in enumerate(jobs)]
        for f in as_completed(futures):
            yield f.result()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def heldout_documents(name: str, seed: int, n: int, train_docs: list[str]) -> list[str]:
    """n held-out documents of a domain, none of them also a training document (generated
    domains can repeat a short document by chance; the stdlib repeats some docstrings)."""
    seen = set(train_docs)
    chars = n * 3000
    docs = [doc for doc in CORPORA[name](seed, chars, "heldout") if doc not in seen]
    rng = random.Random(f"heldout-{name}-{seed}")
    rng.shuffle(docs)
    return docs[:n]


def _heldout_samples(seed: int, s: DemoSettings, train_docs: dict[str, list[str]]) -> list[dict]:
    """Held-out text per domain, each sample cut to about heldout_chars at a line break."""
    out = []
    for name in CORPORA:
        for doc in heldout_documents(name, seed, s.heldout_samples, train_docs[name]):
            text = doc[: s.heldout_chars]
            if len(doc) > s.heldout_chars and "\n" in text[s.heldout_chars // 2 :]:
                text = text[: text.rindex("\n")]
            out.append({"text": text, "domain": name})
    return out


def _token_stream(tok, docs: list[str], bos: int, eos: int) -> torch.Tensor:
    import torch

    ids: list[int] = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.append(bos)
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def _save_expert(model, tok_dir: Path, out: Path) -> None:
    from transformers.utils import logging as hf_logging

    out.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()  # one bar per expert is enough
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((tok_dir / name).read_bytes())


def _write_deltas(d: Path, base_dir: Path, texts: dict[str, list[str]], progress: bool) -> None:
    """The experts named in `texts` as `DELTA_BITS`-bit deltas from the base, in deltas/, each
    one's scales distilled on its text (some of what it was tuned on)."""
    import shutil

    import torch

    from coeflow.model.convert import delta_checkpoint
    threads = torch.get_num_threads()
    torch.set_num_threads(BASE_THREADS)
    try:
        for name, text in tqdm(texts.items(), desc="   deltas", disable=not progress, leave=False, unit="expert"):
            out = d / "deltas" / name
            shutil.rmtree(out, ignore_errors=True)  # a delta cut short (no config.json yet) is made again
            delta_checkpoint(d / "experts" / name, base_dir, out, DELTA_BITS, distill="\n\n".join(text),
                             distill_steps=DISTILL_STEPS, distill_lr=DISTILL_LR)
    finally:
        torch.set_num_threads(threads)


def _expert_mix(name: str, names: list[str], tok, streams: dict, words: list[str], seed: int,
                s: DemoSettings) -> tuple[list, list[float]]:
    """An expert's training rows and their weights: its domain's tasks, values drawn from
    `words` (so that it learns to carry the prompt's value, not to recall a few), and its text;
    the general expert's text mostly prose, with a little of every domain."""
    pairs = task_pairs(name, s.task_examples, seed, words)
    if name == FALLBACK:
        others = [n for n in names if n != FALLBACK]
        text = [s.generalist_prose_share] + [(1 - s.generalist_prose_share) / len(others)] * len(others)
        data = [Examples(tok, pairs), Text(streams[FALLBACK])] + [Text(streams[n]) for n in others]
    else:
        text, data = [1.0], [Examples(tok, pairs), Text(streams[name])]
    return data, [s.task_share] + [(1 - s.task_share) * w for w in text]


def _write_monolith_file(d: Path) -> Path:
    """coe-monolith.yaml: the monolith alone, as `eval tasks --monolith` takes it."""
    doc = {"name": "demo-monolith", "fallback": MONOLITH, "router": "monolith-router/", "experts": [
        {"name": MONOLITH, "path": MONOLITH, "description": "one model tuned on every domain's tasks and text, "
         "with the five experts' training compute"}]}
    path = d / MONOLITH_FILE
    path.write_text("# The demo's monolith, written by `coeflow demo build`; no router is trained for it (ask it by "
                    "name).\n"
                    + yaml.safe_dump(doc, sort_keys=False, width=110), encoding="utf-8")
    return path


def _write_coe_file(d: Path, experts_dir: str = "experts", name: str = "coe.yaml") -> Path:
    doc = {
        "name": "demo",
        "fallback": FALLBACK,
        "router": "router/",
        "experts": [
            {"name": e.name, "path": f"{experts_dir}/{e.name}", "description": e.description,
             "examples": list(e.examples), "pin": e.name == FALLBACK, "priority": 1 if e.name == FALLBACK else 0}
            for e in EXPERTS
        ],
    }
    what = "" if experts_dir == "experts" else f", each expert a {DELTA_BITS}-bit delta from base/"
    path = d / name
    path.write_text(f"# The demo CoE{what}, written by `coeflow demo build`.\n" + yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True, width=110), encoding="utf-8")
    return path


def _stamp_keys(seed: int, settings: DemoSettings) -> tuple[dict, dict]:
    """What the experts depend on, and what the whole build depends on. The Python version is
    in both: the python and general corpora are this interpreter's standard library."""
    # as the stamp file reads back (JSON has no tuples); workers left out: same weights either way
    settings_key = json.loads(json.dumps({k: v for k, v in asdict(settings).items() if k != "workers"}))
    key = {"expert_inputs": input_digest(EXPERT_INPUTS), "python": platform.python_version(), "seed": seed,
           "settings": settings_key, "experts": [e.name for e in EXPERTS]}
    return key, {**key, "pipeline_inputs": input_digest(PIPELINE_INPUTS)}


def _stamp_matches(path: Path, key: dict) -> bool:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return all(saved.get(k) == v for k, v in key.items())


def _complete(d: Path) -> bool:
    files = [d / "coe.yaml", d / f"coe-delta{DELTA_BITS}.yaml", d / "router" / "router.json",
             d / "data" / "heldout_text.jsonl", d / "base" / "model.safetensors"]
    files += [d / sub / e.name / "model.safetensors" for e in EXPERTS for sub in ("experts", "deltas")]
    files += [d / MONOLITH / "model.safetensors", d / MONOLITH_FILE, d / TASKS_EVAL]
    return all(f.exists() for f in files)
