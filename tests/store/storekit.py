"""Helpers for the store tests on the real backend: a CoE directory of copied checkpoints
(the tests of pure decisions use tests/fakes.py instead)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from coeflow.coefile import CoEFile, load_coe


def build_coe(root: Path, experts: dict[str, Path], **extra: dict) -> CoEFile:
    """Copy each checkpoint under `root` and write coe.yaml; `extra[name]` adds pin/priority/ttl_s."""
    entries = []
    for name, src in experts.items():
        shutil.copytree(src, root / name)
        entries.append({"name": name, "path": name, **extra.get(name, {})})
    (root / "coe.yaml").write_text(yaml.safe_dump(
        {"name": "test", "fallback": next(iter(experts)), "experts": entries}))
    return load_coe(root / "coe.yaml")

