"""`coeflow --help` and every command's `--help` answer without importing PyTorch (seconds
saved on every look at the help), and a command whose extra is missing says which to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coeflow.cli import COMMANDS

pytestmark = pytest.mark.e2e

CHECK = """
import sys
from coeflow.cli import main
try:
    main({argv!r})
except SystemExit as e:
    assert e.code == 0, e.code
heavy = [m for m in ("torch", "transformers", "matplotlib", "openai", "fastapi", "uvicorn") if m in sys.modules]
print("imported:" + ",".join(heavy))
"""


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name, _ in COMMANDS])
def test_help_imports_no_heavy_package(argv):
    out = subprocess.run([sys.executable, "-c", CHECK.format(argv=argv)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage: coeflow" in out.stdout
    imported = out.stdout.strip().splitlines()[-1]
    assert imported == "imported:", f"`coeflow {' '.join(argv)}` {imported}"


def test_a_missing_extra_is_named(monkeypatch):
    from coeflow.errors import ConfigError
    from coeflow.extras import require
    with pytest.raises(ConfigError, match=r"pip install 'coeflow\[plots\]'") as e:
        require(("matplotlib", "no_such_package_here"), "--plot", "plots")
    assert "no_such_package_here" in str(e.value) and "matplotlib," not in str(e.value)
    require(("json",), "anything", "dev")  # present: nothing to say
