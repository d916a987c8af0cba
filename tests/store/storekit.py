"""Helpers for the store tests: a CoE directory of copied checkpoints and a settable clock."""

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


class Clock:
    """Unix time that only moves when the test says so."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def tick(self, dt: float = 1.0) -> float:
        self.t += dt
        return self.t
