"""`general` expert text: English prose, taken from the docstrings of the Python standard
library (the prose paragraphs only: doctest lines and code-like lines are dropped)."""

from __future__ import annotations

import ast
import random
import re

from coeflow.demo.corpora.stdlib import read_source, split_of, stdlib_files

_CODEY = re.compile(r">>>|[{}=\\|`]|^\s*[-*+]\s|^\s*\$")


def general_corpus(seed: int, n_chars: int, split: str = "train") -> list[str]:
    files = [f for f in stdlib_files() if split_of(f) == split]
    rng = random.Random(f"general-{seed}-{split}")
    rng.shuffle(files)
    docs: list[str] = []
    total = 0
    for f in files:
        for para in _prose_paragraphs(read_source(f)):
            docs.append(para)
            total += len(para)
        if total >= n_chars:
            break
    rng.shuffle(docs)
    return docs


def _prose_paragraphs(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                out.extend(p for p in (_clean_paragraph(x) for x in doc.split("\n\n")) if p)
    return out


def _clean_paragraph(text: str) -> str | None:
    lines = [ln.strip() for ln in text.splitlines()]
    if not lines or any(_CODEY.search(ln) for ln in lines):
        return None
    para = " ".join(lines)
    letters = sum(ch.isalpha() or ch.isspace() for ch in para)
    if len(para) < 80 or letters / len(para) < 0.85 or not para[0].isupper():
        return None
    return para
