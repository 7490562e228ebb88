"""CloudEvents envelopes (structured and Kafka binary) and bearer-token scopes."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from datetime import UTC, datetime

import pytest

from managed_os import auth
from managed_os.cloudevents import MAX_ID_LENGTH, CloudEvent, EnvelopeError, new_id
from managed_os.errors import Forbidden, Unauthorized
from managed_os.events import ReleaseData, ReleasePublished, from_event, to_event

SECRET = "s" * 32


def sample() -> CloudEvent:
    rel = ReleaseData(version="26.6.2", build="25G83", kind="update", major=26)
    return to_event(
        ReleasePublished(release=rel),
        source="/catalog",
        subject="25G83",
        time=datetime(2026, 8, 17, tzinfo=UTC),
    )


def test_event_ids_are_time_ordered_version_7_uuids_in_their_canonical_text():
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower-case, dashed, as str(uuid.UUID(...)) writes it
        assert before <= parsed.int >> 80 <= after  # the creation time, in Unix milliseconds
    # Made one after another, they sort in the order they were made (time first).
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)
    # Each of the 74 random bits varies.
    bits = [uuid.UUID(text).int for text in ids]
    random = ((1 << 12) - 1) << 64 | (1 << 62) - 1
    assert all(any(b >> i & 1 for b in bits) for i in range(128) if random >> i & 1)
    assert all(not all(b >> i & 1 for b in bits) for i in range(128) if random >> i & 1)
    assert uuid.UUID(CloudEvent(type="t", source="s", subject="x", data={}).id).version == 7


def test_an_event_round_trips_through_kafka_binary_mode_with_ce_headers():
    ev = sample()
    key, value, headers = ev.to_kafka()
    names = dict(headers)
    assert key == b"25G83"
    assert names["ce_specversion"] == b"1.0" and names["ce_type"] == ReleasePublished.TYPE.encode()
    assert json.loads(value)["release"]["build"] == "25G83"
    assert CloudEvent.from_kafka(value, headers) == ev


def test_a_structured_mode_event_is_read_too():
    ev = sample()
    body = json.dumps(ev.to_structured()).encode()
    assert CloudEvent.from_kafka(body, [("content-type", b"application/cloudevents+json")]) == ev


def test_the_typed_payload_comes_back_and_unknown_types_are_skipped():
    payload = from_event(sample())
    assert isinstance(payload, ReleasePublished) and payload.release.version == "26.6.2"
    other = CloudEvent(type="com.example.unknown.v1", source="/x", subject="k", data={})
    assert from_event(other) is None


BINARY = [("ce_specversion", b"1.0"), ("ce_source", b"s"), ("ce_type", b"t")]


@pytest.mark.parametrize(
    ("value", "headers"),
    [
        (b"not json", []),
        (b"{}", []),
        (json.dumps({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}).encode(), []),
        (
            b"[1]",
            [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"t")],
        ),
        # A header that is not UTF-8: an envelope error (the consumer skips the message), not
        # a UnicodeDecodeError, which no consumer loop expects and which stopped the member.
        (b"{}", [("ce_specversion", b"1.0"), ("ce_id", b"\xff1"), ("ce_type", b"t")]),
        (b"{}", [("content-type", b"\xc3(")]),
        # What PostgreSQL cannot store would fail every batch the event is in: an id longer
        # than the inboxes keep, a NUL in the data or in a header.
        (b"{}", [*BINARY, ("ce_id", b"x" * (MAX_ID_LENGTH + 1))]),
        (b'{"os": {"version": "26\\u0000"}}', [*BINARY, ("ce_id", b"1")]),
        (b'{"keys \\u0000 too": 1}', [*BINARY, ("ce_id", b"1")]),
        (b'{"list": ["ok", "\\u0000"]}', [*BINARY, ("ce_id", b"1")]),
        (b"{}", [*BINARY, ("ce_id", b"1"), ("ce_subject", b"MAC\x00")]),
    ],
)
def test_unreadable_messages_raise_an_envelope_error(value, headers):
    with pytest.raises(EnvelopeError):
        CloudEvent.from_kafka(value, headers)


def test_headers_it_does_not_read_are_not_checked_and_every_field_is_set():
    """A tracing or extension header is neither decoded nor checked; an event read from Kafka
    has every field the dataclass declares (it is built without `__init__`)."""
    headers = [*BINARY, ("ce_id", b"1"), ("traceparent", b"\xff\x00"), ("ce_ext", b"\x00")]
    event = CloudEvent.from_kafka(b"{}", headers)
    assert set(vars(event)) == {f.name for f in dataclasses.fields(CloudEvent)}
    assert event == CloudEvent(type="t", source="s", subject="", data={}, id="1", time=event.time)


def test_the_longest_id_and_an_escaped_backslash_before_u0000_are_read():
    event = CloudEvent.from_kafka(
        b'{"note": "a \\\\u0000 is six characters"}', [*BINARY, ("ce_id", b"x" * MAX_ID_LENGTH)]
    )
    assert event.data == {"note": "a \\u0000 is six characters"}
    assert event.id == "x" * MAX_ID_LENGTH


def test_a_token_carries_its_scopes_and_write_implies_read():
    scopes = auth.verify_token(SECRET, auth.issue_token(SECRET, ["catalog:write"]))
    auth.require(scopes, "catalog:read")
    auth.require(scopes, "catalog:write")
    with pytest.raises(Forbidden):
        auth.require(scopes, "compliance:read")


def test_tokens_signed_with_another_key_or_without_a_configured_secret_are_refused():
    token = auth.issue_token(SECRET, ["catalog:read"])
    with pytest.raises(Unauthorized):
        auth.verify_token("t" * 32, token)
    with pytest.raises(Unauthorized):
        auth.verify_token("", token)


def test_a_known_event_type_with_broken_data_is_an_envelope_error():
    broken = CloudEvent(type=ReleasePublished.TYPE, source="/x", subject="k", data={"release": 1})
    with pytest.raises(EnvelopeError, match="invalid data"):
        from_event(broken)


async def test_a_consumer_skips_an_unreadable_event_instead_of_retrying_it_forever():
    from managed_os.app import skip_unreadable

    seen: list[str] = []

    async def handler(ev: CloudEvent) -> None:
        seen.append(ev.id)
        from_event(ev)

    wrapped = skip_unreadable(handler, "g")
    await wrapped(CloudEvent(type=ReleasePublished.TYPE, source="/x", subject="k", data={}))
    assert len(seen) == 1
    with pytest.raises(RuntimeError):
        await skip_unreadable(_boom, "g")(sample())


async def _boom(_ev: CloudEvent) -> None:
    raise RuntimeError("transient failures still propagate, so the bus redelivers")
