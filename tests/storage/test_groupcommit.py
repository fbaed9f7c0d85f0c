"""The one group commit (storage.groupcommit): batching, per-caller results, limits, failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from storage.groupcommit import GroupCommit, in_thread

pytestmark = pytest.mark.timeout(20)  # a broken flusher leaves callers waiting: fail, not hang


class Recorder:
    """A ``run`` that records each batch and answers ``item * 10``; ``gate`` holds it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: set[int] = set()  # a batch holding one of these raises

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail & set(items):
            raise ValueError(f"batch {items} refused")
        return [i * 10 for i in items]


async def test_concurrent_submits_share_one_run_and_each_gets_its_own_result() -> None:
    run = Recorder()
    commit: GroupCommit[int, int] = GroupCommit(run)
    got = await asyncio.gather(*(commit.submit(i) for i in range(50)))
    assert got == [i * 10 for i in range(50)]
    assert run.batches == [list(range(50))]


async def test_items_arriving_during_a_batch_go_together_in_the_next() -> None:
    run = Recorder()
    run.gate.clear()
    commit: GroupCommit[int, int] = GroupCommit(run)
    first = asyncio.ensure_future(commit.submit(0))
    await asyncio.sleep(0.01)
    assert run.batches == [[0]]  # running, held by the gate
    later = [asyncio.ensure_future(commit.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    assert run.batches == [[0]]  # they wait for the batch in flight
    run.gate.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [10, 20, 30, 40, 50]
    assert run.batches == [[0], [1, 2, 3, 4, 5]]


async def test_a_failing_batch_fails_only_its_own_waiters() -> None:
    run = Recorder()
    run.gate.clear()
    run.fail = {1}
    commit: GroupCommit[int, int] = GroupCommit(run)
    doomed = [asyncio.ensure_future(commit.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    fine = [asyncio.ensure_future(commit.submit(i)) for i in (3, 4)]
    run.gate.set()
    results = await asyncio.gather(*doomed, *fine, return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results[:2])
    assert results[2:] == [30, 40]
    assert run.batches == [[1, 2], [3, 4]]
    assert await commit.submit(5) == 50  # and the group carries on


async def test_max_items_caps_a_batch() -> None:
    run = Recorder()
    commit: GroupCommit[int, int] = GroupCommit(run, max_items=3)
    got = await asyncio.gather(*(commit.submit(i) for i in range(7)))
    assert got == [i * 10 for i in range(7)]
    assert run.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_max_bytes_caps_a_batch_and_an_oversized_item_goes_alone() -> None:
    run = Recorder()
    commit: GroupCommit[int, int] = GroupCommit(run, max_bytes=10)
    sizes = [4, 4, 4, 20, 1]
    got = await asyncio.gather(*(commit.submit(i, size) for i, size in enumerate(sizes)))
    assert got == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1], [2], [3], [4]]


class Stop(BaseException):
    """Not an Exception: what cancellation or an interrupt look like to the flusher."""


async def test_a_base_exception_fails_the_waiters_with_runtime_error_and_is_reraised() -> None:
    async def run(items: list[int]) -> list[int]:
        raise Stop

    commit: GroupCommit[int, int] = GroupCommit(run)
    results = await asyncio.gather(commit.submit(1), commit.submit(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    with pytest.raises(Stop):
        await commit.drain()  # the flusher task itself ended with it


@pytest.mark.parametrize("shield", [True, False])
async def test_a_cancelled_caller_leaves_the_batch_whole(shield: bool) -> None:
    """Its item still runs (it may be committed); the others get their results."""
    run = Recorder()
    run.gate.clear()
    commit: GroupCommit[int, int] = GroupCommit(run, shield=shield)
    callers = [asyncio.ensure_future(commit.submit(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    callers[1].cancel()
    run.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert results[0] == 0 and results[2] == 20
    assert isinstance(results[1], asyncio.CancelledError)
    assert run.batches == [[0, 1, 2]]


async def test_in_thread_runs_the_batch_on_the_executor_and_drain_waits() -> None:
    threads: list[str] = []

    def batch(items: list[int]) -> list[int]:
        threads.append(threading.current_thread().name)
        return [-i for i in items]

    with ThreadPoolExecutor(1, thread_name_prefix="gc-test") as pool:
        runner: Callable[[list[int]], Awaitable[list[int]]] = in_thread(pool, batch)
        commit: GroupCommit[int, int] = GroupCommit(runner, name="gc-flusher")
        pending = [asyncio.ensure_future(commit.submit(i)) for i in range(4)]
        await asyncio.sleep(0)
        assert "gc-flusher" in {t.get_name() for t in asyncio.all_tasks()}
        await commit.drain()
        assert all(p.done() for p in pending)
        assert [p.result() for p in pending] == [0, -1, -2, -3]
    assert len(threads) == 1 and threads[0].startswith("gc-test")
