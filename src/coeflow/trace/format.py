"""The trace format: one JSON object per line, one line per request, in arrival order.

    {"arrival_s": 0.25, "expert": "sql", "prompt_tokens": 40, "max_tokens": 20}
    {"arrival_s": 0.31, "expert": "coe", "prompt": "count orders per status", "max_tokens": 64}

| field | meaning |
| --- | --- |
| `arrival_s` | seconds since the trace started (>= 0) |
| `expert` | an expert's name, or `coe`: let the router choose (needs `prompt`, or `route`) |
| `prompt` / `prompt_tokens` | the text, or only its length in tokens (at least one of them) |
| `max_tokens` | output tokens asked for |
| `output_tokens` | optional: tokens actually produced (a run's record; the model uses it) |
| `route` | optional: the expert the router chose when the trace was recorded |
| `id` | optional: a label carried into the timeline |

Unknown fields are refused (a typo must not silently change a workload)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from coeflow.errors import ConfigError

ROUTED = "coe"
FIELDS = ("arrival_s", "expert", "prompt", "prompt_tokens", "max_tokens", "output_tokens", "route", "id")


@dataclass(frozen=True)
class TraceRequest:
    arrival_s: float
    expert: str  # an expert's name or "coe"
    max_tokens: int
    prompt: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    route: str | None = None
    id: str | None = None

    @property
    def gen_tokens(self) -> int:
        """Output length to cost: what a run produced if known, else what was asked."""
        return self.output_tokens if self.output_tokens is not None else self.max_tokens

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in FIELDS if getattr(self, k) is not None}


def _int(d: dict, key: str, where: str, minimum: int) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{where}: {key!r} must be an integer >= {minimum}, got {v!r}")
    return v


def parse_request(d: object, where: str) -> TraceRequest:
    """One trace line (already parsed JSON) -> TraceRequest; errors name `where` (file:line)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    arrival = d.get("arrival_s")
    if isinstance(arrival, bool) or not isinstance(arrival, (int, float)) or not arrival >= 0:
        raise ConfigError(f"{where}: 'arrival_s' must be a number >= 0, got {arrival!r}")
    expert = d.get("expert")
    if not isinstance(expert, str) or not expert:
        raise ConfigError(f"{where}: 'expert' must be an expert's name or {ROUTED!r}, got {expert!r}")
    prompt = d.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ConfigError(f"{where}: 'prompt' must be a string")
    prompt_tokens = _int(d, "prompt_tokens", where, 1)
    if prompt is None and prompt_tokens is None:
        raise ConfigError(f"{where}: give 'prompt' or 'prompt_tokens'")
    max_tokens = _int(d, "max_tokens", where, 1)
    if max_tokens is None:
        raise ConfigError(f"{where}: 'max_tokens' is required")
    for key in ("route", "id"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise ConfigError(f"{where}: {key!r} must be a string")
    if expert == ROUTED and prompt is None and d.get("route") is None:
        raise ConfigError(f"{where}: a routed request ('expert': 'coe') needs 'prompt' (for the "
                          "router) or 'route' (the expert it was routed to)")
    return TraceRequest(float(arrival), expert, max_tokens, prompt, prompt_tokens,
                        _int(d, "output_tokens", where, 0), d.get("route"), d.get("id"))


def read_trace(path: str | Path) -> list[TraceRequest]:
    """Read a JSONL trace; blank lines and lines starting with '#' are skipped. Requests come
    back sorted by arrival (stable), so a hand-edited file need not be in order."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the trace ({e.strerror or e})") from None
    out = []
    for no, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{no}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        out.append(parse_request(d, where))
    if not out:
        raise ConfigError(f"{path}: the trace has no requests")
    return sorted(out, key=lambda r: r.arrival_s)


def write_trace(path: str | Path, requests: Iterable[TraceRequest]) -> int:
    """Write requests as JSONL; returns how many."""
    n = 0
    with open(path, "w") as f:
        for r in requests:
            f.write(json.dumps(r.to_dict()) + "\n")
            n += 1
    return n
