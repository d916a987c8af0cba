"""The values each sampling parameter may take, in one place: requests (server.protocol), an
expert's defaults in the CoE file (coefile) and the engine's SamplingParams check against it.
Apart from the engine so that reading a CoE file needs no torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """The values a sampling parameter may take: low to high, both included unless said."""
    low: float
    high: float | None = None  # None: no upper bound
    low_open: bool = False

    def problem(self, value: float) -> str | None:
        """What is wrong with `value`, phrased to follow the parameter's name; None if nothing."""
        below = value <= self.low if self.low_open else value < self.low
        if not below and (self.high is None or value <= self.high):
            return None
        if self.high is None:
            return f"must be {self.low:g} or more, got {value!r}"
        if self.low_open:
            return f"must be in ({self.low:g}, {self.high:g}], got {value!r}"
        return f"must be between {self.low:g} and {self.high:g}, got {value!r}"


# Temperature and the penalties as OpenAI bounds them; repetition_penalty past 0 as vLLM takes
# it, to 10 (no useful value comes near).
RANGES: dict[str, Range] = {
    "temperature": Range(0, 2),
    "top_p": Range(0, 1, low_open=True),
    "top_k": Range(0),  # 0: off
    "min_p": Range(0, 1),
    "presence_penalty": Range(-2, 2),
    "frequency_penalty": Range(-2, 2),
    "repetition_penalty": Range(0, 10, low_open=True),
}
