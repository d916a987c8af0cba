"""Where coeflow keeps what it makes once and reuses: built kernels, quantized copies of
checkpoints. $XDG_CACHE_HOME/coeflow, else ~/.cache/coeflow."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coeflow"
