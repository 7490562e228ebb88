"""The compiler on real release data, and applicability rules over device facts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from catalog.feeds import parse_gdmf
from declarations.compiler import compile_blueprint, policy_token
from declarations.schemas import LibraryItem
from managed_os.manifest import build_manifest
from managed_os.policy import Applicability, DeviceFacts, Policy

FEED = (
    Path(__file__).resolve().parents[1] / "data" / "feeds" / "gdmf_pmv_2026-08-22_sofa_cache.json"
)
RELEASES = parse_gdmf(FEED.read_bytes())
T = datetime(2026, 8, 1, tzinfo=UTC)


def item(mode: str = "minimum", version: str = "26.5", method: str = "continuously_enforce"):
    return LibraryItem.model_validate(
        {
            "id": "11111111-1111-1111-1111-111111111111",
            "major": 26,
            "label": "",
            "blueprint_ids": ["bp"],
            "installation_method": method,
            "version_enforcement": {
                "mode": mode,
                "version": version,
                "deadline": "2026-09-01",
                "at": "17:00",
            },
            "upgrade_enforced_since": T,
            "created_at": T,
            "updated_at": T,
        }
    )


def mac(version: str | None, device_id: str | None = "J514mAP") -> DeviceFacts:
    return DeviceFacts(enrollment_id="M", os_version=version, device_id=device_id)


def policy(items) -> Policy:
    candidates = compile_blueprint(items, RELEASES)
    return Policy(
        blueprint_id="bp", revision=1, token=policy_token(candidates), candidates=candidates
    )


def targets(p: Policy, facts: DeviceFacts) -> list[tuple[str, str]]:
    return [
        (c.enforcement.kind, c.enforcement.target_version) for c in p.select(facts) if c.enforcement
    ]


def test_compiling_the_same_inputs_twice_gives_the_same_token():
    assert policy([item()]).token == policy([item()]).token
    assert policy([item()]).token != policy([item(version="26.5.1")]).token


def test_minimum_targets_the_latest_of_the_major_for_devices_below_it_only():
    p = policy([item()])
    assert targets(p, mac("26.4.1")) == [("update", "26.6.2")]
    assert targets(p, mac("26.5")) == []
    assert targets(p, mac("26.6.2")) == []


def test_specific_targets_exactly_that_version_and_build_and_never_downgrades():
    p = policy([item(mode="specific", version="26.5.1")])
    chosen = [c for c in p.select(mac("26.4")) if c.enforcement]
    assert chosen[0].declaration["Payload"]["TargetOSVersion"] == "26.5.1"
    assert chosen[0].declaration["Payload"]["TargetBuildVersion"] == "25F80"
    assert targets(p, mac("26.6")) == []


def test_an_older_major_gets_an_upgrade_only_under_continuously_enforce():
    assert targets(policy([item()]), mac("15.7.9")) == [("upgrade", "26.6.2")]
    assert targets(policy([item(method="self_service")]), mac("15.7.9")) == []


def test_a_device_whose_board_id_the_release_does_not_list_gets_no_enforcement():
    p = policy([item()])
    assert targets(p, mac("26.4.1", device_id="Mac-IMACPRO-NOT-SUPPORTED")) == []
    assert targets(p, mac("26.4.1", device_id=None)) == [("update", "26.6.2")]


def test_before_the_first_report_only_the_status_subscriptions_apply():
    manifest = build_manifest(policy([item()]), mac(None))
    assert [d.identifier for d in manifest.declarations] == [
        "managed-os.status-subscriptions",
        "managed-os.activation",
    ]


def test_the_manifest_token_is_stable_and_moves_when_the_manifest_does():
    p = policy([item()])
    a, b = build_manifest(p, mac("26.4.1")), build_manifest(p, mac("26.4.1"))
    assert a.token == b.token
    assert build_manifest(p, mac("26.6.2")).token != a.token


def test_applicability_bounds_use_the_base_version_of_a_bsi():
    rule = Applicability(majors=[26], version_below="26.3.2")
    assert rule.matches(mac("26.3.1 (a)"))
    assert not rule.matches(mac("26.3.2"))
    assert not Applicability(majors=[26]).matches(mac(None))
    assert Applicability(always=True).matches(mac(None))
