"""The demo's data: generators are deterministic, train and held-out never overlap, worked
math answers are right, and the held-out router prompts are not generator output."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from coeflow.demo.build import heldout_documents
from coeflow.demo.corpora import CORPORA
from coeflow.demo.corpora.math import math_corpus
from coeflow.demo.prompts import generate_router_prompts

NAMES = ["python", "math", "sql", "shell", "general"]


def _heldout_prompts(name: str) -> list[dict]:
    text = resources.files("coeflow.demo").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_corpora_are_deterministic_per_seed():
    for name, corpus in CORPORA.items():
        a, b = corpus(0, 30_000, "train"), corpus(0, 30_000, "train")
        assert a == b and sum(map(len, a)) >= 30_000, name
    assert math_corpus(1, 5_000, "train") != math_corpus(0, 5_000, "train")


def test_heldout_documents_are_never_training_documents():
    for name, corpus in CORPORA.items():
        train = corpus(0, 300_000, "train")
        held = heldout_documents(name, 0, 40, train)
        assert len(held) == 40, name
        assert not set(held) & set(train), name


def test_stdlib_files_are_split_not_shared():
    from coeflow.demo.corpora.stdlib import split_of, stdlib_files

    splits = [split_of(f) for f in stdlib_files()]
    assert 0.05 < splits.count("heldout") / len(splits) < 0.25


def test_worked_arithmetic_answers_are_correct():
    docs = math_corpus(0, 100_000, "train")
    checked = 0
    for m in re.finditer(r"A: (\d+) \+ (\d+) = (\d+)\.", "\n".join(docs)):
        a, b, c = map(int, m.groups())
        assert a + b == c
        checked += 1
    for m in re.finditer(r"Solve (\d+)x \+ (\d+) = (-?\d+)\.\nA: .*x = (-?\d+)\.", "\n".join(docs)):
        a, b, c, x = map(int, m.groups())
        assert a * x + b == c
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("name", ["heldout_prompts.jsonl", "heldout_prompts_fresh.jsonl", "heldout_prompts_final.jsonl"])
def test_heldout_prompts_cover_every_expert_and_are_not_generated(name):
    held = _heldout_prompts(name)
    assert len(held) >= 100
    for name in NAMES:
        assert sum(h["expert"] == name for h in held) >= 20
    norm = lambda s: " ".join(s.lower().rstrip("?.!").split())  # noqa: E731
    generated = {norm(p["prompt"]) for seed in (0, 1) for p in generate_router_prompts(seed, 400)}
    assert not {norm(h["prompt"]) for h in held} & generated


def test_generated_prompts_cover_the_wide_vocabulary():
    """The decks draw every term before repeating one: most of each list shows up."""
    from coeflow.demo import vocab
    from coeflow.demo.datafiles import read_json

    text = "\n".join(p["prompt"] for p in generate_router_prompts(0, 400)).lower()
    commands = [c for c, _ in read_json("prompts/shell/tools.json")]
    assert sum(c.lower() in text for c in commands) > 0.8 * len(commands)
    dunders = vocab.python_names()["dunders"]
    assert "__slots__" in dunders and sum(d in text for d in dunders) > 0.6 * len(dunders)
    functions = vocab.words("sql", "functions")
    assert sum(k.lower() in text for k in functions) > 0.8 * len(functions)
    counts = {e: 0 for e in NAMES}
    for p in generate_router_prompts(0, 50):
        counts[p["expert"]] += 1
    assert counts == {e: 150 for e in NAMES}  # per_expert x VOCAB_FACTOR each
