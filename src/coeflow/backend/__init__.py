"""What the CoE core asks of the machine under it (interface.Backend: move, clock; an expert's
batch, stepped or costed whole),
and the real backend that does it with PyTorch (`real.RealBackend`, imported on demand: it
loads PyTorch). The modelled backend, which answers from the hardware model on a simulated
clock, lives with the rest of the model in coeflow.sim."""

from coeflow.backend.interface import TIERS, Backend, BatchTimes, Moved, SimClock, StoreBackend, WallClock

__all__ = ["TIERS", "Backend", "StoreBackend", "BatchTimes", "Moved", "SimClock", "WallClock"]
