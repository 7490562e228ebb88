"""The serving processes' collector: young collections by time, the count only a backstop."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from managed_os.cli import GC_THRESHOLDS, collect_young_regularly, tune_gc


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture
def served_gc() -> Iterator[None]:
    before = gc.get_threshold()
    gc.collect()
    tune_gc()
    try:
        yield
    finally:
        gc.set_threshold(*before)


@pytest.mark.usefixtures("served_gc")
async def test_a_garbage_cycle_is_collected_within_the_interval() -> None:
    assert gc.get_threshold() == GC_THRESHOLDS
    freed = asyncio.Event()
    node = _Node()
    weakref.finalize(node, freed.set)
    del node
    await asyncio.sleep(0.05)
    assert not freed.is_set(), "the allocation threshold is not what collects it"
    collect_young_regularly(0.05)
    await asyncio.wait_for(freed.wait(), timeout=2)


@pytest.mark.usefixtures("served_gc")
async def test_collections_keep_coming() -> None:
    collect_young_regularly(0.02)
    seen = gc.get_stats()[0]["collections"]
    await asyncio.sleep(0.2)
    assert gc.get_stats()[0]["collections"] >= seen + 3
