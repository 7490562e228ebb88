"""Every Managed OS rule, table-driven, on the real release data (GDMF + SOFA of 2026-08-22,
and the GDMF of 2026-04-12 cut back to the week a BSI applied to the latest release)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from catalog.feeds import merge_sources, parse_gdmf, parse_sofa
from declarations.compiler import compile_blueprint, policy_token
from declarations.compiler.timing import add_within
from declarations.schemas import LibraryItem
from managed_os.policy import Candidate, DeviceFacts, Policy

FEEDS = Path(__file__).resolve().parents[1] / "data" / "feeds"
AUGUST = merge_sources(
    parse_gdmf((FEEDS / "gdmf_pmv_2026-08-22_sofa_cache.json").read_bytes()),
    parse_sofa((FEEDS / "sofa_v2_macos_data_feed.json").read_bytes()).releases,
)


def _march() -> list:
    doc = json.loads((FEEDS / "gdmf_pmv_2026-04-12_raw.json").read_bytes())
    for section in ("AssetSets", "PublicAssetSets"):
        doc[section]["macOS"] = [
            e for e in doc[section]["macOS"] if not e["ProductVersion"].startswith("26.4")
        ]
    return parse_gdmf(json.dumps(doc).encode())


MARCH = _march()
SINCE = datetime(2026, 8, 1, tzinfo=UTC)
ITEM_ID = "11111111-1111-1111-1111-111111111111"
ROLLING = {"mode": "rolling", "within": "2w", "at": "09:00"}
MINIMUM = {"mode": "minimum", "version": "26.5", "deadline": "2026-09-01", "at": "17:00"}
SPECIFIC = {"mode": "specific", "version": "26.5.1", "deadline": "2026-09-01", "at": "17:00"}
BSI = {"mode": "automatic", "within": "2d", "at": "17:00"}


def item(ve, method="continuously_enforce", bsi=None) -> LibraryItem:
    return LibraryItem.model_validate(
        {
            "id": ITEM_ID,
            "major": 26,
            "label": "",
            "blueprint_ids": ["bp"],
            "installation_method": method,
            "version_enforcement": ve,
            "bsi_enforcement": bsi or {"mode": "none"},
            "upgrade_enforced_since": SINCE,
            "created_at": SINCE,
            "updated_at": SINCE,
        }
    )


def policy(it: LibraryItem, releases=AUGUST, requests=None) -> Policy:
    candidates = compile_blueprint([it], releases, requests)
    return Policy(
        blueprint_id="bp", revision=1, token=policy_token(candidates), candidates=candidates
    )


def mac(version, build="X", device="J514mAP", extra=None, enrollment="MAC-1") -> DeviceFacts:
    return DeviceFacts(
        enrollment_id=enrollment,
        os_version=version,
        build_version=build,
        device_id=device,
        supplemental_extra_version=extra,
    )


def got(p: Policy, facts: DeviceFacts) -> list[tuple[Any, ...]]:
    """(kind, TargetOSVersion, TargetBuildVersion, TargetLocalDateTime) per enforcement."""
    out = []
    for c in p.select(facts):
        if c.enforcement is not None:
            pay = c.declaration["Payload"]
            out.append(
                (
                    c.enforcement.kind,
                    pay["TargetOSVersion"],
                    pay.get("TargetBuildVersion"),
                    pay["TargetLocalDateTime"],
                )
            )
    return out


CASES = [
    # rolling: anchored at the oldest release newer than the Mac's version
    (
        "rolling, one release behind",
        item(ROLLING),
        mac("26.6.1"),
        [("update", "26.6.2", None, "2026-08-31T09:00:00")],
    ),
    (
        "rolling, several releases behind: due at the first missed release",
        item(ROLLING),
        mac("26.5"),
        [("update", "26.6.2", None, "2026-06-15T09:00:00")],
    ),
    (
        "rolling, on a release SOFA alone knows",
        item(ROLLING),
        mac("26.2"),
        [("update", "26.6.2", None, "2026-02-25T09:00:00")],
    ),
    ("rolling, up to date", item(ROLLING), mac("26.6.2"), []),
    # minimum: below → latest of the major by the deadline; at or above → nothing
    (
        "minimum, below",
        item(MINIMUM),
        mac("26.4.1"),
        [("update", "26.6.2", None, "2026-09-01T17:00:00")],
    ),
    ("minimum, exactly at", item(MINIMUM), mac("26.5"), []),
    ("minimum, above", item(MINIMUM), mac("26.5.2"), []),
    # specific: exactly that version and its build; never a downgrade
    (
        "specific, below",
        item(SPECIFIC),
        mac("26.4"),
        [("update", "26.5.1", "25F80", "2026-09-01T17:00:00")],
    ),
    ("specific, at", item(SPECIFIC), mac("26.5.1"), []),
    ("specific, above: no downgrade", item(SPECIFIC), mac("26.6"), []),
    # older major
    (
        "upgrade under continuously-enforce, window from when it was switched on",
        item(ROLLING),
        mac("15.7.9", device="J514mAP"),
        [("upgrade", "26.6.2", None, "2026-08-15T09:00:00")],
    ),
    (
        "upgrade with minimum: the minimum's deadline",
        item(MINIMUM),
        mac("14.8.9"),
        [("upgrade", "26.6.2", None, "2026-09-01T17:00:00")],
    ),
    (
        "upgrade with specific: that version and build",
        item(SPECIFIC),
        mac("15.7.9"),
        [("upgrade", "26.5.1", "25F80", "2026-09-01T17:00:00")],
    ),
    ("self-service: nothing pushed", item(ROLLING, "self_service"), mac("15.7.9"), []),
    ("do-not-manage", item({"mode": "do_not_manage"}, "self_service"), mac("26.0"), []),
    (
        "unknown board id: one enforcement, as if supported",
        item(ROLLING),
        mac("26.6.1", device=None),
        [("update", "26.6.2", None, "2026-08-31T09:00:00")],
    ),
]


@pytest.mark.parametrize(("name", "it", "facts", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rule(name, it, facts, expected):
    assert got(policy(it), facts) == expected


BSI_CASES = [
    (
        "on the BSI's prerequisite build: the BSI, by its build, without the letter",
        mac("26.3.1", "25D2128"),
        [("bsi", "26.3.1", "25D771280a", "2026-03-19T17:00:00")],
    ),
    ("BSI already installed", mac("26.3.1", "25D2128", extra="a"), []),
    ("on another build of that version", mac("26.3.1", "25D9999"), []),
    (
        "below the latest: version enforcement first, the BSI once on the build",
        mac("26.3", "25D125"),
        [("update", "26.3.1", None, "2026-03-18T09:00:00")],
    ),
    (
        "the device-specific BSI for the MacBook Neo",
        mac("26.3.2", "25D2140", device="J700AP"),
        [("bsi", "26.3.2", "25D771400a", "2026-03-19T17:00:00")],
    ),
]


@pytest.mark.parametrize(("name", "facts", "expected"), BSI_CASES, ids=[c[0] for c in BSI_CASES])
def test_bsi_rule(name, facts, expected):
    assert got(policy(item(ROLLING, bsi=BSI), MARCH), facts) == expected


def test_bsi_none_sends_no_bsi():
    assert got(policy(item(ROLLING), MARCH), mac("26.3.1", "25D2128")) == []


def test_a_mac_the_major_does_not_support_gets_no_upgrade():
    boards_26 = {d for r in AUGUST if r.major == 26 for d in r.supported_devices}
    boards_15 = {d for r in AUGUST if r.major == 15 for d in r.supported_devices}
    old = sorted(boards_15 - boards_26)[0]
    assert got(policy(item(ROLLING)), mac("15.7.9", device=old)) == []
    assert got(policy(item(ROLLING)), mac("15.7.9", device="J514mAP"))


def test_a_self_service_request_upgrades_only_that_mac_by_its_deadline():
    requests = {ITEM_ID: [("MAC-7", datetime(2026, 8, 26, 12, 0))]}
    p = policy(item(ROLLING, "self_service"), requests=requests)
    assert got(p, mac("15.7.9", enrollment="MAC-7")) == [
        ("self_service", "26.6.2", None, "2026-08-26T12:00:00")
    ]
    assert got(p, mac("15.7.9", enrollment="MAC-8")) == []


def test_a_new_release_never_moves_a_late_macs_deadline_and_keeps_its_declaration():
    before = [r for r in AUGUST if r.version != "26.6.2"]
    old, new = policy(item(ROLLING), before), policy(item(ROLLING), AUGUST)
    behind = mac("26.5")
    assert got(old, behind) == [("update", "26.6.1", None, "2026-06-15T09:00:00")]
    assert got(new, behind) == [("update", "26.6.2", None, "2026-06-15T09:00:00")]
    (a,), (b,) = ([c for c in p.select(behind) if c.enforcement] for p in (old, new))
    assert a.identifier == b.identifier
    assert a.declaration["ServerToken"] != b.declaration["ServerToken"]


def test_every_mac_matches_at_most_one_update_rule():
    p = policy(item(ROLLING, bsi=BSI))
    boards = sorted({d for r in AUGUST if r.major == 26 for d in r.supported_devices})
    versions = sorted({r.version for r in AUGUST if r.major == 26 and r.kind != "bsi"})
    for board in [*boards, None]:
        for v in versions:
            kinds = [k for k, *_ in got(p, mac(v, device=board))]
            assert len(kinds) <= 1, (board, v, kinds)


def test_the_policy_does_not_depend_on_the_clock_or_input_order():
    a = compile_blueprint([item(ROLLING, bsi=BSI)], AUGUST)
    b = compile_blueprint([item(ROLLING, bsi=BSI)], list(reversed(AUGUST)))
    assert policy_token(a) == policy_token(b)
    assert all(isinstance(c, Candidate) for c in a)


@pytest.mark.parametrize(
    ("start", "within", "due"),
    [
        (date(2026, 1, 31), "1mo", date(2026, 2, 28)),
        (date(2028, 1, 31), "1mo", date(2028, 2, 29)),
        (date(2026, 11, 30), "3mo", date(2027, 2, 28)),
        (date(2026, 8, 17), "2w", date(2026, 8, 31)),
        (date(2026, 12, 31), "1d", date(2027, 1, 1)),
        (date(2026, 3, 17), "3w", date(2026, 4, 7)),
    ],
)
def test_within_arithmetic(start, within, due):
    assert add_within(start, within) == due


def test_a_mac_whose_board_id_is_unknown_is_never_sent_a_one_model_release():
    p = policy(item(ROLLING, bsi=BSI), MARCH)
    # 26.3.2 existed only for the MacBook Neo; an unidentified Mac on 26.3.1 gets the BSI.
    assert got(p, mac("26.3.1", "25D2128", device=None)) == [
        ("bsi", "26.3.1", "25D771280a", "2026-03-19T17:00:00")
    ]
    assert got(p, mac("15.7.5", device=None))[0][1] == "26.3.1"


def test_builds_with_as_many_devices_do_not_make_the_policy_depend_on_input_order():
    from managed_os.events import ReleaseData

    def rel(build: str, boards: list[str]) -> ReleaseData:
        return ReleaseData(
            version="26.1",
            build=build,
            kind="update",
            major=26,
            release_date=date(2025, 11, 3),
            supported_devices=boards,
            devices_known=True,
        )

    twins = [rel("25B1", ["A", "B"]), rel("25B2", ["C", "D"])]
    spec = item({"mode": "specific", "version": "26.1", "deadline": "2026-01-01", "at": "09:00"})
    assert policy_token(compile_blueprint([spec], twins)) == policy_token(
        compile_blueprint([spec], list(reversed(twins)))
    )


def test_a_release_without_a_date_leaves_no_mac_without_a_deadline():
    from managed_os.events import ReleaseData

    def rel(version: str, day: date | None) -> ReleaseData:
        return ReleaseData(
            version=version,
            build=None,
            kind="update",
            major=26,
            release_date=day,
            supported_devices=["J514mAP"],
            devices_known=True,
        )

    releases = [rel("26.0", date(2025, 9, 15)), rel("26.1", None), rel("26.2", date(2025, 12, 12))]
    p = policy(item(ROLLING), releases)
    assert got(p, mac("26.0")) == [("update", "26.2", None, "2025-12-26T09:00:00")]
    assert got(p, mac("26.0.1")) == [("update", "26.2", None, "2025-12-26T09:00:00")]


def test_a_mac_asking_twice_gets_one_self_service_declaration_the_newest():
    from declarations.schemas import SelfServiceRequest
    from declarations.service import _live_requests

    def req(n: int, deadline: str) -> SelfServiceRequest:
        return SelfServiceRequest(
            id=str(n),
            item_id=ITEM_ID,
            enrollment_id="MAC-1",
            requested_at=SINCE,
            deadline=deadline,
            requested_by="api",
        )

    live = _live_requests([req(1, "2026-08-26T00:00:00"), req(2, "2026-08-26T03:00:00")])
    p = policy(item(SPECIFIC, "self_service"), requests={ITEM_ID: live})
    assert got(p, mac("15.7.9", enrollment="MAC-1")) == [
        ("self_service", "26.5.1", "25F80", "2026-08-26T03:00:00")
    ]
