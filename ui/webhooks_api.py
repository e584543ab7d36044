"""The webhooks API: register, list, remove and re-enable webhooks, and read their deliveries
(``pods/webhooks.py``).

- ``POST /api/webhooks`` ``{url, events, secret?}``: register one (201). ``events`` lists
  message types (``task.completed`` ...) or ``"*"`` for all. The answer holds the signing
  ``secret`` (the one given, or one ipa made): the only time it is shown.
- ``GET /api/webhooks``: every webhook (never paged: at most ``max_webhooks``), without secrets.
- ``GET /api/webhooks/{webhook_id}``, ``DELETE /api/webhooks/{webhook_id}``.
- ``POST /api/webhooks/{webhook_id}/enable``: enable a webhook ipa disabled after failures.
- ``GET /api/webhooks/{webhook_id}/deliveries?status=&limit=&cursor=``: its deliveries, newest
  first, with status, attempts, last status code, error, duration and latency.

Changes are events of the webhook ledger, by the request's actor; the answer waits (at most a
few seconds) until the dispatcher has applied its event, so the next read sees it.

Bad input writes nothing: a malformed or non-http(s) URL, credentials in it, an unknown event
type or a malformed secret is a 400 naming it; a URL whose host is (or resolves to) a loopback
or private address is a 422 ``webhook_address_refused`` unless the operator allows those
(``IPA_WEBHOOK_ALLOW_PRIVATE=1``). An unknown webhook id is a 404 ``webhook_not_found``; a
server without webhooks answers 503 ``webhooks_unavailable``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ipa.domain import WEBHOOK_EVENT_TYPES, WebhookRefused
from ipa.domain.webhooks import URL_MAX
from ipa.pods import AddressRefused, Webhooks, WebhooksUnavailable
from ipa.pods.webhooks import STATUSES as DELIVERY_STATUSES

from .auth import actor
from .errors import (
    ApiError,
    BadCursor,
    BadRequest,
    NotFound,
    int_param,
    json_body,
    uuid_or_none,
    whole_number,
)

__all__ = ["DELIVERY_STATUSES", "MAX_PAGE", "URL_MAX", "WEBHOOK_EVENT_TYPES", "routes"]

MAX_PAGE = 200
FIELDS = ("url", "events", "secret")


def routes() -> list[Route]:
    return [
        Route("/api/webhooks", list_webhooks, methods=["GET"]),
        Route("/api/webhooks", add_webhook, methods=["POST"]),
        Route("/api/webhooks/{webhook_id}", get_webhook, methods=["GET"]),
        Route("/api/webhooks/{webhook_id}", remove_webhook, methods=["DELETE"]),
        Route("/api/webhooks/{webhook_id}/enable", enable_webhook, methods=["POST"]),
        Route("/api/webhooks/{webhook_id}/deliveries", list_deliveries, methods=["GET"]),
    ]


class AddressNotAllowed(ApiError):
    status = 422
    code = "webhook_address_refused"


def item(row: dict[str, Any]) -> dict[str, Any]:
    """A webhook as the API shows it (never its secret)."""
    return {
        "id": row["id"], "url": row["url"], "events": row["events"],
        "enabled": row["enabled"], "status": "active" if row["enabled"] else "disabled",
        "created_at": row.get("created_at"), "created_by": row.get("created_by"),
        "consecutive_failures": row.get("failures", 0),
        "disabled_at": row.get("disabled_at"), "disabled_reason": row.get("disabled_reason"),
        "last_attempt_at": row.get("last_attempt_at"),
        "last_success_at": row.get("last_success_at"), "last_error": row.get("last_error"),
    }


def delivery(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "webhook_id", "event_type", "task_id", "position", "status", "attempts",
            "last_status", "last_error", "last_duration_ms", "latency_ms", "event_at",
            "created_at", "first_attempt_at", "last_attempt_at", "finished_at",
            "next_attempt_at", "payload")
    shown = {key: row[key] for key in keys}
    if shown["status"] != "pending":
        shown["next_attempt_at"] = None
    return shown


async def add_webhook(request: Request) -> JSONResponse:
    body = await json_body(request)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(f"webhook: unknown field(s) {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(map(repr, FIELDS))}")
    if "url" not in body:
        raise BadRequest("webhook: the field 'url' is required", code="invalid_webhook_url")
    if "events" not in body:
        raise BadRequest("webhook: the field 'events' is required (e.g. [\"*\"])",
                         code="unknown_webhook_event")
    if "secret" in body and not isinstance(body["secret"], str):
        raise BadRequest("webhook: secret must be text (leave it out and ipa makes one)",
                         code="invalid_webhook_secret")
    webhooks = running(request)
    try:
        row, secret = await webhooks.register(body["url"], body["events"], body.get("secret"),
                                              actor=actor(request))
    except WebhookRefused as e:
        raise BadRequest(str(e), code=e.code) from None
    except AddressRefused as e:
        raise AddressNotAllowed(str(e)) from None
    return JSONResponse({**item(row), "secret": secret}, 201)


async def list_webhooks(request: Request) -> JSONResponse:
    rows = await running(request).webhooks()
    return JSONResponse({"items": [item(row) for row in rows], "next_cursor": None})


async def get_webhook(request: Request) -> JSONResponse:
    webhook_id = webhook_id_param(request)
    return JSONResponse(item(await running(request).get(webhook_id)))


async def remove_webhook(request: Request) -> JSONResponse:
    webhook_id = webhook_id_param(request)
    body = await json_body(request, required=False)
    if body:
        raise BadRequest(f"remove: takes no fields, got {', '.join(map(repr, sorted(body)))}")
    position = await running(request).remove(webhook_id, actor=actor(request))
    return JSONResponse({"id": webhook_id, "removed": True, "position": position})


async def enable_webhook(request: Request) -> JSONResponse:
    webhook_id = webhook_id_param(request)
    body = await json_body(request, required=False)
    if body:
        raise BadRequest(f"enable: takes no fields, got {', '.join(map(repr, sorted(body)))}")
    return JSONResponse(item(await running(request).enable(webhook_id, actor=actor(request))))


async def list_deliveries(request: Request) -> JSONResponse:
    webhook_id = webhook_id_param(request)
    status = request.query_params.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise BadRequest(f"status {status[:40]!r}: expected {', '.join(DELIVERY_STATUSES)}")
    limit = int_param(request, "limit", 50, 1, MAX_PAGE)
    cursor = request.query_params.get("cursor")
    before = None
    if cursor is not None:
        before = whole_number(cursor)
        if before is None:
            raise BadCursor(f"cursor {cursor[:40]!r} was not handed out by this API")
    rows = await running(request).deliveries(webhook_id, status=status, before=before,
                                             limit=limit + 1)
    next_cursor = str(rows[limit - 1]["seq"]) if len(rows) > limit else None
    return JSONResponse({"items": [delivery(row) for row in rows[:limit]],
                         "next_cursor": next_cursor})


def running(request: Request) -> Webhooks:
    """The app's webhooks, or :class:`WebhooksUnavailable` (a 503) saying why there are
    none."""
    webhooks: Webhooks | None = getattr(request.app.state, "webhooks", None)
    if webhooks is None:
        raise WebhooksUnavailable("webhooks do not run in this server")
    if webhooks.problem is not None:
        raise WebhooksUnavailable(f"webhooks are off: {webhooks.problem}")
    return webhooks


def webhook_id_param(request: Request) -> str:
    text = request.path_params["webhook_id"]
    webhook_id = uuid_or_none(text)
    if webhook_id is None:
        raise NotFound("webhook_not_found",
                       f"{text[:80]!r} is not a webhook id (expected a UUID)")
    return str(webhook_id)
