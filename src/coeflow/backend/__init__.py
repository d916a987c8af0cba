"""One CoE core, two backends (interface.Backend). The real one (real.RealBackend: PyTorch,
checkpoint files, the wall clock) sits under the threaded store and scheduler of the server;
the modelled one (modelled.ModelledBackend: the hardware model, a simulated clock) sits
under the discrete-event replay, which makes the same decisions with the same code
(coeflow.scheduler.decisions, coeflow.store.policies). `real` is imported on demand: it
loads PyTorch, which the modelled path never needs."""

from coeflow.backend.interface import TIERS, Backend, BatchTimes, Moved, SimClock, StoreBackend, WallClock
from coeflow.backend.modelled import Machine, ModelledBackend
from coeflow.backend.replay import ReplayOptions, ReplayResult, RequestRecord, SimRequest, replay

__all__ = ["TIERS", "Backend", "StoreBackend", "BatchTimes", "Moved", "SimClock", "WallClock", "Machine",
           "ModelledBackend", "ReplayOptions", "ReplayResult", "RequestRecord", "SimRequest", "replay"]
