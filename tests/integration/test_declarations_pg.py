"""Declarations on PostgreSQL under concurrency, and its release-view migration."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import text

from catalog.feeds import merge_sources, parse_gdmf, parse_sofa
from declarations import service
from declarations.main import SPEC
from declarations.repository import DeclarationsUnitOfWork
from declarations.schemas import BlueprintIn, LibraryItemIn
from managed_os import auth
from managed_os.db import make_engine
from managed_os.migrations import upgrade
from managed_os.suite import running_suite
from tests.support.infra import free_port

FEEDS = Path(__file__).resolve().parents[1] / "data" / "feeds"
RELEASES = merge_sources(
    parse_gdmf((FEEDS / "gdmf_pmv_2026-08-22_sofa_cache.json").read_bytes()),
    parse_sofa((FEEDS / "sofa_v2_macos_data_feed.json").read_bytes()).releases,
)
NOW = datetime(2026, 8, 25, tzinfo=UTC)
SECRET = "pg-declarations-secret-0123456789abcdef"


def minimum(bp: str, major: int = 26, version: str = "26.5") -> dict:
    return {
        "major": major,
        "blueprint_ids": [bp],
        "installation_method": "continuously_enforce",
        "version_enforcement": {
            "mode": "minimum",
            "version": version,
            "deadline": "2026-09-01",
            "at": "17:00",
        },
    }


async def test_concurrent_items_for_one_blueprint_get_201_or_409_never_500(pg):
    url = pg.create("mos_decl_conc")
    engine = make_engine(url)
    await upgrade(SPEC, engine)
    async with DeclarationsUnitOfWork(engine, SPEC.outbox_table, SPEC.inbox_table) as uow:
        await service.on_releases(uow, RELEASES, NOW)
        await uow.commit()
    await engine.dispose()
    settings = SPEC.settings_cls(
        host="127.0.0.1", port=free_port(), database_url=url, auth_secret=SECRET
    )
    headers = {"Authorization": f"Bearer {auth.issue_token(SECRET, auth.ALL_SCOPES)}"}
    async with running_suite({"declarations": settings}) as suite, httpx.AsyncClient() as http:
        base = suite.urls["declarations"]
        bp = (await http.post(f"{base}/v1/blueprints", json={"name": "b"}, headers=headers)).json()
        same_major = await asyncio.gather(
            *(
                http.post(f"{base}/v1/library-items", json=minimum(bp["id"]), headers=headers)
                for _ in range(4)
            )
        )
        other_majors = await asyncio.gather(
            *(
                http.post(f"{base}/v1/library-items", json=minimum(bp["id"], m, v), headers=headers)
                for m, v in ((15, "15.7.9"), (14, "14.8.9"), (13, "13.7.8"))
            )
        )
        policy = (
            await http.get(f"{base}/v1/blueprints/{bp['id']}/policy/revisions", headers=headers)
        ).json()["items"]
    assert sorted(r.status_code for r in same_major) == [201, 409, 409, 409]
    assert [r.status_code for r in other_majors] == [201, 201, 201]
    assert [r["revision"] for r in policy] == list(range(1, len(policy) + 1))


async def test_a_recompile_racing_an_item_change_never_publishes_a_stale_policy(pg):
    engine = make_engine(pg.create("mos_decl_race"))
    await upgrade(SPEC, engine)

    def make() -> DeclarationsUnitOfWork:
        return DeclarationsUnitOfWork(engine, SPEC.outbox_table, SPEC.inbox_table)

    before = [r for r in RELEASES if r.version != "26.6.2"]
    async with make() as uow:
        await service.on_releases(uow, before, NOW)
        bp = await service.create_blueprint(uow, BlueprintIn(name="b"), NOW)
        it = await service.create_item(uow, LibraryItemIn.model_validate({**minimum(bp.id)}), NOW)
        await uow.commit()

    async def release() -> None:
        async with make() as uow:
            await service.on_releases(uow, [r for r in RELEASES if r.version == "26.6.2"], NOW)
            await uow.commit()

    async def change() -> None:
        async with make() as uow:
            body = {
                **minimum(bp.id),
                "version_enforcement": {"mode": "rolling", "within": "1w", "at": "08:00"},
            }
            await service.replace_item(uow, it.id, LibraryItemIn.model_validate(body), NOW)
            await uow.commit()

    await asyncio.gather(release(), change())
    async with make() as uow:
        latest = await uow.policies.latest(bp.id)
        assert await service.recompile(uow, [bp.id], NOW) == 0  # nothing stale to fix
    assert latest is not None
    targets = {c["enforcement"]["target_version"] for c in latest.candidates if c["enforcement"]}
    assert targets == {"26.6.2"}
    assert all(
        "+ 1w" in c["enforcement"]["reason"] or "upgrade" in c["enforcement"]["reason"]
        for c in latest.candidates
        if c["enforcement"]
    )
    await engine.dispose()


async def test_the_release_view_migration_keeps_bsis_apart_from_their_base(pg, tmp_path):
    for url in (pg.create("mos_decl_mig"), f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"):
        engine = make_engine(url)
        await upgrade(SPEC, engine, "8f03a9939e7b")
        bsi = next(r for r in RELEASES if r.kind == "bsi").model_dump_json()
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO known_releases (version, build, major, release, updated_at) "
                    "VALUES ('26.3.1', '25D771280a', 26, :doc, :now)"
                ),
                {"doc": bsi, "now": NOW},
            )
        await upgrade(SPEC, engine)
        async with DeclarationsUnitOfWork(engine, SPEC.outbox_table, SPEC.inbox_table) as uow:
            await service.on_releases(uow, [r for r in RELEASES if r.kind == "bsi"], NOW)
            await uow.commit()
            stored = [r for r in await uow.releases.by_major(26) if r.kind == "bsi"]
        await engine.dispose()
        assert sorted((r.version, r.extra, r.build) for r in stored) == [
            ("26.3.1", "(a)", "25D771280a"),
            ("26.3.2", "(a)", "25D771400a"),
        ]
