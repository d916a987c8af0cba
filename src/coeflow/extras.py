"""Packages only some commands need, installed with an extra of coeflow's (pyproject.toml's
optional dependencies): a command checks for them first and, where one is missing, says which
extra brings it instead of failing on an import deep inside."""

from __future__ import annotations

import importlib.util

from coeflow.errors import ConfigError


def require(packages: tuple[str, ...], for_what: str, extra: str) -> None:
    """A ConfigError naming `extra` if any of `packages` is not installed."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(f"{for_what} needs {', '.join(missing)}, which coeflow's [{extra}] extra installs: "
                          f"pip install 'coeflow[{extra}]'")
