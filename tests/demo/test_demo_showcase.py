"""`coeflow demo --once`, the README's main job, as a user runs it (on a quick build)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from coeflow.demo.showcase import PROMPTS
from coeflow.server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_once_builds_serves_and_prints_a_routed_table(tmp_path):
    r = subprocess.run([sys.executable, "-m", "coeflow", "demo", "--once", "--quick", "--dir", str(tmp_path / "coe"),
                        "--port", str(free_port()), "--engine", "eager"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("prompt"))
    rows = lines[header + 2: header + 2 + len(PROMPTS)]
    assert len(rows) == len(PROMPTS)
    named = [next((e for e in ("python", "math", "sql", "shell", "general") if f" {e} " in row), None) for row in rows]
    assert all(named), rows
    assert {"python", "math", "sql", "shell"} <= set(named)  # mixed prompts reach mixed experts
    assert not any(re.search(r"(\S+)( \1){5}", row) for row in rows), rows  # no answer a run of one token
    assert (tmp_path / "coe" / "coe.yaml").exists()
