"""One chaos run: K payouts across every operating mode while everything breaks, then
the audit (:mod:`bench.chaos.audit`).

The run, all of it drawn from one seed:

1. start devnet (a small Soroban ledger capacity, so that a queue surge is cheap), the
   Temporal dev server (on a database file) and one worker process per mode
   (:data:`~bench.chaos.cluster.MODES`); fund each mode's payout account, its channels, a
   few destinations and the outside parties (queue fillers, their sink, a relayer:
   :mod:`bench.chaos.outside`); note every balance and the first ledger of the run;
2. start the K payouts over ``arrival_seconds``, each in a mode drawn by weight; some
   are started two or three times at once, some again after they finished, and some
   under the same key with another amount (which must be refused, or, once the first run
   failed, end in a failed run that pays nothing);
3. meanwhile inject faults (:mod:`bench.chaos.faults`: the network's, the processes', the
   outside parties' and an operator's resets and terminations) and play the external
   signer (:mod:`bench.chaos.signer`);
4. when the last payout has been started and ``tail_seconds`` more have passed: heal
   everything, wait until every payout is settled (or waits for a signature that will
   never come), let a few more ledgers close, and audit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from stellar_sdk import Keypair
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from bench.chaos import audit
from bench.chaos.cluster import FILLERS, MODES, PASSPHRASE, AppDatabase, Cluster, ModeAccounts
from bench.chaos.faults import FaultInjector, OutsideActors, Targets
from bench.chaos.outside import FrontRun, OutsideAccounts, QueueFiller, Relayer, SurgeStats
from bench.chaos.replay import replay_histories
from bench.chaos.signer import ExternalSigner, SignerStats
from bench.payout_throughput import fund_accounts
from payouts import db
from payouts.client import PayoutClient
from payouts.errors import IdempotencyConflict
from payouts.models import PayoutRequest, PayoutState
from workflows.payout import PAYOUT_STATUS

log = logging.getLogger("chaos")

SETTLE_LEDGERS = 6  # after the last payout settles: anything still queued is applied or dropped


@dataclass(frozen=True)
class ChaosConfig:
    payouts: int = 100
    seed: int = 1
    ledger_ms: int = 1000
    arrival_seconds: float = 60.0
    tail_seconds: float = 20.0
    fault_interval: float = 2.0
    destinations: int = 8
    database: str = "sqlite"  # or "postgresql"
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    settle_timeout: float = 600.0
    work: Path | None = None


@dataclass
class OutsideStats:
    """What the outside parties and the operator did, and how the network answered the engine."""

    surge: SurgeStats
    front_runs: list[FrontRun]
    relayer_misses: Counter[str]
    resets: int
    terminations: int
    restarts: Counter[str]
    engine_refusals: Counter[str]  # devnet's ERROR answers to the engine's sources, by code


@dataclass
class ChaosResult:
    config: ChaosConfig
    report: audit.AuditReport
    faults: Counter[str]
    signer: SignerStats
    starts: Counter[str]
    unsettled: list[str]
    wall_seconds: float
    work: Path
    outside: OutsideStats
    replayed: int  # runs whose histories were replayed
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        r, o = self.report, self.outside
        lines = [
            f"chaos run: K = {self.config.payouts}, seed {self.config.seed}, {self.config.database} app DB, "
            f"ledgers every {self.config.ledger_ms} ms; logs in {self.work}",
            f"wall time: {self.wall_seconds:.0f} s",
            "faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
            f"  total {sum(self.faults.values())}",
            "starts: " + ", ".join(f"{k} {v}" for k, v in sorted(self.starts.items())),
            "external signer plans: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.signer.answers.items()))
            + f"; wrong answers refused {self.signer.rejected}",
            "payouts by outcome: " + ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items())),
            "failures by reason: " + (", ".join(f"{k} {v}" for k, v in sorted(r.failure_reasons.items())) or "none"),
            f"applied payments {r.applied_payments} ({r.paid_by_outside} carried by the outside relayer); "
            f"outside transfers {r.outside_transfers}; fees charged {r.fees_charged} stroops",
            "queue fillers: " + _counts(o.surge.answers) + f" over {o.surge.surges} surges "
            f"({o.surge.rounds} rounds); engine envelopes "
            "refused: " + _counts(o.engine_refusals),
            f"relayer: {len(o.front_runs)} front-runs paid"
            + (f", misses: {_counts(o.relayer_misses)}" if o.relayer_misses else ""),
            f"operator: {o.resets} payouts reset, {o.terminations} terminated (started again: {_counts(o.restarts)})",
            f"histories replayed: {self.replayed} runs",
            f"duplicates {r.count('duplicate')}, lost {r.count('lost')}, "
            f"disagreements {r.count('disagreement')}, parked {r.count('parked')}, "
            f"unknown payments {r.count('unknown payment')}, "
            f"balance mismatches {r.count('balance')}, other violations "
            f"{len(self.violations) - len(r.violations)}",
        ]
        lines.extend(self.violations)
        return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def _plan(config: ChaosConfig, modes: list[ModeAccounts], destinations: list[str]) -> list[audit.PlannedPayout]:
    rng = random.Random(f"{config.seed}:plan")
    weights = [m.mode.weight for m in modes]
    planned = []
    for index in range(config.payouts):
        mode = rng.choices(modes, weights)[0]
        planned.append(
            audit.PlannedPayout(
                index=index,
                key=f"chaos:{config.seed}:{index}",
                mode=mode.mode.name,
                task_queue=mode.task_queue,
                payer=mode.payer.public_key,
                destination=rng.choice(destinations),
                stroops=audit.planned_stroops(index),
            )
        )
    return planned


class Workload:
    """Starts the planned payouts, with duplicate, late and conflicting starts."""

    def __init__(
        self, client: Client, config: ChaosConfig, planned: list[audit.PlannedPayout], started: set[str]
    ) -> None:
        self.client = client
        self.config = config
        self.planned = planned
        self.started = started  # keys started at least once, for the operator's faults
        self.rng = random.Random(f"{config.seed}:starts")
        self.starts: Counter[str] = Counter()
        self.violations: list[str] = []

    async def run(self) -> None:
        origin = time.monotonic()
        gap = self.config.arrival_seconds / max(1, len(self.planned))
        tasks = []
        for p in self.planned:
            await asyncio.sleep(max(0.0, origin + p.index * gap - time.monotonic()))
            copies = self.rng.choices([1, 2, 3], [0.8, 0.12, 0.08])[0]
            again, conflict = self.rng.random() < 0.1, self.rng.random() < 0.05
            tasks.append(asyncio.create_task(self._one(p, copies, again, conflict)))
            if (p.index + 1) % 250 == 0:
                log.info("started %d of %d payouts", p.index + 1, len(self.planned))
        await asyncio.gather(*tasks)

    async def _start(self, p: audit.PlannedPayout, request: PayoutRequest) -> None:
        payouts = PayoutClient(self.client, p.task_queue)
        for _ in range(120):  # the Temporal server may be restarting
            try:
                await payouts.pay(request)
                self.started.add(p.key)
                return
            except RPCError as exc:
                log.debug("start %s: %s", p.key, exc)
                await asyncio.sleep(1)
        self.violations.append(f"START FAILED {p.key}: Temporal refused the start for 2 minutes")

    async def _one(self, p: audit.PlannedPayout, copies: int, again: bool, conflict: bool) -> None:
        request = audit.request_of(p)
        self.starts["payouts"] += 1
        self.starts["concurrent duplicate starts"] += copies - 1
        await asyncio.gather(*(self._start(p, request) for _ in range(copies)))
        if conflict:
            await self._conflict(p)
        if again:
            await asyncio.sleep(self.rng.uniform(5, 30))
            self.starts["late duplicate starts"] += 1
            await self._start(p, request)

    async def _conflict(self, p: audit.PlannedPayout) -> None:
        try:
            await self._start(p, audit.request_of(p, conflicting=True))
        except IdempotencyConflict:
            self.starts["conflicting starts refused"] += 1
            return
        # Accepted only if the first run had already failed: that run must fail too (the
        # DB holds the key's first request) and pay nothing, which the audit checks.
        self.starts["conflicting starts after a failure"] += 1


async def _unsettled(client: Client, signer: ExternalSigner, planned: list[audit.PlannedPayout]) -> list[str]:
    """Keys whose latest run is still going, other than those waiting for a signature the
    signer will never give and those PARKED (only an operator moves them: the audit
    reports them)."""
    pending = []
    by_key = {p.key: p for p in planned}
    queues = " OR ".join(f"TaskQueue = '{q}'" for q in {p.task_queue for p in planned})
    async for found in client.list_workflows(f"ExecutionStatus = 'Running' AND ({queues})"):
        p = by_key.get(found.id)
        if p is None:
            continue
        if signer.plans.get(p.key) == "never":
            continue
        if found.typed_search_attributes.get(PAYOUT_STATUS) == PayoutState.PARKED.value:
            continue
        pending.append(p.key)
    return pending


async def _wait_settled(
    client: Client, signer: ExternalSigner, planned: list[audit.PlannedPayout], timeout: float
) -> list[str]:
    deadline = time.monotonic() + timeout
    pending: list[str] = []
    while time.monotonic() < deadline:
        try:
            pending = await _unsettled(client, signer, planned)
        except RPCError:
            pending = ["(Temporal unavailable)"]
        if not pending:
            return []
        log.info("%d payouts still in flight: %s", len(pending), ", ".join(pending[:5]))
        await asyncio.sleep(10)  # listing thousands of runs is a load on the Temporal server
    return pending


async def _engine_refusals(session: aiohttp.ClientSession, rpc_url: str, sources: set[str]) -> Counter[str]:
    """devnet's ERROR answers to the engine's sendTransaction calls (its admin statistics)."""
    async with session.get(f"{rpc_url}/admin/stats") as response:
        answers: dict[str, dict[str, int]] = (await response.json())["send_answers"]
    found: Counter[str] = Counter()
    for source, counts in answers.items():
        if source in sources:
            found.update({answer: n for answer, n in counts.items() if answer.startswith("ERROR")})
    return found


async def run_chaos(config: ChaosConfig) -> ChaosResult:
    began = time.monotonic()
    work = config.work or Path(tempfile.mkdtemp(prefix="payouts-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    database = AppDatabase.sqlite(work) if config.database == "sqlite" else AppDatabase.postgresql(config.postgres_url)
    modes = [ModeAccounts.new(m) for m in MODES]
    outside = OutsideAccounts.new(FILLERS)
    cluster = Cluster(work, database, config.ledger_ms, modes)
    try:
        await asyncio.to_thread(cluster.start_devnet)
        await asyncio.to_thread(cluster.start_temporal)
        db.upgrade_database(database.url)
        destinations = [Keypair.random().public_key for _ in range(config.destinations)]
        accounts = [a for m in modes for a in (m.payer.public_key, *m.channels)] + destinations + outside.public_keys
        async with aiohttp.ClientSession() as session, SorobanServerAsync(f"{cluster.rpc_url}/soroban/rpc") as rpc:
            await fund_accounts(cluster.rpc_url, accounts)
            filler = QueueFiller(rpc, outside, PASSPHRASE, config.ledger_ms)
            await filler.prepare()
            start_ledger = (await rpc.get_latest_ledger()).sequence + 1
            while (await rpc.get_latest_ledger()).sequence < start_ledger:
                await asyncio.sleep(config.ledger_ms / 4000)
            before = await audit.read_balances(rpc, accounts)
            for m in modes:
                cluster.start_worker(m.mode.name)
            client = await Client.connect(cluster.temporal_address, data_converter=pydantic_data_converter)
            planned = _plan(config, modes, destinations)
            app_db = database.engine()
            targets = Targets(client, {p.key: p for p in planned}, app_db)
            workload = Workload(client, config, planned, targets.started)
            actors = OutsideActors(filler, Relayer(rpc, outside.relayer, PASSPHRASE))
            injector = FaultInjector(cluster, session, config.seed, config.fault_interval, targets, actors)
            signer = ExternalSigner(client, modes, config.seed)
            stop_faults, finished = asyncio.Event(), asyncio.Event()
            fault_task = asyncio.create_task(injector.run(stop_faults))
            signer_task = asyncio.create_task(signer.run(finished))
            supervisor = asyncio.create_task(cluster.supervise(finished, injector.kept_down))
            await workload.run()
            await asyncio.sleep(config.tail_seconds)
            stop_faults.set()
            await fault_task
            await injector.heal()
            unsettled = await _wait_settled(client, signer, planned, config.settle_timeout)
            target = (await rpc.get_latest_ledger()).sequence + SETTLE_LEDGERS
            while (await rpc.get_latest_ledger()).sequence < target:
                await asyncio.sleep(config.ledger_ms / 4000)
            finished.set()
            await signer_task
            await supervisor

            ledger = await audit.read_ledger(rpc, start_ledger, PASSPHRASE)
            after = await audit.read_balances(rpc, accounts)
            temporal = await audit.read_temporal(client, planned)
            replayed, nondeterministic = await replay_histories(client, planned, work)
            facts = audit.read_database(app_db, planned)
            app_db.dispose()
            engine_sources = {a for m in modes for a in m.sources}
            refusals = await _engine_refusals(session, cluster.rpc_url, engine_sources)
        moves = {a: after.get(a, 0) - before.get(a, 0) for a in accounts}
        report = audit.check(planned, ledger, temporal, facts, moves, frozenset(outside.public_keys))
        violations = [v.render() for v in report.violations] + workload.violations + nondeterministic
        violations += [f"ACCEPTED WRONG SIGNATURE {key}" for key in signer.stats.accepted_wrong]
        violations += [f"UNSETTLED {key}: still in flight {config.settle_timeout:.0f} s after healing"
                       for key in unsettled]  # fmt: skip
        stats = OutsideStats(filler.stats, injector.front_runs, injector.relayer_misses,
                             injector.resets, injector.terminations, injector.restarts, refusals)  # fmt: skip
        return ChaosResult(config, report, injector.injected, signer.stats, workload.starts, unsettled,
                           time.monotonic() - began, work, stats, replayed, violations)  # fmt: skip
    finally:
        await asyncio.to_thread(cluster.stop)
        database.drop()
