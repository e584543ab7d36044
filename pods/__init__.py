"""Pods: one isolated asyncio unit per unfinished task — its state (the single writer of its
stream), scheduler, sync engine and workspace manager — plus the agent runners they use.
"""

from .agent_types import AgentCatalog, AgentConfigError, AgentType
from .claude import ClaudeRunner
from .pod import Pod, PodEnvironment, PodStatus, RestartPolicy
from .priority import NicenessInvalid, agent_niceness
from .rarv import AgentSettings
from .repositories import RepositoryPolicy, RepositoryRefused
from .runners import (
    AgentRunner,
    CommandRunner,
    OutputLine,
    RunnerError,
    RunRequest,
    RunResult,
    runner_for,
)
from .scheduler import Scheduler
from .state import PodState
from .sync import SyncEngine, SyncError, SyncSettings
from .webhook_delivery import AddressGuard, AddressRefused
from .webhooks import (
    TooManyWebhooks,
    WebhookNotFound,
    Webhooks,
    WebhookSettings,
    WebhooksUnavailable,
)
from .workspace import (
    PathOutsideWorkspace,
    RepositoryUnavailable,
    Workspace,
    WorkspaceError,
    WorkspaceManager,
)

__all__ = [
    "AddressGuard",
    "AddressRefused",
    "TooManyWebhooks",
    "WebhookNotFound",
    "WebhookSettings",
    "Webhooks",
    "WebhooksUnavailable",
    "AgentCatalog",
    "AgentConfigError",
    "AgentRunner",
    "AgentSettings",
    "AgentType",
    "ClaudeRunner",
    "CommandRunner",
    "NicenessInvalid",
    "OutputLine",
    "PathOutsideWorkspace",
    "Pod",
    "PodEnvironment",
    "PodState",
    "PodStatus",
    "RepositoryPolicy",
    "RepositoryRefused",
    "RepositoryUnavailable",
    "RestartPolicy",
    "RunRequest",
    "RunResult",
    "RunnerError",
    "Scheduler",
    "SyncEngine",
    "SyncError",
    "SyncSettings",
    "Workspace",
    "WorkspaceError",
    "WorkspaceManager",
    "agent_niceness",
    "runner_for",
]
