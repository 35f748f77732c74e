"""The native paged-KV block manager and continuous-batching scheduler.

All state lives in C++ (``tinyfast._C``); this module is the public name for it.
"""

from tinyfast._C import (
    BlockManager,
    CapacityError,
    NoFreeBlocksError,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
)

__all__ = [
    "BlockManager",
    "CapacityError",
    "NoFreeBlocksError",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
]
