"""The workflows as data and the machines that say which command moves a task where."""

from __future__ import annotations

import pytest
import transitions

from ipa.domain import (
    AGENT_COMMANDS,
    ARCHIVE_COMMANDS,
    BACKLOG_COMMANDS,
    CHILD_COMMANDS,
    JOB_COMMANDS,
    LINEAGE_COMMANDS,
    SYNC_COMMANDS,
    TASK_COMMANDS,
    WORKFLOWS,
    CommandRejected,
    CreateTask,
    DomainError,
    Phase,
    Position,
    Status,
    UnknownWorkflow,
    Workflow,
    allowed_commands,
    destination,
    get_workflow,
)

TASK = get_workflow("task")
PROJECT = get_workflow("project")

PROJECT_PHASES = [
    "bootstrap",
    "discovery",
    "architecture",
    "infrastructure",
    "development",
    "qa",
    "deployment",
    "business",
    "growth",
    "perpetual",
]


def test_registry_holds_task_and_project() -> None:
    assert sorted(WORKFLOWS) == ["item", "project", "task"]
    assert all(WORKFLOWS[name].name == name for name in WORKFLOWS)


def test_unknown_workflow_names_the_known_ones() -> None:
    known = "unknown workflow 'nope'; known: item, project, task"
    with pytest.raises(UnknownWorkflow, match=known):
        get_workflow("nope")


def test_unknown_workflow_is_a_domain_error() -> None:
    assert issubclass(UnknownWorkflow, DomainError)


def test_task_phases_run_from_spec_clarification_to_completed() -> None:
    assert [p.name for p in TASK.phases] == [
        "spec_clarification",
        "planning",
        "development",
        "review",
        "completed",
    ]
    assert (TASK.first, TASK.final) == ("spec_clarification", "completed")


def test_task_gates_every_working_phase_but_development() -> None:
    gated = {p.name: p.gated for p in TASK.phases}
    assert gated == {
        "spec_clarification": True,
        "planning": True,
        "development": False,
        "review": True,
        "completed": False,
    }


def test_task_phases_name_their_agents() -> None:
    agents = {p.name: p.agents for p in TASK.phases}
    assert agents == {
        "spec_clarification": ("spec_writer",),
        "planning": ("planner",),
        "development": ("developer",),
        "review": ("reviewer",),
        "completed": (),
    }


def test_project_phases_run_from_bootstrap_to_perpetual() -> None:
    assert [p.name for p in PROJECT.phases] == PROJECT_PHASES
    assert PROJECT.final == "perpetual"


def test_project_gates_discovery_architecture_and_deployment() -> None:
    gated = [p.name for p in PROJECT.phases if p.gated]
    assert gated == ["discovery", "architecture", "deployment"]


def test_every_project_phase_runs_agents() -> None:
    assert all(p.agents for p in PROJECT.phases)


def test_reaching_completed_ends_a_task_but_perpetual_is_open_ended() -> None:
    assert TASK.completes_at("completed")
    assert not TASK.completes_at("review")
    assert not PROJECT.completes_at("perpetual")


def test_every_workflow_command_name_is_a_trigger_somewhere() -> None:
    reachable = {
        trigger
        for workflow in WORKFLOWS.values()
        for phase in workflow.phases
        for status in Status
        for trigger in allowed_commands(workflow, phase.name, status)
    }
    workflow_commands = set(TASK_COMMANDS) - {
        CreateTask, *JOB_COMMANDS, *AGENT_COMMANDS, *SYNC_COMMANDS, *BACKLOG_COMMANDS,
        *CHILD_COMMANDS, *ARCHIVE_COMMANDS, *LINEAGE_COMMANDS,
    }
    assert reachable == {c.name for c in workflow_commands}


def test_job_and_agent_commands_are_task_commands_but_never_triggers() -> None:
    assert set(JOB_COMMANDS) | set(AGENT_COMMANDS) <= set(TASK_COMMANDS)
    job_names = {c.name for c in (*JOB_COMMANDS, *AGENT_COMMANDS)}
    for workflow in WORKFLOWS.values():
        for phase in workflow.phases:
            for status in Status:
                assert not job_names & set(allowed_commands(workflow, phase.name, status))


def test_running_in_a_gated_phase_allows_request_approval() -> None:
    assert allowed_commands(TASK, "planning", Status.running) == [
        "cancel",
        "fail",
        "pause",
        "request_approval",
        "return_to_phase",
        "update_spec",
    ]


def test_running_in_an_ungated_phase_allows_complete_phase() -> None:
    assert allowed_commands(TASK, "development", Status.running) == [
        "cancel",
        "complete_phase",
        "fail",
        "pause",
        "update_spec",
    ]


def test_waiting_allows_approve_and_request_changes() -> None:
    assert allowed_commands(TASK, "review", Status.waiting) == [
        "approve",
        "cancel",
        "fail",
        "pause",
        "request_changes",
        "return_to_phase",
        "update_spec",
    ]


def test_pending_allows_start() -> None:
    assert "start" in allowed_commands(TASK, "spec_clarification", Status.pending)


def test_paused_allows_resume_cancel_and_update_spec() -> None:
    assert allowed_commands(TASK, "planning", Status.paused) == ["cancel", "resume", "update_spec"]


def test_failed_allows_retry_cancel_and_update_spec() -> None:
    assert allowed_commands(TASK, "planning", Status.failed) == ["cancel", "retry", "update_spec"]


@pytest.mark.parametrize("status", [Status.completed, Status.cancelled])
def test_terminal_statuses_allow_nothing(status: Status) -> None:
    assert status.terminal
    assert allowed_commands(TASK, "review", status) == []


def test_perpetual_allows_no_phase_move() -> None:
    assert allowed_commands(PROJECT, "perpetual", Status.running) == [
        "cancel",
        "fail",
        "pause",
        "update_spec",
    ]


def test_unknown_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="workflow 'task' has no phase 'qa'"):
        allowed_commands(TASK, "qa", Status.running)


def test_approve_moves_to_the_next_phase_running() -> None:
    assert destination(TASK, "planning", Status.waiting, "approve") == Position(
        "development", Status.running
    )


def test_approving_review_completes_the_task() -> None:
    assert destination(TASK, "review", Status.waiting, "approve") == Position(
        "completed", Status.completed
    )


def test_completing_development_moves_to_review() -> None:
    assert destination(TASK, "development", Status.running, "complete_phase") == Position(
        "review", Status.running
    )


def test_completing_growth_enters_perpetual_still_running() -> None:
    assert destination(PROJECT, "growth", Status.running, "complete_phase") == Position(
        "perpetual", Status.running
    )


def test_request_changes_stays_in_the_phase() -> None:
    assert destination(TASK, "review", Status.waiting, "request_changes") == Position(
        "review", Status.running
    )


@pytest.mark.parametrize("paused_from", [Status.pending, Status.running, Status.waiting])
def test_resume_returns_to_the_paused_from_status(paused_from: Status) -> None:
    moved = destination(TASK, "planning", Status.paused, "resume", paused_from=paused_from)
    assert moved == Position("planning", paused_from)


def test_update_spec_keeps_the_position() -> None:
    assert destination(TASK, "review", Status.failed, "update_spec") == Position(
        "review", Status.failed
    )


def test_rejection_names_command_phase_status_and_allowed() -> None:
    with pytest.raises(CommandRejected) as caught:
        destination(TASK, "planning", Status.running, "approve")
    assert str(caught.value) == (
        "cannot approve: task is running in phase planning; "
        "allowed: cancel, fail, pause, request_approval, return_to_phase, update_spec"
    )
    assert (caught.value.command, caught.value.phase, caught.value.status) == (
        "approve",
        "planning",
        Status.running,
    )
    assert caught.value.allowed == (
        "cancel", "fail", "pause", "request_approval", "return_to_phase", "update_spec"
    )


def test_rejection_in_a_terminal_status_says_nothing_is_allowed() -> None:
    with pytest.raises(CommandRejected, match="allowed: none$"):
        destination(TASK, "completed", Status.completed, "cancel")


def test_queries_never_build_a_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a machine was built per query")

    monkeypatch.setattr(transitions.Machine, "__init__", refuse)
    destination(TASK, "review", Status.waiting, "approve")
    allowed_commands(PROJECT, "growth", Status.running)


def test_workflow_needs_two_phases() -> None:
    with pytest.raises(ValueError, match="at least two phases"):
        Workflow("solo", (Phase("only", gated=False),))


def test_workflow_refuses_repeated_phase_names() -> None:
    with pytest.raises(ValueError, match="repeats a phase name"):
        Workflow("twice", (Phase("a", gated=False), Phase("a", gated=False)))


def test_workflow_refuses_a_gated_final_phase() -> None:
    with pytest.raises(ValueError, match="final phase cannot be gated"):
        Workflow("gated_end", (Phase("a", gated=False), Phase("b", gated=True)))


def test_a_new_workflow_gets_its_own_phase_machine() -> None:
    tiny = Workflow("tiny", (Phase("draft", gated=True), Phase("done", gated=False)))
    assert allowed_commands(tiny, "draft", Status.running) == [
        "cancel",
        "fail",
        "pause",
        "request_approval",
        "update_spec",
    ]
    assert destination(tiny, "draft", Status.waiting, "approve") == Position(
        "done", Status.completed
    )
