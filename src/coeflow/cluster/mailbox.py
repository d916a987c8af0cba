"""The ingress's way to ask every expert replica at once. Ray Serve sends a request to one
replica and has no broadcast, so each replica polls a named actor, the mailbox, for commands
(report your status, load, unload, pin) and posts its answers back; the ingress asks through
the mailbox and gets every live replica's answer."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import ray

NAMESPACE = "coeflow"
HEAD = "node:__internal_head__"  # the resource Ray gives the head node alone
POLL_S = 1.0  # a replica waits this long for a command before asking again
TAKEN_S = POLL_S + 1.0  # a live replica is always waiting for its next command: one that has not
                        # taken a command this long after it was posted is gone


@ray.remote(num_cpus=0)
class Mailbox:
    def __init__(self) -> None:
        self._inbox: dict[str, asyncio.Queue] = {}
        self._pending: dict[tuple[int, str], asyncio.Future] = {}
        self._taken: set[tuple[int, str]] = set()
        self._ids = itertools.count()

    async def next(self, replica: str) -> tuple[int, str, tuple] | None:
        """The next command for `replica` (None after POLL_S without one)."""
        inbox = self._inbox.setdefault(replica, asyncio.Queue())
        try:
            command = await asyncio.wait_for(inbox.get(), POLL_S)
        except asyncio.TimeoutError:
            return None
        self._taken.add((command[0], replica))
        return command

    async def leave(self, replica: str) -> None:
        """A replica stopping: it is asked nothing more."""
        self._inbox.pop(replica, None)

    async def answer(self, command_id: int, replica: str, result: Any) -> None:
        waiting = self._pending.get((command_id, replica))
        if waiting is not None and not waiting.done():
            waiting.set_result(result)

    async def ask_all(self, command: str, args: tuple = (), timeout_s: float = 10.0) -> dict[str, Any]:
        """Every live replica's answer to `command`, by replica id. A replica that does not
        take the command within TAKEN_S is gone (and forgotten); one that took it but does not
        answer within `timeout_s` is left out."""
        cid = next(self._ids)
        loop = asyncio.get_running_loop()
        asked = {r: loop.create_future() for r in self._inbox}
        everyone = list(asked)
        for replica, fut in asked.items():
            self._pending[(cid, replica)] = fut
            self._inbox[replica].put_nowait((cid, command, args))
        start = loop.time()
        try:
            while asked and not all(f.done() for f in asked.values()) and loop.time() - start < timeout_s:
                await asyncio.wait(asked.values(), timeout=0.1)
                if loop.time() - start > TAKEN_S:
                    for replica in [r for r in asked if (cid, r) not in self._taken]:
                        del asked[replica]
                        self._inbox.pop(replica, None)
        finally:
            for replica in everyone:
                self._pending.pop((cid, replica), None)
                self._taken.discard((cid, replica))
        return {r: f.result() for r, f in asked.items() if f.done()}


def name(app: str) -> str:
    """The mailbox's actor name (namespace NAMESPACE) for the Serve application `app`."""
    return f"mailbox-{app}"


def mailbox(app: str) -> Any:
    """The mailbox of the Serve application `app` (made by whichever side asks first), on the
    head node, with the ingress: a worker's loss does not take it away."""
    return Mailbox.options(name=name(app), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                           resources={HEAD: 0.001}).remote()
