"""The three-tier expert store: disk (safetensors) -> host DRAM pool -> device, with byte
budgets, eviction policies, prefetch and integrity checks. Knows nothing of HTTP or maths."""

from coeflow.store.policies import (FIFO, LFU, LRU, Belady, Candidate, EvictionPolicy, ReplayResult,
                                    make_policy, replay)
from coeflow.store.store import (ExpertStatus, ExpertStore, ExpertUnavailableError, Lease,
                                 UnknownExpertError)
from coeflow.store.tiers import parse_bytes

__all__ = ["ExpertStore", "Lease", "ExpertStatus", "ExpertUnavailableError", "UnknownExpertError",
           "parse_bytes", "EvictionPolicy", "Candidate", "LRU", "LFU", "FIFO", "Belady", "make_policy",
           "replay", "ReplayResult"]
