"""The receiver of ``bench/webhooks.py``: uvicorn serving a bare ASGI app on 127.0.0.1.

Each ``POST /h/<n>`` is a message for webhook ``n``: its signature is verified with the
``standardwebhooks`` package (with the secret given for that path), it is counted by its
``webhook-id``, and its first arrival's delay from the message's ``timestamp`` is kept.
``GET /stats`` answers what was counted; ``POST /reset`` forgets it.

    python bench/webhook_receiver.py PORT '{"/h/0": "whsec_..."}'
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError


def receiver_app(secrets_by_path: dict[str, str]) -> Any:
    hooks = {path: Webhook(secret) for path, secret in secrets_by_path.items()}
    state: dict[str, Any] = {"counts": {}, "latency": [], "bad": 0, "last": 0.0}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = b"ok"
        if scope["method"] == "GET":  # /stats
            answer = json.dumps(state).encode()
        elif scope["path"] == "/reset":
            state.update(counts={}, latency=[], bad=0, last=0.0)
        else:
            arrived = time.time()
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            hook = hooks.get(scope["path"])
            try:
                if hook is None:
                    raise WebhookVerificationError("no such webhook")
                hook.verify(body, headers, json_parse=False)
            except WebhookVerificationError:
                state["bad"] += 1
            key = headers.get("webhook-id", "")
            seen = state["counts"].get(key, 0)
            state["counts"][key] = seen + 1
            if not seen:
                event_at = datetime.fromisoformat(json.loads(body)["timestamp"]).timestamp()
                state["latency"].append(arrived - event_at)
            state["last"] = arrived
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    return app


if __name__ == "__main__":
    uvicorn.run(receiver_app(json.loads(sys.argv[2])), host="127.0.0.1", port=int(sys.argv[1]),
                log_level="warning", access_log=False, http="httptools", loop="asyncio")
