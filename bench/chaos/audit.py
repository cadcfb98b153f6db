"""The independent audit at the end of a chaos run.

It trusts nobody's bookkeeping but the ledger's. Three sources are read separately:

- **the ledger**: every transaction devnet applied since the run began, through
  ``getTransactions`` (status, fee charged, source, and the transfer it makes), and the
  balances of every account involved through ``getLedgerEntries``;
- **the app DB**: each payout's row and its envelopes (``transactions``);
- **Temporal**: each key's latest run: its status, its result or failure, and for a live
  run the ``status`` query.

Each key is judged by its latest run (after an operator's reset, the new run; after a
terminate and a new start, the new one). Per idempotency key, exactly one of these must
hold:

- one applied payment, Temporal CONFIRMED with that transaction's hash, the DB CONFIRMED
  with the same hash; the transaction is the engine's, or an outside relayer's that
  carried the payout account's authorization (then the DB's ``payouts.tx_hash`` and
  Temporal name the relayer's transaction, "paid by a transaction this engine did not
  send");
- no applied payment, Temporal FAILED with a reason, the DB FAILED;
- no applied payment and a live run waiting for a signature (the signer never answered);
- no applied payment and BUILT (build-only mode);

and never PARKED: the run stays within the RPC's history, so the engine can always prove
what it handed out (a ``parked`` violation). Each of the key's envelope rows is settled as
the ledger says (``confirmed`` and ``failed`` ones applied so, ``expired`` ones never
applied, none left ``queued`` or ``submitted`` once the payout ended), and every
transaction of the engine's that the ledger applied for the key was recorded in the DB
(promise 3); an outside party's transaction carrying the key's authorization is not
(failed, it is only its fee). Across the run: no applied payment that no key asked for
(outside traffic, the queue fillers' transfers, aside), and each account's balance moved
by exactly the confirmed amounts (as Temporal reports them), the outside traffic's
transfers, and the fees the ledger charged it. Anything else is a violation, printed
with the key, its envelopes and the ledger entries involved.

:func:`check` is a pure function of what was read, so the audit itself is tested on
made-up facts (``tests/test_chaos_audit.py``).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from stellar_sdk import Address, Keypair, StrKey, TransactionEnvelope, scval
from stellar_sdk import xdr as x
from stellar_sdk.operation import InvokeHostFunction
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from payouts import db
from payouts.amounts import from_stroops
from payouts.client import PayoutClient
from payouts.messages import PayoutOutcome
from payouts.models import PayoutRequest, PayoutState


@dataclass(frozen=True)
class PlannedPayout:
    """A payout the run asked for. Its amount is unique to it, so the ledger's transfers
    map back to keys without anybody's records: ``stroops = BASE + 2 × index``; the odd
    amounts belong to the conflicting requests the run also sends (they must never pay)."""

    index: int
    key: str
    mode: str
    task_queue: str
    payer: str
    destination: str
    stroops: int


AMOUNT_BASE = 1_000_000


def planned_stroops(index: int, *, conflicting: bool = False) -> int:
    return AMOUNT_BASE + 2 * index + (1 if conflicting else 0)


def request_of(p: PlannedPayout, *, conflicting: bool = False) -> PayoutRequest:
    """The request the run sends for ``p`` (or, ``conflicting``, another amount under its key)."""
    stroops = planned_stroops(p.index, conflicting=conflicting)
    return PayoutRequest(payout_id=f"chaos-{p.index}", destination=p.destination, amount=from_stroops(stroops),
                         asset="XLM", idempotency_key=p.key)  # fmt: skip


@dataclass(frozen=True)
class AppliedTx:
    """A transaction in a closed ledger, successful or not."""

    tx_hash: str
    ledger: int
    successful: bool
    source: str
    fee_charged: int
    transfer: tuple[str, str, int] | None  # (from, to, stroops) of a SAC transfer


@dataclass(frozen=True)
class TemporalFact:
    status: str  # COMPLETED | FAILED | RUNNING | MISSING | another execution status
    state: PayoutState | None = None  # from the result or the status query
    tx_hash: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class DbFact:
    state: PayoutState | None
    tx_hash: str | None
    error: str | None
    envelopes: tuple[db.EnvelopeRecord, ...] = ()


@dataclass
class Violation:
    kind: str  # duplicate | lost | disagreement | parked | unknown payment | balance
    key: str
    detail: str
    envelopes: tuple[db.EnvelopeRecord, ...] = ()
    ledger_entries: tuple[AppliedTx, ...] = ()

    def render(self) -> str:
        lines = [f"VIOLATION {self.kind}: {self.key}: {self.detail}"]
        for e in self.envelopes:
            lines.append(f"  envelope {e.tx_hash} attempt {e.attempt} {e.status.value} source {e.source_account} "
                         f"seq {e.sequence} max_time {e.max_time} ledger {e.ledger} error {e.last_error}")  # fmt: skip
            lines.append(f"    xdr {e.envelope_xdr}")
        for t in self.ledger_entries:
            state = "SUCCESS" if t.successful else "FAILED"
            lines.append(f"  ledger {t.ledger} tx {t.tx_hash} {state} source {t.source} fee {t.fee_charged} "
                         f"transfer {t.transfer}")  # fmt: skip
        return "\n".join(lines)


@dataclass
class AuditReport:
    outcomes: Counter[str] = field(default_factory=Counter)
    failure_reasons: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    applied_payments: int = 0
    paid_by_outside: int = 0  # keys paid by an outside relayer's transaction
    outside_transfers: int = 0  # applied transfers of outside traffic (queue fillers)
    fees_charged: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for v in self.violations if v.kind == kind)


def _reason_class(error: str | None) -> str:
    text = (error or "").lower()
    for marker, name in (
        ("exceeds payouts_max_gas_stroops", "fee above cap"),
        ("authorization expired", "authorization expired before a channel carried it"),
        ("attempts used", "attempts exhausted"),
        ("conflict", "idempotency conflict"),
        ("simulation failed", "simulation failed"),
    ):
        if marker in text:
            return name
    return "other"


def check(
    planned: list[PlannedPayout],
    ledger: list[AppliedTx],
    temporal: dict[str, TemporalFact],
    database: dict[str, DbFact],
    balance_moves: dict[str, int],
    outside: frozenset[str] = frozenset(),
) -> AuditReport:
    """The audit proper: see the module docstring. ``balance_moves`` is each account's
    final balance minus its balance when the run began; ``outside`` the accounts of the
    outside parties (queue fillers, their sink, relayers)."""
    report = AuditReport()
    by_amount = {(p.payer, p.destination, p.stroops): p for p in planned}
    payments: dict[str, list[AppliedTx]] = defaultdict(list)
    attempts: dict[str, list[AppliedTx]] = defaultdict(list)
    expected_moves: Counter[str] = Counter()
    for tx in ledger:
        report.fees_charged += tx.fee_charged
        expected_moves[tx.source] -= tx.fee_charged
        if tx.transfer is None:
            continue
        owner = by_amount.get(tx.transfer)
        if owner is None:
            sender, receiver, stroops = tx.transfer
            if sender in outside:
                if tx.successful:
                    report.outside_transfers += 1
                    expected_moves[sender] -= stroops
                    expected_moves[receiver] += stroops
            elif tx.successful:
                report.violations.append(Violation("unknown payment", "-", f"no key asked for {tx.transfer}",
                                                   ledger_entries=(tx,)))  # fmt: skip
            continue
        attempts[owner.key].append(tx)
        if tx.successful:
            payments[owner.key].append(tx)
            report.applied_payments += 1

    ledger_by_hash = {tx.tx_hash: tx for tx in ledger}
    for p in planned:
        t = temporal.get(p.key, TemporalFact("MISSING"))
        d = database.get(p.key, DbFact(None, None, None))
        paid = payments.get(p.key, [])

        def violation(kind: str, detail: str, p: PlannedPayout = p, d: DbFact = d) -> None:
            report.violations.append(Violation(kind, p.key, detail, d.envelopes, tuple(attempts.get(p.key, []))))

        for reason in _envelope_disagreements(d.envelopes, attempts.get(p.key, []), ledger_by_hash, t, outside):
            violation("disagreement", reason)
        if t.state == PayoutState.CONFIRMED:
            expected_moves[p.payer] -= p.stroops
            expected_moves[p.destination] += p.stroops
        if len(paid) > 1:
            violation("duplicate", f"{len(paid)} applied payments")
            continue
        if PayoutState.PARKED in (t.state, d.state):
            report.outcomes["parked"] += 1
            violation("parked", f"PARKED within the RPC's history: Temporal {t.status} {t.state} "
                      f"({t.error or ''}), the DB {d.state} ({d.error or ''})")  # fmt: skip
            continue
        if paid:
            report.outcomes["confirmed"] += 1
            tx = paid[0]
            relayed = tx.source in outside
            if relayed:
                report.paid_by_outside += 1
            if t.status != "COMPLETED" or t.state != PayoutState.CONFIRMED:
                violation("disagreement", f"paid in ledger {tx.ledger}, but Temporal says {t.status} {t.state}")
            elif (t.tx_hash is not None or relayed) and t.tx_hash != tx.tx_hash:
                violation("disagreement", f"paid by {tx.tx_hash}, but Temporal names {t.tx_hash}")
            elif d.state != PayoutState.CONFIRMED or d.tx_hash != tx.tx_hash:
                violation("disagreement", f"paid by {tx.tx_hash}, but the DB says {d.state} {d.tx_hash}")
            continue
        if t.status == "COMPLETED" and t.state == PayoutState.BUILT and p.mode == "build-only":
            report.outcomes["built"] += 1
            if d.state != PayoutState.BUILT:
                violation("disagreement", f"built, but the DB says {d.state}")
        elif t.status == "FAILED":
            report.outcomes["failed"] += 1
            report.failure_reasons[_reason_class(t.error)] += 1
            if not t.error:
                violation("disagreement", "FAILED without a reason")
            elif d.state != PayoutState.FAILED:
                violation("disagreement", f"Temporal says FAILED ({t.error}), the DB says {d.state}")
        elif t.status == "RUNNING" and t.state == PayoutState.AWAITING_SIGNATURE:
            report.outcomes["awaiting signature"] += 1
        elif t.state == PayoutState.CONFIRMED:
            violation("lost", f"Temporal says CONFIRMED ({t.tx_hash}) but the ledger holds no payment")
        else:
            violation("lost", f"no payment and no settled outcome: Temporal {t.status} {t.state} {t.error or ''}")

    for account in sorted(set(balance_moves) | set(expected_moves)):
        moved, expected = balance_moves.get(account, 0), expected_moves.get(account, 0)
        if moved != expected:
            report.violations.append(Violation("balance", account, f"moved {moved} stroops, expected {expected} "
                                               "(confirmed payouts, outside transfers and fees)"))  # fmt: skip
    return report


def _envelope_disagreements(
    envelopes: tuple[db.EnvelopeRecord, ...],
    on_chain_for_key: list[AppliedTx],
    ledger_by_hash: dict[str, AppliedTx],
    temporal: TemporalFact,
    outside: frozenset[str] = frozenset(),
) -> list[str]:
    """Each envelope row against the ledger: settled as the ledger says, and every applied
    transaction of the engine's for the key recorded before it was sent (promise 3); an
    outside party's transaction is nobody's envelope."""
    found = []
    recorded = {e.tx_hash for e in envelopes}
    for tx in on_chain_for_key:
        if tx.tx_hash not in recorded and tx.source not in outside:
            found.append(f"ledger {tx.ledger} applied {tx.tx_hash}, which the DB never recorded")
    for e in envelopes:
        on_chain = ledger_by_hash.get(e.tx_hash)
        status = e.status
        if status == db.EnvelopeStatus.CONFIRMED and (on_chain is None or not on_chain.successful):
            found.append(f"envelope {e.tx_hash} is confirmed in the DB, not in the ledger")
        elif status == db.EnvelopeStatus.FAILED and (on_chain is None or on_chain.successful):
            found.append(f"envelope {e.tx_hash} is failed in the DB, not in the ledger")
        elif status == db.EnvelopeStatus.EXPIRED and on_chain is not None:
            found.append(f"envelope {e.tx_hash} was declared dead, yet ledger {on_chain.ledger} applied it")
        elif status in (db.EnvelopeStatus.QUEUED, db.EnvelopeStatus.SUBMITTED) and temporal.status != "RUNNING":
            found.append(f"envelope {e.tx_hash} is still {status.value} after its payout ended")
    return found


# -- reading the three sources --------------------------------------------------------------


def _transfer(envelope: TransactionEnvelope) -> tuple[str, str, int] | None:
    ops = envelope.transaction.operations
    if len(ops) != 1 or not isinstance(ops[0], InvokeHostFunction):
        return None
    call = ops[0].host_function.invoke_contract
    if call is None or call.function_name.sc_symbol != b"transfer" or len(call.args) != 3:
        return None
    source, destination, amount = (scval.to_native(a) for a in call.args)
    if not (isinstance(source, Address) and isinstance(destination, Address) and isinstance(amount, int)):
        return None
    return source.address, destination.address, amount


async def read_ledger(rpc: SorobanServerAsync, start_ledger: int, passphrase: str) -> list[AppliedTx]:
    """Every transaction applied since ``start_ledger``, from ``getTransactions``."""
    found: list[AppliedTx] = []
    page_size = 200
    page = await rpc.get_transactions(start_ledger=start_ledger, limit=page_size)
    while True:
        for tx in page.transactions:
            envelope = TransactionEnvelope.from_xdr(tx.envelope_xdr, passphrase)
            result = x.TransactionResult.from_xdr(tx.result_xdr)
            found.append(AppliedTx(tx.transaction_hash, tx.ledger, tx.status == "SUCCESS",
                                   envelope.transaction.source.account_id, result.fee_charged.int64,
                                   _transfer(envelope)))  # fmt: skip
        if len(page.transactions) < page_size:
            return found
        page = await rpc.get_transactions(cursor=page.cursor, limit=page_size)


async def read_balances(rpc: SorobanServerAsync, accounts: list[str]) -> dict[str, int]:
    balances: dict[str, int] = {}
    for chunk in range(0, len(accounts), 100):
        keys = [Keypair.from_public_key(a).xdr_account_id() for a in accounts[chunk : chunk + 100]]
        ledger_keys = [x.LedgerKey(x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(k)) for k in keys]
        for entry in (await rpc.get_ledger_entries(ledger_keys)).entries or []:
            account = x.LedgerEntryData.from_xdr(entry.xdr).account
            assert account is not None
            public_key = account.account_id.account_id.ed25519
            assert public_key is not None
            balances[StrKey.encode_ed25519_public_key(public_key.uint256)] = account.balance.int64
    return balances


async def read_temporal(client: Client, planned: list[PlannedPayout]) -> dict[str, TemporalFact]:
    limit = asyncio.Semaphore(32)

    async def one(p: PlannedPayout) -> tuple[str, TemporalFact]:
        async with limit:
            return p.key, await _temporal_fact(PayoutClient(client, p.task_queue), p.key)

    return dict(await asyncio.gather(*(one(p) for p in planned)))


async def _temporal_fact(payouts: PayoutClient, key: str) -> TemporalFact:
    handle = payouts.handle(key)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return TemporalFact("MISSING")
        raise
    status = description.status
    if status == WorkflowExecutionStatus.COMPLETED:
        outcome: PayoutOutcome = await handle.result()
        return TemporalFact("COMPLETED", PayoutState(outcome.state), outcome.tx_hash, outcome.error)
    if status == WorkflowExecutionStatus.FAILED:
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            cause = exc.cause
            return TemporalFact("FAILED", PayoutState.FAILED, error=str(getattr(cause, "message", cause)))
        return TemporalFact("FAILED", PayoutState.FAILED)
    if status == WorkflowExecutionStatus.RUNNING:
        try:
            current = await payouts.status(key)
        except (RPCError, WorkflowQueryFailedError) as exc:  # no worker answers, or it cannot replay
            return TemporalFact("RUNNING", error=f"status query failed: {exc}")
        return TemporalFact("RUNNING", current.state, current.tx_hash, current.last_error)
    return TemporalFact(status.name if status is not None else "UNKNOWN")


def read_database(engine: Engine, planned: list[PlannedPayout]) -> dict[str, DbFact]:
    facts: dict[str, DbFact] = {}
    for p in planned:
        record = db.get_payout(engine, p.key)
        envelopes = tuple(db.envelopes_of(engine, p.key))
        if record is None:
            facts[p.key] = DbFact(None, None, None, envelopes)
        else:
            facts[p.key] = DbFact(PayoutState(record.status), record.tx_hash, record.last_error, envelopes)
    return facts
