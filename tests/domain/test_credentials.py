"""No credentials at rest: URLs with credentials are refused, so no event ever holds them."""

from __future__ import annotations

import pytest

from ipa.domain import (
    ConfigureSync,
    CreateTask,
    CredentialsInUrl,
    InvalidCommand,
    StartTask,
    SyncConfigured,
    TaskCreated,
    decide,
)

from .helpers import TASK_ID, context, run

REFUSED = [
    ("https://alice:ghp_s3cr3t-XYZ@github.com/o/r.git", "a password", "https://github.com/o/r.git"),
    ("https://ghp_s3cr3t-XYZ@github.com/o/r.git", "a user or token", "https://github.com/o/r.git"),
    ("http://x-access-token:s3cr3t-XYZ@git.example/r", "a password", "http://git.example/r"),
    ("ssh://git:s3cr3t-XYZ@host.example/r.git", "a password", "ssh://host.example/r.git"),
    ("git:s3cr3t-XYZ@host.example:o/r.git", "a password", "git@host.example:o/r.git"),
    ("https://gitlab.example/r.git?private_token=s3cr3t-XYZ", "a secret in the query",
     "https://gitlab.example/r.git"),
]
ACCEPTED = [
    "https://github.com/o/r.git",
    "ssh://git@host.example/r.git",
    "git@github.com:o/r.git",
    "/home/me/src/project",
    "https://git.example/r.git?ref=main",
]


@pytest.mark.parametrize(("url", "what", "bare"), REFUSED)
def test_a_task_repo_with_credentials_is_refused_without_echoing_them(
    url: str, what: str, bare: str
) -> None:
    with pytest.raises(CredentialsInUrl) as caught:
        decide(None, CreateTask("Title", "spec", repo=url), context(), TASK_ID)

    message = str(caught.value)
    assert isinstance(caught.value, InvalidCommand)  # the API's 400 invalid_input
    assert caught.value.field == "repo" and what in message
    assert "s3cr3t-XYZ" not in message
    assert bare in message and "IPA_SECRETS_FILE" in message


@pytest.mark.parametrize(("url", "what", "bare"), REFUSED)
def test_a_git_remote_with_credentials_is_refused_and_nothing_is_configured(
    url: str, what: str, bare: str
) -> None:
    state = run(None, CreateTask("Title", "spec"), StartTask())

    with pytest.raises(CredentialsInUrl) as caught:
        decide(state, ConfigureSync(git={"remote": url}), context(), TASK_ID)

    assert caught.value.field == "git.remote" and "s3cr3t-XYZ" not in str(caught.value)
    assert state.outbox.config == {}


@pytest.mark.parametrize("url", ACCEPTED)
def test_urls_without_credentials_are_kept_as_given(url: str) -> None:
    [created] = decide(None, CreateTask("Title", "spec", repo=url), context(), TASK_ID)
    state = run(None, CreateTask("Title", "spec"), StartTask())
    [configured] = decide(state, ConfigureSync(git={"remote": url}), context(), TASK_ID)

    assert isinstance(created, TaskCreated) and created.repo == url
    assert isinstance(configured, SyncConfigured) and configured.config["git"]["remote"] == url
