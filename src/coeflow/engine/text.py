"""Incremental detokenization with stop strings: what text a stream may show so far."""

from __future__ import annotations

from typing import Callable


class TextStream:
    """Turns a growing list of token ids into text deltas, decoding a few tokens a step rather
    than the whole sequence. Holds back a tail that might be the start of a stop string or an
    incomplete UTF-8 character, so a stream never shows text that the final answer does not
    contain; at the end (`flush`) the text equals the whole sequence decoded at once.

    Each step decodes the tokens from the one before the last text shown (`_prefix`) to the end,
    and the same window without the new tokens: the difference is the new text. Decoding with
    a token of context gets what depends on the tokens before it right (a SentencePiece word's
    leading space, bytes of one character split over tokens)."""

    def __init__(self, detokenize: Callable[[list[int]], str], stop: tuple[str, ...]):
        self.detokenize, self.stop = detokenize, stop
        self.ids: list[int] = []
        self.text = ""  # final text so far (stop string excluded)
        self.emitted = 0
        self.stopped = False
        self._prefix = 0  # ids[_prefix:_read] were decoded into the end of `text` at the last step
        self._read = 0
        self._longest_stop = max((len(s) for s in stop), default=0)

    def push(self, token_id: int) -> str:
        """Add one token; returns the new text it is safe to show."""
        self.ids.append(token_id)
        return self._add(self._decoded(final=False))

    def flush(self) -> str:
        """At the end, show whatever was held back (an unfinished stop prefix is plain text, and
        an unfinished character what the tokenizer makes of it)."""
        delta = "" if self.stopped else self._add(self._decoded(final=True))
        return delta + self._emit(len(self.text))

    def _decoded(self, final: bool) -> str:
        """The text the tokens since the last step add; "" while it ends in an unfinished character."""
        before = self.detokenize(self.ids[self._prefix:self._read])
        after = self.detokenize(self.ids[self._prefix:])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return after[len(before):]

    def _add(self, new: str) -> str:
        start = max(0, len(self.text) - self._longest_stop + 1)  # where a stop string could now begin
        self.text += new
        for s in self.stop:
            at = self.text.find(s, start)
            if at != -1:
                self.stopped = True
                self.text = self.text[:at]
                return self._emit(len(self.text))
        safe = len(self.text)
        for s in self.stop:  # longest suffix of the text that is a prefix of a stop string
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    safe = min(safe, len(self.text) - k)
                    break
        return self._emit(safe)

    def _emit(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        delta, self.emitted = self.text[self.emitted:upto], upto
        return delta
