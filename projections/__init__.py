"""Read models folded from events: the pod state view of one task, the central task list,
agent memory and cost and token analytics (``usage``).
"""

from . import task_state
from .embedders import Embedder, EmbedderError
from .memory import Memory, MemoryNotFound, MemorySettings, MemoryUnavailable, Recalled
from .task_list import TaskList, summary
from .usage import BadPeriod, Period, Usage, UsageUnavailable

__all__ = ["BadPeriod", "Embedder", "EmbedderError", "Memory", "MemoryNotFound", "MemorySettings",
           "MemoryUnavailable", "Period", "Recalled", "TaskList", "Usage", "UsageUnavailable",
           "summary", "task_state"]
