"""The store writes an event's body as the library's mapper would, byte for byte: through
``orjson`` when every field is a plain value, through the library otherwise."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from eventsourcing.persistence import Mapper, Notification
from hypothesis import given, settings
from hypothesis import strategies as st

from ipa.domain import TaskPaused
from ipa.eventstore.codec import GENESIS, EventCodec, make_transcoder

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


@settings(max_examples=1000, deadline=None)
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


# -- an events page's JSON made straight from the rows --------------------------------------

def rows_of(events, key=None) -> list[Notification]:
    codec = EventCodec(key)
    stored, _ = codec.seal(events, GENESIS)
    return [Notification(id=position, originator_id=row.originator_id,
                         originator_version=row.originator_version, topic=row.topic,
                         state=row.state)
            for position, row in enumerate(stored, start=100)]


def both_ways(rows: list[Notification]) -> tuple[list, list]:
    codec = EventCodec()
    for row in rows:  # a cold codec knows no class yet: the first row of each goes the long way
        codec.record(row)
    return [codec.record_json(row) for row in rows], [codec.record(row).to_json() for row in rows]


@settings(max_examples=300, deadline=None)
@given(reason=values, paused_from=values)
def test_an_events_page_from_the_rows_is_what_the_recorded_events_say(
        reason, paused_from) -> None:
    event = replace(PAUSED, reason=reason, paused_from=paused_from)
    try:
        rows = rows_of([*EVENTS[:2], event])
    except Exception:  # the library cannot store it (a datetime subclass): nothing to read
        return
    fast, slow = both_ways(rows)
    assert repr(fast) == repr(slow)  # the same values of the same types (NaN included)


def test_rows_the_fast_path_does_not_take_read_as_before() -> None:
    rows = rows_of(EVENTS)
    created = rows[0]
    # An older TaskCreated (version 1: upcast on read), a timestamp written another way, a
    # timestamp that is no datetime, a body that is not JSON, a type this code does not know.
    old = replace(created, state=created.state.replace(b',"class_version":2', b"")
                  .replace(b',"base_branch":null', b""))
    zulu = replace(rows[1], state=rows[1].state.replace(b'+00:00"}', b'Z"}'))
    plain = replace(rows[2], state=rows[2].state.replace(
        b'{"_type_":"datetime_iso","_data_":"2026-11-21T09:00:02+00:00"}', b'"yesterday"'))
    broken = replace(rows[1], state=rows[1].state[:-5])
    unknown = replace(rows[2], topic="ipa.domain.events:TaskVanished")
    edited = [old, zulu, plain, broken, unknown]
    assert [r.state for r in edited[:3]] != [r.state for r in (created, rows[1], rows[2])]

    fast, slow = both_ways(edited)

    assert fast == slow
    assert fast[1]["timestamp"] == "2026-11-21T09:00:01+00:00"  # written again as isoformat


@pytest.mark.parametrize("written, shown", [
    ("2026-11-21T09:00:01.500000+00:00", "2026-11-21T09:00:01.500000+00:00"),  # as written
    ("2026-11-21T09:00:01.000000+00:00", "2026-11-21T09:00:01+00:00"),
    ("2026-11-21 09:00:01.500000+00:00", "2026-11-21T09:00:01.500000+00:00"),
    ("2026-W47-6T09:00:01.500000+00:00", "2026-11-21T09:00:01.500000+00:00"),
    ("2026-11-21T09:00:01.5+00:00", "2026-11-21T09:00:01.500000+00:00"),
    ("2026-11-21T14:30:01.500000+05:30", "2026-11-21T14:30:01.500000+05:30"),
    ("2026-11-21T09:00:01.500000Z", "2026-11-21T09:00:01.500000+00:00"),
])
def test_a_timestamp_is_shown_as_isoformat_writes_it_however_it_was_stored(
        written: str, shown: str) -> None:
    row = rows_of(EVENTS)[1]
    stored = b'"_data_":"2026-11-21T09:00:01+00:00"'
    assert stored in row.state
    row = replace(row, state=row.state.replace(stored, f'"_data_":"{written}"'.encode()))

    fast, slow = both_ways([row])

    assert fast == slow
    assert fast[0]["timestamp"] == shown
