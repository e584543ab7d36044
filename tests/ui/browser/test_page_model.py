"""What the pages render from a task's view, including the keys later work adds (usage,
questions, artifacts, learnings, outbox, budget): shown when present, never required."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from ipa.domain import Context, CreateTask, decide, fold
from ipa.projections import task_state
from ipa.ui import page_model as model
from ipa.ui.pages import panel, templates

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def view(**extra: object) -> dict:
    context = Context(actor="user:ann", now=NOW, correlation_id="c1")
    events = decide(None, CreateTask(title="T", description="the *description*"), context,
                    uuid.uuid4())
    return {**task_state.view(fold(events)), **extra}


def render(task: dict) -> str:
    return templates.get_template("_state.html").render(panel(task))


def test_a_view_without_the_agent_keys_renders() -> None:
    html = render(view())

    assert "<em>description</em>" in html
    assert "No plan yet." in html and "No usage recorded." in html
    assert 'data-command="answer_question"' not in html
    assert 'data-command="approve_update"' not in html


def test_spec_and_plan_artifacts_are_shown_as_markdown_over_the_description() -> None:
    html = render(view(artifacts=[
        {"name": "spec", "job_id": "s1", "phase": "spec_clarification",
         "content": "# Real spec\n<script>alert(1)</script>", "at": NOW.isoformat()},
        {"name": "plan", "job_id": "p1", "phase": "planning", "content": "1. **do** it",
         "at": NOW.isoformat()},
        {"name": "notes", "job_id": "p1", "phase": "planning", "content": {"k": 1},
         "at": NOW.isoformat()},
    ]))

    spec = html[html.index('id="spec-text"'):html.index('id="plan"')]
    assert "<h1>Real spec</h1>" in spec and "&lt;script&gt;" in spec and "<script>" not in spec
    assert "Original description" in spec
    assert "<strong>do</strong>" in html
    assert "notes" in html and "&quot;k&quot;: 1" in html


def test_open_questions_outbox_usage_budget_and_learnings_are_shown() -> None:
    html = render(view(
        questions=[
            {"question_id": "q1", "job_id": "j", "run_id": "r", "question": "Which <b>DB</b>?",
             "asked_at": NOW.isoformat(), "answer": None, "answered_by": None,
             "answered_at": None},
            {"question_id": "q2", "job_id": "j", "run_id": "r", "question": "Answered one",
             "asked_at": NOW.isoformat(), "answer": "yes", "answered_by": "user:ann",
             "answered_at": NOW.isoformat()},
        ],
        outbox=[{"update_id": "u1", "connector": "github", "kind": "pull_request",
                 "payload": {"title": "PR"}, "status": "pending_approval"},
                {"update_id": "u2", "connector": "jira", "kind": "comment",
                 "payload": {}, "status": "sent"}],
        usage={"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.25, "runs": 2,
               "by_agent": {"developer": {"input_tokens": 1200, "output_tokens": 300,
                                          "cost_usd": 0.25}}},
        budget_usd=5.0, budget_paused=True,
        learnings=[{"job_id": "j", "attempt": 1, "text": "run the tests first",
                    "at": NOW.isoformat()}],
    ))

    assert 'value="q1"' in html and 'value="q2"' not in html
    assert "Which &lt;b&gt;DB&lt;/b&gt;?" in html
    assert 'value="u1"' in html and 'value="u2"' not in html
    assert "$0.2500" in html and "1,200 tokens in" in html and "developer" in html
    assert "$5.00" in html and "paused by its budget" in html
    assert "run the tests first" in html


def test_a_list_row_prefers_the_rows_own_counts_and_computes_the_rest() -> None:
    task = view(jobs=[
        {"job_id": "a", "agent": "developer", "status": "running"},
        {"job_id": "b", "agent": "reviewer", "status": "pending"},
        {"job_id": "c", "agent": "developer", "status": "pending"},
    ], usage={"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.5})

    computed = model.list_row(task)
    given = model.list_row({**task, "jobs": {"dead": 1}, "active_agents": ["x"],
                            "cost_usd": 2.0})

    assert computed["jobs"] == {"pending": 2, "running": 1}
    assert computed["active_agents"] == ["developer"]
    assert (computed["input_tokens"], computed["cost_usd"]) == (10, 0.5)
    assert (given["jobs"], given["active_agents"], given["cost_usd"]) == ({"dead": 1}, ["x"], 2.0)


def test_changes_name_records_by_their_id() -> None:
    before = [{"job_id": "a", "status": "pending"}]
    after = [{"job_id": "a", "status": "running"}, {"job_id": "b", "status": "pending"}]

    assert model.changes(before, after, "jobs") == [
        ("jobs[a].status", "pending", "running"),
        ("jobs[b]", None, {"job_id": "b", "status": "pending"}),
    ]
    assert model.changes("running", "paused", "status") == [("status", "running", "paused")]
    assert model.changes(["a"], ["a", "b"], "tags") == [("tags[1]", None, "b")]


def test_markdown_escapes_html_and_drops_script_links() -> None:
    html = str(model.markdown('<img src=x onerror=alert(1)> [x](javascript:alert(1))'))

    assert "<img" not in html and "&lt;img" in html
    assert "href" not in html  # the link is not made at all


def test_the_gate_shows_the_phases_artifacts_and_each_jobs_latest_checks() -> None:
    task = view(status="waiting", phase="development", allowed_commands=["approve"],
                artifacts=[
                    {"name": "summary", "job_id": "developer-1", "phase": "development",
                     "content": "Rate limits *added*."},
                    {"name": "spec", "job_id": "spec_writer-1", "phase": "spec_clarification",
                     "content": "the old spec"}])
    def event(kind: str, **data: object) -> dict:
        return {"type": kind, "data": data, "timestamp": NOW.isoformat(), "version": 1}
    check = {"command": "pytest -q", "exit_code": 1, "passed": False}
    events = [
        event("PhaseEntered", phase="development"),
        event("VerificationFailed", job_id="developer-1", checks=[check], learning="x"),
        event("VerificationPassed", job_id="developer-1",
              checks=[{**check, "exit_code": 0, "passed": True}]),
        event("VerificationFailed", job_id="tester-1", checks=[check], learning="y"),
    ]

    review = model.gate_review(events, task)
    html = templates.get_template("_state.html").render(panel(task, events))

    assert [a["name"] for a in review["artifacts"]] == ["summary"]
    assert [(v["job_id"], v["passed"]) for v in review["verifications"]] == [
        ("developer-1", True), ("tester-1", False)]
    assert 'data-artifact="summary"' in html and "the old spec" not in html.split(
        'id="gate-review"')[1].split("</div>")[0]
    assert "<code>pytest -q</code> (exit 0)" in html and "<code>pytest -q</code> (exit 1)" in html


def cancelled_job(job_id: str = "build", **fields: object) -> dict:
    return {"job_id": job_id, "agent": "developer", "phase": "spec_clarification",
            "priority": 2, "depends_on": [], "timeout_seconds": 60.0, "max_attempts": 3,
            "spec": {"command": ["make"]}, "status": "cancelled", "attempts": 1,
            **fields}


def test_a_cancelled_job_is_queued_again_as_a_copy_while_its_phase_is_not_over() -> None:
    job = cancelled_job()
    task = view(status="running", phase="spec_clarification", jobs=[job])
    html = render(task)

    again = model.requeue(job, task)
    assert again == {"job_id": "build-again", "agent": "developer",
                     "phase": "spec_clarification", "priority": 2, "depends_on": [],
                     "timeout_seconds": 60.0, "max_attempts": 3, "spec": {"command": ["make"]}}
    assert 'data-command="queue_job"' in html and 'data-requeue="build-again"' in html
    # A cancelled copy queues the next copy; a copy at work leaves nothing to queue again.
    copy = cancelled_job("build-again")
    assert model.requeue(copy, view(jobs=[job, copy]))["job_id"] == "build-again-2"
    assert model.requeue(job, view(jobs=[job, {**copy, "status": "running"}])) is None


def test_a_cancelled_job_is_not_queued_again_when_the_domain_would_refuse_it() -> None:
    job = cancelled_job(depends_on=["first"])
    first = cancelled_job("first")

    assert model.requeue(job, view(jobs=[first, job])) is None  # its dependency never runs
    assert model.requeue(cancelled_job(), view(status="cancelled")) is None
    assert model.requeue(cancelled_job(), view(phase="planning")) is None  # its phase is over
    assert model.requeue({**cancelled_job(), "status": "dead"}, view()) is None
    assert 'data-command="queue_job"' not in render(view(status="completed",
                                                         jobs=[cancelled_job()]))


def test_a_list_row_says_what_the_task_needs_from_a_person() -> None:
    waiting = {"kind": "gate", "message": "m", "phase": "p", "job_id": None, "actions": []}

    assert model.list_row(view(attention=waiting))["attention"] == "gate"
    assert model.list_row({**view(), "attention": "job_dead"})["attention"] == "job_dead"
    assert model.list_row(view(attention=None))["attention"] is None
    html = templates.get_template("_row.html").render(row=model.list_row(view(attention=waiting)))
    assert 'data-attention="gate"' in html and "needs you: gate" in html
