"""An event naming what a consumer could never store or serve is an `EnvelopeError`, which
the consumers log and skip: PostgreSQL would refuse the value (a text longer than its
column, an integer beyond 32 bits), or the service would fail on it every time, and a
retried event stops the partition (for compliance, the batch's partitions) behind it."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, Integer, SmallInteger, String

from declarations.compiler import status_subscriptions_candidate
from declarations.main import check_release
from declarations.main import consumers as declarations_consumers
from device_channel.main import check_policy
from device_channel.main import consumers as device_channel_consumers
from managed_os.clock import SystemClock
from managed_os.cloudevents import EnvelopeError
from managed_os.db import BigId, check_fits
from managed_os.events import PolicyPublished, ReleaseData, ReleasePublished, to_event
from managed_os.policy import Applicability


def test_check_fits_refuses_text_longer_than_its_column_and_integers_beyond_32_bits() -> None:
    name, count, big = Column("name", String(5)), Column("n", Integer), Column("b", BigInteger)
    check_fits([(name, "abcde"), (name, None), (count, 2**31 - 1), (count, -(2**31))])
    check_fits([(big, 2**62), (Column("free", String()), "x" * 10_000)])
    # Judged as PostgreSQL has the column: its variant, its integer's width.
    wide = Column("wide", Integer().with_variant(BigInteger(), "postgresql"))
    check_fits([(wide, 2**40), (Column("id", BigId), 2**40)])
    for column, value in [(big, 2**63), (Column("small", SmallInteger), 2**15)]:
        with pytest.raises(EnvelopeError, match="out of range"):
            check_fits([(column, value)])
    bad: list[tuple[Column[Any], Any]] = [(name, "abcdef"), (count, 2**31), (count, -(2**31) - 1)]
    for column, value in bad:
        with pytest.raises(EnvelopeError, match=column.name):
            check_fits([(column, value)])


def release(**changes: Any) -> ReleaseData:
    return ReleaseData(
        **{"version": "26.4", "build": "25E100", "kind": "update", "major": 26, **changes}
    )


def test_a_release_declarations_cannot_store_or_compile_against_is_unreadable() -> None:
    check_release(release())
    check_release(release(version="26.4.1", extra="(a)", build="25E100a", kind="bsi"))
    for bad in [
        release(version="26.4." + "1" * 28),
        release(build="2" * 33),
        release(extra="(abcdefgh)", kind="bsi"),
        release(major=2**31),
        release(major=2**62),
        release(version="garbage"),
    ]:
        with pytest.raises(EnvelopeError):
            check_release(bad)


def policy(**changes: Any) -> PolicyPublished:
    fields: dict[str, Any] = {
        "blueprint_id": "3f1c2b9e-1d7a-4c55-9a4e-0d2f6c8b7a10",
        "revision": 1,
        "token": "a" * 64,
        "candidates": [status_subscriptions_candidate()],
        "items": [],
    }
    return PolicyPublished(**{**fields, **changes})


def test_a_policy_the_device_channel_cannot_store_or_serve_is_unreadable() -> None:
    check_policy(policy())
    good = status_subscriptions_candidate()
    not_a_declaration = good.model_copy(update={"declaration": {"Identifier": "x"}})
    bad_rule = good.model_copy(update={"applies": Applicability(version_below="garbage")})
    for bad in [
        policy(blueprint_id="b" * 37),
        policy(token="t" * 65),
        policy(revision=2**31),
        policy(candidates=[good, not_a_declaration]),
        policy(candidates=[bad_rule]),
    ]:
        with pytest.raises(EnvelopeError):
            check_policy(bad)


@pytest.mark.parametrize(
    ("consumers", "bad"),
    [
        (declarations_consumers, ReleasePublished(release=release(version="garbage"))),
        (device_channel_consumers, policy(token="t" * 65)),
    ],
    ids=["declarations", "device-channel"],
)
async def test_each_consumer_checks_before_it_stores(consumers: Any, bad: Any) -> None:
    """The check runs first in the handler (no unit of work is touched: there is none)."""
    [spec] = consumers(SimpleNamespace(clock=SystemClock()))
    event = to_event(bad, source="/rogue", subject="k", time=datetime.now(UTC))
    with pytest.raises(EnvelopeError):
        await spec.apply(None, event)
