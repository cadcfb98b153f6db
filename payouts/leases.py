"""Source-account leases (shared/DESIGN.md promise 5): one unconfirmed envelope per account.

stellar-core keeps at most one pending transaction per source account, and two envelopes
built on the same sequence number clash. So every account that is a transaction's source
(the payout account, or each channel account of the pool) is leased to one payout at a
time, in table ``account_leases``:

- :func:`acquire` gives a payout a free account (or the one it already holds: activities
  retry). A lease is free when nobody holds it, or when its holder's ``expires_at`` has
  passed. Several workers may acquire at once: PostgreSQL skips rows other transactions
  have locked (``FOR UPDATE SKIP LOCKED``); SQLite serialises writers (``BEGIN IMMEDIATE``).
- :func:`bind` ties the lease to the envelope about to be sent and moves ``expires_at``
  to the envelope's time bound plus :data:`LEASE_MARGIN_SECONDS`. A holder that crashes
  therefore blocks its account only until its envelope is dead (the margin covers ledger
  close times lagging the wall clock), and never sooner: before that, its envelope may
  still apply and use the account's next sequence number.
- :func:`release` frees it once the envelope is confirmed, failed, or provably dead;
  :func:`release_unbound` only if no envelope is bound to it (a build that failed keeps
  an account whose refused envelope awaits its replacement on the same sequence number).
- :func:`take_out_of_rotation` parks an account (a channel low on fee balance) until an
  operator tops it up (:func:`put_in_rotation`).

Sequence numbers are not stored here: the holder reads them from the chain when it builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Boolean, CheckConstraint, Column, String, Text
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel, col, or_, select

from payouts.db import UTCDateTime, transaction

LEASE_MARGIN_SECONDS = 30
Role = Literal["source", "channel"]


class LeaseLost(RuntimeError):
    """The payout no longer holds the account: its lease expired and was taken over."""


class AccountLeaseRow(SQLModel, table=True):
    """Table ``account_leases``: one row per account that signs as a transaction source."""

    __tablename__ = "account_leases"
    __table_args__ = (CheckConstraint("role IN ('source', 'channel')", name="ck_account_leases_role"),)

    account: str = Field(sa_column=Column(String(56), primary_key=True))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    holder: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    tx_hash: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    in_rotation: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


@dataclass(frozen=True, slots=True)
class AccountLease:
    """An ``account_leases`` row, detached from its session."""

    account: str
    role: str
    holder: str | None
    tx_hash: str | None
    expires_at: datetime | None
    in_rotation: bool
    note: str | None

    @classmethod
    def of(cls, row: AccountLeaseRow) -> AccountLease:
        return cls(row.account, row.role, row.holder, row.tx_hash, row.expires_at, row.in_rotation, row.note)


def _now() -> datetime:
    return datetime.now(UTC)


def ensure_pool(engine: Engine, accounts: list[str], role: Role) -> None:
    """Add the accounts that have no row yet (in rotation, free); existing rows are kept."""
    with transaction(engine, write=True) as session:
        known = set(session.exec(select(AccountLeaseRow.account).where(col(AccountLeaseRow.account).in_(accounts))))
        for account in accounts:
            if account not in known:
                session.add(AccountLeaseRow(account=account, role=role, updated_at=_now()))


def acquire(engine: Engine, holder: str, accounts: list[str], hold_seconds: int) -> str | None:
    """Lease one of ``accounts`` to ``holder`` for ``hold_seconds``; ``None`` if all are taken.

    Idempotent: the account ``holder`` already holds (among ``accounts``) is returned
    again, with its expiry kept. The least recently used free account is preferred, so
    load spreads across the pool.
    """
    now = _now()
    with transaction(engine, write=True) as session:
        held = session.exec(
            select(AccountLeaseRow).where(
                AccountLeaseRow.holder == holder,
                col(AccountLeaseRow.account).in_(accounts),
                or_(col(AccountLeaseRow.expires_at).is_(None), col(AccountLeaseRow.expires_at) > now),
            )
        ).first()
        if held is not None:
            return held.account
        free = session.exec(
            select(AccountLeaseRow)
            .where(
                col(AccountLeaseRow.account).in_(accounts),
                col(AccountLeaseRow.in_rotation).is_(True),
                or_(col(AccountLeaseRow.holder).is_(None), col(AccountLeaseRow.expires_at) <= now),
            )
            .order_by(col(AccountLeaseRow.updated_at))
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if free is None:
            return None
        free.holder, free.tx_hash = holder, None
        free.expires_at = now + timedelta(seconds=hold_seconds)
        free.updated_at = now
        session.add(free)
        return free.account


def bind(engine: Engine, account: str, holder: str, tx_hash: str, max_time: int) -> None:
    """Tie the lease to the envelope ``tx_hash`` about to be sent; :class:`LeaseLost` if
    ``holder`` does not hold ``account`` any more (the envelope must then not be sent)."""
    with transaction(engine, write=True) as session:
        row = _held(session.get(AccountLeaseRow, account, with_for_update=True), holder, account)
        row.tx_hash = tx_hash
        row.expires_at = max(row.expires_at or _now(), datetime.fromtimestamp(max_time + LEASE_MARGIN_SECONDS, UTC))
        row.updated_at = _now()
        session.add(row)


def release(engine: Engine, account: str, holder: str) -> bool:
    """Free ``account`` if ``holder`` holds it; ``False`` if it did not (a repeated call)."""
    with transaction(engine, write=True) as session:
        row = session.get(AccountLeaseRow, account, with_for_update=True)
        if row is None or row.holder != holder:
            return False
        row.holder, row.tx_hash, row.expires_at, row.updated_at = None, None, None, _now()
        session.add(row)
        return True


def release_unbound(engine: Engine, account: str, holder: str) -> bool:
    """:func:`release`, unless the lease is bound to an envelope (one that was refused and
    awaits its replacement on the same sequence number keeps the account)."""
    with transaction(engine, write=True) as session:
        row = session.get(AccountLeaseRow, account, with_for_update=True)
        if row is None or row.holder != holder or row.tx_hash is not None:
            return False
        row.holder, row.expires_at, row.updated_at = None, None, _now()
        session.add(row)
        return True


def release_all(engine: Engine, holder: str) -> None:
    """Free every account ``holder`` holds (a finished payout)."""
    with transaction(engine, write=True) as session:
        for row in session.exec(select(AccountLeaseRow).where(AccountLeaseRow.holder == holder).with_for_update()):
            row.holder, row.tx_hash, row.expires_at, row.updated_at = None, None, None, _now()
            session.add(row)


def take_out_of_rotation(engine: Engine, account: str, note: str) -> None:
    _set_rotation(engine, account, False, note)


def put_in_rotation(engine: Engine, account: str) -> None:
    _set_rotation(engine, account, True, None)


def _set_rotation(engine: Engine, account: str, in_rotation: bool, note: str | None) -> None:
    with transaction(engine, write=True) as session:
        row = session.get(AccountLeaseRow, account, with_for_update=True)
        if row is not None:
            row.in_rotation, row.note, row.updated_at = in_rotation, note, _now()
            session.add(row)


def remove(engine: Engine, account: str) -> None:
    """Forget an account (merged away); refused while a payout holds it."""
    with transaction(engine, write=True) as session:
        row = session.get(AccountLeaseRow, account, with_for_update=True)
        if row is None:
            return
        if row.holder is not None and (row.expires_at is None or row.expires_at > _now()):
            raise LeaseLost(f"{account} is leased to payout {row.holder!r}")
        session.delete(row)


def leases(engine: Engine) -> list[AccountLease]:
    with transaction(engine, write=False) as session:
        rows = session.exec(select(AccountLeaseRow).order_by(col(AccountLeaseRow.role), col(AccountLeaseRow.account)))
        return [AccountLease.of(row) for row in rows]


def _held(row: AccountLeaseRow | None, holder: str, account: str) -> AccountLeaseRow:
    if row is None or row.holder != holder or (row.expires_at is not None and row.expires_at <= _now()):
        raise LeaseLost(f"payout {holder!r} no longer holds a lease on {account}")
    return row
