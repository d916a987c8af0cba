"""The three-tier expert store: disk (safetensors) -> host DRAM pool -> device, with byte
budgets, eviction policies, prefetch and integrity checks. Pure bookkeeping: it is given the
backend that moves the bytes, and knows nothing of PyTorch, HTTP or maths."""

from coeflow.store.policies import FIFO, LFU, LRFU, LRU, Belady, Candidate, EvictionPolicy, Usage, make_policy
from coeflow.store.store import (ExpertStatus, ExpertStore, ExpertUnavailableError, Lease,
                                 UnknownExpertError)
from coeflow.store.tiers import CacheResult, Tier, Tiers, parse_bytes, simulate_cache

__all__ = ["ExpertStore", "Lease", "ExpertStatus", "ExpertUnavailableError", "UnknownExpertError",
           "parse_bytes", "EvictionPolicy", "Candidate", "Usage", "LRU", "LFU", "LRFU", "FIFO", "Belady",
           "make_policy", "Tier", "Tiers", "simulate_cache", "CacheResult"]
