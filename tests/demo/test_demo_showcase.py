"""`coeflow demo --once`, the README's main job, as a user runs it (on a quick build)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from coeflow.demo.showcase import showcase_tasks
from coeflow.server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_once_builds_serves_and_prints_a_routed_table(tmp_path):
    r = subprocess.run([sys.executable, "-m", "coeflow", "demo", "--once", "--quick", "--dir", str(tmp_path / "coe"),
                        "--port", str(free_port()), "--engine", "eager"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("prompt"))
    todo = showcase_tasks()
    rows = lines[header + 2: header + 2 + len(todo)]
    assert [row[:30].rstrip() for row in rows] == [t.prompt[:30].rstrip() for t in todo]  # the held-out tasks, in order
    named = [next((e for e in ("python", "math", "sql", "shell", "general") if f" {e} " in row), None) for row in rows]
    assert all(named), rows
    assert {"python", "math", "sql", "shell"} <= set(named)  # mixed prompts reach mixed experts
    assert all(re.search(r" (yes|no) ", row) for row in rows), rows  # each answer marked right or wrong
    assert re.fullmatch(r"\d of 8 answers right \(held-out tasks: never seen in training\)", lines[header + 2 + len(todo)])
    closing = lines[header + 3 + len(todo)]
    assert re.match(r"held-out tasks, \d+ a domain, right answers: routed CoE \d+%, best single expert \(\w+\) \d+%, "
                    r"monolith of the same training compute \d+%, oracle routing \d+%", closing), closing
    assert (tmp_path / "coe" / "coe.yaml").exists()
