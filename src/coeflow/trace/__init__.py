"""Request traces: the JSONL format, synthetic generators, recording from a server."""

from coeflow.trace.format import ROUTED, TraceRequest, parse_request, read_trace, write_trace
from coeflow.trace.generate import Burst, TraceSpec, generate, zipf_weights
from coeflow.trace.record import TraceRecorder

__all__ = ["ROUTED", "TraceRequest", "parse_request", "read_trace", "write_trace", "Burst",
           "TraceSpec", "generate", "zipf_weights", "TraceRecorder"]
