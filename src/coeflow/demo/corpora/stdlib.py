"""The Python standard library on this machine as a text source: its .py files, split into
train and held-out by a stable hash of the file's relative path."""

from __future__ import annotations

import sysconfig
import zlib
from functools import lru_cache
from pathlib import Path

# Generated, vendored or test code reads unlike what a user writes.
SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "encodings", "pydoc_data",
             "turtledemo", "ensurepip", "__pycache__", "config-3", "tkinter", "venv"}
HELDOUT_EVERY = 8  # one file in eight is held out


@lru_cache(maxsize=1)
def stdlib_files() -> tuple[Path, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if any(part in SKIP_DIRS or part.startswith("config-") for part in rel.parts[:-1]):
            continue
        if p.stat().st_size < 2_000 or p.stat().st_size > 400_000:
            continue
        files.append(p)
    return tuple(files)


def split_of(path: Path) -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    h = zlib.crc32(str(path.relative_to(root)).encode())
    return "heldout" if h % HELDOUT_EVERY == 0 else "train"


def read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return ""
