"""The sync engine of a pod and its connectors (GitHub, JIRA, plain git).

See specs/sync/README.md: the outbox lifecycle, the approval gate, delivery and polling.
"""

from .engine import SyncEngine
from .errors import SyncError
from .git import GitConnector
from .github import GitHubConnector
from .jira import JiraConnector
from .plan import Desired, desired, task_branch, task_commit
from .settings import SettingsError, SyncSettings

__all__ = [
    "Desired",
    "GitConnector",
    "GitHubConnector",
    "JiraConnector",
    "SettingsError",
    "SyncEngine",
    "SyncError",
    "SyncSettings",
    "desired",
    "task_branch",
    "task_commit",
]
