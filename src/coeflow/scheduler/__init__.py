"""Per-expert queues, batching and the order experts run in; knows nothing of HTTP."""

from coeflow.scheduler.decisions import SCHEDULES
from coeflow.scheduler.scheduler import (MAX_BATCH, MAX_QUEUE, MAX_WAIT_S, PREFILL_CHUNK, SLICE_S, Failed, Finished,
                                         GenRequest, QueueFullError, Scheduler, ShuttingDownError, Started)

__all__ = ["Scheduler", "GenRequest", "Started", "Finished", "Failed", "QueueFullError", "ShuttingDownError",
           "MAX_BATCH", "MAX_QUEUE", "MAX_WAIT_S", "SLICE_S", "PREFILL_CHUNK", "SCHEDULES"]
