"""OpenAI-compatible HTTP server in front of a CoE (FastAPI + uvicorn).

`coeflow.server.options` (what a server is built with, and the defaults) imports nothing
heavy; this package's other names load the app, the engine and PyTorch on first use."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any, Iterator

from coeflow.server.options import DEFAULT_HOST, DEFAULT_PORT, Limits, ServerOptions

if TYPE_CHECKING:
    import uvicorn

    from coeflow.server.app import CoEServer

log = logging.getLogger(__name__)

_LAZY = {"CoEServer": "coeflow.server.app", "create_app": "coeflow.server.app",
         "build_server": "coeflow.server.build"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'coeflow.server' has no attribute {name!r}")


# On shutdown, queued and running requests are served for up to DRAIN_S, then failed; uvicorn
# waits up to GRACE_S for every handler to send its answer before it cuts connections, so the
# drain must end first: every client gets its answer or an error, none a dropped connection.
DRAIN_S = 5.0
GRACE_S = DRAIN_S + 5.0


def _uvicorn(srv: "CoEServer", host: str, port: int, log_level: str, own_logging: bool = True) -> "uvicorn.Server":
    import uvicorn

    from coeflow.server.app import create_app
    app = create_app(srv)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if srv.warm_up:  # compiled by the worker before it takes any request; requests queue meanwhile
            srv.scheduler.warm_up(srv.warm_up, wait=False)
        srv.scheduler.start()
        yield
        srv.store.close()
        getattr(srv.scheduler.backend, "close", lambda: None)()

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            """The scheduler drains while uvicorn stops accepting and waits for the handlers."""
            drain = asyncio.create_task(asyncio.to_thread(srv.scheduler.stop, DRAIN_S))
            await super().shutdown(sockets)
            await drain

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=GRACE_S,
                            **({} if own_logging else {"log_config": None}))
    return Server(config)


def serve(srv: "CoEServer", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_level: str = "info",
          own_logging: bool = True) -> None:
    """Serve until interrupted (Ctrl-C drains and stops cleanly). `own_logging` False leaves
    uvicorn's loggers to the root logger's handler (JSON lines: coeflow.server.logs)."""
    _uvicorn(srv, host, port, log_level, own_logging).run()


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(srv: "CoEServer", host: str = DEFAULT_HOST, port: int | None = None,
            log_level: str = "warning") -> Iterator[str]:
    """Run a server on a background thread; yields its base URL (…/v1). For the demo,
    benchmarks and tests."""
    port = port or free_port(host)
    server = _uvicorn(srv, host, port, log_level)
    thread = threading.Thread(target=server.run, name="coeflow-http", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server failed to start on {host}:{port}")
        thread.join(0.02)
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


__all__ = ["CoEServer", "ServerOptions", "Limits", "build_server", "create_app", "serve", "serving", "free_port",
           "DEFAULT_HOST", "DEFAULT_PORT"]
