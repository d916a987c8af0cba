"""Recording a trace from a running server (`coeflow serve --record-trace FILE`): one line
per request as it arrives, before it is queued, so rejected requests (429) are in it too:
they were load offered. The file holds users' prompts: it is opt-in for that reason."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

from coeflow.errors import ConfigError
from coeflow.trace.format import TraceRequest


class TraceRecorder:
    """Appends TraceRequests to a JSONL file; arrival times are seconds since it was opened."""

    def __init__(self, path: str | Path, clock: Callable[[], float]):
        self.path = Path(path)
        try:
            self._f = open(self.path, "a", buffering=1)  # line-buffered: each request lands at once
        except OSError as e:
            raise ConfigError(f"--record-trace {path}: cannot open for writing ({e.strerror or e})") from None
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()

    def record(self, arrival: float, expert: str, prompt: str | None, prompt_tokens: int,
               max_tokens: int, route: str | None = None) -> None:
        """`arrival` is on the recorder's clock (the server's: its scheduler's)."""
        r = TraceRequest(round(max(0.0, arrival - self._t0), 6), expert, max_tokens, prompt,
                         prompt_tokens, route=route)
        with self._lock:
            self._f.write(json.dumps(r.to_dict()) + "\n")

    def close(self) -> None:
        with self._lock:
            self._f.close()
