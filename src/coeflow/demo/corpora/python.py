"""`python` expert text: Python standard library source, in chunks of whole top-level
blocks (functions, classes) so each document reads like a file a user would write."""

from __future__ import annotations

import random

from coeflow.demo.corpora.stdlib import read_source, split_of, stdlib_files


def python_corpus(seed: int, n_chars: int, split: str = "train") -> list[str]:
    files = [f for f in stdlib_files() if split_of(f) == split]
    rng = random.Random(f"python-{seed}-{split}")
    rng.shuffle(files)
    docs: list[str] = []
    total = 0
    for f in files:
        for chunk in _chunks(read_source(f)):
            docs.append(chunk)
            total += len(chunk)
        if total >= n_chars:
            break
    rng.shuffle(docs)
    return docs


def _chunks(source: str, target: int = 1500) -> list[str]:
    """Split at top-level lines (no indentation) into pieces of about `target` characters."""
    out, cur, size = [], [], 0
    for line in source.splitlines():
        if size >= target and line and not line[0].isspace() and not line.startswith(("#", ")", "]", "}")):
            out.append("\n".join(cur).strip("\n"))
            cur, size = [], 0
        cur.append(line)
        size += len(line) + 1
    if cur:
        out.append("\n".join(cur).strip("\n"))
    return [c for c in out if len(c) > 200]
