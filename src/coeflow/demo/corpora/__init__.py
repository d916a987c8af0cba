"""Training and held-out text for the five demo experts, shipped or generated on the spot.

Every corpus is a function (seed, n_chars, split) -> list of documents, deterministic for a
seed. `split` is "train" or "heldout"; the two never share a document (stdlib files are
split by a hash of their path, generators by disjoint seeds)."""

from __future__ import annotations

from typing import Callable

from coeflow.demo.corpora.general import general_corpus
from coeflow.demo.corpora.math import math_corpus
from coeflow.demo.corpora.python import python_corpus
from coeflow.demo.corpora.shell import shell_corpus
from coeflow.demo.corpora.sql import sql_corpus

Corpus = Callable[[int, int, str], list[str]]

CORPORA: dict[str, Corpus] = {
    "python": python_corpus,
    "math": math_corpus,
    "sql": sql_corpus,
    "shell": shell_corpus,
    "general": general_corpus,
}


def take_chars(docs: list[str], n_chars: int) -> list[str]:
    """The first documents whose total length reaches n_chars."""
    out, total = [], 0
    for d in docs:
        if total >= n_chars:
            break
        out.append(d)
        total += len(d)
    return out
