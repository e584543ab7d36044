"""A small GitHub + JIRA on 127.0.0.1 for the tests: the subset of their REST APIs the sync
engine uses, with their status codes, rate-limit headers and ETags, and scripted faults."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "good-token"


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    times: int
    delay: float = 0.0


@dataclass
class Services:
    """The state of the fake GitHub and JIRA, and what they were asked."""

    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    reviews: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    review_comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    url: str = ""
    git_remote: str | None = None  # the bare repository pull requests' heads are read from
    _ids: Iterator[int] = field(default_factory=lambda: iter(range(100, 10**6)))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, method: str, path: str, status: int, *, times: int = 1,
             headers: dict[str, str] | None = None, body: dict[str, Any] | None = None,
             delay: float = 0.0) -> None:
        """Answer the next ``times`` matching requests with ``status`` (after ``delay`` s)."""
        self.faults.append(Fault(method, re.compile(path), status, headers or {},
                                 body or {"message": f"scripted {status}"}, times, delay))

    def review(self, number: int, login: str, state: str, body: str = "",
               comments: list[dict[str, Any]] | None = None, commit: str | None = None) -> None:
        """A reviewer submits a review of pull request ``number``."""
        with self.lock:
            review_id = next(self._ids)
            self.reviews.setdefault(number, []).append({
                "id": review_id, "user": {"login": login}, "state": state, "body": body,
                "commit_id": commit or self.head(number),
                "html_url": f"{self.url}/o/n/pull/{number}#review-{review_id}",
            })
            self.review_comments[review_id] = comments or []

    def head(self, number: int) -> str:
        """The commit at the head branch of pull request ``number``, read from the remote."""
        branch = self.pulls[number]["head"]["ref"]
        assert self.git_remote is not None
        return subprocess.run(["git", "-C", self.git_remote, "rev-parse", f"refs/heads/{branch}"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def calls(self, method: str, pattern: str) -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0] == method and re.fullmatch(pattern, r[1])]

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
        route = path.split("?")[0]
        if route.startswith("/rest/api/2/"):
            return self._jira(method, route, body)
        return self._github(method, route, body)

    def _github(self, method: str, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        if not m or m.group(1) not in self.repos:
            return 404, {}, {"message": "Not Found"}
        repo, rest = m.group(1), m.group(2) or ""
        if method == "GET" and rest == "":
            return 200, {}, {"full_name": repo, **self.repos[repo]}
        if method == "POST" and rest == "/pulls":
            if not body.get("title"):
                return 422, {}, {"message": "Validation Failed",
                                 "errors": [{"message": "title is missing"}]}
            number = len(self.pulls) + 1
            self.pulls[number] = {"number": number, "state": "open", "merged": False,
                                  "title": body["title"], "body": body["body"],
                                  "head": {"ref": body["head"], "sha": body.get("sha", "")},
                                  "base": {"ref": body["base"]},
                                  "html_url": f"{self.url}/{repo}/pull/{number}"}
            return 201, {}, self.pulls[number]
        m = re.fullmatch(r"/pulls/(\d+)(/.*)?", rest)
        if m and int(m.group(1)) in self.pulls:
            number, sub = int(m.group(1)), m.group(2) or ""
            pull = self.pulls[number]
            if method == "PATCH" and sub == "":
                pull.update({k: body[k] for k in ("title", "body") if k in body})
                return 200, {}, pull
            if method == "GET" and sub == "":
                return 200, {}, pull
            if method == "GET" and sub == "/reviews":
                return 200, {}, self.reviews.get(number, [])
            c = re.fullmatch(r"/reviews/(\d+)/comments", sub)
            if method == "GET" and c:
                return 200, {}, self.review_comments.get(int(c.group(1)), [])
        m = re.fullmatch(r"/issues/(\d+)/comments", rest)
        if method == "POST" and m:
            comment_id = next(self._ids)
            self.comments[comment_id] = {"id": comment_id, "issue": int(m.group(1)),
                                         "body": body["body"]}
            return 201, {}, self.comments[comment_id]
        m = re.fullmatch(r"/issues/comments/(\d+)", rest)
        if method == "PATCH" and m and int(m.group(1)) in self.comments:
            self.comments[int(m.group(1))]["body"] = body["body"]
            return 200, {}, self.comments[int(m.group(1))]
        return 404, {}, {"message": "Not Found"}

    def _jira(self, method: str, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        m = re.fullmatch(r"/rest/api/2/issue/([A-Z]+-\d+)(/.*)?", path)
        if not m or m.group(1) not in self.issues:
            return 404, {}, {"errorMessages": ["Issue does not exist"]}
        issue = self.issues[m.group(1)]
        rest = m.group(2) or ""
        if method == "GET" and rest == "":
            return 200, {}, {"key": m.group(1), "fields": {"status": {"name": issue["status"]}},
                             "changelog": {"histories": issue.setdefault("histories", [])}}
        if method == "GET" and rest == "/transitions":
            return 200, {}, {"transitions": [
                {"id": str(i), "to": {"name": name}} for i, name in enumerate(issue["flow"])
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
            data = b"" if answer is None else json.dumps(answer).encode()
            out = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999",
                   "x-ratelimit-reset": str(int(time.time()) + 3600), **extra}
            if self.command == "GET" and status == 200:
                etag = '"' + hashlib.sha1(data).hexdigest() + '"'
                out["etag"] = etag
                if headers.get("if-none-match") == etag:
                    status, data = 304, b""
            with services.lock:
                services.requests.append((self.command, self.path, status))
            self.send_response(status)
            for name, value in out.items():
                self.send_header(name, value)
            if data:
                self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = _serve

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a pod stopped while polling) is not an error of
        # the fake; anything else is printed as usual.
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
