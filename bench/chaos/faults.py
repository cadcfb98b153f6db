"""The fault schedule: what breaks when, drawn from the run's seed.

Every ``interval`` seconds on average (exponentially distributed gaps) one fault is drawn
by weight and injected (the first ones cover every kind once); the ones that last (fee
surge, ledger stall, a dead worker or Temporal server, a DB outage) are undone after a
drawn duration. The same seed draws the
same sequence of faults; when they land relative to the payouts depends on the machine.

Devnet faults go through its admin endpoint (:mod:`devnet.faults`); the rest through
:class:`~bench.chaos.cluster.Cluster`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from typing import Any

import aiohttp

from bench.chaos.cluster import Cluster

log = logging.getLogger("chaos.faults")

RPC_METHODS = ["sendTransaction", "getTransaction", "simulateTransaction", "getLatestLedger", "getLedgerEntries",
               "getFeeStats"]  # fmt: skip
# Devnet's surge prices: below and above the engine's fee cap (PAYOUTS_MAX_GAS_STROOPS,
# 2,000,000 stroops by default, resource fee included).
SURGE_BELOW_CAP = 20_000
SURGE_ABOVE_CAP = 3_000_000

WEIGHTS: dict[str, float] = {
    "drop_response": 3,
    "delay": 2,
    "http_error": 3,
    "try_again_later": 3,
    "fee_surge_below_cap": 1,
    "fee_surge_above_cap": 0.5,
    "ledger_stall": 1,
    "consume_sequence": 1.5,
    "kill_worker": 2,
    "restart_temporal": 0.7,
    "db_outage": 1,
}


class FaultInjector:
    def __init__(self, cluster: Cluster, session: aiohttp.ClientSession, seed: int, interval: float) -> None:
        self.cluster = cluster
        self.session = session
        self.rng = random.Random(f"{seed}:faults")
        self.interval = interval
        self.injected: Counter[str] = Counter()
        self._undo: set[asyncio.Task[None]] = set()
        self.kept_down: set[str] = set()  # workers killed and not yet due to come back

    async def run(self, stop: asyncio.Event) -> None:
        """Inject until ``stop``: first every kind once (in a drawn order, so a short run
        covers them all), then drawn by weight."""
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        first = self.rng.sample(kinds, len(kinds))
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.rng.expovariate(1 / self.interval))
                break
            except TimeoutError:
                pass
            kind = first.pop(0) if first else self.rng.choices(kinds, weights)[0]
            try:
                await getattr(self, f"_{kind}")()
            except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                log.warning("fault %s could not be injected: %s", kind, exc)
                if kind not in self.injected:
                    first.append(kind)  # every kind still gets its turn
                continue
            self.injected[kind] += 1
            log.info("injected %s", kind)

    async def heal(self) -> None:
        """Undo everything: lasting faults end now (dead workers are restarted by
        :meth:`Cluster.supervise`)."""
        for task in self._undo:
            task.cancel()
        await asyncio.gather(*self._undo, return_exceptions=True)
        self.kept_down.clear()
        await self._admin("DELETE", "faults")
        if self.cluster.temporal is None or self.cluster.temporal.poll() is not None:
            await asyncio.to_thread(self.cluster.start_temporal)
        while not self.cluster.database.outage_over():
            await asyncio.sleep(0.2)

    # -- devnet -----------------------------------------------------------------------------

    async def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.session.request(method, f"{self.cluster.rpc_url}/admin/{path}", json=body) as response:
            payload = await response.json()
            if response.status != 200:
                raise RuntimeError(f"admin {path}: {response.status} {payload}")
            return payload

    async def _rule(self, rule: dict[str, Any]) -> None:
        await self._admin("POST", "faults", {"rules": [rule]})

    async def _drop_response(self) -> None:
        await self._rule({"kind": "drop_response", "method": self.rng.choice(RPC_METHODS),
                          "count": self.rng.randint(1, 5)})  # fmt: skip

    async def _delay(self) -> None:
        await self._rule({"kind": "delay", "method": self.rng.choice(RPC_METHODS), "ms": self.rng.randint(200, 3000),
                          "count": self.rng.randint(1, 10)})  # fmt: skip

    async def _http_error(self) -> None:
        method = self.rng.choice([*RPC_METHODS, None])
        await self._rule({"kind": "http_error", "method": method, "status": self.rng.choice([500, 502, 503]),
                          "count": self.rng.randint(1, 10)})  # fmt: skip

    async def _try_again_later(self) -> None:
        await self._rule({"kind": "try_again_later", "count": self.rng.randint(1, 15)})

    def _later(self, seconds: float, undo: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(seconds)
            await undo()

        task = asyncio.create_task(run())
        self._undo.add(task)
        task.add_done_callback(self._undo.discard)

    async def _surge(self, fee: int, seconds: float) -> None:
        await self._admin("POST", "faults", {"fee_surge": fee})
        # The base fee (100) is devnet's price without a surge.
        self._later(seconds, lambda: self._admin("POST", "faults", {"fee_surge": 100}))

    async def _fee_surge_below_cap(self) -> None:
        await self._surge(SURGE_BELOW_CAP, self.rng.uniform(2, 10))

    async def _fee_surge_above_cap(self) -> None:
        await self._surge(SURGE_ABOVE_CAP, self.rng.uniform(1, 4))

    async def _ledger_stall(self) -> None:
        await self._admin("POST", "faults", {"ledger_stall": True})
        self._later(self.rng.uniform(2, 12), lambda: self._admin("POST", "faults", {"ledger_stall": False}))

    async def _consume_sequence(self) -> None:
        accounts = [a for m in self.cluster.modes.values() if m.mode.live for a in m.sources]
        await self._admin("POST", "consume-sequence", {"account": self.rng.choice(accounts)})

    # -- processes and the DB -----------------------------------------------------------------

    async def _kill_worker(self) -> None:
        mode = self.rng.choice(sorted(self.cluster.workers))
        self.kept_down.add(mode)
        self.cluster.kill_worker(mode)

        async def restart() -> None:
            self.kept_down.discard(mode)  # the supervisor brings it back

        self._later(self.rng.uniform(0, 5), restart)

    async def _restart_temporal(self) -> None:
        await asyncio.to_thread(self.cluster.kill_temporal)
        await asyncio.sleep(self.rng.uniform(0.5, 3))
        await asyncio.to_thread(self.cluster.start_temporal)

    async def _db_outage(self) -> None:
        if not self.cluster.database.outage_over():
            raise RuntimeError("an outage is already in progress")
        # Mostly short; now and then longer than the SQLite busy timeout (30 s).
        seconds = self.rng.uniform(2, 12) if self.rng.random() < 0.85 else self.rng.uniform(31, 40)
        self.cluster.database.outage(seconds)
