"""Closes ledgers on a fixed cadence and lets others wait for the next close."""

from __future__ import annotations

import asyncio
import logging
import time

from devnet.ledger import Devnet

log = logging.getLogger("devnet.clock")


class LedgerClock:
    """Closes a ledger every ``interval_ms``, on a fixed schedule (no cumulative drift).

    Deadlines are ``start + n × interval``; a close that runs late does not push the
    next one back. ``close_intervals_ms`` keeps the recent actual intervals for drift
    measurements.
    """

    def __init__(self, devnet: Devnet, interval_ms: int) -> None:
        self.devnet = devnet
        self.interval = interval_ms / 1000
        self._closed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.close_intervals_ms: list[float] = []
        self._last_close: float | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def next_close(self) -> None:
        async with self._closed:
            await self._closed.wait()

    async def close_now(self) -> None:
        """Close a ledger immediately (admin endpoint), outside the schedule."""
        await self._close()

    async def close_many(self, count: int) -> int:
        """Close ``count`` ledgers immediately (admin endpoint), outside the schedule, in one
        synchronous run (no scheduled close or submission interleaves); waiters are woken
        once, after the last one. The latest ledger's sequence."""
        before = self.devnet.latest.sequence
        latest = self.devnet.close_ledgers(count)
        if latest > before:
            await self._closed_one()
        return latest

    async def _close(self) -> None:
        if self.devnet.close_ledger() is None:
            return
        await self._closed_one()

    async def _closed_one(self) -> None:
        now = time.monotonic()
        if self._last_close is not None:
            self.close_intervals_ms.append((now - self._last_close) * 1000)
            del self.close_intervals_ms[:-1000]
        self._last_close = now
        async with self._closed:
            self._closed.notify_all()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += self.interval
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._close()
            except Exception:  # a bug in apply must not stop the network; it is logged
                log.exception("ledger close failed")
