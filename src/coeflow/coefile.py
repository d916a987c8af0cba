"""The CoE file: one YAML manifest naming the experts of a Composition of Experts, the
fallback expert, and where the trained router lives. The router, the store and the server
all read it through `load_coe`, so every check on it lives here, once.

Shape (paths are relative to the CoE file's directory and may not leave it):

    name: demo
    fallback: general            # expert used when the router is unsure
    router: router/              # directory of the trained router (optional)
    experts:
      - name: python
        path: experts/python     # Hugging Face checkpoint directory
        description: Python code
        examples: ["write a python function that ..."]
        pin: false               # optional: keep resident in the store
        priority: 0              # optional: higher is evicted later
        ttl_s: 300.0             # optional: unload after this long idle
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from coeflow.errors import ConfigError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TOP_LEVEL_KEYS = {"name", "fallback", "router", "experts"}
EXPERT_KEYS = {"name", "path", "description", "examples", "pin", "priority", "ttl_s"}
DEFAULT_ROUTER_DIR = "router"


@dataclass(frozen=True)
class ExpertSpec:
    """One expert of the CoE; `path` is already resolved to an absolute path."""

    name: str
    path: Path
    description: str = ""
    examples: tuple[str, ...] = ()
    pin: bool = False
    priority: int = 0
    ttl_s: float | None = None


@dataclass(frozen=True)
class CoEFile:
    """A loaded, checked CoE file. `source` is the file it came from."""

    name: str
    fallback: str
    router_dir: Path
    experts: tuple[ExpertSpec, ...]
    source: Path
    root: Path = field(default=Path("."))

    @property
    def expert_names(self) -> list[str]:
        return [e.name for e in self.experts]

    def expert(self, name: str) -> ExpertSpec:
        for e in self.experts:
            if e.name == name:
                return e
        raise ConfigError(f"{self.source}: no expert named {name!r} (known: {', '.join(self.expert_names)})")


def is_safe_name(name: str) -> bool:
    """Names end up in paths, URLs and metric labels: keep them to a boring charset."""
    return bool(NAME_PATTERN.fullmatch(name)) and ".." not in name


def load_coe(path: str | Path) -> CoEFile:
    """Read and check a CoE file; raise ConfigError naming the file, entry and field."""
    source = Path(path)
    if source.is_dir():
        source = source / "coe.yaml"
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: CoE file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: cannot read CoE file: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    return parse_coe(doc, source)


def parse_coe(doc: Any, source: Path) -> CoEFile:
    """Check an already-parsed document; `source` locates relative paths and error messages."""
    source = Path(source)
    root = source.parent.resolve()
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: the CoE file must be a mapping with 'name', 'fallback' and 'experts'")
    unknown = sorted(set(map(str, doc)) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(sorted(TOP_LEVEL_KEYS))})"
        )
    name = _require_str(doc, "name", source, "top level")
    if not is_safe_name(name):
        raise ConfigError(f"{source}: 'name' {name!r} must match [A-Za-z0-9][A-Za-z0-9._-]* and not contain '..'")
    raw_experts = doc.get("experts")
    if not isinstance(raw_experts, list) or not raw_experts:
        raise ConfigError(f"{source}: 'experts' must be a non-empty list")
    experts: list[ExpertSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_experts):
        spec = _parse_expert(raw, i, source, root)
        if spec.name in seen:
            raise ConfigError(f"{source}: experts[{i}] ({spec.name}): 'name' is used by an earlier expert")
        seen.add(spec.name)
        experts.append(spec)
    fallback = _require_str(doc, "fallback", source, "top level")
    if fallback not in seen:
        raise ConfigError(f"{source}: 'fallback' {fallback!r} is not one of the experts ({', '.join(sorted(seen))})")
    router_rel = doc.get("router", DEFAULT_ROUTER_DIR)
    if not isinstance(router_rel, str) or not router_rel.strip():
        raise ConfigError(f"{source}: 'router' must be a directory path relative to the CoE file")
    router_dir = _resolve_inside(router_rel, root, source, "top level", "router")
    return CoEFile(name=name, fallback=fallback, router_dir=router_dir, experts=tuple(experts), source=source, root=root)


def _parse_expert(raw: Any, i: int, source: Path, root: Path) -> ExpertSpec:
    where = f"experts[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where}: each expert must be a mapping with 'name' and 'path'")
    name = _require_str(raw, "name", source, where)
    where = f"experts[{i}] ({name})"
    if not is_safe_name(name):
        raise ConfigError(f"{source}: {where}: 'name' must match [A-Za-z0-9][A-Za-z0-9._-]* and not contain '..'")
    unknown = sorted(set(map(str, raw)) - EXPERT_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: {where}: unknown field(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(sorted(EXPERT_KEYS))})"
        )
    path = _resolve_inside(_require_str(raw, "path", source, where), root, source, where, "path")
    description = raw.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise ConfigError(f"{source}: {where}: 'description' must be a string")
    examples = raw.get("examples", []) or []
    if not isinstance(examples, list) or not all(isinstance(x, str) for x in examples):
        raise ConfigError(f"{source}: {where}: 'examples' must be a list of strings")
    pin = raw.get("pin", False)
    if not isinstance(pin, bool):
        raise ConfigError(f"{source}: {where}: 'pin' must be true or false")
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError(f"{source}: {where}: 'priority' must be an integer")
    ttl_s = raw.get("ttl_s")
    if ttl_s is not None:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not ttl_s > 0:
            raise ConfigError(f"{source}: {where}: 'ttl_s' must be a positive number of seconds")
        ttl_s = float(ttl_s)
    return ExpertSpec(
        name=name,
        path=path,
        description=description,
        examples=tuple(examples),
        pin=pin,
        priority=priority,
        ttl_s=ttl_s,
    )


def _require_str(d: dict, key: str, source: Path, where: str) -> str:
    if key not in d or d[key] is None:
        raise ConfigError(f"{source}: {where}: missing '{key}'")
    value = d[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}: {where}: '{key}' must be a non-empty string")
    return value.strip()


def _resolve_inside(rel: str, root: Path, source: Path, where: str, key: str) -> Path:
    """Resolve a relative path and refuse anything that lands outside the CoE's directory."""
    p = Path(rel)
    if p.is_absolute():
        raise ConfigError(f"{source}: {where}: '{key}' {rel!r} must be relative to the CoE file's directory")
    resolved = (root / p).resolve()
    if resolved != root and root not in resolved.parents:
        raise ConfigError(f"{source}: {where}: '{key}' {rel!r} leads outside the CoE file's directory {root}")
    return resolved
