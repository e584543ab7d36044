"""What a connector raises when an outside system says no: one error, classified."""

from __future__ import annotations


class SyncError(Exception):
    """A delivery or a poll failed; ``str()`` names the connector and the reason.

    ``transient`` errors (timeouts, network, 5xx, rate limits) are retried with backoff, or
    after ``retry_after`` seconds when the system said so. Others are held for a person.
    ``incident`` names the incident to record with it (``repository_not_found``, ``auth``,
    ``rejected``), if any. ``rate_limited``: the system refused for a rate limit, so nothing
    more goes to it before the wait is over (``retry_after``; ``None``: it named none).
    """

    def __init__(
        self,
        connector: str,
        reason: str,
        *,
        transient: bool = False,
        retry_after: float | None = None,
        status_code: int | None = None,
        incident: str | None = None,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(f"{connector}: {reason}")
        self.connector = connector
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after
        self.status_code = status_code
        self.incident = incident
        self.rate_limited = rate_limited
