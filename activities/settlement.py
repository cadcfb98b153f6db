"""The activity that takes an envelope from "built" to "settled": record it, send it,
and follow it by hash, resending the same envelope, until it is applied or provably dead.

One activity, heartbeating while it polls, instead of a workflow loop of submit/lookup
activities and timers: the payout's history stays short (a handful of events per
envelope) and confirmations are seen within one poll interval. It is safe to repeat: a
retry (worker crash, heartbeat timeout) records the same hash again, resends the same
envelope and looks it up, which is all a resend of an applied envelope can do.

The rules it keeps (shared/DESIGN.md §4):

- promise 3: the envelope is recorded in the DB (and its lease bound to it) before the
  first send; a payout never has two unsettled envelopes (:class:`UnsettledEnvelope`);
- promise 4: ``TRY_AGAIN_LATER``, errors and lost responses are not failures: the
  envelope is looked up, then sent again;
- promise 2: NOT_FOUND settles the envelope as dead only from an RPC whose latest ledger
  closed after the envelope's ``max_time`` and whose retention still reaches back to the
  ledger after ``built_at_ledger`` (the envelope can be in no earlier one; recorded with
  it in the DB, so a later run judges it the same way). Past its bound but outside the
  RPC's history, the answer is UNKNOWN: never death; the payout parks for an operator;
- promise 5: the lease on the envelope's source account is released only once the
  envelope is settled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy.engine import Engine
from stellar_sdk import xdr as x
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError
from stellar_sdk.exceptions import SorobanRpcErrorResponse
from stellar_sdk.soroban_rpc import GetTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.failures import UNSETTLED_ENVELOPE, already_paid
from activities.records import record_built
from payouts import authorization_store, db, leases
from payouts.errors import AlreadyPaid
from payouts.messages import BuiltEnvelope, EnvelopeLookup, SettleInput
from payouts.models import PayoutState

log = logging.getLogger("payouts.activities.settlement")

# EnvelopeLookup.status beyond getTransaction's: past its bound, outside the RPC's history;
# refused by sendTransaction before it was ever accepted.
UNKNOWN = "UNKNOWN"
REFUSED = "REFUSED"
# sendTransaction's ERROR answers after which a replacement is built at once: the bound is
# too close to the last ledger close (stellar-core TransactionFrame::isTooLate against
# getUpperBoundCloseTimeOffset), or the queue is full and the bid too low
# (TransactionQueue::canAdd, txINSUFFICIENT_FEE with the fee needed in feeCharged).
REFUSALS = ("txTOO_LATE", "txINSUFFICIENT_FEE")
ACCEPTED = ("PENDING", "DUPLICATE")
# A lookup by hash can only change once a ledger closes, so a poll is skipped while no new
# ledger has closed; at least every this many polls it looks anyway (belt and braces).
MAX_SKIPPED_POLLS = 8
LEDGER_WATCH_INTERVAL_SECONDS = 0.1
# Most envelopes settle within a ledger or two: heartbeats (a server write each) start only
# after this long, well inside the heartbeat timeout the workflow sets.
QUIET_SECONDS = 5.0
LEDGER_WATCH_IDLE_SECONDS = 5.0


class LedgerWatch:
    """The latest closed ledger, polled once for the whole process (``getLatestLedger``
    every 100 ms while anybody asks) instead of one ``getTransaction`` per payout per
    poll. Stops polling when nobody has asked for a while."""

    def __init__(self, rpc: SorobanServerAsync) -> None:
        self.rpc = rpc
        self.latest = 0
        self._last_asked = 0.0
        self._task: asyncio.Task[None] | None = None

    def latest_ledger(self) -> int:
        self._last_asked = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        return self.latest

    async def _poll(self) -> None:
        while time.monotonic() - self._last_asked < LEDGER_WATCH_IDLE_SECONDS:
            try:
                self.latest = max(self.latest, (await self.rpc.get_latest_ledger()).sequence)
            except (SdkConnectionError, SorobanRpcErrorResponse) as exc:
                log.debug("getLatestLedger failed: %s", type(exc).__name__)
            except RuntimeError:
                return  # the RPC client was closed: the worker is shutting down
            await asyncio.sleep(LEDGER_WATCH_INTERVAL_SECONDS)


def past_bound(lookup: EnvelopeLookup, max_time: int) -> bool:
    """NOT_FOUND from an RPC whose latest ledger closed after the envelope's bound: no
    ledger from now on can include it."""
    return lookup.status == "NOT_FOUND" and lookup.latest_close_time > max_time


def is_provably_dead(lookup: EnvelopeLookup, max_time: int, built_at_ledger: int) -> bool:
    """Promise 2: NOT_FOUND from an RPC past the envelope's bound that still remembers
    every ledger the envelope could be in (those after ``built_at_ledger``)."""
    return past_bound(lookup, max_time) and lookup.oldest_ledger <= built_at_ledger + 1


class SettlementActivities:
    def __init__(
        self, rpc: SorobanServerAsync, engine: Engine, payer: str, on_release: Callable[[], None] = lambda: None
    ) -> None:
        self.rpc = rpc
        self.engine = engine
        self.payer = payer  # the payout account, whose authorizations envelopes may carry
        self.on_release = on_release
        self.ledgers = LedgerWatch(rpc)

    @activity.defn
    async def settle_envelope(self, request: SettleInput) -> EnvelopeLookup:
        built = request.envelope
        key, signed_xdr = request.idempotency_key, request.signed_xdr
        sent_before = False
        if signed_xdr is not None:
            signed_xdr, sent_before = await self._record_before_send(request, signed_xdr)
        sent_once = sent_before
        # Whether the network may hold it: sent before (by an earlier attempt or run), or any
        # answer but a refusal. Only an envelope never accepted is replaced at once.
        maybe_accepted = sent_before
        # Sent before (a retry, or an earlier run): look it up first; resending an applied
        # envelope only earns TRY_AGAIN_LATER or txBAD_SEQ.
        look_first = sent_before
        looked_at, skipped = 0, 0
        last_seen = "not looked up yet"
        began = time.monotonic()
        while True:
            polls = request.confirm_max_polls
            if look_first:
                polls, look_first = 1, False
            elif signed_xdr is not None:
                sent = await self._send(built.tx_hash, signed_xdr)
                if not sent_once:
                    sent_once = True
                    await asyncio.to_thread(db.mark_submitted, self.engine, built.tx_hash)
                    activity.logger.info("envelope sent: %s", sent.status, extra={"tx_hash": built.tx_hash})
                if not maybe_accepted and sent.status == "ERROR" and sent.code in REFUSALS:
                    return self._refused(built, sent)
                maybe_accepted = True
                if sent.status not in ACCEPTED:
                    # Ambiguous (it may already be in a ledger): look it up once, then resend.
                    polls = 1
            for _ in range(polls):
                await asyncio.sleep(request.confirm_poll_ms / 1000)
                # Every pass heartbeats (throttled by the SDK), whatever the RPC answers: a
                # ledger stall or an RPC outage must not outlast the heartbeat timeout. The
                # detail is the last answer by hash, for operators (describe).
                if time.monotonic() - began > QUIET_SECONDS:
                    activity.heartbeat(last_seen)
                if looked_at and self.ledgers.latest_ledger() <= looked_at and skipped < MAX_SKIPPED_POLLS:
                    skipped += 1
                    continue
                skipped = 0
                lookup = await self._look_up(built.tx_hash)
                if lookup is None:
                    last_seen = "getTransaction: no answer"
                    continue
                looked_at, last_seen = lookup.latest_ledger, lookup.status
                settled = lookup.status in ("SUCCESS", "FAILED") or is_provably_dead(
                    lookup, built.max_time, built.built_at_ledger
                )
                if not settled and past_bound(lookup, built.max_time):
                    return await self._outside_history(key, built.tx_hash, built.source_account, built, lookup)
                if settled:
                    activity.logger.info("envelope settled: %s", lookup.status, extra={"tx_hash": built.tx_hash})
                    return await self._settled(request, lookup)

    async def _settled(self, request: SettleInput, lookup: EnvelopeLookup) -> EnvelopeLookup:
        """Record the settlement and release the lease, after settling the envelopes it
        replaced or that replaced it (same source account and sequence number: at most one
        of them applied). Its lookup, or the applied sibling's (``tx_hash`` set)."""
        key, built = request.idempotency_key, request.envelope
        siblings = await asyncio.to_thread(self._unsettled_siblings, key, built) if request.siblings_possible else []
        paid_by: tuple[db.EnvelopeRecord, EnvelopeLookup] | None = None
        if lookup.status == "NOT_FOUND":
            # It never applied, so its sequence number may have gone to a sibling.
            for sibling in siblings:
                found = await self._settle_sibling(sibling)
                if found.status == UNKNOWN:
                    return await self._outside_history(key, sibling.tx_hash, built.source_account, built, found)
                if found.status == "SUCCESS":
                    paid_by = (sibling, found)
        released = await asyncio.to_thread(self._record_settlement, key, built, lookup, siblings, paid_by)
        if released:
            self.on_release()
        if paid_by is not None:
            sibling, found = paid_by
            return replace(found, tx_hash=sibling.tx_hash)
        return lookup

    def _unsettled_siblings(self, key: str, built: BuiltEnvelope) -> list[db.EnvelopeRecord]:
        return [
            e
            for e in db.envelopes_of(self.engine, key)
            if e.tx_hash != built.tx_hash
            and (e.source_account, e.sequence) == (built.source_account, built.sequence)
            and e.status in (db.EnvelopeStatus.QUEUED, db.EnvelopeStatus.SUBMITTED)
        ]

    async def _settle_sibling(self, sibling: db.EnvelopeRecord) -> EnvelopeLookup:
        """A sibling's final lookup: its bound is no later than the settled envelope's."""
        since = sibling.built_at_ledger if sibling.built_at_ledger is not None else 0
        while True:
            found = await self._look_up(sibling.tx_hash)
            if found is not None:
                if found.status in ("SUCCESS", "FAILED") or is_provably_dead(found, sibling.max_time, since):
                    return found
                if past_bound(found, sibling.max_time):
                    return replace(found, status=UNKNOWN)
            activity.heartbeat(f"looking up {sibling.tx_hash}")
            await asyncio.sleep(1)

    def _refused(self, built: BuiltEnvelope, sent: _Sent) -> EnvelopeLookup:
        """Refused before it was ever accepted: it stays recorded (with the answer) and
        leased until a replacement on its sequence number settles."""
        needed = None
        if sent.code == "txINSUFFICIENT_FEE" and sent.fee_charged is not None:
            needed = sent.fee_charged - built.resource_fee
        activity.logger.info("envelope refused: %s", sent.code, extra={"tx_hash": built.tx_hash})
        return EnvelopeLookup(
            status=REFUSED,
            latest_ledger=sent.latest_ledger,
            latest_close_time=sent.latest_close_time,
            oldest_ledger=0,
            result_code=sent.code,
            needed_inclusion_fee=needed,
        )

    async def _outside_history(
        self, key: str, tx_hash: str, account: str, built: BuiltEnvelope, lookup: EnvelopeLookup
    ) -> EnvelopeLookup:
        """Past its bound (it can never apply from now on) but the RPC no longer remembers
        every ledger it could be in: whether it applied is UNKNOWN, never "dead". The row
        stays unsettled (a later run asks again) and the account is free again."""
        note = (
            f"past its bound, but the RPC's history starts at ledger {lookup.oldest_ledger}, after ledger "
            f"{built.built_at_ledger + 1} where it could first apply: whether it applied is unknown"
        )
        activity.logger.warning("envelope %s", note, extra={"tx_hash": tx_hash})
        await asyncio.to_thread(db.note_envelope_error, self.engine, tx_hash, note)
        if await asyncio.to_thread(leases.release, self.engine, account, key):
            self.on_release()
        return replace(lookup, status=UNKNOWN)

    async def _record_before_send(self, request: SettleInput, signed_xdr: str) -> tuple[str | None, bool]:
        """Record the envelope and bind its lease. Returns the XDR to send (None when it
        must not be sent again) and whether it was sent before."""
        built = request.envelope
        key = request.idempotency_key
        recorded = await asyncio.to_thread(db.envelope, self.engine, built.tx_hash)
        sent_before = recorded is not None and recorded.status != db.EnvelopeStatus.QUEUED
        if recorded is not None and recorded.status not in (db.EnvelopeStatus.QUEUED, db.EnvelopeStatus.SUBMITTED):
            return None, True  # a retry after it was settled: look it up to report it again
        try:
            await asyncio.to_thread(leases.bind, self.engine, built.source_account, key, built.tx_hash, built.max_time)
        except leases.LeaseLost:
            # Only after the envelope's bound (plus a margin): too late to send it, and
            # another payout may own the account's next sequence number. Look it up only.
            log.warning("payout %s lost its lease on %s; envelope %s is only looked up", key, built.source_account,
                        built.tx_hash)  # fmt: skip
            return None, sent_before
        others = await asyncio.to_thread(db.envelopes_of, self.engine, key)
        # Siblings (same source account and sequence number) exclude each other on chain.
        unsettled = [
            e.tx_hash
            for e in others
            if e.tx_hash != built.tx_hash
            and e.status in (db.EnvelopeStatus.QUEUED, db.EnvelopeStatus.SUBMITTED)
            and (e.source_account, e.sequence) != (built.source_account, built.sequence)
        ]
        if unsettled:
            raise ApplicationError(
                f"payout {key} has an unsettled envelope {unsettled[0]}; it is settled before a new one is sent",
                type=UNSETTLED_ENVELOPE,
                non_retryable=True,
            )
        try:
            await asyncio.to_thread(record_built, self.engine, self.payer, key, request.attempt, built, signed_xdr)
        except AlreadyPaid as exc:
            # Paid meanwhile (another run of the key): this envelope is never sent.
            await self._release_after_refusal(built.source_account, key)
            raise already_paid(exc) from None
        except authorization_store.UnsettledAuthorization as exc:
            # A fresh authorization while the key has one that may still pay (a stale run):
            # never sent; the run settles what is recorded and carries that one.
            raise ApplicationError(str(exc), type=UNSETTLED_ENVELOPE, non_retryable=True) from None
        return signed_xdr, sent_before

    async def _release_after_refusal(self, account: str, key: str) -> None:
        if await asyncio.to_thread(leases.release, self.engine, account, key):
            self.on_release()

    async def _send(self, tx_hash: str, signed_xdr: str) -> _Sent:
        """sendTransaction's answer; a lost one counts as ambiguous (``LOST``). Abnormal
        answers are noted on the envelope's row for operators."""
        try:
            response = await self.rpc.send_transaction(signed_xdr)
        except SdkConnectionError as exc:
            sent = _Sent("LOST", "", None, 0, 0)
            answer = f"sendTransaction: no answer ({type(exc).__name__})"
        else:
            result = x.TransactionResult.from_xdr(response.error_result_xdr) if response.error_result_xdr else None
            sent = _Sent(
                response.status.value,
                result.result.code.name if result is not None else "",
                result.fee_charged.int64 if result is not None else None,
                response.latest_ledger,
                response.latest_ledger_close_time,
            )
            answer = f"sendTransaction answered {sent.status} {sent.code}".strip()
        if sent.status not in ACCEPTED:
            activity.heartbeat(answer)
            await asyncio.to_thread(db.note_envelope_error, self.engine, tx_hash, answer)
        return sent

    async def _look_up(self, tx_hash: str) -> EnvelopeLookup | None:
        try:
            found = await self.rpc.get_transaction(tx_hash)
        except SdkConnectionError:
            return None
        lookup = EnvelopeLookup(
            status=found.status.value,
            latest_ledger=found.latest_ledger,
            latest_close_time=found.latest_ledger_close_time,
            oldest_ledger=found.oldest_ledger,
        )
        if found.status == GetTransactionStatus.NOT_FOUND:
            return lookup
        result = x.TransactionResult.from_xdr(found.result_xdr or "")
        return EnvelopeLookup(
            status=lookup.status,
            latest_ledger=lookup.latest_ledger,
            latest_close_time=lookup.latest_close_time,
            oldest_ledger=lookup.oldest_ledger,
            ledger=found.ledger,
            fee_charged=result.fee_charged.int64,
            result_code=result.result.code.name,
        )

    def _record_settlement(
        self,
        key: str,
        built: BuiltEnvelope,
        lookup: EnvelopeLookup,
        siblings: list[db.EnvelopeRecord],
        paid_by: tuple[db.EnvelopeRecord, EnvelopeLookup] | None,
    ) -> bool:
        """Record the envelope's settlement, its siblings' and a paid payout, and release the
        lease; True if this call released it."""
        self._mark(built.tx_hash, lookup)
        if lookup.status == "SUCCESS":
            self._paid(key, built.tx_hash, lookup)
        consumed_by = built.tx_hash if lookup.status in ("SUCCESS", "FAILED") else None
        for sibling in siblings:
            if paid_by is not None and sibling.tx_hash == paid_by[0].tx_hash:
                self._mark(sibling.tx_hash, paid_by[1])
                self._paid(key, sibling.tx_hash, paid_by[1])
            elif consumed_by is not None:
                note = f"its sequence number was used by {consumed_by}"
                db.mark_envelope(self.engine, sibling.tx_hash, db.EnvelopeStatus.EXPIRED, error=note)
            else:
                db.mark_envelope(self.engine, sibling.tx_hash, db.EnvelopeStatus.EXPIRED)
        return leases.release(self.engine, built.source_account, key)

    def _mark(self, tx_hash: str, lookup: EnvelopeLookup) -> None:
        status = {"SUCCESS": "confirmed", "FAILED": "failed"}.get(lookup.status, "expired")
        try:
            db.mark_envelope(
                self.engine,
                tx_hash,
                status,
                ledger=lookup.ledger,
                fee_charged=lookup.fee_charged,
                error=lookup.result_code if lookup.status == "FAILED" else None,
            )
        except db.EnvelopeNotFound:
            pass  # never recorded: an unsigned envelope a signer never answered for

    def _paid(self, key: str, tx_hash: str, lookup: EnvelopeLookup) -> None:
        # The payout is paid the moment its envelope is: recorded here, not a step later.
        ledger, fee = lookup.ledger, lookup.fee_charged
        db.set_payout_state(self.engine, key, PayoutState.CONFIRMED, tx_hash=tx_hash, ledger=ledger, fee_charged=fee)


@dataclass(frozen=True)
class _Sent:
    """sendTransaction's answer: status, result code and feeCharged of an ERROR."""

    status: str
    code: str
    fee_charged: int | None
    latest_ledger: int
    latest_close_time: int
