"""A small GitHub + JIRA on 127.0.0.1 for the tests: the subset of their REST APIs the sync
engine uses, behaving as documented, and scripted faults.

GitHub as its OpenAPI description (``github_openapi.json``) and documentation say: objects
built from the description's own examples; lists paged with ``Link`` (``per_page``, default
30, at most 100) whose URLs, like GitHub's, name the repository by id
(``/repositories/{id}/…``); a renamed repository answered 301 (GET) or 307 (other methods)
to ``/repositories/{id}…``; a second open pull request of one head refused with 422 "A pull
request already exists"; bodies over 65,536 characters refused with 422; rate-limit headers
and ETags on every answer. JIRA (REST v2): an issue's status, its transitions (to the other
statuses of its flow), comments, a changelog.

Faults: :meth:`Services.fail` answers the next matching requests with any status, headers and
body (``bytes`` for a body that is not JSON); :meth:`Services.secondary_limit` as GitHub
answers a secondary rate limit; :meth:`Services.slow` does the work and answers late (a
client that timed out while GitHub did what it asked).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

TOKEN = "good-token"
SPEC = json.loads(Path(__file__).with_name("github_openapi.json").read_text())
TEXT_LIMIT = 65536
SECONDARY_LIMIT = ("You have exceeded a secondary rate limit. Please wait a few minutes before "
                   "you try again. If you reach out to GitHub Support for help, please include "
                   "the request ID 0000:0000:0000000:0000000:00000000.")
_DOCS = "https://docs.github.com/rest"


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    headers: dict[str, str]
    body: Any
    times: int
    delay: float = 0.0


@dataclass
class Slow:
    method: str
    path: re.Pattern[str]
    delay: float
    times: int


@dataclass
class Exchange:
    """One request and its answer, as the fake saw them (for the conformance test)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    headers: dict[str, str]
    answer: Any


@dataclass
class Services:
    """The state of the fake GitHub and JIRA, and what they were asked."""

    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)  # old full name → new
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    reviews: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    review_comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)  # issue comments by id
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    slow_answers: list[Slow] = field(default_factory=list)
    url: str = ""
    git_remote: str | None = None  # the bare repository pull requests' heads are read from
    _ids: Iterator[int] = field(default_factory=lambda: iter(range(100, 10**6)))
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.answered = threading.Condition(self.lock)

    def fail(self, method: str, path: str, status: int, *, times: int = 1,
             headers: dict[str, str] | None = None, body: Any = None,
             delay: float = 0.0) -> None:
        """Answer the next ``times`` matching requests with ``status`` (after ``delay`` s)."""
        self.faults.append(Fault(method, re.compile(path), status, headers or {},
                                 {"message": f"scripted {status}"} if body is None else body,
                                 times, delay))

    def secondary_limit(self, method: str, path: str, *, status: int = 403, times: int = 1,
                        headers: dict[str, str] | None = None) -> None:
        """Answer as GitHub does when a secondary rate limit is hit: 403 or 429, the
        documented message, requests left in the primary limit, and ``headers``."""
        self.fail(method, path, status, times=times,
                  headers={"x-ratelimit-remaining": "4321", **(headers or {})},
                  body={"message": SECONDARY_LIMIT, "documentation_url": f"{_DOCS}/overview/"
                        "rate-limits-for-the-rest-api#about-secondary-rate-limits"})

    def slow(self, method: str, path: str, delay: float, *, times: int = 1) -> None:
        """Do what the next ``times`` matching requests ask, then answer ``delay`` s late."""
        self.slow_answers.append(Slow(method, re.compile(path), delay, times))

    def rename(self, old: str, new: str) -> None:
        """The repository ``old`` is now ``new``: requests to ``old`` are redirected."""
        with self.lock:
            self.repos[new] = self.repos.pop(old)
            self.renamed[old] = new

    def pull_request(self, repo: str, head: str, base: str = "main") -> int:
        """Someone opens a pull request of ``head`` into ``repo``; its number."""
        with self.lock:
            status, _, pull = self._pulls("POST", repo, {}, {"title": "t", "body": "",
                                                          "head": head, "base": base})
        assert status == 201, pull
        return pull["number"]

    def review(self, number: int, login: str, state: str, body: str = "",
               comments: list[dict[str, Any]] | None = None, commit: str | None = None) -> None:
        """A reviewer submits a review of pull request ``number``."""
        if commit is None and state != "COMMENTED":
            commit = self.head(number)
        with self.lock:
            review_id = next(self._ids)
            repo = self.pulls[number]["base"]["repo"]["full_name"]
            review = _example("pull-request-review-items")[0]
            review.update({
                "id": review_id, "node_id": f"PRR_{review_id}", "user": _user(login),
                "state": state, "body": body, "commit_id": commit or "0" * 40,
                "html_url": f"{self.url}/{repo}/pull/{number}#review-{review_id}",
                "pull_request_url": f"{self.url}/repos/{repo}/pulls/{number}",
            })
            self.reviews.setdefault(number, []).append(review)
            self.review_comments[review_id] = [
                self._review_comment(repo, number, review_id, c) for c in comments or []]

    def head(self, number: int) -> str:
        """The commit at the head branch of pull request ``number``, read from the remote."""
        branch = self.pulls[number]["head"]["ref"]
        assert self.git_remote is not None
        return subprocess.run(["git", "-C", self.git_remote, "rev-parse", f"refs/heads/{branch}"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def calls(self, method: str, pattern: str) -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0] == method and re.fullmatch(pattern, r[1])]

    def wait_calls(self, method: str, pattern: str, count: int, timeout: float = 20) -> None:
        """Block until ``count`` requests matching ``pattern`` were answered (a thread's
        wait: call it through ``anyio.to_thread.run_sync``)."""
        with self.answered:
            if not self.answered.wait_for(lambda: len(self.calls(method, pattern)) >= count,
                                          timeout):
                raise AssertionError(f"fewer than {count} {method} {pattern} in {timeout} s")

    def issue_comments(self, number: int) -> list[dict[str, Any]]:
        """The comments on GitHub issue (or pull request) ``number``, oldest first."""
        return [c for c in self.comments.values()
                if c["issue_url"].endswith(f"/issues/{number}")]

    # -- the API --------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str],
               body: Any) -> tuple[int, dict[str, str], Any]:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path.fullmatch(path):
                fault.times -= 1
                if fault.delay:
                    time.sleep(fault.delay)
                return fault.status, fault.headers, fault.body
        auth = headers.get("authorization", "")
        if auth not in (f"Bearer {TOKEN}",):
            return 401, {}, {"message": "Bad credentials"}
        route, _, query = path.partition("?")
        params = dict(parse_qsl(query))
        if route.startswith("/rest/api/2/"):
            return self._jira(method, route, body)
        return self._github(method, route, params, body)

    def delay(self, method: str, path: str) -> float:
        """How late to answer this request (:meth:`slow`)."""
        for slow in self.slow_answers:
            if slow.times > 0 and slow.method == method and slow.path.fullmatch(path):
                slow.times -= 1
                return slow.delay
        return 0.0

    def _github(self, method: str, path: str, params: dict[str, str],
                body: Any) -> tuple[int, dict[str, str], Any]:
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        if m and m.group(1) in self.renamed:
            new = self.renamed[m.group(1)]
            query = f"?{urlencode(params)}" if params else ""
            location = f"{self.url}/repositories/{self._repo_id(new)}{m.group(2) or ''}{query}"
            return (301 if method == "GET" else 307), {"location": location}, {
                "message": "Moved Permanently", "url": location,
                "documentation_url": f"{_DOCS}/guides/best-practices-for-using-the-rest-api"}
        by_id = re.fullmatch(r"/repositories/(\d+)(/.*)?", path)
        if by_id:
            names = [n for n in self.repos if self._repo_id(n) == int(by_id.group(1))]
            m = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?",
                             f"/repos/{names[0]}{by_id.group(2) or ''}") if names else None
        if not m or m.group(1) not in self.repos:
            return 404, {}, {"message": "Not Found", "documentation_url": _DOCS}
        repo, rest = m.group(1), m.group(2) or ""
        if method == "GET" and rest == "":
            return 200, {}, self._repository(repo)
        if rest == "/pulls":
            return self._pulls(method, repo, params, body)
        m = re.fullmatch(r"/pulls/(\d+)(/.*)?", rest)
        if m and int(m.group(1)) in self.pulls:
            number, sub = int(m.group(1)), m.group(2) or ""
            pull = self.pulls[number]
            if method == "PATCH" and sub == "":
                if len(body.get("body") or "") > TEXT_LIMIT:
                    return _too_long("PullRequest")
                pull.update({k: body[k] for k in ("title", "body") if k in body})
                return 200, {}, pull
            if method == "GET" and sub == "":
                return 200, {}, pull
            if method == "GET" and sub == "/reviews":
                return self._page(repo, rest, params, self.reviews.get(number, []))
            c = re.fullmatch(r"/reviews/(\d+)/comments", sub)
            if method == "GET" and c:
                return self._page(repo, rest, params, self.review_comments.get(int(c.group(1)), []))
        m = re.fullmatch(r"/issues/(\d+)/comments", rest)
        if m and method == "GET":
            return self._page(repo, rest, params, self.issue_comments(int(m.group(1))))
        if m and method == "POST":
            if len(body.get("body") or "") > TEXT_LIMIT:
                return _too_long("IssueComment")
            comment_id = next(self._ids)
            comment = _example("issue-comment")
            comment.update({
                "id": comment_id, "node_id": f"IC_{comment_id}", "body": body["body"],
                "user": _user("ipa-bot"),
                "url": f"{self.url}/repos/{repo}/issues/comments/{comment_id}",
                "html_url": f"{self.url}/{repo}/issues/{m.group(1)}#issuecomment-{comment_id}",
                "issue_url": f"{self.url}/repos/{repo}/issues/{m.group(1)}",
            })
            self.comments[comment_id] = comment
            return 201, {}, comment
        m = re.fullmatch(r"/issues/comments/(\d+)", rest)
        if method == "PATCH" and m and int(m.group(1)) in self.comments:
            if len(body.get("body") or "") > TEXT_LIMIT:
                return _too_long("IssueComment")
            self.comments[int(m.group(1))]["body"] = body["body"]
            return 200, {}, self.comments[int(m.group(1))]
        return 404, {}, {"message": "Not Found", "documentation_url": _DOCS}

    def _pulls(self, method: str, repo: str, params: dict[str, str],
               body: Any) -> tuple[int, dict[str, str], Any]:
        owner = repo.split("/")[0]
        if method == "GET":
            state = params.get("state", "open")
            found = [p for p in self.pulls.values()
                     if (state == "all" or p["state"] == state)
                     and ("head" not in params or p["head"].get("label") == params["head"])
                     and ("base" not in params or p["base"]["ref"] == params["base"])]
            return self._page(repo, "/pulls", params, found)
        if method != "POST":
            return 404, {}, {"message": "Not Found", "documentation_url": _DOCS}
        if not body.get("title"):
            return 422, {}, _invalid("PullRequest", "missing_field", "title", "title is missing")
        if len(body.get("body") or "") > TEXT_LIMIT:
            return _too_long("PullRequest")
        label = body["head"] if ":" in body["head"] else f"{owner}:{body['head']}"
        if any(p["state"] == "open" and p["head"].get("label") == label
               and p["base"]["ref"] == body["base"] for p in self.pulls.values()):
            return 422, {}, _invalid("PullRequest", "custom", None,
                                     f"A pull request already exists for {label}.")
        number = len(self.pulls) + 1
        pull = _example("pull-request")
        pull.update({
            "id": 1000 + number, "node_id": f"PR_{number}", "number": number, "state": "open",
            "merged": False, "merged_by": None, "title": body["title"],
            "body": body.get("body"), "requested_teams": [], "user": _user("ipa-bot"),
            "html_url": f"{self.url}/{repo}/pull/{number}",
            "url": f"{self.url}/repos/{repo}/pulls/{number}",
            "head": {**pull["head"], "label": label, "ref": label.split(":", 1)[1], "sha": "",
                     "user": _user(label.split(":")[0])},
            "base": {**pull["base"], "label": f"{owner}:{body['base']}", "ref": body["base"],
                     "repo": {**pull["base"]["repo"], "full_name": repo,
                              "name": repo.split("/")[1]}},
        })
        self.pulls[number] = pull
        return 201, {}, pull

    def _page(self, repo: str, rest: str, params: dict[str, str],
              items: list[Any]) -> tuple[int, dict[str, str], Any]:
        """One page of ``items`` as GitHub pages lists, with its ``Link`` header."""
        per_page = min(100, max(1, _whole(params.get("per_page"), 30)))
        page = max(1, _whole(params.get("page"), 1))
        last = max(1, math.ceil(len(items) / per_page))

        def link(number: int, rel: str) -> str:
            query = urlencode({**params, "per_page": per_page, "page": number})
            return f'<{self.url}/repositories/{self._repo_id(repo)}{rest}?{query}>; rel="{rel}"'

        links = [link(page + 1, "next"), link(last, "last")] if page < last else []
        links += [link(page - 1, "prev"), link(1, "first")] if page > 1 else []
        return 200, ({"link": ", ".join(links)} if links else {}), items[
            (page - 1) * per_page:page * per_page]

    def _repository(self, name: str) -> dict[str, Any]:
        repo = _example("full-repository-default-response")
        # Not required, and not as the description's own schema says (no "language"): left out.
        for key in ("parent", "source", "template_repository"):
            repo.pop(key)
        owner = name.split("/")[0]
        repo.update({"id": self._repo_id(name), "name": name.split("/")[1], "full_name": name,
                     "language": "Python", "owner": _user(owner), "html_url": f"{self.url}/{name}",
                     "url": f"{self.url}/repos/{name}", **self.repos[name]})
        return repo

    def _repo_id(self, name: str) -> int:
        return self.repos.get(name, {}).get("id") or int(hashlib.sha1(
            name.encode()).hexdigest()[:6], 16)

    def _review_comment(self, repo: str, number: int, review_id: int,
                        given: dict[str, Any]) -> dict[str, Any]:
        comment = _example("review-comment-items")[0]
        comment_id = next(self._ids)
        comment.update({
            "id": comment_id, "node_id": f"PRRC_{comment_id}", "pull_request_review_id": review_id,
            "user": _user("reviewer"), "path": given.get("path", ""), "body": given["body"],
            "line": given.get("line"),
            "url": f"{self.url}/repos/{repo}/pulls/comments/{comment_id}",
            "html_url": f"{self.url}/{repo}/pull/{number}#discussion_r{comment_id}",
            "pull_request_url": f"{self.url}/repos/{repo}/pulls/{number}",
        })
        return comment

    def _jira(self, method: str, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        m = re.fullmatch(r"/rest/api/2/issue/([A-Z]+-\d+)(/.*)?", path)
        if not m or m.group(1) not in self.issues:
            return 404, {}, {"errorMessages": ["Issue does not exist"]}
        issue = self.issues[m.group(1)]
        rest = m.group(2) or ""
        if method == "GET" and rest == "":
            return 200, {}, {"key": m.group(1), "fields": {"status": {"name": issue["status"]}},
                             "changelog": {"histories": issue.setdefault("histories", [])}}
        if method == "GET" and rest == "/transitions":  # JIRA offers moves to other statuses
            return 200, {}, {"transitions": [
                {"id": str(i), "to": {"name": name}} for i, name in enumerate(issue["flow"])
                if name != issue["status"]
            ]}
        if method == "POST" and rest == "/transitions":
            issue["status"] = issue["flow"][int(body["transition"]["id"])]
            issue.setdefault("histories", []).append(
                {"author": {"name": "ipa-bot"}, "items": [{"field": "status"}]})
            return 204, {}, None
        if method == "POST" and rest == "/comment":
            comment_id = str(next(self._ids))
            issue.setdefault("comments", {})[comment_id] = body["body"]
            return 201, {}, {"id": comment_id}
        c = re.fullmatch(r"/comment/(\d+)", rest)
        if method == "PUT" and c:
            issue.setdefault("comments", {})[c.group(1)] = body["body"]
            return 200, {}, {"id": c.group(1)}
        return 404, {}, {"errorMessages": ["Not found"]}


def _example(name: str) -> Any:
    """A fresh copy of the value of the description's example ``name``."""
    return copy.deepcopy(SPEC["components"]["examples"][name]["value"])


def _user(login: str) -> dict[str, Any]:
    user = _example("issue-comment")["user"]
    user.update({"login": login, "id": int(hashlib.sha1(login.encode()).hexdigest()[:6], 16),
                 "html_url": f"https://github.com/{login}"})
    return user


def _invalid(resource: str, code: str, field_name: str | None,
             message: str) -> dict[str, Any]:
    error = {"resource": resource, "code": code, "message": message}
    if field_name is not None:
        error["field"] = field_name
    return {"message": "Validation Failed", "errors": [error],
            "documentation_url": f"{_DOCS}/pulls/pulls", "status": "422"}


def _too_long(resource: str) -> tuple[int, dict[str, str], Any]:
    return 422, {}, _invalid(resource, "custom", "body",
                             f"body is too long (maximum is {TEXT_LIMIT} characters)")


def _whole(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _handler(services: Services) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            with services.lock:
                status, extra, answer = services.handle(self.command, self.path, headers, body)
                late = services.delay(self.command, self.path)
            if isinstance(answer, bytes):
                data, kind = answer, "text/html"
            else:
                data, kind = b"" if answer is None else json.dumps(answer).encode(), (
                    "application/json")
            out = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999",
                   "x-ratelimit-reset": str(int(time.time()) + 3600), **extra}
            if self.command == "GET" and status == 200:
                etag = '"' + hashlib.sha1(data).hexdigest() + '"'
                out["etag"] = etag
                if headers.get("if-none-match") == etag:
                    status, data = 304, b""
            route, _, query = self.path.partition("?")
            with services.lock:
                services.requests.append((self.command, self.path, status))
                services.exchanges.append(Exchange(
                    self.command, route, dict(parse_qsl(query)), body, status, out,
                    json.loads(data) if data and kind == "application/json" else None))
                services.answered.notify_all()
            if late:
                time.sleep(late)
            self.send_response(status)
            for name, value in out.items():
                self.send_header(name, value)
            if data:
                self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = _serve

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a pod stopped while polling, a request that timed
        # out) is not an error of the fake; anything else is printed as usual.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def running_services() -> Iterator[Services]:
    services = Services()
    server = _Server(("127.0.0.1", 0), _handler(services))
    services.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield services
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
