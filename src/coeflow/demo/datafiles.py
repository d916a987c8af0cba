"""Reading the demo's data files under `coeflow/demo/data/`: word lists (.txt, one item a
line) and structured data (.json). The build hashes these files into its stamp, so editing
one makes the next `coeflow demo` rebuild what depends on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"


def read_list(name: str) -> list[str]:
    """The items of `data/<name>`, in file order: one item a line, taken as written; blank
    lines and lines starting with `#` (comments, section headings) are skipped."""
    path = DATA_DIR / name
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        if line != line.strip():
            raise ValueError(f"{path}:{number}: item {line!r} has leading or trailing spaces")
        items.append(line)
    if not items:
        raise ValueError(f"{path}: no items")
    return items


def read_json(name: str) -> Any:
    """The parsed contents of `data/<name>`."""
    path = DATA_DIR / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
