"""Serving processes collect garbage by time, generation by generation in CPython's turns; the
allocation count is only a backstop."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from managed_os import cli


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    gc.collect()
    yield
    gc.set_threshold(*before)


def _cycle() -> tuple[_Node, threading.Event]:
    node, freed = _Node(), threading.Event()
    weakref.finalize(node, freed.set)
    return node, freed


async def _freed_within(freed: threading.Event, seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not freed.is_set() and loop.time() < deadline:
        await asyncio.sleep(0.005)
    return freed.is_set()


def test_a_serving_process_collects_a_fresh_cycle_by_time_not_by_allocations() -> None:
    async def main() -> bool:
        assert gc.get_threshold() == cli.GC_THRESHOLDS
        node, freed = _cycle()
        del node
        await asyncio.sleep(0.05)
        assert not freed.is_set(), "the allocation threshold is not what collects it"
        cli.collect_regularly(0.02)
        return await _freed_within(freed, 2)

    assert cli.serve_process(main())


async def test_a_cycle_that_lived_through_collections_is_freed_in_its_generations_turn() -> None:
    gc.set_threshold(*cli.GC_THRESHOLDS)
    middle, freed_middle = _cycle()
    oldest, freed_oldest = _cycle()
    gc.collect(0)  # both live through a young collection: now in the middle generation
    del middle
    gc.collect(1)  # `oldest` lives through a middle one too: now in the oldest
    del oldest
    cli.collect_regularly(0.002)
    # The middle generation's turn comes every 20 ticks, the oldest's every 400.
    assert await _freed_within(freed_middle, 2)
    assert not freed_oldest.is_set()
    assert await _freed_within(freed_oldest, 10)


async def test_collections_go_on_after_one_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def collect(generation: int = 2) -> int:
        calls.append(generation)
        if len(calls) == 1:
            raise RuntimeError("first collection fails")
        return 0

    monkeypatch.setattr(cli.gc, "collect", collect)
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
    cli.collect_regularly(0.01)
    await asyncio.sleep(0.2)
    assert len(calls) >= 5


@pytest.mark.parametrize("argv", [["run"], ["serve", "compliance"]])
def test_run_and_serve_go_through_serve_process(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    started: list[str] = []

    def record(main: Coroutine[Any, Any, Any]) -> int:
        started.append(main.cr_code.co_name)  # type: ignore[attr-defined]
        main.close()
        return 0

    monkeypatch.setattr(cli, "serve_process", record)
    monkeypatch.setenv("MOS_COMPLIANCE_AUTH_SECRET", "test-secret-0123456789abcdef0123456789")
    monkeypatch.setenv("MOS_COMPLIANCE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/c.db")
    extra = ["--data-dir", str(tmp_path)] if argv == ["run"] else []
    assert cli.main([*argv, *extra]) == 0
    assert started == ["_run" if argv == ["run"] else "_serve_until_signalled"]
