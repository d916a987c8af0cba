"""Fixtures for the demo tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def package_copy(tmp_path) -> Path:
    """A copy of the parts of the coeflow package that the demo build's stamp reads, to edit
    without touching the installed package."""
    from coeflow.demo.stamp import PACKAGE_DIR

    root = tmp_path / "coeflow"
    for part in ("demo", "router"):
        shutil.copytree(PACKAGE_DIR / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    return root
