"""Each expert's health, one answer for every reader: `/health`, `/v1/experts`, routing and the
admin routes.

An expert is `ready` (it may be on disk, host or device: a request loads it), `loading`, or
`failed`: its tokenizer or config could not be read (a runtime problem, found when the server
was built), or its weights failed to load (the store's error, found at start-up or at any load
since). A failed expert gets no requests: one named in a request is a 503, and a routed request
goes to the router's next choice that can serve. Loading it again through the admin route reads
its tokenizer and config again and retries its weights; if both succeed it is ready again."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from coeflow.errors import CoeflowError


class ExpertHealth:
    """`runtime_errors`: experts whose tokenizer or config failed, and why (kept up to date by
    `reload`); `reload_runtime(name)` reads them again (raises CoeflowError if it still fails)."""

    def __init__(self, store: Any, paths: dict[str, Path], runtime_errors: dict[str, str],
                 reload_runtime: Callable[[str], None] | None = None) -> None:
        self.store, self.paths = store, paths
        self.runtime_errors = runtime_errors
        self._reload_runtime = reload_runtime

    def failure(self, name: str) -> str | None:
        """Why `name` cannot serve now, in words fit for a client, or None."""
        why = self.runtime_errors.get(name) or self.store.failure(name)
        return self.public(why) if why else None

    def state(self, name: str) -> str:
        if self.failure(name) is not None:
            return "failed"
        return "loading" if self.store.tier_of(name) == "loading" else "ready"

    def public(self, message: str) -> str:
        """`message` without the server's file system: each checkpoint's path becomes its name."""
        for name, path in self.paths.items():
            message = message.replace(str(path), f"<{name}>")
        return message

    def reload(self, name: str) -> None:
        """Before an admin load: a runtime that failed is read again."""
        if name in self.runtime_errors and self._reload_runtime is not None:
            try:
                self._reload_runtime(name)
            except CoeflowError as e:
                self.runtime_errors[name] = str(e)
                raise CoeflowError(self.public(str(e))) from None
            del self.runtime_errors[name]

    def report(self, names: list[str]) -> dict[str, Any]:
        """What /health says: "ok", or "degraded" with the failed experts and why."""
        failed = {n: why for n in names if (why := self.failure(n)) is not None}
        return {"status": "degraded" if failed else "ok", "experts": len(names),
                "ready": len(names) - len(failed), "failed": failed}
