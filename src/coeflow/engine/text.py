"""Incremental detokenisation with stop strings: what text a stream may show so far."""

from __future__ import annotations

from typing import Callable


class TextStream:
    """Turns a growing list of token ids into text deltas. Holds back a tail that might be the
    start of a stop string or an incomplete UTF-8 character, so a stream never shows text
    that the final answer does not contain."""

    def __init__(self, detokenize: Callable[[list[int]], str], stop: tuple[str, ...]):
        self.detokenize, self.stop = detokenize, stop
        self.ids: list[int] = []
        self.text = ""  # final text so far (stop string excluded)
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; returns the new text it is safe to show."""
        self.ids.append(token_id)
        full = self.detokenize(self.ids)
        for s in self.stop:
            at = full.find(s)
            if at != -1:
                self.stopped = True
                self.text = full[:at]
                return self._emit(len(self.text))
        self.text = full
        safe = len(full)
        if full.endswith("\ufffd"):
            safe -= 1
        for s in self.stop:  # longest suffix of `full` that is a prefix of a stop string
            for k in range(min(len(s) - 1, len(full)), 0, -1):
                if full.endswith(s[:k]):
                    safe = min(safe, len(full) - k)
                    break
        return self._emit(safe)

    def flush(self) -> str:
        """At the end, show whatever was held back (an unfinished stop prefix is plain text)."""
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        delta, self.emitted = self.text[self.emitted:upto], upto
        return delta
