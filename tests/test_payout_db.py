"""The payout DB (payouts/db.py) on SQLite and on PostgreSQL: migrations, the repository's
idempotency and race safety, envelope status rules, and the seed's monitoring queries.

PostgreSQL comes from ``tests/pg_harness.py`` (shared with the workflow tests): a fresh
database per test session at 127.0.0.1:5432 (or ``PAYOUTS_TEST_POSTGRES_URL``), a fresh
schema per test. When no server answers, the PostgreSQL cases are skipped, or fail when
the ``CI`` environment variable is set.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col
from stellar_sdk import Account, Asset, Keypair, Network, TransactionBuilder

from payouts import authorization_store, leases  # noqa: F401  (leases: its table is part of the schema)
from payouts.authorization import NonceState
from payouts.db import (
    AlreadyPaid,
    EnvelopeConflict,
    EnvelopeNotFound,
    EnvelopeStatus,
    IdempotencyConflict,
    IllegalTransition,
    Payment,
    PayoutNotFound,
    PayoutRecord,
    PayoutRow,
    TransactionRow,
    UTCDateTime,
    confirmed_envelope,
    current_revision,
    envelopes_of,
    get_payout,
    make_engine,
    mark_envelope,
    payment_of,
    record_envelope,
    record_payout,
    set_payout_state,
    upgrade_database,
)
from payouts.models import PayoutRequest, PayoutState
from payouts.monitoring import (
    CONFIRMATION_TIME_QUERY,
    FAILED_QUERY,
    MONITORING_QUERIES,
    PENDING_QUERY,
    SUCCESS_RATE_QUERY,
)
from tests.pg_harness import BACKENDS, empty_database_url

HEAD = "0003_exactly_once_records"
DESTINATION = Keypair.random().public_key
SOURCE = Keypair.random()

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


# ---------------------------------------------------------------------------------------
# Backends


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A DATABASE_URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    return empty_database_url(request.param, request, tmp_path)


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    upgrade_database(url)
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


# ---------------------------------------------------------------------------------------
# Helpers


def payout(key: str = "round-1:winner-1", **overrides: str) -> PayoutRequest:
    body = {"payout_id": "round-1-winner-1", "destination": DESTINATION, "amount": "100.5", "asset": "XLM"}
    body.update(overrides)
    return PayoutRequest(idempotency_key=key, **body)


def envelope(sequence: int = 1, *, signed: bool = False) -> tuple[str, str]:
    """(hash, XDR) of a real transaction envelope, signed or not (the hash is the same)."""
    tx = (
        TransactionBuilder(Account(SOURCE.public_key, sequence - 1), Network.TESTNET_NETWORK_PASSPHRASE, base_fee=100)
        .append_payment_op(DESTINATION, Asset.native(), "1")
        .add_time_bounds(0, 1_900_000_000)
        .build()
    )
    if signed:
        tx.sign(SOURCE)
    return tx.hash_hex(), tx.to_xdr()


def record(engine: Engine, key: str, attempt: int = 1, sequence: int = 1, xdr: str | None = None) -> str:
    tx_hash, unsigned = envelope(sequence)
    record_envelope(engine, key, attempt, tx_hash, xdr or unsigned, SOURCE.public_key, sequence, 1_900_000_000)
    return tx_hash


def count(engine: Engine, table: type[SQLModel]) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table.__table__)).scalar_one())  # type: ignore[attr-defined]


T = TypeVar("T")


def together(n: int, call: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``call(i)`` for i in 0..n-1 on n threads released at the same instant."""
    barrier = threading.Barrier(n)
    results: list[T | BaseException] = [RuntimeError("not run")] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# ---------------------------------------------------------------------------------------
# Schema and migrations


def test_migrations_create_the_schema_and_rerunning_is_a_no_op(url: str) -> None:
    engine = make_engine(url)
    try:
        assert current_revision(engine) is None
        assert not inspect(engine).has_table("transactions")

        upgrade_database(url)
        assert current_revision(engine) == HEAD
        schema = inspect(engine)
        assert {"payouts", "transactions", "alembic_version"} <= set(schema.get_table_names())
        assert {c["name"] for c in schema.get_unique_constraints("payouts")} == {"uq_payouts_idempotency_key"}
        assert {c["name"] for c in schema.get_unique_constraints("transactions")} == {"uq_transactions_tx_hash"}
        indexes = {i["name"] for i in schema.get_indexes("transactions")}
        assert {"ix_transactions_status_updated_at", "ix_transactions_created_at"} <= indexes
        assert "ix_transactions_idempotency_key" in indexes
        assert "ck_transactions_status" in {c["name"] for c in schema.get_check_constraints("transactions")}
        [fk] = schema.get_foreign_keys("transactions")
        assert (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]) == (
            ["idempotency_key"],
            "payouts",
            ["idempotency_key"],
        )
        if is_postgres(engine):
            with engine.connect() as connection:
                query = text(
                    "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema()"
                )
                types = {str(name): str(kind) for name, kind in connection.execute(query)}
            for column in ("created_at", "updated_at", "confirmed_at"):
                assert types[f"transactions.{column}"] == "timestamp with time zone"
            for column in ("created_at", "updated_at"):
                assert types[f"payouts.{column}"] == "timestamp with time zone"
            for column in ("transactions.sequence", "transactions.max_time", "transactions.fee_charged",
                           "payouts.stroops", "payouts.fee_charged"):  # fmt: skip
                assert types[column] == "bigint"

        kept = record_payout(engine, payout())
        upgrade_database(url)  # again: nothing to do, nothing lost
        assert current_revision(engine) == HEAD
        assert get_payout(engine, kept.idempotency_key) == kept
    finally:
        engine.dispose()


def test_table_models_match_the_migrations(engine: Engine) -> None:
    """The SQLModel tables and the migrated schema agree (a model change needs a migration)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_concurrent_upgrades_migrate_once(url: str) -> None:
    """Workers starting together (separate processes) all succeed; the schema is migrated once."""
    script = (
        "import sys, alembic.operations, alembic.runtime.migration, sqlalchemy.dialects.postgresql.psycopg; "
        "from payouts.db import upgrade_database; "
        "print('ready', flush=True); sys.stdin.readline(); upgrade_database(sys.argv[1])"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    for worker in workers:  # every process has imported everything; then all go at once
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4, "\n".join(outputs)
    engine = make_engine(url)
    try:
        assert current_revision(engine) == HEAD
        with engine.connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()


def test_status_check_constraints_cover_the_enums(engine: Engine) -> None:
    for state in PayoutState:  # every state the code knows, the migrated CHECK accepts
        key = record_payout(engine, payout(f"state-{state.value}")).idempotency_key
        assert set_payout_state(engine, key, state).status == state
    for i, status in enumerate(EnvelopeStatus):
        # One payout each: a key with a confirmed envelope gets no other (AlreadyPaid).
        key = record_payout(engine, payout(f"envelope-{status.value}")).idempotency_key
        assert mark_envelope(engine, record(engine, key, i + 1, i + 1), status).status == status
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(update(TransactionRow).values(status="bogus"))
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(update(PayoutRow).values(status="PAID"))


def test_foreign_key_is_enforced(engine: Engine) -> None:
    now = datetime.now(UTC)
    row = {"idempotency_key": "nobody", "attempt": 1, "tx_hash": "0" * 64, "envelope_xdr": "x",
           "source_account": SOURCE.public_key, "sequence": 1, "max_time": 1, "status": "queued",
           "created_at": now, "updated_at": now}  # fmt: skip
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(TransactionRow.__table__.insert().values(**row))  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------
# Payouts


def test_record_payout_is_idempotent_and_refuses_other_parameters(engine: Engine) -> None:
    request = payout()
    first = record_payout(engine, request)
    assert first.status == PayoutState.RECEIVED
    assert (first.amount, first.stroops, first.fingerprint) == ("100.5", 1_005_000_000, request.fingerprint())
    assert first.created_at.tzinfo is UTC and first.created_at == first.updated_at
    assert record_payout(engine, request) == first
    assert record_payout(engine, payout(amount="100.50")) == first  # the same payout, written differently

    for different in (payout(amount="100.6"), payout(destination=Keypair.random().public_key),
                      payout(asset="USDC"), payout(payout_id="other")):  # fmt: skip
        with pytest.raises(IdempotencyConflict) as caught:
            record_payout(engine, different)
        assert caught.value.stored_fingerprint == first.fingerprint
        assert caught.value.requested_fingerprint == different.fingerprint()
    assert count(engine, PayoutRow) == 1
    assert get_payout(engine, "unknown") is None


def test_twenty_concurrent_record_payout_calls_make_one_row(engine: Engine) -> None:
    for round_ in range(1, 6):  # a few rounds, so a lost race cannot hide behind lucky timing
        request = payout(f"race-{round_}")

        def call(_: int, request: PayoutRequest = request) -> PayoutRecord:
            return record_payout(engine, request)

        results = together(20, call)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert len({r.id for r in results if isinstance(r, PayoutRecord)}) == 1
        assert count(engine, PayoutRow) == round_


def test_concurrent_conflicting_record_payout_calls(engine: Engine) -> None:
    requests = [payout("race"), payout("race", amount="7")]
    results = together(20, lambda i: record_payout(engine, requests[i % 2]))
    winners = [r for r in results if isinstance(r, PayoutRecord)]
    losers = [r for r in results if isinstance(r, IdempotencyConflict)]
    assert len(winners) == len(losers) == 10, results
    assert len({w.fingerprint for w in winners}) == 1
    assert count(engine, PayoutRow) == 1


def test_concurrent_read_then_write_calls_do_not_trip_over_each_other(engine: Engine) -> None:
    """Workers updating different payouts at once: no "database is locked", no lost update.
    (On SQLite a read-then-write transaction must take the writer lock up front.)"""
    keys = [record_payout(engine, payout(f"worker-{i}")).idempotency_key for i in range(10)]
    hashes = [record(engine, key, 1, i + 1) for i, key in enumerate(keys)]

    def work(i: int) -> None:
        key, tx_hash = keys[i % 10], hashes[i % 10]
        for _ in range(5):
            set_payout_state(engine, key, PayoutState.SUBMITTED, tx_hash=tx_hash)
            mark_envelope(engine, tx_hash, "submitted", error=f"worker {i}")
            record(engine, key, 1, i % 10 + 1)

    results = together(20, work)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert {get_payout(engine, key).status for key in keys} == {PayoutState.SUBMITTED}  # type: ignore[union-attr]


def test_set_payout_state(engine: Engine) -> None:
    key = record_payout(engine, payout()).idempotency_key
    with pytest.raises(PayoutNotFound):
        set_payout_state(engine, "unknown", PayoutState.BUILDING)

    # a payout that provably paid nothing may fail, and may then be retried under its key
    failed = set_payout_state(engine, key, PayoutState.FAILED, error="txBAD_AUTH")
    assert (failed.status, failed.last_error) == (PayoutState.FAILED, "txBAD_AUTH")
    time.sleep(0.002)
    again = set_payout_state(engine, key, PayoutState.RECEIVED)
    assert again.last_error == "txBAD_AUTH" and again.updated_at > failed.updated_at

    tx_hash = record(engine, key)
    set_payout_state(engine, key, PayoutState.SUBMITTED, tx_hash=tx_hash)
    mark_envelope(engine, tx_hash, "confirmed", ledger=77, fee_charged=1234)
    with pytest.raises(IllegalTransition):  # promise 7: it paid, so it never reads FAILED
        set_payout_state(engine, key, PayoutState.FAILED, error="late timeout")
    assert get_payout(engine, key).status == PayoutState.SUBMITTED  # type: ignore[union-attr]

    done = set_payout_state(engine, key, PayoutState.CONFIRMED, tx_hash=tx_hash, ledger=77, fee_charged=1234)
    assert (done.status, done.tx_hash, done.ledger, done.fee_charged) == (PayoutState.CONFIRMED, tx_hash, 77, 1234)
    assert set_payout_state(engine, key, PayoutState.CONFIRMED, ledger=77).ledger == 77  # a retry is fine
    for change in ({"state": PayoutState.SUBMITTED}, {"state": PayoutState.CONFIRMED, "ledger": 78},
                   {"state": PayoutState.CONFIRMED, "tx_hash": "f" * 64}):  # fmt: skip
        with pytest.raises(IllegalTransition):
            set_payout_state(engine, key, **change)
    assert get_payout(engine, key) is not None and get_payout(engine, key).ledger == 77  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------
# Envelopes


def test_record_envelope_is_idempotent_on_the_hash(engine: Engine) -> None:
    key = record_payout(engine, payout()).idempotency_key
    tx_hash, unsigned = envelope(5)
    _, signed = envelope(5, signed=True)
    assert unsigned != signed

    first = record_envelope(engine, key, 1, tx_hash, unsigned, SOURCE.public_key, 5, 1_900_000_000)
    assert (first.status, first.envelope_xdr, first.confirmed_at) == (EnvelopeStatus.QUEUED, unsigned, None)
    assert record_envelope(engine, key, 1, tx_hash.upper(), unsigned, SOURCE.public_key, 5, 1_900_000_000) == first

    # the signed envelope (same hash) replaces the unsigned one; a late retry never downgrades it
    upgraded = record_envelope(engine, key, 1, tx_hash, signed, SOURCE.public_key, 5, 1_900_000_000)
    assert (upgraded.id, upgraded.envelope_xdr) == (first.id, signed)
    assert record_envelope(engine, key, 1, tx_hash, unsigned, SOURCE.public_key, 5, 1_900_000_000) == upgraded

    other_key = record_payout(engine, payout("other")).idempotency_key
    for args in ((other_key, 1, 5, 1_900_000_000), (key, 2, 5, 1_900_000_000), (key, 1, 6, 1_900_000_000),
                 (key, 1, 5, 1_900_000_001)):  # fmt: skip
        with pytest.raises(EnvelopeConflict):
            record_envelope(engine, args[0], args[1], tx_hash, signed, SOURCE.public_key, args[2], args[3])
    with pytest.raises(PayoutNotFound):
        record_envelope(engine, "unknown", 1, envelope(9)[0], unsigned, SOURCE.public_key, 9, 1)
    with pytest.raises(ValueError, match="64 hex"):
        record_envelope(engine, key, 1, "not-a-hash", unsigned, SOURCE.public_key, 5, 1)
    assert count(engine, TransactionRow) == 1

    results = together(10, lambda i: record(engine, key, attempt=2, sequence=6))
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert count(engine, TransactionRow) == 2


def test_mark_envelope_transitions_and_confirmed_is_final(engine: Engine) -> None:
    key = record_payout(engine, payout()).idempotency_key
    tx_hash = record(engine, key)
    queued = envelopes_of(engine, key)[0]

    time.sleep(0.002)
    submitted = mark_envelope(engine, tx_hash, EnvelopeStatus.SUBMITTED)
    assert (submitted.status, submitted.confirmed_at) == (EnvelopeStatus.SUBMITTED, None)
    assert submitted.updated_at > queued.updated_at and submitted.created_at == queued.created_at

    time.sleep(0.002)
    confirmed = mark_envelope(engine, tx_hash, "confirmed", ledger=42, fee_charged=35_000)
    assert (confirmed.status, confirmed.ledger, confirmed.fee_charged) == (EnvelopeStatus.CONFIRMED, 42, 35_000)
    assert confirmed.confirmed_at is not None and confirmed.confirmed_at.tzinfo is UTC
    assert confirmed.confirmed_at == confirmed.updated_at > submitted.updated_at

    time.sleep(0.002)
    repeated = mark_envelope(engine, tx_hash, "confirmed", ledger=42)  # an activity retry
    assert repeated.confirmed_at == confirmed.confirmed_at and repeated.ledger == 42
    assert repeated.updated_at > confirmed.updated_at

    for status, fields in (("failed", {"error": "late"}), ("expired", {}), ("submitted", {}), ("queued", {}),
                           ("confirmed", {"ledger": 43}), ("confirmed", {"fee_charged": 1})):  # fmt: skip
        with pytest.raises(IllegalTransition):
            mark_envelope(engine, tx_hash, status, **fields)
    stored = confirmed_envelope(engine, key)
    assert stored is not None
    assert (stored.status, stored.ledger, stored.fee_charged, stored.last_error) == ("confirmed", 42, 35_000, None)

    with pytest.raises(EnvelopeNotFound):
        mark_envelope(engine, "0" * 64, "failed")
    with pytest.raises(ValueError):
        mark_envelope(engine, tx_hash, "paid")


def test_a_confirmation_is_never_overwritten_by_a_concurrent_update(engine: Engine) -> None:
    """One worker confirms an envelope while another marks it failed: the second must see
    the confirmation (it waits for the row lock, then refuses), never overwrite it."""
    key = record_payout(engine, payout()).idempotency_key
    tx_hash = record(engine, key)
    mark_envelope(engine, tx_hash, "submitted")
    outcome: list[object] = []

    def late_failure() -> None:
        try:
            outcome.append(mark_envelope(engine, tx_hash, "failed", error="timed out"))
        except BaseException as exc:
            outcome.append(exc)

    with engine.connect() as connection:
        confirming = connection.begin()
        now = datetime.now(UTC)
        connection.execute(
            update(TransactionRow)
            .where(col(TransactionRow.tx_hash) == tx_hash)
            .values(status="confirmed", ledger=7, confirmed_at=now, updated_at=now)
        )  # the row is now locked by an uncommitted confirmation
        racer = threading.Thread(target=late_failure)
        racer.start()
        time.sleep(0.5)  # the racer has read the row (or is waiting to) before the commit
        confirming.commit()
    racer.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], IllegalTransition), outcome
    stored = envelopes_of(engine, key)[0]
    assert (stored.status, stored.ledger, stored.last_error) == (EnvelopeStatus.CONFIRMED, 7, None)


def test_failed_and_expired_envelopes_keep_their_reason(engine: Engine) -> None:
    key = record_payout(engine, payout()).idempotency_key
    first, second = record(engine, key, 1, 1), record(engine, key, 2, 2)
    mark_envelope(engine, first, "submitted")
    expired = mark_envelope(engine, first, "expired", ledger=None, error="NOT_FOUND past max_time")
    assert (expired.status, expired.last_error, expired.confirmed_at) == ("expired", "NOT_FOUND past max_time", None)
    failed = mark_envelope(engine, second, "failed", ledger=9, fee_charged=100, error="txFAILED")
    assert (failed.status, failed.ledger, failed.fee_charged) == ("failed", 9, 100)
    assert [e.tx_hash for e in envelopes_of(engine, key)] == [first, second]
    assert confirmed_envelope(engine, key) is None


def test_confirmed_envelope_is_durable_across_engines(url: str) -> None:
    upgrade_database(url)
    writer = make_engine(url)
    key = record_payout(writer, payout()).idempotency_key
    old, paid = record(writer, key, 1, 1), record(writer, key, 2, 2)
    mark_envelope(writer, old, "expired")
    assert confirmed_envelope(writer, key) is None
    mark_envelope(writer, paid, "confirmed", ledger=100, fee_charged=500)
    writer.dispose()

    reader = make_engine(url)  # a new worker, long after Temporal's history is gone
    try:
        found = confirmed_envelope(reader, key)
        assert found is not None and (found.tx_hash, found.attempt, found.ledger) == (paid, 2, 100)
        assert confirmed_envelope(reader, "unknown") is None
        assert envelopes_of(reader, "unknown") == []
    finally:
        reader.dispose()


def test_timestamps_are_aware_utc() -> None:
    column = UTCDateTime()
    dialect = make_engine("sqlite://").dialect
    with pytest.raises(ValueError, match="timezone-aware"):
        column.process_bind_param(datetime(2026, 1, 1), dialect)
    local = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert column.process_bind_param(local, dialect) == datetime(2026, 1, 1, 10)
    assert column.process_result_value(datetime(2026, 1, 1, 10), dialect) == datetime(2026, 1, 1, 10, tzinfo=UTC)


# ---------------------------------------------------------------------------------------
# A key that paid gets nothing new


def test_a_key_with_a_confirmed_envelope_gets_no_other_envelope(engine: Engine) -> None:
    key = record_payout(engine, payout()).idempotency_key
    paid = record(engine, key, attempt=1, sequence=1)
    mark_envelope(engine, paid, EnvelopeStatus.CONFIRMED, ledger=7, fee_charged=100)
    assert payment_of(engine, key) == Payment(paid, 7, 100)
    with pytest.raises(AlreadyPaid, match=paid):
        record(engine, key, attempt=2, sequence=2)
    assert [e.tx_hash for e in envelopes_of(engine, key)] == [paid]  # nothing written
    assert record_envelope(engine, key, 1, paid, envelope(1)[1], SOURCE.public_key, 1, 1_900_000_000).tx_hash == paid


def test_a_key_paid_by_another_transaction_gets_no_envelope_or_authorization(engine: Engine) -> None:
    """Paid by a transaction that carried its authorization (the payout row alone says so)."""
    key = record_payout(engine, payout()).idempotency_key
    nonce = 42
    authorization_store.record(engine, key, SOURCE.public_key, nonce, "entry", 500, 1_900_000_000, 100)
    authorization_store.observe(engine, SOURCE.public_key, nonce, NonceState.USED, 100, used_ledger=120,
                                used_tx_hash="ab" * 32)  # fmt: skip
    assert payment_of(engine, key) == Payment("ab" * 32, 120, None)
    assert get_payout(engine, key).status == PayoutState.CONFIRMED  # type: ignore[union-attr]
    with pytest.raises(AlreadyPaid):
        record(engine, key)
    with pytest.raises(AlreadyPaid):
        authorization_store.record(engine, key, SOURCE.public_key, 43, "entry", 500, 1_900_000_000, 100)
    assert envelopes_of(engine, key) == [] and len(authorization_store.of_payout(engine, key)) == 1


def test_a_key_has_at_most_one_authorization_that_may_still_pay(engine: Engine) -> None:
    key = record_payout(engine, payout()).idempotency_key
    first = authorization_store.record(engine, key, SOURCE.public_key, 1, "entry-1", 500, 1_900_000_000, 100)
    assert (first.nonce, first.status, first.unused_through_ledger) == (1, NonceState.LIVE, 100)
    # Asking again (a restarted or reset run) gets the same nonce back, not a second one.
    again = authorization_store.record(engine, key, SOURCE.public_key, 2, "entry-2", 600, 1_900_000_000, 200)
    assert again.nonce == 1 and len(authorization_store.of_payout(engine, key)) == 1
    authorization_store.record_signature(engine, SOURCE.public_key, 1, "signed-1")
    authorization_store.observe(engine, SOURCE.public_key, 1, NonceState.LIVE, 300)
    authorization_store.observe(engine, SOURCE.public_key, 1, NonceState.LIVE, 250)  # never shrinks
    [live] = authorization_store.unsettled(engine, key)
    assert (live.signed_entry_xdr, live.unused_through_ledger) == ("signed-1", 300)
    settled = authorization_store.observe(engine, SOURCE.public_key, 1, NonceState.UNUSED, 500)
    assert settled.status == NonceState.UNUSED and authorization_store.unsettled(engine, key) == []
    # Settled facts stay: a later report cannot make an unused nonce live again.
    assert authorization_store.observe(engine, SOURCE.public_key, 1, NonceState.LIVE, 500).status == NonceState.UNUSED
    fresh = authorization_store.record(engine, key, SOURCE.public_key, 2, "entry-2", 600, 1_900_000_000, 200)
    assert fresh.nonce == 2 and payment_of(engine, key) is None


def test_a_hot_key_authorization_is_recorded_with_the_first_envelope_carrying_it(engine: Engine) -> None:
    key = record_payout(engine, payout()).idempotency_key

    def carrying(nonce: int) -> Callable[[Session], None]:
        return lambda session: authorization_store.record_carried(
            session, key, SOURCE.public_key, nonce, "entry", "signed", 500, 1_900_000_000, 100
        )

    first, unsigned = envelope(1)
    record_envelope(engine, key, 1, first, unsigned, SOURCE.public_key, 1, 1_900_000_000, with_insert=carrying(1))
    [carried] = authorization_store.of_payout(engine, key)
    assert (carried.nonce, carried.signed_entry_xdr, carried.status) == (1, "signed", NonceState.LIVE)
    # Another envelope carrying it: nothing new. A fresh one while it may still pay: refused
    # with the envelope (one transaction), so nothing of either is written.
    second, unsigned = envelope(2)
    record_envelope(engine, key, 2, second, unsigned, SOURCE.public_key, 2, 1_900_000_000, with_insert=carrying(1))
    third, unsigned = envelope(3)
    with pytest.raises(authorization_store.UnsettledAuthorization):
        record_envelope(engine, key, 3, third, unsigned, SOURCE.public_key, 3, 1_900_000_000, with_insert=carrying(2))
    assert [e.tx_hash for e in envelopes_of(engine, key)] == [first, second]
    assert [a.nonce for a in authorization_store.of_payout(engine, key)] == [1]


# ---------------------------------------------------------------------------------------
# Engine


def test_make_engine_maps_postgres_urls_to_psycopg() -> None:
    for url in ("postgresql://u@db.example:5432/payouts", "postgres://u@db.example/payouts",
                "postgresql+psycopg://u@db.example/payouts"):  # fmt: skip
        assert make_engine(url).url.drivername == "postgresql+psycopg"


def test_sqlite_engine_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with engine.connect() as connection:
            pragma = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")}  # fmt: skip
        assert pragma == {"journal_mode": "wal", "busy_timeout": 30_000, "foreign_keys": 1, "synchronous": 2}
        results = together(4, lambda _: engine.connect().close())  # usable from any thread
        assert [r for r in results if isinstance(r, BaseException)] == []
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------
# The seed's monitoring queries


def test_monitoring_queries_are_the_seeds_verbatim() -> None:
    seeds = sorted(SEEDS.glob("*.txt"))
    if not seeds:
        pytest.skip(f"the seed is not next to this checkout ({SEEDS})")
    text_of_seed = "\n".join(path.read_text() for path in seeds)
    for query in MONITORING_QUERIES:
        assert query in text_of_seed


def test_monitoring_queries_give_true_figures(engine: Engine) -> None:
    """A known mix of rows; every query's answer is computed by hand."""
    with engine.connect() as connection:
        now = connection.execute(text("SELECT NOW()")).scalar_one() if is_postgres(engine) else datetime.now(UTC)
    hour = timedelta(hours=1)
    rows: Sequence[tuple[str, timedelta, float | None]] = (  # (status, age at creation, seconds to confirm)
        [("queued", 2 * hour, None)] * 3
        + [("submitted", 3 * hour, None)] * 2
        + [("confirmed", 5 * hour, s) for s in (10.25, 20.0, 30.0, 40.0)]
        + [("failed", 6 * hour, None)] * 10
        + [("expired", 23 * hour, None)]
        # older than 24 hours: outside the success rate, inside the other three
        + [("submitted", 30 * hour, None), ("confirmed", 48 * hour, 100.0), ("failed", 26 * hour, None)]
        + [("failed", 25 * hour, None)]
    )
    shuffled = random.Random(7).sample(range(len(rows)), len(rows))
    updated: dict[str, datetime] = {}
    for i, (status, age, seconds) in enumerate(rows):
        # A payout per row: a key with a confirmed envelope gets no other (AlreadyPaid).
        key = record_payout(engine, payout(f"monitoring-{i}")).idempotency_key
        tx_hash = record(engine, key, attempt=i + 1, sequence=i + 1)
        if status != "queued":
            mark_envelope(engine, tx_hash, status)
        created = now - age
        updated[tx_hash] = now - timedelta(minutes=shuffled[i])  # distinct, in no particular order
        values = {"created_at": created, "updated_at": updated[tx_hash]}
        if seconds is not None:
            values["confirmed_at"] = created + timedelta(seconds=seconds)
        with engine.begin() as connection:
            connection.execute(update(TransactionRow).where(col(TransactionRow.tx_hash) == tx_hash).values(**values))
    failed = [h for h, (status, _, _) in zip(updated, rows, strict=True) if status == "failed"]
    assert len(failed) == 12

    with engine.connect() as connection:
        assert connection.execute(text(PENDING_QUERY)).scalar_one() == 3 + 2 + 1

        answer = connection.execute(text(FAILED_QUERY)).mappings().all()
        assert [r["tx_hash"] for r in answer] == sorted(failed, key=updated.__getitem__, reverse=True)[:10]
        assert {r["status"] for r in answer} == {"failed"} and {"created_at", "confirmed_at"} <= set(answer[0])

        if not is_postgres(engine):
            return  # NOW(), INTERVAL and EXTRACT(EPOCH …) are PostgreSQL's
        rate = connection.execute(text(SUCCESS_RATE_QUERY)).scalar_one()
        assert rate == Decimal(4 * 100) / 20  # 4 confirmed of 20 created in the last 24 hours
        average = connection.execute(text(CONFIRMATION_TIME_QUERY)).scalar_one()
        assert average == Decimal("40.05")  # (10.25 + 20 + 30 + 40 + 100) / 5
