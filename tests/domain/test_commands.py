"""Which commands a person may give, and which ipa records itself (issue #11: a client posted a
usage record and a spec artifact through the API and the page credited them to an agent)."""

from __future__ import annotations

from ipa.domain import PERSON_COMMANDS, TASK_COMMANDS


def test_person_commands_are_pinned() -> None:
    assert [c.name for c in PERSON_COMMANDS] == [
        "create_task", "update_spec", "approve", "request_changes", "return_to_phase", "pause",
        "resume", "cancel", "retry", "queue_job", "retry_job", "cancel_job", "skip_job",
        "answer_question", "set_budget", "set_repo", "configure_sync", "approve_update", "sync_now",
        "add_backlog_item", "change_backlog_item", "drop_backlog_item", "reorder_backlog",
        "approve_backlog_change", "reject_backlog_change",
        "set_max_children", "retry_item", "skip_item", "cancel_item", "set_approval_policy",
        "archive", "unarchive", "clone", "fork",
    ]  # fmt: skip


def test_every_other_task_command_is_recorded_by_ipa_itself() -> None:
    system = [c.name for c in TASK_COMMANDS if c not in PERSON_COMMANDS]

    assert set(PERSON_COMMANDS) <= set(TASK_COMMANDS)
    assert system == [
        "start", "request_approval", "complete_phase", "fail",
        "start_job", "complete_job", "fail_job", "hold_job", "record_workspace", "record_commit",
        "remove_workspace", "record_branch", "record_branch_conflict",
        "record_repository_unavailable", "record_context", "record_usage", "record_reflection",
        "record_verification",
        "record_artifact", "record_rate_limit", "ask_question",
        "queue_update", "expire_approval", "record_delivery", "record_delivery_failure",
        "record_sync_incident", "record_review", "apply_review", "record_pull_request_state",
        "record_issue_status", "record_sync_rate_limit", "record_repository_rename",
        "propose_backlog", "propose_cycle", "propose_backlog_change",
        "create_child_task", "spawn_child",
        "record_child_finished", "record_child_conflict",
    ]  # fmt: skip
