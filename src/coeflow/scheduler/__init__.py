"""Per-expert queues, batching and the order experts run in; knows nothing of HTTP."""

from coeflow.scheduler.scheduler import (Failed, Finished, GenRequest, QueueFullError, Scheduler,
                                         ShuttingDownError, Started)

__all__ = ["Scheduler", "GenRequest", "Started", "Finished", "Failed", "QueueFullError", "ShuttingDownError"]
