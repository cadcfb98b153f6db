"""Outside parties on the chaos run's network: filler accounts that surge the transaction
queue, and a relayer that front-runs the engine with an authorization it copied.

Neither is the engine, and neither pays a payout's destination on its own account:

- **fillers** (:class:`QueueFiller`) send Soroban transactions, each a 1-stroop transfer
  from the filler to one sink account, bidding high, so that devnet's bounded queue is
  full and the engine's envelopes are refused (``ERROR txINSUFFICIENT_FEE`` naming the fee
  needed) or evicted by higher bids. A queue needs only tens of them: the cluster's devnet
  runs with a small Soroban ledger capacity (:data:`~bench.chaos.cluster.SOROBAN_LEDGER_TXS`);
- the **relayer** (:class:`Relayer`) copies the signed authorization entry out of an
  envelope the engine recorded (the DB's ``transactions.envelope_xdr``) into a
  transaction of its own, which pays the payout's transfer (the payout account's
  authorization is what moves the money, whoever carries it).

The audit (:mod:`bench.chaos.audit`) is told their accounts: the fillers' transfers are
outside traffic (their amounts and fees enter the balance checks), and a payment a
relayer carried must be the key's only one, recorded as such in the DB and Temporal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from stellar_sdk import Account, Asset, Keypair, TransactionBuilder, TransactionEnvelope
from stellar_sdk import xdr as x
from stellar_sdk.exceptions import BaseRequestError
from stellar_sdk.operation import InvokeHostFunction
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionResponse, SendTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync

from payouts.envelopes import build_payout_transaction

log = logging.getLogger("chaos.outside")

FILLER_STROOPS = 1  # what each filler transaction moves to the sink
BID_START = 1_000  # the least first bid of a surge, stroops per operation
SENDS_AT_ONCE = 12  # the fillers' sendTransaction calls in flight
# What the run's own devnet faults do to outside parties' calls too: transport errors, and
# an injected HTTP 5xx, whose body stellar-sdk fails to validate as a JSON-RPC response
# (pydantic's ValidationError, a ValueError).
RPC_FAILURES = (BaseRequestError, OSError, asyncio.TimeoutError, ValueError)


@dataclass
class OutsideAccounts:
    """The outside parties' accounts, funded at setup like the engine's."""

    fillers: list[Keypair]
    sink: Keypair
    relayer: Keypair

    @classmethod
    def new(cls, fillers: int) -> OutsideAccounts:
        return cls([Keypair.random() for _ in range(fillers)], Keypair.random(), Keypair.random())

    @property
    def public_keys(self) -> list[str]:
        return [*(f.public_key for f in self.fillers), self.sink.public_key, self.relayer.public_key]


def _answer(sent: SendTransactionResponse) -> str:
    """``PENDING``, ``TRY_AGAIN_LATER``, ``ERROR txINSUFFICIENT_FEE``, …"""
    if sent.status != SendTransactionStatus.ERROR or sent.error_result_xdr is None:
        return str(sent.status.value)
    return f"ERROR {x.TransactionResult.from_xdr(sent.error_result_xdr).result.code.name}"


async def _sequences(rpc: SorobanServerAsync, accounts: list[str]) -> dict[str, int]:
    keys = [
        x.LedgerKey(x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(Keypair.from_public_key(a).xdr_account_id()))
        for a in accounts
    ]
    found: dict[str, int] = {}
    for entry in (await rpc.get_ledger_entries(keys)).entries or []:
        account = x.LedgerEntryData.from_xdr(entry.xdr).account
        assert account is not None and account.account_id.account_id.ed25519 is not None
        public_key = Keypair.from_raw_ed25519_public_key(account.account_id.account_id.ed25519.uint256).public_key
        found[public_key] = account.seq_num.sequence_number.int64
    return found


@dataclass
class SurgeStats:
    surges: int = 0
    rounds: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # the fillers' sendTransaction answers


class QueueFiller:
    """Keeps devnet's Soroban queue full of high bids for a while.

    Every half ledger each filler sends a transfer bidding the round's inclusion fee; the
    bids climb by half each round, from a 32nd of ``top_bid`` to ``top_bid``, faster than
    getFeeStats (what the engine bids by) follows: the engine's envelopes meet a queue of
    higher bids (refused, naming the fee needed) and its replacements are evicted by the
    next rounds. A filler with a
    transaction still queued is answered TRY_AGAIN_LATER (one per source account), which
    costs nothing. Each filler's call is simulated once; its resources never change."""

    def __init__(self, rpc: SorobanServerAsync, accounts: OutsideAccounts, passphrase: str, ledger_ms: int) -> None:
        self.rpc = rpc
        self.accounts = accounts
        self.passphrase = passphrase
        self.ledger_ms = ledger_ms
        self.stats = SurgeStats()
        self._prepared: dict[str, tuple[InvokeHostFunction, x.SorobanTransactionData]] = {}
        self._sends = asyncio.Semaphore(SENDS_AT_ONCE)

    async def prepare(self) -> None:
        """Simulate each filler's transfer (at setup, before the run's faults)."""
        sequences = await _sequences(self.rpc, [f.public_key for f in self.accounts.fillers])
        for filler in self.accounts.fillers:
            envelope = build_payout_transaction(
                Account(filler.public_key, sequences[filler.public_key]),
                self.passphrase,
                self.accounts.sink.public_key,
                FILLER_STROOPS,
                int(time.time()) + 300,
                asset=Asset.native(),
            )
            prepared = await self.rpc.prepare_transaction(envelope)
            op = prepared.transaction.operations[0]
            assert isinstance(op, InvokeHostFunction) and prepared.transaction.soroban_data is not None
            self._prepared[filler.public_key] = (op, prepared.transaction.soroban_data)

    async def surge(self, seconds: float, top_bid: int) -> None:
        self.stats.surges += 1
        rounds = max(2, int(seconds * 2000 / self.ledger_ms))
        bid = max(BID_START, top_bid // 32)
        for _ in range(rounds):
            self.stats.rounds += 1
            try:
                sequences = await _sequences(self.rpc, list(self._prepared))
            except RPC_FAILURES as exc:  # the run's own devnet faults hit the fillers too
                log.debug("filler sequences: %s", exc)
                sequences = {}
            await asyncio.gather(*(self._send(f, sequences[f.public_key], bid)
                                   for f in self.accounts.fillers if f.public_key in sequences))  # fmt: skip
            await asyncio.sleep(self.ledger_ms / 2000)
            bid = min(top_bid, bid * 3 // 2)

    async def _send(self, filler: Keypair, sequence: int, bid: int) -> None:
        op, data = self._prepared[filler.public_key]
        envelope = (
            TransactionBuilder(Account(filler.public_key, sequence), self.passphrase, base_fee=bid)
            .append_operation(op)
            .set_soroban_data(data)
            .add_time_bounds(0, int(time.time()) + 60)
            .build()
        )
        envelope.sign(filler)
        async with self._sends:
            try:
                answer = _answer(await self.rpc.send_transaction(envelope))
            except RPC_FAILURES as exc:
                answer = f"transport error ({type(exc).__name__})"
        self.stats.answers[answer] += 1


@dataclass(frozen=True)
class FrontRun:
    key: str
    copied_from: str  # the engine's envelope the authorization was taken from
    tx_hash: str  # the relayer's transaction


class Relayer:
    """Sends, from its own account, the engine's contract call with the payout account's
    signed authorization entry, copied out of an engine envelope."""

    def __init__(self, rpc: SorobanServerAsync, account: Keypair, passphrase: str) -> None:
        self.rpc = rpc
        self.account = account
        self.passphrase = passphrase

    async def copy(self, envelope_xdr: str) -> TransactionEnvelope:
        """The relayer's transaction carrying ``envelope_xdr``'s call and authorization,
        bidding more than the engine did; raises RuntimeError if the authorization can no
        longer be used in the next ledgers."""
        engine = TransactionEnvelope.from_xdr(envelope_xdr, self.passphrase)
        tx = engine.transaction
        ops = tx.operations
        if len(ops) != 1 or not isinstance(ops[0], InvokeHostFunction) or tx.soroban_data is None:
            raise RuntimeError("not a payout envelope")
        try:
            latest = (await self.rpc.get_latest_ledger()).sequence
            sequence = (await _sequences(self.rpc, [self.account.public_key]))[self.account.public_key]
        except RPC_FAILURES as exc:
            raise RuntimeError(f"the relayer could not read the ledger: {exc!r}") from None
        for entry in ops[0].auth:
            credentials = entry.credentials.address or entry.credentials.address_v2
            if credentials is None:
                continue
            if credentials.signature.type == x.SCValType.SCV_VOID:
                raise RuntimeError("the authorization in the envelope is not signed")
            if credentials.signature_expiration_ledger.uint32 < latest + 3:
                raise RuntimeError(
                    f"the authorization expires at ledger {credentials.signature_expiration_ledger.uint32}"
                )
        resource_fee = tx.soroban_data.resource_fee.int64
        inclusion = max(2 * (tx.fee - resource_fee), 10_000)
        copy = (
            TransactionBuilder(Account(self.account.public_key, sequence), self.passphrase, base_fee=inclusion)
            .append_operation(ops[0])
            .set_soroban_data(tx.soroban_data)
            .add_time_bounds(0, int(time.time()) + 60)
            .build()
        )
        copy.sign(self.account)
        return copy

    async def send(self, envelope: TransactionEnvelope) -> str:
        """Send until accepted; RuntimeError if refused."""
        for _ in range(10):
            try:
                sent = await self.rpc.send_transaction(envelope)
            except RPC_FAILURES as exc:
                log.debug("relayer send: %s", exc)
                await asyncio.sleep(0.3)
                continue
            answer = _answer(sent)
            if answer in ("PENDING", "DUPLICATE"):
                return sent.hash
            if answer != "TRY_AGAIN_LATER":
                raise RuntimeError(f"the relayer's transaction was refused: {answer}")
            await asyncio.sleep(0.3)
        raise RuntimeError("the relayer's transaction was never accepted")

    async def outcome(self, tx_hash: str, timeout: float) -> str:
        """SUCCESS, FAILED or NOT_FOUND (not applied within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = await self.rpc.get_transaction(tx_hash)
            except RPC_FAILURES:
                found = None
            if found is not None and found.status != GetTransactionStatus.NOT_FOUND:
                return str(found.status.value)
            await asyncio.sleep(0.3)
        return "NOT_FOUND"
