"""What makes a demo build stale: a digest of the files the build reads, kept in the build's
stamp. Editing a word list, a template or the code that turns them into corpora, experts or
the router changes the digest, and the next `coeflow demo` rebuilds what depends on it."""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).parent.parent  # the coeflow package

# What the experts' weights depend on: the corpora (code and word lists), the tasks, the
# tokenizer, the training, and the build that mixes domains and seeds each expert. (The list of expert
# names goes into the expert stamps on its own, so editing a description retrains nothing.)
EXPERT_INPUTS = (
    "demo/corpora/*.py", "demo/data/corpora/*", "demo/datafiles.py", "demo/tokenizer.py", "demo/training.py",
    "demo/curriculum.py", "demo/tasks.py",
    "demo/build.py",
)
# What the rest of the build depends on: the router's generated prompts and their vocabulary,
# the coe.yaml entries, the router's training and the tasks' evaluation. The held-out prompt sets are not read by
# the build, so editing them keeps the build.
PIPELINE_INPUTS = EXPERT_INPUTS + (
    "demo/prompts.py", "demo/vocab.py", "demo/experts.py", "demo/data/experts.json", "demo/data/prompts/**/*",
    "router/**/*.py", "demo/task_eval.py",
)


def input_files(patterns: tuple[str, ...], root: Path | None = None) -> list[Path]:
    """The files under `root` (default: the installed coeflow package) matched by `patterns`."""
    root = root or PACKAGE_DIR
    files = {p for pattern in patterns for p in root.glob(pattern) if p.is_file() and "__pycache__" not in p.parts}
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def input_digest(patterns: tuple[str, ...], root: Path | None = None) -> str:
    """SHA-256 over the matched files' paths and contents: a renamed, added, removed or
    edited file changes it."""
    root = root or PACKAGE_DIR
    h = hashlib.sha256()
    for p in input_files(patterns, root):
        h.update(f"{p.relative_to(root).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()
