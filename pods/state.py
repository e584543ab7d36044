"""The state child of a pod: the task's state in memory and the single writer of its stream.

Every change goes through :meth:`PodState.execute`: decide on the in-memory state, append with
that state's version as the expected version, then fold the new events in and tell whoever
watches. One lock serialises the pod's own writers; a conflict (someone else wrote the stream)
reloads the state from the store and decides again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from uuid import UUID

import anyio

from ipa.domain import Command, Context, TaskEvent, TaskState, decide, fold
from ipa.eventstore import EventStore, VersionConflict

Clock = Callable[[], datetime]
_CONFLICT_RETRIES = 3


def utc_now() -> datetime:
    return datetime.now(UTC)


class PodState:
    """A task's state, kept current in memory by the pod that writes it."""

    def __init__(self, task_id: UUID, store: EventStore, *, clock: Clock = utc_now) -> None:
        self.task_id = task_id
        self._store = store
        self._clock = clock
        self._state: TaskState | None = None
        self._lock = anyio.Lock()
        self._changed = anyio.Event()

    @property
    def current(self) -> TaskState:
        """The state now (answered from memory)."""
        if self._state is None:
            raise RuntimeError(f"pod state of {self.task_id} is not loaded")
        return self._state

    def use(self, state: TaskState) -> None:
        """Start from ``state``, known to be the stream's as recorded (its creator's)."""
        if state.id != self.task_id:
            raise ValueError(f"state of task {state.id} given to the pod of {self.task_id}")
        self._state = state
        self._notify()

    async def load(self) -> TaskState:
        """(Re)load the state from the store: newest snapshot plus the events after it."""
        self._state = await self._store.load(self.task_id)
        self._notify()
        return self._state

    async def execute(
        self,
        command: Command,
        *,
        actor: str = "system",
        correlation_id: str | None = None,
        causation_id: str | None = None,
        expected_version: int | None = None,
    ) -> TaskState:
        """Decide ``command`` on the current state and record its events; return the new state.

        Domain errors (``CommandRejected``, ``InvalidCommand``) reach the caller and nothing is
        appended. With ``expected_version``, a state at another version is a
        :class:`VersionConflict` (the caller decided on a state that is gone).
        """
        return await self.execute_all([command], actor=actor, correlation_id=correlation_id,
                                      causation_id=causation_id,
                                      expected_version=expected_version)

    async def execute_all(
        self,
        commands: Sequence[Command],
        *,
        actor: str = "system",
        correlation_id: str | None = None,
        causation_id: str | None = None,
        expected_version: int | None = None,
        then: Callable[[TaskState], Sequence[Command]] | None = None,
    ) -> TaskState:
        """Decide ``commands`` one after the other, each on the state the ones before it
        leave, and record all their events in one append: all of them or, when one is
        refused, none (a burst of a project's spawns is one round trip, not one per child).

        ``then``: what follows from the state the commands leave (a project's next spawns
        once a child's end is recorded), decided under the same lock and recorded in the same
        append; called again on each retry after a conflict."""
        correlation_id = correlation_id or uuid.uuid4().hex
        async with self._lock:
            if expected_version is not None and expected_version != self.current.version:
                raise VersionConflict(self.task_id, expected_version, self.current.version)
            for _ in range(_CONFLICT_RETRIES):
                state = self.current
                ctx = Context(actor=actor, now=self._clock(), correlation_id=correlation_id,
                              causation_id=causation_id)
                events: list[TaskEvent] = []

                def apply(before: TaskState, command: Command) -> TaskState:
                    decided = decide(before, command, ctx, self.task_id)  # noqa: B023
                    events.extend(decided)  # noqa: B023
                    return fold(decided, before)

                after = state
                for command in commands:
                    after = apply(after, command)
                for command in then(after) if then is not None else ():
                    after = apply(after, command)
                if not events:
                    return state
                try:
                    await self._store.append(self.task_id, events, state.version)
                except VersionConflict:
                    self._state = await self._store.load(self.task_id)
                    continue
                self._state = after
                self._notify()
                return self._state
            raise VersionConflict(self.task_id, self.current.version,
                                  await self._store.version(self.task_id))

    async def changes(self) -> AsyncIterator[TaskState]:
        """The current state, then each newer one (states in between may be skipped when the
        reader is slower than the writer: it always gets the latest)."""
        last = -1
        while True:
            changed = self._changed
            state = self.current
            if state.version != last:
                last = state.version
                yield state
            await changed.wait()

    async def wait_changed(self, timeout: float | None = None) -> None:
        """Return at the next change, or after ``timeout`` seconds."""
        changed = self._changed
        with anyio.move_on_after(timeout):
            await changed.wait()

    def wake(self) -> None:
        """Wake whoever waits in :meth:`wait_changed` though the state did not change (the
        scheduler, when a run it tracks ended after its last event)."""
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
