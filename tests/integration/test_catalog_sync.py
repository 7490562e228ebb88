"""Catalog sync against a real HTTP server and real feed files: what changes, what is kept,
and what a bad fetch can never do."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from catalog.feeds.fetch import Fetcher
from catalog.service import fetcher_for, run_due_syncs, sync_source
from tests.support.backends import undelivered
from tests.support.catalog import FEEDS as FEEDS_DIR
from tests.support.catalog import catalog_uow, feed, settings
from tests.support.feedserver import Reply, feed_server

NOW = datetime(2026, 8, 25, 12, tzinfo=UTC)
GDMF = "gdmf_pmv_2026-08-22_sofa_cache.json"
SOFA = "sofa_v2_macos_data_feed.json"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("pg").create("mos_catalog")


async def snapshot(make):
    async with make() as uow:
        rels = await uow.releases.all()
        backlog = await undelivered(uow.outbox)
    return sorted(rels, key=lambda r: (r.version, r.extra or "", r.build or "")), backlog


async def test_a_first_sync_of_both_feeds_publishes_every_release_and_a_resync_nothing(db_url):
    async with feed_server() as srv, catalog_uow(db_url) as make:
        srv.play("/pmv", Reply(200, feed(GDMF), {"ETag": '"g1"'}))
        srv.play(
            "/sofa", Reply(200, feed(SOFA), {"Last-Modified": "Sat, 22 Aug 2026 18:45:03 GMT"})
        )
        cfg = settings(gdmf_url=srv.url("/pmv"), sofa_url=srv.url("/sofa"))
        fetcher = fetcher_for(cfg)
        first = [await sync_source(make(), fetcher, cfg, n, NOW) for n in ("gdmf", "sofa")]
        assert all(r.ok for r in first)
        assert len(first[0].published) == 17  # GDMF's 15 macOS entries + 2 BSIs
        assert len(first[1].published) > 100  # SOFA adds the releases GDMF no longer lists
        assert first[1].updated  # and dates / CVE counts for the ones it does
        before, backlog = await snapshot(make)
        assert backlog == len(first[0].published) + len(first[1].published) + len(first[1].updated)

        srv.play("/pmv", Reply(304))
        srv.play("/sofa", Reply(304))
        again = [await sync_source(make(), fetcher, cfg, n, NOW) for n in ("gdmf", "sofa")]
        assert [(r.ok, r.changed, r.published, r.updated) for r in again] == [
            (True, False, [], [])
        ] * 2
        after, backlog_after = await snapshot(make)
        assert after == before and backlog_after == backlog
        # Conditional GET: the validators of the last good response were sent.
        sent = {path: h for path, h in srv.requests[-2:]}
        assert sent["/pmv"]["if-none-match"] == '"g1"'
        assert sent["/sofa"]["if-modified-since"] == "Sat, 22 Aug 2026 18:45:03 GMT"


async def test_the_same_body_without_validators_changes_nothing_either(db_url):
    async with feed_server() as srv, catalog_uow(db_url) as make:
        srv.play("/pmv", Reply(200, feed(GDMF)))
        cfg = settings(gdmf_url=srv.url("/pmv"))
        fetcher = fetcher_for(cfg)
        await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        before = await snapshot(make)
        again = await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        assert again.ok and not again.changed
        assert await snapshot(make) == before


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(200, feed(GDMF)[:5000]), "not JSON"),
        (Reply(200, b'{"AssetSets": {"macOS": {"not": "a list"}}}'), "must be a list"),
        (Reply(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>"), "not JSON"),
        (Reply(500, b"oops"), "HTTP 500"),
        (Reply(200, b""), "empty body"),
        (Reply(200, b"   \n"), "empty body"),
        (Reply(404, b"gone"), "HTTP 404"),
        (Reply(200, feed(GDMF), delay=3.0), "timed out"),
    ],
)
async def test_a_bad_fetch_leaves_the_catalog_unchanged_and_the_source_failed(
    db_url, reply, reason
):
    async with feed_server() as srv, catalog_uow(db_url) as make:
        srv.play("/pmv", Reply(200, feed(GDMF)))
        cfg = settings(gdmf_url=srv.url("/pmv"), fetch_retries=1)
        fetcher = fetcher_for(cfg)
        assert (await sync_source(make(), fetcher, cfg, "gdmf", NOW)).ok
        before = await snapshot(make)

        srv.play("/pmv", reply)
        result = await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        assert not result.ok and reason in (result.error or "")
        assert await snapshot(make) == before
        async with make() as uow:
            state = await uow.sources.get("gdmf")
        assert state is not None and state.ok is False and reason in (state.last_error or "")
        assert state.last_success == NOW and state.releases_listed == 17  # the last good view stays


async def test_retries_honour_retry_after_and_then_succeed(db_url):
    slept: list[float] = []

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)

    async with feed_server() as srv, catalog_uow(db_url) as make:
        srv.play(
            "/pmv",
            Reply(503, b"busy", {"Retry-After": "7"}),
            Reply(429, b"slow down", {"Retry-After": "0.2"}),
            Reply(200, feed(GDMF)),
        )
        cfg = settings(gdmf_url=srv.url("/pmv"), fetch_retries=3, fetch_backoff_max_seconds=5)
        fetcher = Fetcher(retries=3, backoff_base=0.01, backoff_max=5, sleep=record_sleep)
        result = await sync_source(make(), fetcher, cfg, "gdmf", NOW)
    assert result.ok and len(result.published) == 17
    assert slept == [5, 0.2]  # Retry-After, capped at the configured maximum


async def test_release_history_is_kept_across_snapshots_and_expiry_updates_are_events(db_url):
    async with feed_server() as srv, catalog_uow(db_url) as make:
        cfg = settings(gdmf_url=srv.url("/pmv"))
        fetcher = fetcher_for(cfg)
        srv.play("/pmv", Reply(200, feed("gdmf_pmv_2025-10-29_sofa_cache_rsr_key.json")))
        await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        srv.play("/pmv", Reply(200, feed("gdmf_pmv_2026-04-12_raw.json")))
        april = await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        srv.play("/pmv", Reply(200, feed(GDMF)))
        august = await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        rels, _ = await snapshot(make)
    versions = {(r.version, r.extra, r.build) for r in rels}
    # 26.0.1 was only in the October feed, with two builds: both are still known.
    assert {("26.0.1", None, "25A362"), ("26.0.1", None, "25A8364")} <= versions
    by_build = {r.build: r for r in rels}
    assert by_build["25A8364"].supported_devices == ["J704AP"]
    assert len(by_build["25A362"].supported_devices) == 55
    assert by_build["25D771280a"].prerequisite_build == "25D2128"
    assert "26.3.1 (a) (25D771280a)" in april.published
    # GDMF stopped listing 26.0.1 in April: an update that flags it, never a deletion.
    assert "26.0.1 (25A362)" in april.updated
    assert by_build["25A362"].listed_by_apple is False
    assert by_build["25G83"].listed_by_apple is True
    # Apple extended the BSIs' expiry between April and August: an update, not a new release.
    assert "26.3.1 (a) (25D771280a)" in august.updated
    assert by_build["25D771280a"].expiration_date.isoformat() == "2026-11-20"
    # 26.5's AssetSets date moved later when Apple re-posted it; the earliest one stays.
    assert by_build["25F71"].release_date.isoformat() == "2026-05-18"


async def test_sofa_dates_and_cves_enrich_gdmf_builds_without_touching_their_devices(db_url):
    async with catalog_uow(db_url) as make:
        cfg = settings(
            gdmf_url="bundled:gdmf_snapshot.json", sofa_url="bundled:sofa_v2_snapshot.json"
        )
        fetcher = fetcher_for(cfg)
        for name in ("gdmf", "sofa"):
            assert (await sync_source(make(), fetcher, cfg, name, NOW)).ok
        rels, _ = await snapshot(make)
    by_build = {r.build: r for r in rels if r.build}
    assert by_build["25F71"].release_date.isoformat() == "2026-05-11"  # SOFA's, earlier
    assert by_build["25G76"].exploited_cves == ["CVE-2026-65400"]
    assert by_build["25G83"].cves == 28 and by_build["25G83"].sources == ["gdmf", "sofa"]
    assert by_build["25D771400a"].supported_devices == ["J700AP"]  # device-specific BSI
    old = [r for r in rels if r.version == "26.1"]
    assert len(old) == 1 and old[0].build is None and old[0].sources == ["sofa"]


async def test_sofa_v1_is_used_when_the_v2_feed_fails(db_url):
    async with feed_server() as srv, catalog_uow(db_url) as make:
        srv.play("/v2", Reply(500, b"down"))
        srv.play("/v1", Reply(200, feed("sofa_v1_macos_data_feed_2025-09-20_with_rsr.json")))
        cfg = settings(sofa_url=srv.url("/v2"), sofa_v1_url=srv.url("/v1"), fetch_retries=0)
        result = await sync_source(make(), fetcher_for(cfg), cfg, "sofa", NOW)
        rels, _ = await snapshot(make)
    assert result.ok and result.used_url == srv.url("/v1")
    rsr = sorted(r.extra for r in rels if r.kind == "bsi")
    assert rsr == ["(a)", "(c)"]  # Ventura 13.4.1 (a) and (c), the RSRs of 2023


async def test_a_scheduled_sync_runs_once_across_replicas_until_it_is_due_again(db_url):
    async with catalog_uow(db_url) as make:
        cfg = settings(gdmf_url="bundled:gdmf_snapshot.json", gdmf_interval_seconds=3600)
        fetcher = fetcher_for(cfg)
        first = await run_due_syncs(make, fetcher, cfg, NOW)
        second = await run_due_syncs(make, fetcher, cfg, NOW)  # another replica, same instant
        later = await run_due_syncs(make, fetcher, cfg, NOW.replace(hour=13, minute=1))
    assert [r.source for r in first] == ["gdmf"] and second == []
    assert [r.source for r in later] == ["gdmf"] and not later[0].changed


async def test_syncing_both_sources_at_once_gives_the_same_catalog_as_one_after_the_other(
    db_url, tmp_path, request
):
    cfg = settings(gdmf_url="bundled:gdmf_snapshot.json", sofa_url="bundled:sofa_v2_snapshot.json")
    async with catalog_uow(db_url) as make:
        results = await asyncio.gather(
            *(sync_source(make(), fetcher_for(cfg), cfg, n, NOW) for n in ("gdmf", "sofa"))
        )
        assert all(r.ok for r in results), [r.error for r in results]
        together, _ = await snapshot(make)
    async with catalog_uow(f"sqlite+aiosqlite:///{tmp_path / 'sequential.db'}") as make:
        for n in ("gdmf", "sofa"):
            await sync_source(make(), fetcher_for(cfg), cfg, n, NOW)
        one_by_one, _ = await snapshot(make)
    strip = {"first_seen"}
    assert [r.model_dump(exclude=strip) for r in together] == [
        r.model_dump(exclude=strip) for r in one_by_one
    ]


async def test_a_version_gdmf_stops_listing_is_never_duplicated_by_sofa(db_url):
    async with feed_server() as srv, catalog_uow(db_url) as make:
        cfg = settings(gdmf_url=srv.url("/pmv"), sofa_url="bundled:sofa_v2_snapshot.json")
        fetcher = fetcher_for(cfg)
        srv.play("/pmv", Reply(200, feed("gdmf_pmv_2026-04-12_raw.json")))
        await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        await sync_source(make(), fetcher, cfg, "sofa", NOW)
        srv.play("/pmv", Reply(200, feed(GDMF)))
        august = await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        rels, _ = await snapshot(make)
    versions: dict[tuple[str, str | None], set[str | None]] = {}
    for r in rels:
        versions.setdefault((r.version, r.extra), set()).add(r.build)
    mixed = {v: b for v, b in versions.items() if None in b and len(b) > 1}
    assert mixed == {}  # e.g. 26.4 stays one row, 25E246, with SOFA's CVE count
    assert all(not label.startswith("26.4 ") for label in august.published)
    (r264,) = [r for r in rels if r.version == "26.4"]
    assert (r264.build, r264.cves, r264.listed_by_apple) == ("25E246", 86, False)


async def test_a_gdmf_response_listing_far_fewer_builds_is_held_until_seen_twice(db_url):
    stub = json.dumps(
        {
            "AssetSets": {
                "macOS": [
                    {
                        "ProductVersion": "26.6.2",
                        "Build": "25G83",
                        "PostingDate": "2026-08-17",
                        "SupportedDevices": ["J314sAP"],
                    }
                ]
            }
        }
    ).encode()
    async with feed_server() as srv, catalog_uow(db_url) as make:
        cfg = settings(gdmf_url=srv.url("/pmv"))
        fetcher = fetcher_for(cfg)
        srv.play("/pmv", Reply(200, feed(GDMF)))
        await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        before = await snapshot(make)
        srv.play("/pmv", Reply(200, stub))
        held = await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        assert not held.ok and "held until the same response is seen again" in (held.error or "")
        assert await snapshot(make) == before
        confirmed = await sync_source(make(), fetcher, cfg, "gdmf", NOW)
        rels, _ = await snapshot(make)
    assert confirmed.ok and confirmed.updated  # now Apple really lists only one build
    assert sum(1 for r in rels if r.listed_by_apple) == 1


async def test_a_release_sofa_reports_before_gdmf_is_not_called_unlisted(db_url):
    async with catalog_uow(db_url) as make:
        april = FEEDS_DIR / "gdmf_pmv_2026-04-12_raw.json"
        cfg = settings(gdmf_url=april.as_uri(), sofa_url="bundled:sofa_v2_snapshot.json")
        fetcher = fetcher_for(cfg)
        await sync_source(make(), fetcher, cfg, "gdmf", datetime(2026, 4, 12, tzinfo=UTC))
        await sync_source(make(), fetcher, cfg, "sofa", NOW)
        rels, _ = await snapshot(make)
    by_build = {r.build: r for r in rels if r.build}
    assert by_build["25G83"].listed_by_apple is None  # 26.6.2 came out after GDMF's last look
    assert by_build["25E246"].listed_by_apple is True
    old = [r for r in rels if r.version == "26.1"]
    assert old[0].listed_by_apple is False  # long gone from GDMF


async def test_a_redirect_loop_is_a_recorded_failure_not_an_error(db_url):
    async with feed_server() as srv, catalog_uow(db_url) as make:
        srv.play("/pmv", Reply(302, b"", {"Location": "/pmv"}))
        cfg = settings(gdmf_url=srv.url("/pmv"))
        result = await sync_source(make(), fetcher_for(cfg), cfg, "gdmf", NOW)
        async with make() as uow:
            state = await uow.sources.get("gdmf")
    assert not result.ok and "TooManyRedirects" in (result.error or "")
    assert state is not None and state.ok is False


async def test_a_failed_scheduled_sync_is_retried_sooner_than_a_full_interval(db_url):
    async with catalog_uow(db_url) as make:
        cfg = settings(
            gdmf_url="file:///nonexistent/pmv.json",
            gdmf_interval_seconds=86400,
            retry_after_failure_seconds=900,
        )
        (failed,) = await run_due_syncs(make, fetcher_for(cfg), cfg, NOW)
        async with make() as uow:
            state = await uow.sources.get("gdmf")
    assert not failed.ok and "cannot read" in (failed.error or "")
    assert state is not None and state.next_due == NOW + timedelta(seconds=900)
