"""Table ``authorizations``: every Soroban authorization of the payout account that left,
or may leave, the worker (channels), with what the engine has proven about its nonce.

A signed authorization entry pays the moment any transaction carries it, whoever sends
that transaction, until its ``signature_expiration_ledger``; a dead envelope that carried
it is public. So the durable record of a payout is not only its envelopes but also its
authorizations:

- an authorization is recorded before it leaves the worker, in the transaction that
  checks the key has not paid (:class:`~payouts.errors.AlreadyPaid`): before an external
  signer sees it (:func:`record`), or, signed with the hot key, in the transaction that
  records the first envelope carrying it (:func:`record_carried`);
- a key has at most one unsettled (``live`` or ``unknown``) authorization: asking for a
  new one while it exists returns it, so a restarted or reset run carries the same nonce
  (mutually exclusive with the old) or waits for it to settle;
- ``unused_through_ledger`` is the ledger through which the nonce is proven unused (see
  :func:`payouts.authorization.unused_through_after_absence`); it only grows;
- ``used``: the payout is paid by whichever transaction used the nonce, and the payout
  row becomes CONFIRMED in the same DB transaction (so :func:`payouts.db.payment_of`
  answers for it); ``unused`` past its expiration: it can never pay; ``unknown``: the
  engine cannot prove either, the payout is parked for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select
from stellar_sdk import xdr as x

from payouts.authorization import NonceState, authorization_payload
from payouts.db import Payment, UTCDateTime, payment_in, payout_row, transaction
from payouts.errors import AlreadyPaid
from payouts.messages import AuthorizationRequest
from payouts.models import PayoutState

_ID = BigInteger().with_variant(Integer(), "sqlite")
UNSETTLED = (NonceState.LIVE.value, NonceState.UNKNOWN.value)
PAID_ELSEWHERE = "paid by a transaction this engine did not send, carrying its authorization"


def _now() -> datetime:
    return datetime.now(UTC)


class UnsettledAuthorization(RuntimeError):
    """A new authorization for a key that has one that may still pay."""


class AuthorizationRow(SQLModel, table=True):
    """Table ``authorizations``: one row per authorization entry of the payout account."""

    __tablename__ = "authorizations"
    __table_args__ = (
        UniqueConstraint("payer", "nonce", name="uq_authorizations_payer_nonce"),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s.value}'" for s in NonceState) + ")", name="ck_authorizations_status"
        ),
        Index("ix_authorizations_idempotency_key", "idempotency_key"),
    )

    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True, autoincrement=True))
    idempotency_key: str = Field(
        sa_column=Column(
            String(128),
            ForeignKey("payouts.idempotency_key", name="fk_authorizations_idempotency_key_payouts"),
            nullable=False,
        )
    )
    payer: str = Field(sa_column=Column(String(56), nullable=False))
    nonce: int = Field(sa_column=Column(BigInteger, nullable=False))
    entry_xdr: str = Field(sa_column=Column(Text, nullable=False))  # unsigned, expiration set
    signed_entry_xdr: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    valid_until_ledger: int = Field(sa_column=Column(BigInteger, nullable=False))
    sign_by: int = Field(sa_column=Column(BigInteger, nullable=False))  # unix time
    unused_through_ledger: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    used_ledger: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    used_tx_hash: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


@dataclass(frozen=True, slots=True)
class AuthorizationRecord:
    """An ``authorizations`` row, detached from its session."""

    idempotency_key: str
    payer: str
    nonce: int
    entry_xdr: str
    signed_entry_xdr: str | None
    valid_until_ledger: int
    sign_by: int
    unused_through_ledger: int
    status: NonceState
    used_ledger: int | None
    used_tx_hash: str | None

    @classmethod
    def of(cls, row: AuthorizationRow) -> AuthorizationRecord:
        return cls(
            row.idempotency_key,
            row.payer,
            row.nonce,
            row.entry_xdr,
            row.signed_entry_xdr,
            row.valid_until_ledger,
            row.sign_by,
            row.unused_through_ledger,
            NonceState(row.status),
            row.used_ledger,
            row.used_tx_hash,
        )

    def request(self, network_passphrase: str) -> AuthorizationRequest:
        """What the workflow carries of it (the payload to sign derived from the entry)."""
        entry = x.SorobanAuthorizationEntry.from_xdr(self.entry_xdr)
        return AuthorizationRequest(
            entry_xdr=self.entry_xdr,
            payload_hex=authorization_payload(entry, network_passphrase).hex(),
            nonce=self.nonce,
            valid_until_ledger=self.valid_until_ledger,
            expires_at=self.sign_by,
            signed_entry_xdr=self.signed_entry_xdr,
            unused_through_ledger=self.unused_through_ledger,
        )


def _row(session: Session, payer: str, nonce: int, *, lock: bool = False) -> AuthorizationRow | None:
    query = select(AuthorizationRow).where(AuthorizationRow.payer == payer, AuthorizationRow.nonce == nonce)
    return session.exec(query.with_for_update() if lock else query).first()


def _unsettled(session: Session, key: str) -> list[AuthorizationRow]:
    query = (
        select(AuthorizationRow)
        .where(AuthorizationRow.idempotency_key == key, col(AuthorizationRow.status).in_(UNSETTLED))
        .order_by(col(AuthorizationRow.id))
    )
    return list(session.exec(query))


def _new_row(
    key: str,
    payer: str,
    nonce: int,
    entry_xdr: str,
    signed_entry_xdr: str | None,
    valid_until_ledger: int,
    sign_by: int,
    issued_at_ledger: int,
) -> AuthorizationRow:
    """A live authorization, its nonce proven unused through the ledger it was made at."""
    now = _now()
    return AuthorizationRow(
        idempotency_key=key,
        payer=payer,
        nonce=nonce,
        entry_xdr=entry_xdr,
        signed_entry_xdr=signed_entry_xdr,
        valid_until_ledger=valid_until_ledger,
        sign_by=sign_by,
        unused_through_ledger=issued_at_ledger,
        status=NonceState.LIVE.value,
        created_at=now,
        updated_at=now,
    )


def record(
    engine: Engine,
    key: str,
    payer: str,
    nonce: int,
    entry_xdr: str,
    valid_until_ledger: int,
    sign_by: int,
    issued_at_ledger: int,
    signed_entry_xdr: str | None = None,
) -> AuthorizationRecord:
    """Record a new authorization of payout ``key`` before it leaves the worker, and return
    it; or return the key's unsettled authorization if it has one (then the new one is
    dropped unused: it never left the worker). Raises :class:`AlreadyPaid` if the key paid.

    ``issued_at_ledger`` is the latest ledger when the entry was made: no ledger up to it
    can hold a use, so the nonce starts proven unused through it.
    """
    for _ in range(2):  # a concurrent insert for the same key makes the first pass fail
        try:
            with transaction(engine, write=True) as session:
                payout = payout_row(session, key, lock=True)
                if payout is None:
                    raise LookupError(f"no payout recorded under idempotency key {key!r}")
                paid = payment_in(session, payout)
                if paid is not None:
                    raise AlreadyPaid(key, paid.tx_hash)
                existing = _unsettled(session, key)
                if existing:
                    return AuthorizationRecord.of(existing[-1])
                row = _new_row(
                    key, payer, nonce, entry_xdr, signed_entry_xdr, valid_until_ledger, sign_by, issued_at_ledger
                )
                session.add(row)
                session.flush()
                return AuthorizationRecord.of(row)
        except IntegrityError:
            continue
    raise RuntimeError(f"could not record an authorization of payout {key!r}")  # pragma: no cover


def record_carried(
    session: Session,
    key: str,
    payer: str,
    nonce: int,
    entry_xdr: str,
    signed_entry_xdr: str,
    valid_until_ledger: int,
    sign_by: int,
    issued_at_ledger: int,
) -> None:
    """In the transaction recording the first envelope that carries it (the key's payment
    checked there): a hot-key authorization, unless recorded already. Raises
    :class:`UnsettledAuthorization` if the key has another that may still pay."""
    if _row(session, payer, nonce) is not None:
        return
    other = _unsettled(session, key)
    if other:
        raise UnsettledAuthorization(
            f"payout {key!r} has authorization nonce {other[-1].nonce} that may still pay; it is carried or settled "
            "before another is made"
        )
    session.add(_new_row(key, payer, nonce, entry_xdr, signed_entry_xdr, valid_until_ledger, sign_by, issued_at_ledger))


def before_build(engine: Engine, key: str) -> tuple[Payment | None, AuthorizationRecord | None]:
    """In one read: the key's payment (nothing is built for a key that paid), and its
    authorization that may still pay (carried instead of a new one)."""
    with transaction(engine, write=False) as session:
        payout = payout_row(session, key)
        paid = None if payout is None else payment_in(session, payout)
        return paid, unsettled_in(session, key)


def unsettled_in(session: Session, key: str) -> AuthorizationRecord | None:
    """The key's newest authorization that is ``live`` or ``unknown``, in the caller's
    transaction."""
    rows = _unsettled(session, key)
    return AuthorizationRecord.of(rows[-1]) if rows else None


def record_signature(engine: Engine, payer: str, nonce: int, signed_entry_xdr: str) -> None:
    """Keep the signed entry an external signer gave (checked first): a later run carries
    it instead of asking again. The first one kept stays (any valid one is equivalent)."""
    with transaction(engine, write=True) as session:
        row = _row(session, payer, nonce, lock=True)
        if row is not None and row.signed_entry_xdr is None:
            row.signed_entry_xdr, row.updated_at = signed_entry_xdr, _now()
            session.add(row)


def unsettled(engine: Engine, key: str) -> list[AuthorizationRecord]:
    """The key's authorizations that are ``live`` or ``unknown``, oldest first."""
    with transaction(engine, write=False) as session:
        return [AuthorizationRecord.of(row) for row in _unsettled(session, key)]


def of_payout(engine: Engine, key: str) -> list[AuthorizationRecord]:
    """Every authorization of payout ``key``, oldest first."""
    with transaction(engine, write=False) as session:
        query = (
            select(AuthorizationRow).where(AuthorizationRow.idempotency_key == key).order_by(col(AuthorizationRow.id))
        )
        return [AuthorizationRecord.of(row) for row in session.exec(query)]


def observe(
    engine: Engine,
    payer: str,
    nonce: int,
    state: NonceState,
    unused_through_ledger: int,
    *,
    used_ledger: int | None = None,
    used_tx_hash: str | None = None,
) -> AuthorizationRecord:
    """Keep what was proven about the nonce. ``unused_through_ledger`` only grows; a
    settled state (``used``, ``unused``) is never rewritten by another. ``used`` also
    records the payout CONFIRMED, paid by ``used_tx_hash`` (when known), in the same DB
    transaction."""
    with transaction(engine, write=True) as session:
        row = _row(session, payer, nonce, lock=True)
        if row is None:
            raise LookupError(f"no authorization of {payer} with nonce {nonce} is recorded")
        row.unused_through_ledger = max(row.unused_through_ledger, unused_through_ledger)
        if row.status in (NonceState.LIVE.value, NonceState.UNKNOWN.value):
            row.status = state.value
        if state == NonceState.USED:
            row.used_ledger = row.used_ledger or used_ledger
            row.used_tx_hash = row.used_tx_hash or used_tx_hash
            payout = payout_row(session, row.idempotency_key, lock=True)
            assert payout is not None  # the foreign key
            if payout.status != PayoutState.CONFIRMED:
                payout.status = PayoutState.CONFIRMED.value
                payout.tx_hash, payout.ledger = row.used_tx_hash, row.used_ledger
                payout.last_error = PAID_ELSEWHERE
                payout.updated_at = _now()
                session.add(payout)
        row.updated_at = _now()
        session.add(row)
        session.flush()
        return AuthorizationRecord.of(row)
