"""Read models folded from events: the pod state view of one task, the central task list and
agent memory.
"""

from . import task_state
from .embedders import Embedder, EmbedderError
from .memory import Memory, MemoryNotFound, MemorySettings, MemoryUnavailable, Recalled
from .task_list import TaskList, summary

__all__ = ["Embedder", "EmbedderError", "Memory", "MemoryNotFound", "MemorySettings",
           "MemoryUnavailable", "Recalled", "TaskList", "summary", "task_state"]
