"""What the ingress and the expert replicas send each other through Ray (pickled): a job
(one request's sequences for one expert) and a replica's report. Plain data, no Ray."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sequence:
    prompt_ids: list[int]
    params: Any  # coeflow.engine.SamplingParams
    grammar: str | None = None  # llguidance grammar its output must match (rebuilt on the replica)


@dataclass
class Job:
    """One request's sequences (its choices), queued together on one replica: all or none."""
    expert: str
    sequences: list[Sequence]


@dataclass
class Report:
    """One replica's answer to "status": where it runs and what its store and engines hold."""
    replica: str
    node: str
    actor: str  # its Ray actor's name (namespace "serve"), for ray.get_actor
    experts: list[dict]  # one row an expert: ExpertStatus's fields, dtype, quantization, queued, running
    kv_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    step_rows: dict[int, int] = field(default_factory=dict)
    warming_up: bool = False
