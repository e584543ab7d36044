"""The store writes an event's body as the library's mapper would, byte for byte: through
``orjson`` when every field is a plain value, through the library otherwise."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from eventsourcing.persistence import Mapper
from hypothesis import given, settings
from hypothesis import strategies as st

from ipa.domain import TaskPaused
from ipa.eventstore.codec import EventCodec, make_transcoder

from .helpers import task_history

_, EVENTS = task_history(3)
PAUSED = EVENTS[2]
assert isinstance(PAUSED, TaskPaused)

LIBRARY = Mapper(transcoder=make_transcoder())
CODEC = EventCodec()

scalars = st.one_of(
    st.text(),  # lone surrogates, NUL, controls, astral planes
    st.integers(),  # past 64 bits too
    st.floats(),  # NaN and infinities too
    st.none(),
    st.booleans(),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))])),
    st.datetimes(),  # naive
    st.uuids(),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner,
                                                                          max_size=3),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(reason=values, paused_from=values)
def test_any_field_values_are_stored_as_the_library_stores_them(reason, paused_from) -> None:
    event = replace(PAUSED, reason=reason, paused_from=paused_from)

    assert CODEC._stored(event) == LIBRARY.to_stored_event(event)


def test_the_events_of_a_history_are_stored_as_the_library_stores_them() -> None:
    for event in EVENTS:  # TaskCreated carries class_version 2
        assert CODEC._stored(event) == LIBRARY.to_stored_event(event)


def outcome(encode, event) -> object:
    try:
        return encode(event)
    except Exception as e:
        return type(e), str(e)


def test_a_subclass_of_a_plain_type_goes_the_librarys_way() -> None:
    class Reason(str):
        pass

    class Stamp(datetime):  # the library has no transcoding for it: the same error
        pass

    for value in (Reason("because"), Stamp(2026, 1, 1, tzinfo=UTC), True, 2**70, float("nan")):
        event = replace(PAUSED, reason=value)
        assert outcome(CODEC._stored, event) == outcome(LIBRARY.to_stored_event, event)
