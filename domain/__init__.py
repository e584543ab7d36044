"""The pure domain of ipa: what a task is, what may happen to it, and what it becomes.

Nothing here does I/O, reads a clock or draws a random number: time and ids come in through
``Context`` and the task id, so every decision can be replayed. The rest of the system uses the
names below; the modules behind them are free to change.
"""

from .commands import (
    TASK_COMMANDS,
    Approve,
    Cancel,
    Command,
    CompletePhase,
    Context,
    CreateTask,
    Fail,
    Pause,
    RequestApproval,
    RequestChanges,
    Resume,
    Retry,
    StartTask,
    UpdateSpec,
)
from .errors import CommandRejected, DomainError, InvalidCommand, TaskNotFound, UnknownWorkflow
from .events import (
    ApprovalRequested,
    ChangesRequested,
    PhaseApproved,
    PhaseCompleted,
    PhaseEntered,
    SpecUpdated,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskEvent,
    TaskFailed,
    TaskPaused,
    TaskResumed,
    TaskRetried,
    TaskStarted,
)
from .state import Approval, ChangeRequest, PhaseVisit, TaskState
from .task import TITLE_MAX_LENGTH, decide, evolve, fold
from .workflows import (
    WORKFLOWS,
    Phase,
    Position,
    Status,
    Workflow,
    allowed_commands,
    destination,
    get_workflow,
)

__all__ = [
    # commands
    "Command",
    "Context",
    "CreateTask",
    "StartTask",
    "UpdateSpec",
    "RequestApproval",
    "Approve",
    "RequestChanges",
    "CompletePhase",
    "Pause",
    "Resume",
    "Cancel",
    "Fail",
    "Retry",
    "TASK_COMMANDS",
    # events
    "TaskEvent",
    "TaskCreated",
    "TaskStarted",
    "SpecUpdated",
    "ApprovalRequested",
    "PhaseApproved",
    "ChangesRequested",
    "PhaseCompleted",
    "PhaseEntered",
    "TaskPaused",
    "TaskResumed",
    "TaskFailed",
    "TaskRetried",
    "TaskCancelled",
    "TaskCompleted",
    # the task
    "TaskState",
    "Approval",
    "ChangeRequest",
    "PhaseVisit",
    "TITLE_MAX_LENGTH",
    "decide",
    "evolve",
    "fold",
    # workflows
    "Status",
    "Phase",
    "Workflow",
    "Position",
    "WORKFLOWS",
    "get_workflow",
    "allowed_commands",
    "destination",
    # errors
    "DomainError",
    "CommandRejected",
    "InvalidCommand",
    "TaskNotFound",
    "UnknownWorkflow",
]
