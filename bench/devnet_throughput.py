"""devnet throughput and ledger-close drift benchmark.

    python -m bench.devnet_throughput [--accounts 1000] [--concurrency 32] [--rounds 6]

Starts its own devnet (``python -m devnet --ledger-close-ms 100``) as a subprocess and
measures, in one run:

(a) sendTransaction + apply throughput with many source accounts. ``--accounts`` accounts
    are funded through friendbot; for each one a SAC XLM ``transfer`` is built, prepared
    with simulateTransaction and signed, for ``--rounds`` consecutive sequence numbers —
    all before the clock starts. Then every envelope is sent over HTTP (aiohttp,
    ``--concurrency`` requests in flight); an account's next round is sent as soon as its
    previous transaction shows up in getTransactions (one queued transaction per source
    account is the rule). The figure is transactions applied (seen SUCCESS by the
    getTransactions poller) per second of wall time. Next to it, two baselines from the
    same run: the HTTP ceiling (getHealth requests per second over the same client path)
    and the same envelopes applied in-process by ``Devnet.submit`` + ``close_ledger``.

(b) ledger close-time drift at ``--ledger-close-ms`` (100): the close intervals devnet
    records (``GET /admin/stats``) while idle and while (a) runs — mean, p95, max,
    drift = |mean − target| / target, and the cumulative schedule drift (sum of the
    intervals − n × target: the schedule is fixed, so this stays within one interval
    unless closes fall behind).

Wall-clock rates depend on what else the machine runs; the "devnet CPU/op" column (CPU
time of the devnet process, or of the in-process baseline, per transaction or request)
is the steadier figure for comparing devnet versions, and the table prints the load
average so a busy machine shows.

A benchmark, not a test: it prints a table and, with ``--check``, exits 1 when a target
(≥ 300 tx/s, drift ≤ 10%) is missed. ``--profile FILE`` runs the devnet process under
cProfile (slower) and prints its top entries; ``--profile-inprocess FILE`` does the same
for the in-process baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import pstats
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from stellar_sdk import (
    Account,
    Asset,
    Keypair,
    Network,
    SorobanServerAsync,
    TransactionBuilder,
    TransactionEnvelope,
    scval,
)

PASSPHRASE = Network.STANDALONE_NETWORK_PASSPHRASE
XLM = 10_000_000
FRIENDBOT_BALANCE = 10_000 * XLM
TARGET_TPS = 300
TARGET_DRIFT = 0.10
JSON_HEADERS = {"Content-Type": "application/json"}


# -- the devnet process ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc); NaN where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


@dataclass
class DevnetProcess:
    url: str
    pid: int

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


@contextmanager
def devnet_process(ledger_close_ms: int, profile: Path | None) -> Iterator[DevnetProcess]:
    port = _free_port()
    prefix = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    args = [
        *prefix,
        "-m",
        "devnet",
        "--port",
        str(port),
        "--ledger-close-ms",
        str(ledger_close_ms),
        "--max-tx-set-size",
        "1000",
    ]
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/admin/stats", timeout=1).read()
            break
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"devnet did not start: {stderr}") from None
            time.sleep(0.05)
    try:
        yield DevnetProcess(url, process.pid)
    finally:
        process.terminate()  # SIGTERM: aiohttp shuts down cleanly, so cProfile writes its file
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Client:
    """Raw JSON-RPC and admin calls over one aiohttp session."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self._id = 0

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._id, "method": method}
        if params is not None:
            message["params"] = params
        async with self.session.post(self.url, data=json.dumps(message).encode(), headers=JSON_HEADERS) as response:
            body = json.loads(await response.read())
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error']}")
        result: dict[str, Any] = body["result"]
        return result

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/admin/stats") as response:
            body: dict[str, Any] = await response.json()
            return body

    async def fund(self, address: str) -> int:
        """Friendbot; the ledger that created the account (its sequence is ledger << 32)."""
        async with self.session.get(f"{self.url}/friendbot", params={"addr": address}) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"friendbot: {response.status} {body}")
            return int(body["ledger"])


# -- preparation (not timed) -----------------------------------------------------------


@dataclass
class Prepared:
    keypairs: list[Keypair]
    sequences: list[int]  # each account's sequence number after funding
    envelopes: list[list[str]]  # [account][round] base64 envelopes
    hashes: list[list[str]]


async def prepare(url: str, accounts: int, rounds: int, concurrency: int) -> Prepared:
    keypairs = [Keypair.random() for _ in range(accounts)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        client = Client(url, session)
        # Friendbot batches waiting requests (100 per transaction): keep many in flight.
        ledgers = await asyncio.gather(*(client.fund(kp.public_key) for kp in keypairs))
    sequences = [ledger << 32 for ledger in ledgers]
    envelopes: list[list[str]] = [[] for _ in keypairs]
    hashes: list[list[str]] = [[] for _ in keypairs]
    limit = asyncio.Semaphore(concurrency)
    native = Asset.native().contract_id(PASSPHRASE)

    async def build(index: int, soroban: SorobanServerAsync) -> None:
        source = keypairs[index]
        destination = keypairs[(index + 1) % accounts].public_key
        tx = (
            TransactionBuilder(Account(source.public_key, sequences[index]), PASSPHRASE, base_fee=100)
            .append_invoke_contract_function_op(
                native,
                "transfer",
                [scval.to_address(source.public_key), scval.to_address(destination), scval.to_int128(XLM)],
            )
            .set_timeout(900)
            .build()
        )
        async with limit:
            prepared = await soroban.prepare_transaction(tx)
        # The simulation does not depend on the sequence number: later rounds reuse it.
        unsigned = prepared.to_xdr()
        for round_ in range(rounds):
            envelope = TransactionEnvelope.from_xdr(unsigned, PASSPHRASE)
            envelope.transaction.sequence = sequences[index] + 1 + round_
            envelope.sign(source)
            envelopes[index].append(envelope.to_xdr())
            hashes[index].append(envelope.hash_hex())

    async with SorobanServerAsync(url) as soroban:
        await asyncio.gather(*(build(i, soroban) for i in range(accounts)))
    return Prepared(keypairs, sequences, envelopes, hashes)


# -- measurements ------------------------------------------------------------------------


@dataclass
class LoadResult:
    sent: int = 0
    applied: int = 0
    successful: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    elapsed: float = 0.0
    send_latencies_ms: list[float] = field(default_factory=list)
    first_ledger: int = 0
    last_ledger: int = 0
    ledgers_used: int = 0

    @property
    def tps(self) -> float:
        return self.successful / self.elapsed if self.elapsed else 0.0


async def run_load(
    client: Client, prep: Prepared, rounds: int, concurrency: int, poll_ms: int, timeout: float
) -> LoadResult:
    result = LoadResult()
    where = {h: (i, r) for i, hs in enumerate(prep.hashes) for r, h in enumerate(hs)}
    expected = len(where)
    queue: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
    for index in range(len(prep.envelopes)):
        queue.put_nowait((index, 0))
    done = asyncio.Event()
    applied_ledgers: set[int] = set()

    def finished() -> bool:
        return result.applied + sum(result.errors.values()) >= expected

    async def sender() -> None:
        while (item := await queue.get()) is not None:
            index, round_ = item
            started = time.perf_counter()
            body = await client.rpc("sendTransaction", {"transaction": prep.envelopes[index][round_]})
            result.send_latencies_ms.append((time.perf_counter() - started) * 1000)
            status = body["status"]
            if status in ("PENDING", "DUPLICATE"):
                result.sent += 1
            elif status == "TRY_AGAIN_LATER":
                result.retries += 1
                await asyncio.sleep(0.05)
                queue.put_nowait(item)
            else:
                # The account's chain ends here: its later rounds will never be sent.
                result.errors[status] = result.errors.get(status, 0) + rounds - round_
                if finished():
                    done.set()

    async def poller(start_ledger: int) -> None:
        params: dict[str, Any] = {"startLedger": start_ledger, "pagination": {"limit": 200}}
        while not done.is_set():
            page = await client.rpc("getTransactions", params)
            for tx in page["transactions"]:
                position = where.get(tx["txHash"])
                if position is None:
                    continue
                result.applied += 1
                applied_ledgers.add(tx["ledger"])
                if tx["status"] == "SUCCESS":
                    result.successful += 1
                else:
                    result.errors["FAILED"] = result.errors.get("FAILED", 0) + 1
                index, round_ = position
                if round_ + 1 < rounds:
                    queue.put_nowait((index, round_ + 1))
            params = {"pagination": {"cursor": page["cursor"], "limit": 200}}
            if finished():
                result.elapsed = time.perf_counter() - started
                done.set()
            elif len(page["transactions"]) < 200:
                await asyncio.sleep(poll_ms / 1000)

    # Our transactions land after the current latest ledger (which getTransactions accepts).
    start_ledger = (await client.stats())["latest_ledger"]
    started = time.perf_counter()
    senders = [asyncio.create_task(sender()) for _ in range(concurrency)]
    polling = asyncio.create_task(poller(start_ledger))
    waiting = asyncio.create_task(done.wait())
    finished_first, _ = await asyncio.wait(
        [waiting, polling, *senders], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    waiting.cancel()
    for task in finished_first:
        if task is not waiting and task.exception() is not None:
            for other in (polling, *senders):
                other.cancel()
            raise RuntimeError("the load failed") from task.exception()
    if not finished_first:
        print(f"warning: load did not finish within {timeout:.0f}s", file=sys.stderr)
    if not result.elapsed:
        result.elapsed = time.perf_counter() - started
    for _ in senders:
        queue.put_nowait(None)
    polling.cancel()
    await asyncio.gather(*senders, polling, return_exceptions=True)
    if applied_ledgers:
        result.first_ledger, result.last_ledger = min(applied_ledgers), max(applied_ledgers)
        result.ledgers_used = len(applied_ledgers)
    return result


async def http_ceiling(client: Client, requests: int, concurrency: int) -> float:
    """getHealth requests per second over the same client path (the harness/HTTP ceiling)."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.rpc("getHealth")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


@dataclass
class Drift:
    label: str
    intervals: list[float]
    target_ms: float

    @property
    def n(self) -> int:
        return len(self.intervals)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.intervals) if self.intervals else math.nan

    @property
    def p95(self) -> float:
        return percentile(self.intervals, 0.95)

    @property
    def drift(self) -> float:
        return abs(self.mean - self.target_ms) / self.target_ms

    @property
    def cumulative_ms(self) -> float:
        return sum(self.intervals) - self.n * self.target_ms


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def intervals_since(client: Client, ledger_before: int) -> list[float]:
    """The close intervals of the ledgers closed after ``ledger_before`` (at most 200)."""
    stats = await client.stats()
    closes = stats["latest_ledger"] - ledger_before
    intervals: list[float] = stats["close_intervals_ms"]
    return intervals[-closes:] if closes > 0 else []


@dataclass
class InProcess:
    transactions: int
    successful: int
    submit_s: float
    close_s: float
    encode_s: float
    cpu_s: float  # process CPU time of submit + close

    @property
    def tps(self) -> float:
        return self.transactions / (self.submit_s + self.close_s)

    @property
    def tps_with_encoding(self) -> float:
        return self.transactions / (self.submit_s + self.close_s + self.encode_s)


def in_process(prep: Prepared, rounds: int, profile: Path | None) -> InProcess:
    """The same envelopes through ``Devnet.submit`` + ``close_ledger``, without HTTP."""
    from devnet.entries import AccountEntry, account_key
    from devnet.ledger import Devnet, QueueSettings
    from devnet.surge import SorobanLedgerLimits

    # One ledger takes every envelope of a round: no ledger limit may get in the way.
    settings = QueueSettings(soroban_limits=SorobanLedgerLimits.unlimited())
    devnet = Devnet(PASSPHRASE, max_tx_set_size=len(prep.envelopes) + 1, queue_settings=settings)
    for keypair, sequence in zip(prep.keypairs, prep.sequences, strict=True):
        devnet.state.entries[account_key(keypair.public_key)] = AccountEntry(
            keypair.public_key, balance=FRIENDBOT_BALANCE, seq_num=sequence, last_modified=1
        )
    profiler = cProfile.Profile() if profile else None
    submit_s = close_s = encode_s = cpu_s = 0.0
    successful = 0
    if profiler:
        profiler.enable()
    for round_ in range(rounds):
        cpu = time.process_time()
        started = time.perf_counter()
        for envelopes in prep.envelopes:
            sent = devnet.submit(envelopes[round_])
            if sent.status != "PENDING":
                raise RuntimeError(f"in-process submit: {sent.status}")
        submit_s += time.perf_counter() - started
        started = time.perf_counter()
        record = devnet.close_ledger()
        close_s += time.perf_counter() - started
        cpu_s += time.process_time() - cpu
        assert record is not None
        # What getTransaction(s) adds: the result and meta XDR of every applied transaction.
        started = time.perf_counter()
        for tx_hash in record.tx_hashes:
            tx = devnet.transactions[tx_hash]
            _ = tx.result_xdr, tx.result_meta_xdr
            successful += tx.successful
        encode_s += time.perf_counter() - started
    if profiler:
        profiler.disable()
        profiler.dump_stats(str(profile))
    return InProcess(len(prep.envelopes) * rounds, successful, submit_s, close_s, encode_s, cpu_s)


def print_profile(path: Path, title: str, top: int) -> None:
    if not path.exists():
        print(f"(no profile written to {path})")
        return
    print(f"\n== {title}: top {top} by own time ({path}) ==")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)
    print(f"== {title}: top {top} by cumulative time ==")
    stats.sort_stats("cumulative").print_stats(top)


# -- the run -------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    close_ms = args.ledger_close_ms
    total = args.accounts * args.rounds
    with devnet_process(close_ms, args.profile) as devnet:
        t = time.perf_counter()
        prep = await prepare(devnet.url, args.accounts, args.rounds, args.concurrency)
        print(
            f"prepared {args.accounts} funded accounts × {args.rounds} rounds = {total} signed SAC transfers "
            f"in {time.perf_counter() - t:.1f}s (not timed)",
            flush=True,
        )
        connector = aiohttp.TCPConnector(limit=args.concurrency + 2)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = Client(devnet.url, session)

            before = (await client.stats())["latest_ledger"]
            await asyncio.sleep(args.idle_closes * close_ms / 1000 + 0.05)
            idle = Drift("idle", await intervals_since(client, before), close_ms)
            print(f"idle: {idle.n} closes watched", flush=True)

            cpu = devnet.cpu()
            ceiling = await http_ceiling(client, total, args.concurrency)
            ceiling_cpu = (devnet.cpu() - cpu) / total
            print(f"getHealth: {ceiling:.0f} req/s", flush=True)

            before = (await client.stats())["latest_ledger"]
            cpu, client_cpu = devnet.cpu(), time.process_time()
            load = await run_load(client, prep, args.rounds, args.concurrency, args.poll_ms, args.timeout)
            load_cpu = (devnet.cpu() - cpu) / max(load.successful, 1)
            client_cpu = (time.process_time() - client_cpu) / max(load.successful, 1)
            loaded = Drift("under load", await intervals_since(client, before), close_ms)
            print(f"load: {load.successful}/{total} applied in {load.elapsed:.2f}s", flush=True)

    inproc = in_process(prep, args.rounds, args.profile_inprocess)

    # -- report ----------------------------------------------------------------------
    def us(seconds: float) -> str:
        return f"{seconds * 1e6:7.0f} µs" if not math.isnan(seconds) else "      n/a"

    lat = load.send_latencies_ms
    n = inproc.transactions
    rows = [
        (
            "(a) HTTP sendTransaction → applied",
            f"{load.tps:6.0f} tx/s",
            us(load_cpu),
            f"{load.successful}/{total} SUCCESS in {load.elapsed:.2f}s over {load.ledgers_used} ledgers; "
            f"client CPU {client_cpu * 1e6:.0f} µs/tx",
        ),
        (
            "    sendTransaction latency",
            f"{percentile(lat, 0.5):6.1f} ms",
            "",
            f"p50; p95 {percentile(lat, 0.95):.1f} ms; {load.retries} TRY_AGAIN_LATER retries; "
            f"errors: {load.errors or 'none'}",
        ),
        (
            "    baseline: getHealth over HTTP",
            f"{ceiling:6.0f} /s",
            us(ceiling_cpu),
            "harness/HTTP ceiling: same client, connector and concurrency",
        ),
        (
            "    baseline: in-process submit+close",
            f"{inproc.tps:6.0f} tx/s",
            us(inproc.cpu_s / n),
            f"Devnet.submit {inproc.submit_s / n * 1e6:.0f} µs/tx + close_ledger {inproc.close_s / n * 1e6:.0f} µs/tx "
            f"(wall), no HTTP",
        ),
        (
            "    baseline: + result/meta XDR",
            f"{inproc.tps_with_encoding:6.0f} tx/s",
            "",
            f"+ {inproc.encode_s / n * 1e6:.0f} µs/tx reading the result/meta XDR getTransactions returns "
            f"({inproc.successful} SUCCESS)",
        ),
        ("    ratio HTTP / getHealth ceiling", f"{load.tps / ceiling:6.2f}", "", ""),
        (
            "    ratio HTTP / in-process",
            f"{load.tps / inproc.tps:6.2f}",
            "",
            f"{load.tps / inproc.tps_with_encoding:.2f} against in-process + XDR; "
            f"CPU per tx in-process / devnet under HTTP = {inproc.cpu_s / n / load_cpu:.2f}",
        ),
    ]
    for drift in (idle, loaded):
        rows.append(
            (
                f"(b) close interval, {drift.label}",
                f"{drift.mean:6.1f} ms",
                "",
                f"n={drift.n}; p95 {drift.p95:.1f} ms; max {max(drift.intervals, default=math.nan):.1f} ms; "
                f"drift |mean−{close_ms}|/{close_ms} = {drift.drift:.1%}; "
                f"cumulative {drift.cumulative_ms:+.1f} ms",
            )
        )
    width = max(len(r[0]) for r in rows)
    line = "-" * 120
    print()
    print(
        f"devnet benchmark: {args.accounts} accounts × {args.rounds} rounds, concurrency {args.concurrency}, "
        f"--ledger-close-ms {close_ms}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(line)
    print(f"{'':<{width}}  {'rate':>12}  {'devnet CPU/op':>13}  notes")
    print(line)
    for name, value, cpu_text, note in rows:
        print(f"{name:<{width}}  {value:>12}  {cpu_text:>13}  {note}")
    print(line)
    ok_tps = load.tps >= TARGET_TPS and load.successful == total
    ok_drift = all(d.n and d.drift <= TARGET_DRIFT for d in (idle, loaded))
    print(
        f"target ≥ {TARGET_TPS} tx/s: {'met' if ok_tps else 'MISSED'}; "
        f"target drift ≤ {TARGET_DRIFT:.0%}: {'met' if ok_drift else 'MISSED'}"
    )
    if args.profile:
        print_profile(args.profile, "devnet process (cProfile)", args.profile_top)
    if args.profile_inprocess:
        print_profile(args.profile_inprocess, "in-process submit+close", args.profile_top)
    return 0 if (ok_tps and ok_drift) or not args.check else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.devnet_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000, help="source accounts (default 1000)")
    parser.add_argument(
        "--rounds", type=int, default=6, help="transactions per account, consecutive sequence numbers (default 6)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP requests in flight (default 32)")
    parser.add_argument("--ledger-close-ms", type=int, default=100, help="devnet ledger cadence (default 100)")
    parser.add_argument("--idle-closes", type=int, default=100, help="ledger closes to watch while idle (default 100)")
    parser.add_argument("--poll-ms", type=int, default=50, help="getTransactions poll interval (default 50)")
    parser.add_argument("--timeout", type=float, default=120, help="give up on the load after this many seconds")
    parser.add_argument("--profile", type=Path, help="run devnet under cProfile, write the stats here")
    parser.add_argument("--profile-inprocess", type=Path, help="cProfile the in-process baseline, write the stats here")
    parser.add_argument("--profile-top", type=int, default=25, help="profile entries to print (default 25)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.accounts < 2 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--accounts must be ≥ 2, --rounds and --concurrency ≥ 1")
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
