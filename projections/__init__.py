"""Read models folded from events: the pod state view of one task, and the central task list.
"""

from . import task_state
from .task_list import TaskList, summary

__all__ = ["TaskList", "summary", "task_state"]
