"""The payout engine's database: table models, engine factory, migrations and a repository.

This module owns the app DB (``DATABASE_URL``; SQLite by default, PostgreSQL supported):

- table ``payouts``: one row per idempotency key (UNIQUE), the durable record of what was
  asked (payout ID, destination, amount as given and in stroops, asset, request
  fingerprint) and where it stands (:class:`~payouts.models.PayoutState`, tx hash,
  ledger, fee charged, last error);
- table ``transactions`` (the public contract of shared/DESIGN.md §3): one row per
  envelope ever built for a payout, keyed by its hash (UNIQUE), with its XDR (unsigned
  or signed; an envelope carries no secret), source account, sequence number, time bound
  and status ``queued`` → ``submitted`` → ``confirmed`` | ``failed`` | ``expired``
  (CHECK constraint). The seed's four monitoring queries run verbatim against it;
- the Alembic migrations in ``payouts/migrations/`` (:func:`upgrade_database`), which
  are the only thing that creates or changes the schema;
- the repository functions the activities call.

Repository rules:

- Every call is its own short transaction on a sync engine and is safe to repeat
  (activities retry; a retried call returns the row already written).
- Results are plain frozen dataclasses (:class:`PayoutRecord`, :class:`EnvelopeRecord`),
  never live ORM rows: they outlive their session, can cross threads and are
  serialisable by Temporal's default data converter.
- Timestamps are timezone-aware UTC ``datetime`` values (PostgreSQL ``timestamptz``;
  SQLite stores UTC wall time and they are made aware again on read), taken from the
  writing worker's clock.
- Settled facts are never rewritten: a ``confirmed`` envelope keeps its status, ledger
  and fee (:class:`IllegalTransition`); a CONFIRMED payout stays CONFIRMED; a payout
  with a confirmed envelope is never marked FAILED (promise 7). :func:`confirmed_envelope`
  is the durable answer to "did this key already pay?" once Temporal's history is gone
  (promise 1).
- Races are settled by the database, not by reads: :func:`record_payout` relies on the
  UNIQUE idempotency key (insert, and on ``IntegrityError`` re-read); updates lock their
  row (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite every write transaction is
  ``BEGIN IMMEDIATE``, i.e. takes the single writer lock up front, waiting up to
  ``busy_timeout``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Field, Session, SQLModel, col, select

from payouts.errors import AlreadyPaid, IdempotencyConflict
from payouts.models import PayoutRequest, PayoutState

__all__ = [
    "AlreadyPaid",
    "EnvelopeConflict",
    "EnvelopeNotFound",
    "EnvelopeRecord",
    "EnvelopeStatus",
    "IdempotencyConflict",
    "IllegalTransition",
    "Payment",
    "PayoutNotFound",
    "PayoutRecord",
    "PayoutRow",
    "RecordNotFound",
    "TransactionRow",
    "confirmed_envelope",
    "current_revision",
    "envelope",
    "envelopes_in",
    "envelopes_of",
    "get_payout",
    "make_engine",
    "mark_envelope",
    "mark_submitted",
    "note_envelope_error",
    "payment_in",
    "payment_of",
    "payout_row",
    "record_envelope",
    "record_payout",
    "set_payout_state",
    "transaction",
    "upgrade_database",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE = "payouts_write_transaction"  # execution option: this transaction will write
_TX_HASH = re.compile(r"^[0-9a-f]{64}$")
# PostgreSQL advisory lock key taken while migrating, so workers starting together migrate once.
_MIGRATION_LOCK = 0x5041_594F_5554  # "PAYOUT"
_NOTE_LIMIT = 500


class EnvelopeStatus(StrEnum):
    """``transactions.status``: the seed's vocabulary (DESIGN §3)."""

    QUEUED = "queued"  # built (and maybe signed), recorded, not yet sent
    SUBMITTED = "submitted"  # sent at least once; may be in a ledger
    CONFIRMED = "confirmed"  # applied successfully in a ledger (final)
    FAILED = "failed"  # the network rejected it or applied it unsuccessfully
    EXPIRED = "expired"  # provably dead: past its bound and not in any ledger


class RecordNotFound(LookupError):
    """No row for the key or hash asked about."""


class PayoutNotFound(RecordNotFound):
    """No payout is recorded under the idempotency key."""


class EnvelopeNotFound(RecordNotFound):
    """No envelope is recorded under the transaction hash."""


class IllegalTransition(RuntimeError):
    """A change that would rewrite a settled fact (a confirmed envelope or payout, or
    FAILED for a payout that has a confirmed envelope)."""


class EnvelopeConflict(RuntimeError):
    """A transaction hash recorded again with a different payout, attempt, source account,
    sequence number or time bound: the same hash is the same transaction, so this is a bug."""


# ---------------------------------------------------------------------------------------
# Column types


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp: ``timestamptz`` on PostgreSQL; on SQLite the UTC
    wall time, made aware again on read. Naive datetimes are refused on write."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A 64-bit key on PostgreSQL (BIGSERIAL); SQLite autoincrements only an INTEGER PRIMARY KEY.
_ID = BigInteger().with_variant(Integer(), "sqlite")


def _now() -> datetime:
    return datetime.now(UTC)


def _in(values: type[StrEnum]) -> str:
    return ", ".join(f"'{member.value}'" for member in values)


# ---------------------------------------------------------------------------------------
# Table models (the schema itself is created by the migrations; a test checks they agree)


class PayoutRow(SQLModel, table=True):
    """Table ``payouts``: one row per idempotency key."""

    __tablename__ = "payouts"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_payouts_idempotency_key"),
        CheckConstraint(f"status IN ({_in(PayoutState)})", name="ck_payouts_status"),
        CheckConstraint("stroops > 0", name="ck_payouts_stroops_positive"),
        Index("ix_payouts_status", "status"),
    )

    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True, autoincrement=True))
    idempotency_key: str = Field(sa_column=Column(String(128), nullable=False))
    payout_id: str = Field(sa_column=Column(String(128), nullable=False))
    destination: str = Field(sa_column=Column(String(64), nullable=False))
    amount: str = Field(sa_column=Column(String(32), nullable=False))
    stroops: int = Field(sa_column=Column(BigInteger, nullable=False))
    asset: str = Field(sa_column=Column(String(80), nullable=False))
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False))
    status: str = Field(sa_column=Column(String(32), nullable=False))
    tx_hash: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    ledger: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    fee_charged: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class TransactionRow(SQLModel, table=True):
    """Table ``transactions``: one row per envelope ever built for a payout."""

    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("tx_hash", name="uq_transactions_tx_hash"),
        CheckConstraint(f"status IN ({_in(EnvelopeStatus)})", name="ck_transactions_status"),
        Index("ix_transactions_idempotency_key", "idempotency_key"),
        # pending count, failed rows by updated_at, confirmed rows (monitoring queries 1, 2, 4)
        Index("ix_transactions_status_updated_at", "status", "updated_at"),
        # success rate over the last 24 hours (monitoring query 3)
        Index("ix_transactions_created_at", "created_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True, autoincrement=True))
    idempotency_key: str = Field(
        sa_column=Column(
            String(128),
            ForeignKey("payouts.idempotency_key", name="fk_transactions_idempotency_key_payouts"),
            nullable=False,
        )
    )
    attempt: int = Field(sa_column=Column(Integer, nullable=False))
    tx_hash: str = Field(sa_column=Column(String(64), nullable=False))
    envelope_xdr: str = Field(sa_column=Column(Text, nullable=False))
    source_account: str = Field(sa_column=Column(String(69), nullable=False))
    sequence: int = Field(sa_column=Column(BigInteger, nullable=False))
    max_time: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    fee_charged: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    ledger: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    confirmed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    # The latest ledger when it was built: it can be in no ledger up to this one (None on
    # rows recorded before it was kept: such an envelope is never dead by retention alone).
    built_at_ledger: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Channels: the nonce of the payout account's authorization entry it carries.
    auth_nonce: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


# ---------------------------------------------------------------------------------------
# Records returned by the repository


@dataclass(frozen=True, slots=True)
class PayoutRecord:
    """A ``payouts`` row, detached from any session."""

    id: int
    idempotency_key: str
    payout_id: str
    destination: str
    amount: str
    stroops: int
    asset: str
    fingerprint: str
    status: PayoutState
    tx_hash: str | None
    ledger: int | None
    fee_charged: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: PayoutRow) -> PayoutRecord:
        assert row.id is not None
        return cls(
            id=row.id,
            idempotency_key=row.idempotency_key,
            payout_id=row.payout_id,
            destination=row.destination,
            amount=row.amount,
            stroops=row.stroops,
            asset=row.asset,
            fingerprint=row.fingerprint,
            status=PayoutState(row.status),
            tx_hash=row.tx_hash,
            ledger=row.ledger,
            fee_charged=row.fee_charged,
            last_error=row.last_error,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class EnvelopeRecord:
    """A ``transactions`` row, detached from any session."""

    id: int
    idempotency_key: str
    attempt: int
    tx_hash: str
    envelope_xdr: str
    source_account: str
    sequence: int
    max_time: int
    status: EnvelopeStatus
    fee_charged: int | None
    ledger: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None
    built_at_ledger: int | None = None
    auth_nonce: int | None = None

    @classmethod
    def of(cls, row: TransactionRow) -> EnvelopeRecord:
        assert row.id is not None
        return cls(
            id=row.id,
            idempotency_key=row.idempotency_key,
            attempt=row.attempt,
            tx_hash=row.tx_hash,
            envelope_xdr=row.envelope_xdr,
            source_account=row.source_account,
            sequence=row.sequence,
            max_time=row.max_time,
            status=EnvelopeStatus(row.status),
            fee_charged=row.fee_charged,
            ledger=row.ledger,
            last_error=row.last_error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            confirmed_at=row.confirmed_at,
            built_at_ledger=row.built_at_ledger,
            auth_nonce=row.auth_nonce,
        )


# ---------------------------------------------------------------------------------------
# Engine and migrations


def make_engine(url: str) -> Engine:
    """An engine for ``DATABASE_URL``.

    ``postgresql://`` and ``postgres://`` URLs use the psycopg (3) driver; an explicit
    driver (``postgresql+…://``) is kept. SQLite connections may be used from any thread,
    run in WAL mode (readers do not block the writer), wait up to ``busy_timeout`` for the
    writer lock, enforce foreign keys, and keep ``synchronous=FULL`` (a recorded envelope
    survives a power cut: promise 3). SQLite transactions are begun by SQLAlchemy, not by
    the sqlite3 module, so that repository writes can take the lock up front.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)

    engine = create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _alembic_config() -> Config:
    """Alembic's configuration without an ``alembic.ini``: the scripts live in the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


# Alembic runs through module-level proxies (``alembic.context``, ``alembic.op``): one
# migration at a time per process.
_alembic_lock = threading.Lock()


def upgrade_database(url: str | Engine) -> None:
    """Run the Alembic migrations up to ``head``; a no-op when the schema is current.

    Safe when several workers start together: PostgreSQL migrates under an advisory lock,
    SQLite under its writer lock (``BEGIN IMMEDIATE``), so the second one finds the schema
    current. Accepts a URL (an engine is made and disposed) or an engine from
    :func:`make_engine`.
    """
    engine = make_engine(url) if isinstance(url, str) else url
    try:
        with _alembic_lock, engine.execution_options(**{_WRITE: True}).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        if isinstance(url, str):
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The schema's Alembic revision (``None`` before the first migration)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# ---------------------------------------------------------------------------------------
# Repository


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Session]:
    """One short transaction: committed on success, rolled back on error."""
    bind = engine.execution_options(**{_WRITE: True}) if write else engine
    with Session(bind, expire_on_commit=False) as session, session.begin():
        yield session


def _payout_row(session: Session, key: str, *, lock: bool = False) -> PayoutRow | None:
    query = select(PayoutRow).where(PayoutRow.idempotency_key == key)
    return session.exec(query.with_for_update() if lock else query).first()


def _envelope_row(session: Session, tx_hash: str, *, lock: bool = False) -> TransactionRow | None:
    query = select(TransactionRow).where(TransactionRow.tx_hash == tx_hash)
    return session.exec(query.with_for_update() if lock else query).first()


def _check_fingerprint(record: PayoutRecord, request: PayoutRequest, fingerprint: str) -> PayoutRecord:
    if record.fingerprint != fingerprint:
        raise IdempotencyConflict(request.idempotency_key, record.fingerprint, fingerprint)
    return record


def get_payout(engine: Engine, key: str) -> PayoutRecord | None:
    """The payout recorded under ``key``, or ``None``."""
    with transaction(engine, write=False) as session:
        row = _payout_row(session, key)
        return None if row is None else PayoutRecord.of(row)


def record_payout(engine: Engine, request: PayoutRequest) -> PayoutRecord:
    """Record the payout (status RECEIVED) or return the one already recorded under its key.

    Raises :class:`IdempotencyConflict` when the key is recorded with another fingerprint.
    Race-safe: concurrent callers all try to insert, the UNIQUE constraint lets one win, the
    others catch the ``IntegrityError`` and read the winner's row.
    """
    fingerprint = request.fingerprint()
    existing = get_payout(engine, request.idempotency_key)
    if existing is not None:
        return _check_fingerprint(existing, request, fingerprint)
    now = _now()
    try:
        with transaction(engine, write=True) as session:
            row = PayoutRow(
                idempotency_key=request.idempotency_key,
                payout_id=request.payout_id,
                destination=request.destination,
                amount=request.amount,
                stroops=request.stroops,
                asset=request.asset,
                fingerprint=fingerprint,
                status=PayoutState.RECEIVED.value,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            return PayoutRecord.of(row)
    except IntegrityError:
        existing = get_payout(engine, request.idempotency_key)
        if existing is None:  # not the unique key: a real error
            raise
    return _check_fingerprint(existing, request, fingerprint)


def set_payout_state(
    engine: Engine,
    key: str,
    state: PayoutState,
    *,
    tx_hash: str | None = None,
    ledger: int | None = None,
    fee_charged: int | None = None,
    error: str | None = None,
) -> PayoutRecord:
    """Move the payout to ``state``; given fields are set, ``None`` leaves a field as it is.

    Raises :class:`PayoutNotFound`, or :class:`IllegalTransition` when the payout is
    CONFIRMED and would leave that state or change its tx hash/ledger/fee, or when FAILED
    is asked for a payout with a confirmed envelope (promise 7).
    """
    state = PayoutState(state)
    with transaction(engine, write=True) as session:
        row = _payout_row(session, key, lock=True)
        if row is None:
            raise PayoutNotFound(f"no payout recorded under idempotency key {key!r}")
        if row.status == PayoutState.CONFIRMED:
            if state != PayoutState.CONFIRMED:
                raise IllegalTransition(f"payout {key!r} is CONFIRMED; it cannot become {state.value}")
            _keep_settled(f"payout {key!r}", row, tx_hash=tx_hash, ledger=ledger, fee_charged=fee_charged)
        if state == PayoutState.FAILED:
            confirmed = _confirmed_row(session, key)
            if confirmed is not None:
                raise IllegalTransition(
                    f"payout {key!r} has a confirmed envelope ({confirmed.tx_hash}); it cannot be FAILED"
                )
        row.status = state.value
        if tx_hash is not None:
            row.tx_hash = tx_hash
        if ledger is not None:
            row.ledger = ledger
        if fee_charged is not None:
            row.fee_charged = fee_charged
        if error is not None:
            row.last_error = error
        row.updated_at = _now()
        session.add(row)
        session.flush()
        return PayoutRecord.of(row)


def _keep_settled(
    what: str,
    row: PayoutRow | TransactionRow,
    *,
    tx_hash: str | None = None,
    ledger: int | None = None,
    fee_charged: int | None = None,
) -> None:
    """Refuse to change the hash, ledger or fee of a confirmed row (filling a blank is fine)."""
    stored: dict[str, object] = {"ledger": row.ledger, "fee_charged": row.fee_charged, "tx_hash": row.tx_hash}
    given: dict[str, object] = {"ledger": ledger, "fee_charged": fee_charged, "tx_hash": tx_hash}
    for name, value in given.items():
        if value is not None and stored[name] is not None and value != stored[name]:
            raise IllegalTransition(f"{what} is confirmed with {name}={stored[name]!r}; it cannot become {value!r}")


def _signature_count(envelope_xdr: str) -> int:
    """How many signatures an envelope carries (-1 if it does not decode)."""
    from stellar_sdk import xdr as stellar_xdr

    try:
        envelope = stellar_xdr.TransactionEnvelope.from_xdr(envelope_xdr)
    except Exception:  # the XDR library raises assorted errors on bad input
        return -1
    body = envelope.v1 or envelope.fee_bump or envelope.v0
    return len(body.signatures) if body is not None else -1


def record_envelope(
    engine: Engine,
    key: str,
    attempt: int,
    tx_hash: str,
    envelope_xdr: str,
    source_account: str,
    sequence: int,
    max_time: int,
    *,
    built_at_ledger: int | None = None,
    auth_nonce: int | None = None,
    with_insert: Callable[[Session], None] | None = None,
) -> EnvelopeRecord:
    """Record an envelope of payout ``key`` (status ``queued``) before it is sent (promise 3).

    Idempotent on ``tx_hash``: recording the same hash again returns the stored row. The
    stored XDR is replaced only by one carrying more signatures (the unsigned envelope is
    recorded when built, the signed one before it is sent; a late retry of the first
    call never downgrades it). Raises :class:`PayoutNotFound` if ``key`` has no payout,
    :class:`EnvelopeConflict` if the hash is recorded with other parameters, and
    :class:`AlreadyPaid`, in the transaction that would insert it, if the key already
    paid (:func:`payment_of`): a workflow's history may be stale (an operator's reset, a
    restarted run), the DB is not. ``with_insert`` runs in the transaction that inserts a
    new row, after that check (another table's record that must commit with it).
    """
    tx_hash = tx_hash.lower()
    if not _TX_HASH.match(tx_hash):
        raise ValueError("tx_hash must be 64 hex digits")
    given = {"idempotency_key": key, "attempt": attempt, "source_account": source_account,
             "sequence": sequence, "max_time": max_time}  # fmt: skip

    def same(row: TransactionRow) -> EnvelopeRecord:
        for name, value in given.items():
            if getattr(row, name) != value:
                raise EnvelopeConflict(
                    f"transaction {tx_hash} is recorded with {name}={getattr(row, name)!r}, not {value!r}"
                )
        return EnvelopeRecord.of(row)

    for _ in range(2):  # a concurrent insert of the same hash makes the first pass fail
        try:
            with transaction(engine, write=True) as session:
                row = _envelope_row(session, tx_hash, lock=True)
                if row is not None:
                    record = same(row)
                    upgrade = _signature_count(envelope_xdr) > _signature_count(row.envelope_xdr)
                    if upgrade or (row.built_at_ledger is None and built_at_ledger is not None):
                        if upgrade:
                            row.envelope_xdr = envelope_xdr
                        row.built_at_ledger = row.built_at_ledger or built_at_ledger
                        row.auth_nonce = row.auth_nonce or auth_nonce
                        row.updated_at = _now()
                        session.add(row)
                        session.flush()
                        record = EnvelopeRecord.of(row)
                    return record
                payout = _payout_row(session, key, lock=True)
                if payout is None:
                    raise PayoutNotFound(f"no payout recorded under idempotency key {key!r}")
                paid = _payment(session, payout)
                if paid is not None:
                    raise AlreadyPaid(key, paid.tx_hash)
                if with_insert is not None:
                    with_insert(session)
                now = _now()
                row = TransactionRow(
                    idempotency_key=key,
                    attempt=attempt,
                    tx_hash=tx_hash,
                    envelope_xdr=envelope_xdr,
                    source_account=source_account,
                    sequence=sequence,
                    max_time=max_time,
                    status=EnvelopeStatus.QUEUED.value,
                    created_at=now,
                    updated_at=now,
                    built_at_ledger=built_at_ledger,
                    auth_nonce=auth_nonce,
                )
                session.add(row)
                session.flush()
                return EnvelopeRecord.of(row)
        except IntegrityError:
            continue
    raise RuntimeError(f"could not record transaction {tx_hash}")  # pragma: no cover


def mark_envelope(
    engine: Engine,
    tx_hash: str,
    status: EnvelopeStatus | str,
    *,
    ledger: int | None = None,
    fee_charged: int | None = None,
    error: str | None = None,
) -> EnvelopeRecord:
    """Set an envelope's status (and ledger, fee, last error when given).

    ``updated_at`` is always set; ``confirmed_at`` when the envelope first becomes
    ``confirmed``. A confirmed envelope stays confirmed: marking it confirmed again is a
    no-op that may fill a missing ledger/fee, anything else raises
    :class:`IllegalTransition`. Other moves are the caller's state machine. Raises
    :class:`EnvelopeNotFound` for an unknown hash, ``ValueError`` for an unknown status.
    """
    status = EnvelopeStatus(status)
    tx_hash = tx_hash.lower()
    with transaction(engine, write=True) as session:
        row = _envelope_row(session, tx_hash, lock=True)
        if row is None:
            raise EnvelopeNotFound(f"no transaction recorded with hash {tx_hash}")
        now = _now()
        if row.status == EnvelopeStatus.CONFIRMED:
            if status != EnvelopeStatus.CONFIRMED:
                raise IllegalTransition(f"transaction {tx_hash} is confirmed; it cannot become {status.value}")
            _keep_settled(f"transaction {tx_hash}", row, ledger=ledger, fee_charged=fee_charged)
        elif status == EnvelopeStatus.CONFIRMED:
            row.confirmed_at = now
        row.status = status.value
        if ledger is not None:
            row.ledger = ledger
        if fee_charged is not None:
            row.fee_charged = fee_charged
        if error is not None:
            row.last_error = error
        row.updated_at = now
        session.add(row)
        session.flush()
        return EnvelopeRecord.of(row)


def mark_submitted(engine: Engine, tx_hash: str) -> None:
    """``queued`` → ``submitted`` after the first send; a no-op in any other status."""
    with transaction(engine, write=True) as session:
        row = _envelope_row(session, tx_hash.lower(), lock=True)
        if row is not None and row.status == EnvelopeStatus.QUEUED:
            row.status, row.updated_at = EnvelopeStatus.SUBMITTED.value, _now()
            session.add(row)


def note_envelope_error(engine: Engine, tx_hash: str, error: str) -> None:
    """Note an abnormal answer about an unsettled envelope, for operators: the distinct
    answers in the order first seen, newest last (at most :data:`_NOTE_LIMIT` characters)."""
    with transaction(engine, write=True) as session:
        row = _envelope_row(session, tx_hash.lower(), lock=True)
        if row is None or row.status not in (EnvelopeStatus.QUEUED, EnvelopeStatus.SUBMITTED):
            return
        seen = row.last_error.split("; ") if row.last_error else []
        if error in seen:
            return
        row.last_error, row.updated_at = "; ".join([*seen, error])[-_NOTE_LIMIT:], _now()
        session.add(row)


def envelope(engine: Engine, tx_hash: str) -> EnvelopeRecord | None:
    """The envelope recorded under ``tx_hash``, or ``None``."""
    with transaction(engine, write=False) as session:
        row = _envelope_row(session, tx_hash.lower())
        return None if row is None else EnvelopeRecord.of(row)


def envelopes_of(engine: Engine, key: str) -> list[EnvelopeRecord]:
    """Every envelope built for payout ``key``, oldest first."""
    with transaction(engine, write=False) as session:
        return envelopes_in(session, key)


def envelopes_in(session: Session, key: str) -> list[EnvelopeRecord]:
    """:func:`envelopes_of`, inside a transaction of the caller's."""
    query = (
        select(TransactionRow)
        .where(TransactionRow.idempotency_key == key)
        .order_by(col(TransactionRow.attempt), col(TransactionRow.id))
    )
    return [EnvelopeRecord.of(row) for row in session.exec(query)]


def _confirmed_row(session: Session, key: str) -> TransactionRow | None:
    query = (
        select(TransactionRow)
        .where(TransactionRow.idempotency_key == key, TransactionRow.status == EnvelopeStatus.CONFIRMED.value)
        .order_by(col(TransactionRow.confirmed_at), col(TransactionRow.id))
    )
    return session.exec(query).first()


@dataclass(frozen=True, slots=True)
class Payment:
    """How a key was paid: by its confirmed envelope, or by a transaction this engine did
    not send that carried the key's authorization (``tx_hash`` then when it was found)."""

    tx_hash: str | None
    ledger: int | None
    fee_charged: int | None


def _payment(session: Session, payout: PayoutRow) -> Payment | None:
    confirmed = _confirmed_row(session, payout.idempotency_key)
    if confirmed is not None:
        return Payment(confirmed.tx_hash, confirmed.ledger, confirmed.fee_charged)
    if payout.status == PayoutState.CONFIRMED:
        return Payment(payout.tx_hash, payout.ledger, payout.fee_charged)
    return None


def payout_row(session: Session, key: str, *, lock: bool = False) -> PayoutRow | None:
    """The payout row of ``key`` in the caller's transaction (``lock``: for its rest)."""
    return _payout_row(session, key, lock=lock)


def payment_in(session: Session, payout: PayoutRow) -> Payment | None:
    """:func:`payment_of`, inside a transaction of the caller's (another table's repository)."""
    return _payment(session, payout)


def payment_of(engine: Engine, key: str) -> Payment | None:
    """The payment of payout ``key``, or ``None`` if the DB knows of none: the durable
    answer to "did this key pay?" that every new envelope and authorization is checked
    against (promise 1)."""
    with transaction(engine, write=False) as session:
        payout = _payout_row(session, key)
        return None if payout is None else _payment(session, payout)


def confirmed_envelope(engine: Engine, key: str) -> EnvelopeRecord | None:
    """The envelope with which payout ``key`` was paid, or ``None`` if none is confirmed.

    The durable answer to "did this key already pay?", also once Temporal's history of the
    payout is gone (promise 1). Should a key ever have two, the first confirmed is returned.
    """
    with transaction(engine, write=False) as session:
        row = _confirmed_row(session, key)
        return None if row is None else EnvelopeRecord.of(row)
