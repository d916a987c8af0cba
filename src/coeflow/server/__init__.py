"""OpenAI-compatible HTTP server in front of a CoE (FastAPI + uvicorn)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import Iterator

import uvicorn

from coeflow.server.app import CoEServer, create_app
from coeflow.server.build import ServerOptions, build_server
from coeflow.server.protocol import Limits

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # this machine only, unless the user says otherwise
DEFAULT_PORT = 8000


def _uvicorn(srv: CoEServer, host: str, port: int, log_level: str) -> uvicorn.Server:
    app = create_app(srv)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        srv.scheduler.start()
        if srv.warm_up:  # compile in the background; requests queue meanwhile
            threading.Thread(target=srv.scheduler.warm_up, args=(srv.warm_up,), daemon=True).start()
        yield
        srv.scheduler.stop(drain_s=5.0)  # finish running batches, drain or cancel the queue
        srv.store.close()
        getattr(srv.scheduler.backend, "close", lambda: None)()

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
    return uvicorn.Server(config)


def serve(srv: CoEServer, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C drains and stops cleanly)."""
    _uvicorn(srv, host, port, log_level).run()


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(srv: CoEServer, host: str = DEFAULT_HOST, port: int | None = None,
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
