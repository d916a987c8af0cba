"""One CoE core, two backends. The scheduler's and the store's decisions are shared code
(coeflow.scheduler.decisions, coeflow.store.policies); the real backend is the threaded
server (PyTorch, wall clock), the modelled one answers the same questions from the hardware
model on a simulated clock and is driven by a discrete-event replay."""

from coeflow.backend.interface import TIERS, Backend, BatchTimes, SimClock
from coeflow.backend.modelled import Machine, ModelledBackend
from coeflow.backend.replay import ReplayOptions, ReplayResult, RequestRecord, SimRequest, replay

__all__ = ["TIERS", "Backend", "BatchTimes", "SimClock", "Machine", "ModelledBackend", "ReplayOptions",
           "ReplayResult", "RequestRecord", "SimRequest", "replay"]
