"""The fault schedule: what breaks when, drawn from the run's seed.

Every ``interval`` seconds on average (exponentially distributed gaps) one fault is drawn
by weight and injected (the first ones cover every kind once); the ones that last (fee
surge, queue surge, ledger stall, a dead worker or Temporal server, a DB outage) are undone
after a drawn duration. The same seed draws the same sequence of faults; when they land
relative to the payouts depends on the machine.

Devnet faults go through its admin endpoint (:mod:`devnet.faults`); outside parties (queue
fillers, a front-running relayer) through :mod:`bench.chaos.outside`; what an operator does
(a Temporal reset, terminate and start again) through the Temporal service; the rest
through :class:`~bench.chaos.cluster.Cluster`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError

from bench.chaos.audit import PlannedPayout, request_of
from bench.chaos.cluster import (
    ENVELOPE_TTL_SECONDS,
    MIN_TEMP_TTL,
    SIGNATURE_WINDOW_SECONDS,
    Cluster,
)
from bench.chaos.outside import FrontRun, QueueFiller, Relayer
from payouts import db
from payouts.client import PayoutClient
from payouts.errors import IdempotencyConflict
from payouts.models import PayoutState

log = logging.getLogger("chaos.faults")

RPC_METHODS = ["sendTransaction", "getTransaction", "simulateTransaction", "getLatestLedger", "getLedgerEntries",
               "getFeeStats"]  # fmt: skip
# Devnet's surge prices: below and above the engine's fee cap (PAYOUTS_MAX_GAS_STROOPS,
# 2,000,000 stroops by default, resource fee included).
SURGE_BELOW_CAP = 20_000
SURGE_ABOVE_CAP = 3_000_000
# The queue fillers' top bids (inclusion fee per operation): out-bid by the engine's
# replacements (which bid what a refusal names), or above the engine's fee cap.
QUEUE_BID_BELOW_CAP = (20_000, 400_000)
QUEUE_BID_ABOVE_CAP = (2_500_000, 4_000_000)
# expire_across_outage: ledgers closed while a channel worker is down, enough for every
# authorization it issued to expire (its window, in ledgers) and for a nonce used at its
# expiration to leave the ledger (the minimum temporary TTL), with a margin.
EXPIRE_LEDGERS = max(ENVELOPE_TTL_SECONDS, SIGNATURE_WINDOW_SECONDS) + MIN_TEMP_TTL + 20
# An operator resets or terminates a key at most this many times: a long run must not
# keep one payout from ever finishing.
MAX_INTERVENTIONS_PER_KEY = 2
RESET_BATCH = 8  # an operator_reset resets 1 to this many payouts
RELAYER_WATCH_SECONDS = 10.0  # front_run: how long the relayer watches the DB for an envelope in flight
RESTART_TRIES = 120  # terminate_restart: seconds of tries while Temporal is down or a conflicting run holds the key

WEIGHTS: dict[str, float] = {
    "drop_response": 3,
    "delay": 2,
    "http_error": 3,
    "try_again_later": 3,
    "fee_surge_below_cap": 1,
    "fee_surge_above_cap": 0.5,
    "queue_surge": 1.5,
    "ledger_stall": 1,
    "consume_sequence": 1.5,
    "front_run": 0.7,
    "kill_worker": 2,
    "expire_across_outage": 0.5,
    "restart_temporal": 0.7,
    "db_outage": 1,
    "operator_reset": 1,
    "terminate_restart": 1,
}


@dataclass
class Targets:
    """What the operator faults act on: the run's payouts, those started so far, the Temporal
    client and the app DB (where the relayer finds envelopes)."""

    client: Client
    planned: dict[str, PlannedPayout]
    database: Engine
    started: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class RecordedEnvelope:
    key: str
    tx_hash: str
    envelope_xdr: str
    source_account: str
    in_flight: bool  # queued or submitted: the engine may still send it


@dataclass
class OutsideActors:
    filler: QueueFiller
    relayer: Relayer


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


class FaultInjector:
    def __init__(
        self,
        cluster: Cluster,
        session: aiohttp.ClientSession,
        seed: int,
        interval: float,
        targets: Targets,
        outside: OutsideActors,
    ) -> None:
        self.cluster = cluster
        self.session = session
        self.rng = random.Random(f"{seed}:faults")
        self.interval = interval
        self.targets = targets
        self.outside = outside
        self.injected: Counter[str] = Counter()
        self.front_runs: list[FrontRun] = []
        self.relayer_misses: Counter[str] = Counter()  # relayer copies that did not pay, by outcome
        self.interventions: Counter[str] = Counter()  # resets and terminations per key
        self.resets = 0
        self.terminations = 0
        self.restarts: Counter[str] = Counter()  # terminate_restart: how the starts again went
        self._undo: set[asyncio.Task[None]] = set()  # cancelled by heal
        self._pending: set[asyncio.Task[None]] = set()  # awaited by heal
        self.kept_down: set[str] = set()  # workers killed and not yet due to come back

    async def run(self, stop: asyncio.Event) -> None:
        """Inject until ``stop``: first every kind once (in a drawn order, so a short run
        covers them all), then drawn by weight. A kind that could not be injected yet (no
        payout in the state it needs, the app DB down) is tried again every other turn,
        so that it does not hold up the others meanwhile."""
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        first = self.rng.sample(kinds, len(kinds))
        owed: list[str] = []  # kinds that failed before they were ever injected
        turn = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.rng.expovariate(1 / self.interval))
                break
            except TimeoutError:
                pass
            turn += 1
            if owed and (turn % 2 == 0 or not first):
                kind = owed.pop(0)
            elif first:
                kind = first.pop(0)
            else:
                kind = self.rng.choices(kinds, weights)[0]
            try:
                await getattr(self, f"_{kind}")()
            except (aiohttp.ClientError, RuntimeError, TimeoutError, RPCError) as exc:
                log.warning("fault %s could not be injected: %s", kind, exc)
                if kind not in self.injected and kind not in owed:
                    owed.append(kind)  # every kind still gets its turn
                continue
            self.injected[kind] += 1
            log.info("injected %s", kind)

    async def heal(self) -> None:
        """Undo everything: lasting faults end now (dead workers are restarted by
        :meth:`Cluster.supervise`); payouts terminated are started again."""
        for task in self._undo:
            task.cancel()
        await asyncio.gather(*self._undo, return_exceptions=True)
        await asyncio.gather(*self._pending, return_exceptions=True)
        self.kept_down.clear()
        await self._admin("DELETE", "faults")
        if self.cluster.temporal is None or self.cluster.temporal.poll() is not None:
            await asyncio.to_thread(self.cluster.start_temporal)
        while not self.cluster.database.outage_over():
            await asyncio.sleep(0.2)

    def _later(self, seconds: float, undo: Callable[[], Awaitable[Any]]) -> None:
        async def run() -> None:
            await asyncio.sleep(seconds)
            await undo()

        self._background(run(), self._undo)

    @staticmethod
    def _background(work: Awaitable[None], tasks: set[asyncio.Task[None]]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_log_failure)

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

    async def _surge(self, fee: int, seconds: float) -> None:
        await self._admin("POST", "faults", {"fee_surge": fee})
        # The base fee (100) is devnet's price without a surge.
        self._later(seconds, lambda: self._admin("POST", "faults", {"fee_surge": 100}))

    async def _fee_surge_below_cap(self) -> None:
        await self._surge(SURGE_BELOW_CAP, self.rng.uniform(2, 10))

    async def _fee_surge_above_cap(self) -> None:
        # getFeeStats keeps the surge's fees for its 50-ledger window: a short surge keeps
        # the engine's bid above the cap for less than the workers' PAYOUTS_FEE_CAP_WAIT_SECONDS
        # (payouts wait it out), a long one for more (payouts that met its start fail).
        seconds = self.rng.uniform(1, 4) if self.rng.random() < 0.7 else self.rng.uniform(15, 30)
        await self._surge(SURGE_ABOVE_CAP, seconds)

    async def _queue_surge(self) -> None:
        if any(not t.done() for t in self._undo if t.get_name() == "queue_surge"):
            raise RuntimeError("a queue surge is already under way")
        low, high = QUEUE_BID_ABOVE_CAP if self.rng.random() < 0.25 else QUEUE_BID_BELOW_CAP
        top = self.rng.randint(low, high)
        seconds = self.rng.uniform(5, 15)
        task = asyncio.create_task(self.outside.filler.surge(seconds, top), name="queue_surge")
        self._undo.add(task)
        task.add_done_callback(self._undo.discard)
        task.add_done_callback(_log_failure)

    async def _ledger_stall(self) -> None:
        await self._admin("POST", "faults", {"ledger_stall": True})
        self._later(self.rng.uniform(2, 12), lambda: self._admin("POST", "faults", {"ledger_stall": False}))

    async def _consume_sequence(self) -> None:
        accounts = [a for m in self.cluster.modes.values() if m.mode.live for a in m.sources]
        await self._admin("POST", "consume-sequence", {"account": self.rng.choice(accounts)})

    async def _front_run(self) -> None:
        """A relayer watching the app DB copies a signed authorization out of an envelope
        the engine recorded (in flight, or dead while its authorization is still valid:
        a dead envelope is public) and lands its own transaction first.

        It watches for up to :data:`RELAYER_WATCH_SECONDS` for an envelope in flight (most
        settle within a ledger), then takes what there is. devnet applies a ledger's
        transactions in arrival order (stellar-core shuffles them), so for an envelope in
        flight the relayer also uses the carrier's next sequence number (as
        consume_sequence does), which drops the engine's envelope if it is already queued;
        the ledgers stand still meanwhile, so the engine's cannot apply first. Counted only
        once the relayer's copy paid."""
        deadline = time.monotonic() + RELAYER_WATCH_SECONDS
        candidates = await self._copyable_envelopes()
        while not any(c.in_flight for c in candidates) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            candidates = await self._copyable_envelopes()
        await self._admin("POST", "faults", {"ledger_stall": True})
        try:
            candidates = await self._copyable_envelopes()  # what is still unsettled now the ledgers stand still
            self.rng.shuffle(candidates)
            candidates.sort(key=lambda c: not c.in_flight)
            for candidate in candidates[:10]:
                try:
                    copy = await self.outside.relayer.copy(candidate.envelope_xdr)
                except RuntimeError as exc:  # expired, or not signed yet
                    log.debug("relayer: %s: %s", candidate.tx_hash, exc)
                    continue
                relayed = await self.outside.relayer.send(copy)
                if candidate.in_flight:
                    await self._admin("POST", "consume-sequence", {"account": candidate.source_account})
                break
            else:
                raise RuntimeError(f"none of {len(candidates)} recorded envelopes carries a usable authorization")
        finally:
            await self._admin("POST", "faults", {"ledger_stall": False})
        outcome = await self.outside.relayer.outcome(relayed, timeout=15 * self.cluster.ledger_ms / 1000)
        if outcome != "SUCCESS":
            # The engine's envelope applied before the relayer looked (its row not yet
            # updated), or the relayer's copy was dropped: an outside failure the audit
            # must accept, not a front-run.
            self.relayer_misses[outcome] += 1
            raise RuntimeError(f"the relayer's copy {relayed} of {candidate.tx_hash} did not pay ({outcome})")
        self.front_runs.append(FrontRun(candidate.key, candidate.tx_hash, relayed))

    async def _copyable_envelopes(self) -> list[RecordedEnvelope]:
        """Recorded channel envelopes of keys the DB does not know as paid: what a relayer
        watching the DB can copy an authorization from."""
        if not self.cluster.database.outage_over():
            raise RuntimeError("the app DB is unavailable")

        def read() -> list[RecordedEnvelope]:
            row, payout = db.TransactionRow, db.PayoutRow
            paid = select(row.idempotency_key).where(col(row.status) == db.EnvelopeStatus.CONFIRMED.value)
            confirmed = select(payout.idempotency_key).where(col(payout.status) == PayoutState.CONFIRMED.value)
            query = select(row).where(
                col(row.auth_nonce).is_not(None),
                col(row.idempotency_key).not_in(paid),
                col(row.idempotency_key).not_in(confirmed),
            )
            in_flight = (db.EnvelopeStatus.QUEUED.value, db.EnvelopeStatus.SUBMITTED.value)
            with Session(self.targets.database) as session:
                return [RecordedEnvelope(r.idempotency_key, r.tx_hash, r.envelope_xdr, r.source_account,
                                         r.status in in_flight) for r in session.exec(query)]  # fmt: skip

        try:
            return await asyncio.wait_for(asyncio.to_thread(read), 5)
        except SQLAlchemyError as exc:
            raise RuntimeError(f"the app DB: {exc}") from None

    # -- processes and the DB -----------------------------------------------------------------

    async def _kill_worker(self) -> None:
        mode = self.rng.choice(sorted(self.cluster.workers))
        self.kept_down.add(mode)
        self.cluster.kill_worker(mode)

        async def restart() -> None:
            self.kept_down.discard(mode)  # the supervisor brings it back

        self._later(self.rng.uniform(0, 5), restart)

    async def _expire_across_outage(self) -> None:
        """A channel worker is down while the ledger moves on: every authorization it
        issued expires and the entries of the nonces used meanwhile leave the ledger, so
        when it is back an absence proves nothing and only the ledger history can tell
        whether an authorization paid. (Envelopes' time bounds are wall-clock: they are
        not what expires here.)"""
        channel_modes = sorted(m.mode.name for m in self.cluster.modes.values() if m.mode.live and m.mode.channels)
        mode = self.rng.choice(channel_modes)
        self.kept_down.add(mode)
        self.cluster.kill_worker(mode)

        async def restart() -> None:
            self.kept_down.discard(mode)

        try:
            await self._admin("POST", "faults", {"ledger_stall": False})  # a stalled ledger would not move
            before = await self._admin("POST", "close-ledger")
            after = await self._admin("POST", "close-ledgers", {"count": EXPIRE_LEDGERS})
            if int(after["sequence"]) < int(before["sequence"]) + EXPIRE_LEDGERS:
                raise RuntimeError(f"the ledger moved from {before['sequence']} to {after['sequence']} only")
        finally:
            self._later(self.rng.uniform(0, 3), restart)

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

    # -- what an operator does --------------------------------------------------------------

    def _may_intervene(self, key: str) -> bool:
        return key in self.targets.planned and self.interventions[key] < MAX_INTERVENTIONS_PER_KEY

    async def _operator_reset(self) -> None:
        """Reset a batch of payouts, each to a drawn WorkflowTaskCompleted event of its
        latest run, as ``temporal workflow reset`` (one, or a batch by query) or the Web UI
        would. Half of them finished, preferring those whose run took several workflow
        tasks (they waited for an account, a fee or a signature: a reset into such a wait
        resumes a payout that already paid); the rest any payout started so far, running
        or finished. A finished payout is not reset to its last workflow task (that only
        replays its ending)."""
        size = self.rng.randint(1, RESET_BATCH)
        finished = sorted({f.id async for f in self.targets.client.list_workflows(
            f"ExecutionStatus = 'Completed' AND ({self._queues()})", limit=500)})  # fmt: skip
        finished = [k for k in finished if self._may_intervene(k)]
        histories = {k: await self._completed_tasks(k) for k in self.rng.sample(finished, min(len(finished), 3 * size))}
        long_first = sorted(histories, key=lambda k: (len(histories[k][1]) < 3, k))
        batch = {k: histories[k] for k in long_first[: (size + 1) // 2] if len(histories[k][1]) > 1}
        started = sorted(k for k in self.targets.started if self._may_intervene(k) and k not in batch)
        for key in self.rng.sample(started, min(len(started), size - len(batch))):
            batch[key] = await self._completed_tasks(key)
        problems = []
        for key, (run_id, events) in batch.items():
            if key in histories:
                events = events[:-1]
            try:
                if not events:
                    raise RuntimeError("no completed workflow task to reset to yet")
                await self._reset(key, run_id, self.rng.choice(events))
            except (RuntimeError, RPCError) as exc:
                problems.append(f"{key}: {exc}")
        if len(problems) == len(batch):
            raise RuntimeError(f"no payout was reset ({'; '.join(problems) or 'none to reset'})")

    async def _completed_tasks(self, key: str) -> tuple[str, list[int]]:
        """The latest run of ``key`` and its WorkflowTaskCompleted events."""
        client = self.targets.client
        run_id = (await client.get_workflow_handle(key).describe()).run_id
        assert run_id is not None
        history = await client.get_workflow_handle(key, run_id=run_id).fetch_history()
        return run_id, [e.event_id for e in history.events
                        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]  # fmt: skip

    async def _reset(self, key: str, run_id: str, event_id: int) -> None:
        client = self.targets.client
        await client.workflow_service.reset_workflow_execution(
            ResetWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=key, run_id=run_id),
                reason="chaos: an operator resets the payout",
                workflow_task_finish_event_id=event_id,
                request_id=str(uuid.uuid4()),
            )
        )
        self.interventions[key] += 1
        self.resets += 1

    def _queues(self) -> str:
        task_queues = sorted({p.task_queue for p in self.targets.planned.values()})
        return " OR ".join(f"TaskQueue = '{q}'" for q in task_queues)

    async def _terminate_restart(self) -> None:
        """Terminate a running payout, then start it again (the same request) a few seconds
        later, as an operator who ``temporal workflow terminate``s and resubmits would."""
        running = [(f.id, f.run_id) async for f in self.targets.client.list_workflows(
            f"ExecutionStatus = 'Running' AND ({self._queues()})", limit=500)]  # fmt: skip
        candidates = sorted((key, run) for key, run in running if self._may_intervene(key))
        if not candidates:
            raise RuntimeError("no running payout to terminate")
        key, run_id = self.rng.choice(candidates)
        await self.targets.client.get_workflow_handle(key, run_id=run_id).terminate(
            reason="chaos: an operator terminates the payout"
        )
        self.interventions[key] += 1
        self.terminations += 1
        self._background(self._start_again(key, self.rng.uniform(1, 5)), self._pending)

    async def _start_again(self, key: str, after: float) -> None:
        await asyncio.sleep(after)
        p = self.targets.planned[key]
        payouts = PayoutClient(self.targets.client, p.task_queue)
        for _ in range(RESTART_TRIES):
            try:
                await payouts.pay(request_of(p))
                self.restarts["started"] += 1
                return
            except RPCError as exc:  # the Temporal server may be restarting
                log.debug("start %s again: %s", key, exc)
            except IdempotencyConflict:
                # A conflicting request (the run's own "another amount") holds the key: it
                # fails on the DB's record of the first request; then the start goes through.
                self.restarts["waited for a conflicting run"] += 1
            await asyncio.sleep(1)
        self.restarts["never started"] += 1
        log.error("%s: terminated and not started again for %d s", key, RESTART_TRIES)
