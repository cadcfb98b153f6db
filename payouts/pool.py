"""Channel pool management: create, top up, list and merge away the channel accounts.

This module owns what an operator does to the pool of channel accounts (see
:mod:`payouts.channels`) from outside the payout workflows, for the starter CLI's
``channels`` commands:

- :meth:`ChannelPool.ensure` creates the missing channels ``0..count-1`` (CreateAccount)
  and tops up the others to a target balance (Payment), both paid by the payout account
  ``PAYOUT_SOURCE_ACCOUNT`` and signed with ``PAYOUT_HOT_SIGNER_SECRET``, then registers
  the channels in ``account_leases`` and puts the ones with enough fee money back in
  rotation;
- :meth:`ChannelPool.states` reads each channel's balance from the chain and its lease row;
- :meth:`ChannelPool.merge` merges channels back into the payout account (AccountMerge,
  sent by the channel itself) and forgets their lease rows.

Promise 5 (one unconfirmed envelope per source account) holds here too: the funding
transactions spend the payout account's sequence numbers, so :meth:`ChannelPool.ensure`
leases the payout account for as long as one of its envelopes is unsettled, exactly as a
payout does; a merge sends from a channel only after taking it out of rotation and
checking that no payout holds it. Every envelope is followed by hash until it is applied
or provably dead (promises 2 and 4), and a lease is released only then.

Errors: :class:`PoolInputError` is bad input or configuration (nothing was sent);
:class:`PoolError` is a refusal by the chain or the lease table. Messages never carry a
secret.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.engine import Engine
from stellar_sdk import Account, Asset, Keypair, StrKey, TransactionBuilder, TransactionEnvelope
from stellar_sdk import xdr as x
from stellar_sdk.exceptions import BadResponseError, SorobanRpcErrorResponse
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync

from payouts import leases
from payouts.amounts import STROOPS_PER_UNIT, AmountError, to_stroops
from payouts.channels import channel_keypair
from payouts.config import PayoutSettings

__all__ = [
    "DEFAULT_BALANCE",
    "RPC_ERRORS",
    "Channel",
    "ChannelPool",
    "ChannelStatus",
    "EnsureReport",
    "Funding",
    "MergeResult",
    "OutcomeUnknown",
    "PoolError",
    "PoolInputError",
    "Sent",
    "channel_count",
    "check_secrets",
    "derive_channels",
    "format_xlm",
    "parse_balance",
]

DEFAULT_BALANCE = "20"
MAX_CHANNELS = 1_000  # PAYOUTS_CHANNEL_COUNT's own upper bound
MAX_OPS_PER_TRANSACTION = 100  # Stellar's limit
LEDGER_ENTRIES_PER_REQUEST = 200  # Stellar RPC's getLedgerEntries limit
# An account must hold two base reserves (0.5 XLM each on the public networks) to exist.
MIN_ACCOUNT_STROOPS = 1 * STROOPS_PER_UNIT
BASE_FEE = 100
# The pool admin leases the payout account as a payout would; a payout holding it is
# waited for this long (it releases once its envelope settles, normally within seconds).
SOURCE_LEASE_SECONDS = 120
SOURCE_LEASE_WAIT_SECONDS = 60.0
LEASE_RETRY_SECONDS = 0.2
# After an envelope's bound, how long to keep asking about it before giving up with its
# outcome unknown (an RPC that cannot be reached cannot prove the envelope dead).
SETTLE_GRACE_SECONDS = 120
MERGE_CONCURRENCY = 16  # merges come from distinct accounts, so they may be in flight together
MERGING_NOTE = "being merged into the payout account by `channels merge`"


# What a failed RPC call raises (transport, HTTP, or a JSON-RPC error answer).
RPC_ERRORS = (SdkConnectionError, BadResponseError, SorobanRpcErrorResponse)


class PoolInputError(ValueError):
    """Bad input or configuration, named with the rule it breaks; nothing was sent."""


class PoolError(RuntimeError):
    """The chain or the lease table refused something; what was settled is in the message."""


class OutcomeUnknown(PoolError):
    """An envelope's fate could not be learned: it may still apply, so its source account's
    lease is kept until it expires on its own (after the envelope's bound)."""


# ---------------------------------------------------------------------------------------
# Input


def channel_count(count: int | None, settings: PayoutSettings, *, flag: str = "--count", merge: bool = False) -> int:
    """``count`` (default ``PAYOUTS_CHANNEL_COUNT``), checked: 1..1000, and for a merge at
    most ``PAYOUTS_CHANNEL_COUNT`` (the channels the workers use)."""
    configured = settings.PAYOUTS_CHANNEL_COUNT
    value = configured if count is None else count
    default = " (default: PAYOUTS_CHANNEL_COUNT, which is 0)" if count is None else ""
    if value < 1:
        raise PoolInputError(f"{flag}: must be at least 1{default}")
    if merge and value > configured:
        raise PoolInputError(f"{flag}: must be at most PAYOUTS_CHANNEL_COUNT ({configured}) for a merge")
    if value > MAX_CHANNELS:
        raise PoolInputError(f"{flag}: must be at most {MAX_CHANNELS}")
    return value


def parse_balance(text: str, settings: PayoutSettings, *, flag: str = "--balance") -> int:
    """The target balance in stroops: a decimal XLM amount (at most 7 places) that keeps a
    channel in rotation (at least ``PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS``) and can create
    an account (at least 1 XLM); a lower target would fund channels the workers park."""
    try:
        stroops = to_stroops(text)
    except AmountError as exc:
        raise PoolInputError(f"{flag}: {exc} (an XLM amount such as 20 or 2.5)") from None
    floor = max(settings.PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS, MIN_ACCOUNT_STROOPS)
    if stroops < floor:
        raise PoolInputError(
            f"{flag}: must be at least {format_xlm(floor)} XLM (1 XLM to create an account, and "
            f"PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS={settings.PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS} to stay in rotation)"
        )
    return stroops


def format_xlm(stroops: int) -> str:
    """``205000000`` → ``"20.5000000"`` (fixed 7 places, so columns line up)."""
    sign = "-" if stroops < 0 else ""
    whole, fraction = divmod(abs(stroops), STROOPS_PER_UNIT)
    return f"{sign}{whole}.{fraction:07d}"


def check_secrets(settings: PayoutSettings, *, funding: bool) -> None:
    """The secrets a pool command needs are configured (``funding``: the hot key too)."""
    _channel_secret(settings)
    if funding:
        _hot_keypair(settings)


def _channel_secret(settings: PayoutSettings) -> str:
    if settings.PAYOUTS_CHANNEL_SECRET is None:
        raise PoolInputError("PAYOUTS_CHANNEL_SECRET: required: channel accounts are derived from it")
    return settings.PAYOUTS_CHANNEL_SECRET.get_secret_value()


def _hot_keypair(settings: PayoutSettings) -> Keypair:
    if settings.PAYOUT_HOT_SIGNER_SECRET is None:
        raise PoolInputError("PAYOUT_HOT_SIGNER_SECRET: required: it signs the payout account's funding transactions")
    return Keypair.from_secret(settings.PAYOUT_HOT_SIGNER_SECRET.get_secret_value())


# ---------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Channel:
    index: int
    account: str


@dataclass(frozen=True)
class Sent:
    """A transaction applied successfully."""

    tx_hash: str
    ledger: int
    fee_charged: int
    operations: int


@dataclass(frozen=True)
class Funding:
    """A channel created (``before`` is ``None``) or topped up by ``amount`` stroops."""

    channel: Channel
    before: int | None
    amount: int


@dataclass(frozen=True)
class EnsureReport:
    funded: list[Funding]
    unchanged: list[tuple[Channel, int]]  # (channel, balance) already at or above the target
    transactions: list[Sent]
    in_rotation: list[Channel]
    below_minimum: list[Channel]  # still short of PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS: parked


@dataclass(frozen=True)
class ChannelStatus:
    channel: Channel
    balance: int | None  # None: the account does not exist
    registered: bool  # has an account_leases row
    in_rotation: bool
    note: str | None
    holder: str | None
    expires_at: datetime | None


@dataclass(frozen=True)
class MergeResult:
    channel: Channel
    outcome: Literal["merged", "missing", "refused", "failed"]
    amount: int | None = None  # stroops moved to the payout account
    transaction: Sent | None = None
    reason: str | None = None


def derive_channels(secret: str, count: int) -> tuple[list[Channel], dict[str, Keypair]]:
    """Channels ``0..count-1`` and their keypairs (kept apart, so a printed channel never
    carries a key)."""
    channels: list[Channel] = []
    keys: dict[str, Keypair] = {}
    for index in range(count):
        keypair = channel_keypair(secret, index)
        channels.append(Channel(index, keypair.public_key))
        keys[keypair.public_key] = keypair
    return channels, keys


def _is_held(lease: leases.AccountLease) -> bool:
    """Held as :func:`payouts.leases.remove` sees it: a holder whose lease has not expired."""
    return lease.holder is not None and (lease.expires_at is None or lease.expires_at > datetime.now(UTC))


def _result_codes(result_xdr: str) -> str:
    """``txFAILED (CREATE_ACCOUNT_SUCCESS, PAYMENT_UNDERFUNDED)``: the transaction's code and
    each operation's."""
    result = x.TransactionResult.from_xdr(result_xdr).result
    codes = []
    for op in result.results or []:
        if op.tr is None:
            codes.append(op.code.name)
        else:
            inner = getattr(op.tr, op.tr.type.name.lower() + "_result", None)
            codes.append(inner.code.name if inner is not None else op.tr.type.name)
    return result.code.name + (f" ({', '.join(codes)})" if codes else "")


# ---------------------------------------------------------------------------------------
# The pool


class ChannelPool:
    """Pool operations on ``settings``'s network, payout account and lease table."""

    def __init__(self, settings: PayoutSettings, rpc: SorobanServerAsync, engine: Engine) -> None:
        self.settings = settings
        self.rpc = rpc
        self.engine = engine
        self.source = settings.PAYOUT_SOURCE_ACCOUNT
        self.poll_seconds = settings.PAYOUTS_CONFIRM_POLL_MS / 1000

    def __repr__(self) -> str:  # never show settings (they hold secrets, if only masked)
        return f"ChannelPool({self.source})"

    # -- reading -----------------------------------------------------------------------

    async def balances(self, accounts: Sequence[str]) -> dict[str, int | None]:
        """Each account's XLM balance in stroops from getLedgerEntries; ``None`` if missing."""
        found: dict[str, int | None] = dict.fromkeys(accounts)
        for start in range(0, len(accounts), LEDGER_ENTRIES_PER_REQUEST):
            keys = [
                x.LedgerKey(
                    x.LedgerEntryType.ACCOUNT,
                    account=x.LedgerKeyAccount(Keypair.from_public_key(account).xdr_account_id()),
                )
                for account in accounts[start : start + LEDGER_ENTRIES_PER_REQUEST]
            ]
            for entry in (await self.rpc.get_ledger_entries(keys)).entries or []:
                data = x.LedgerEntryData.from_xdr(entry.xdr).account
                if data is not None:
                    key = data.account_id.account_id.ed25519
                    assert key is not None  # account IDs are ed25519 keys
                    found[StrKey.encode_ed25519_public_key(key.uint256)] = data.balance.int64
        return found

    def _rows(self) -> dict[str, leases.AccountLease]:
        return {lease.account: lease for lease in leases.leases(self.engine)}

    async def states(self, count: int) -> list[ChannelStatus]:
        """Channels ``0..count-1``: balance from the chain, lease from the DB."""
        channels, _ = derive_channels(_channel_secret(self.settings), count)
        balances = await self.balances([c.account for c in channels])
        rows = await asyncio.to_thread(self._rows)
        states = []
        for channel in channels:
            row = rows.get(channel.account)
            states.append(
                ChannelStatus(
                    channel=channel,
                    balance=balances[channel.account],
                    registered=row is not None,
                    in_rotation=row is not None and row.in_rotation,
                    note=row.note if row is not None else None,
                    holder=row.holder if row is not None else None,
                    expires_at=row.expires_at if row is not None else None,
                )
            )
        return states

    # -- ensure ------------------------------------------------------------------------

    def _plan(
        self, channels: list[Channel], balances: dict[str, int | None], target: int
    ) -> tuple[list[Funding], list[tuple[Channel, int]]]:
        funded: list[Funding] = []
        unchanged: list[tuple[Channel, int]] = []
        for channel in channels:
            balance = balances[channel.account]
            if balance is None:
                funded.append(Funding(channel, None, target))
            elif balance < target:
                funded.append(Funding(channel, balance, target - balance))
            else:
                unchanged.append((channel, balance))
        return funded, unchanged

    async def ensure(self, count: int, target: int) -> EnsureReport:
        """Create the missing channels ``0..count-1`` with ``target`` stroops, top up the
        others below ``target`` to exactly ``target``, register them all and put the ones
        with at least ``PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS`` in rotation."""
        channels, _ = derive_channels(_channel_secret(self.settings), count)
        hot = _hot_keypair(self.settings)
        accounts = [c.account for c in channels]
        funded, unchanged = self._plan(channels, await self.balances(accounts), target)
        transactions: list[Sent] = []
        failure: PoolError | None = None
        if funded:
            # Plan again under the lease: another `ensure` may have funded them meanwhile.
            holder = f"pool-admin:{uuid.uuid4().hex[:12]}"
            await self._lease_source(holder)
            settled = True  # False while an envelope of ours may still apply
            try:
                balances = await self.balances([*accounts, self.source])
                funded, unchanged = self._plan(channels, balances, target)
                self._check_funds(funded, balances[self.source])
                for start in range(0, len(funded), MAX_OPS_PER_TRANSACTION):
                    envelope, max_time = await self._funding_envelope(
                        funded[start : start + MAX_OPS_PER_TRANSACTION], hot, holder
                    )
                    settled = False
                    transactions.append(await self.submit(envelope, max_time, "PAYOUT_HOT_SIGNER_SECRET"))
                    settled = True
            except OutcomeUnknown as exc:
                failure = exc
            except PoolError as exc:
                failure, settled = exc, True
            finally:
                # Released only once no envelope of ours can still apply (promise 5); an
                # unsettled one keeps the lease until its bound has passed (see bind()).
                if settled:
                    await asyncio.to_thread(leases.release, self.engine, self.source, holder)
        # Register whatever exists now, also after a failed batch: earlier ones did apply.
        in_rotation, below = await self._register(channels)
        if failure is not None:
            if transactions:
                done = sum(t.operations for t in transactions)
                failure = type(failure)(
                    f"{failure}; before it, {len(transactions)} transaction(s) funded {done} channel(s)"
                )
            raise failure
        return EnsureReport(funded, unchanged, transactions, in_rotation, below)

    def _check_funds(self, funded: list[Funding], balance: int | None) -> None:
        """Refuse before sending what the payout account plainly cannot pay (the chain
        would charge the fee and fail the transaction); its reserve is left to the chain."""
        if balance is None:
            raise PoolError(f"PAYOUT_SOURCE_ACCOUNT {self.source} does not exist on chain; nothing was sent")
        needed = sum(f.amount for f in funded)
        if needed > balance:
            raise PoolError(
                f"PAYOUT_SOURCE_ACCOUNT {self.source} holds {format_xlm(balance)} XLM, less than the "
                f"{format_xlm(needed)} XLM the channels need; nothing was sent"
            )

    async def _lease_source(self, holder: str) -> None:
        await asyncio.to_thread(leases.ensure_pool, self.engine, [self.source], "source")
        deadline = time.monotonic() + SOURCE_LEASE_WAIT_SECONDS
        while True:
            got = await asyncio.to_thread(leases.acquire, self.engine, holder, [self.source], SOURCE_LEASE_SECONDS)
            if got is not None:
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(LEASE_RETRY_SECONDS)
        row = (await asyncio.to_thread(self._rows)).get(self.source)
        if row is not None and not row.in_rotation:
            why = f"is out of rotation ({row.note or 'no note'})"
        elif row is not None and row.holder is not None:
            until = row.expires_at.isoformat() if row.expires_at is not None else "its envelope settles"
            why = f"is leased to {row.holder!r} until {until}"
        else:
            why = "could not be leased"
        raise PoolError(
            f"PAYOUT_SOURCE_ACCOUNT {self.source} {why}; waited {SOURCE_LEASE_WAIT_SECONDS:.0f} s. Its funding "
            "transactions would clash with that envelope's sequence number: try again once it is released"
        )

    async def _funding_envelope(
        self, batch: list[Funding], hot: Keypair, holder: str
    ) -> tuple[TransactionEnvelope, int]:
        """The signed envelope creating / topping up ``batch``, its lease bound to it."""
        account = await self.rpc.load_account(self.source)
        base_fee = await self._base_fee()
        if base_fee * len(batch) > self.settings.PAYOUTS_MAX_GAS_STROOPS:
            raise PoolError(
                f"fee {base_fee * len(batch)} stroops for {len(batch)} operations exceeds "
                f"PAYOUTS_MAX_GAS_STROOPS={self.settings.PAYOUTS_MAX_GAS_STROOPS}; try again when fees are lower"
            )
        max_time = int(time.time()) + self.settings.PAYOUTS_ENVELOPE_TTL_SECONDS
        passphrase = self.settings.STELLAR_NETWORK_PASSPHRASE
        builder = TransactionBuilder(Account(self.source, account.sequence), passphrase, base_fee=base_fee)
        builder.add_time_bounds(0, max_time)
        for funding in batch:
            amount = format_xlm(funding.amount)
            if funding.before is None:
                builder.append_create_account_op(funding.channel.account, amount)
            else:
                builder.append_payment_op(funding.channel.account, Asset.native(), amount)
        envelope = builder.build()
        envelope.sign(hot)
        try:
            # Tie the lease to this envelope before sending: should we crash, the lease
            # outlives the envelope's bound, so no payout builds on a clashing sequence.
            await asyncio.to_thread(leases.bind, self.engine, self.source, holder, envelope.hash_hex(), max_time)
        except leases.LeaseLost as exc:
            raise PoolError(f"lost the lease on PAYOUT_SOURCE_ACCOUNT before sending: {exc}") from None
        return envelope, max_time

    async def _base_fee(self) -> int:
        # Bid what recent ledgers charged (p90), so a surge does not strand the envelope.
        stats = await self.rpc.get_fee_stats()
        return max(BASE_FEE, stats.inclusion_fee.p90)

    async def _register(self, channels: list[Channel]) -> tuple[list[Channel], list[Channel]]:
        balances = await self.balances([c.account for c in channels])
        existing = [c for c in channels if balances[c.account] is not None]
        minimum = self.settings.PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS
        await asyncio.to_thread(leases.ensure_pool, self.engine, [c.account for c in existing], "channel")
        in_rotation, below = [], []
        for channel in existing:
            balance = balances[channel.account]
            assert balance is not None
            if balance >= minimum:
                await asyncio.to_thread(leases.put_in_rotation, self.engine, channel.account)
                in_rotation.append(channel)
            else:
                # A payout spent fees meanwhile: park it as the worker would, with the reason.
                note = f"balance {balance} stroops is below PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS={minimum}"
                await asyncio.to_thread(leases.take_out_of_rotation, self.engine, channel.account, note)
                below.append(channel)
        return in_rotation, below

    # -- merge -------------------------------------------------------------------------

    async def merge(self, count: int) -> list[MergeResult]:
        """Merge channels ``0..count-1`` into the payout account and forget their lease rows;
        a channel leased to a payout is refused (nothing is sent for it)."""
        channels, keys = derive_channels(_channel_secret(self.settings), count)
        if (await self.balances([self.source]))[self.source] is None:
            # Every merge would fail (ACCOUNT_MERGE_NO_ACCOUNT) and burn a fee.
            raise PoolError(f"PAYOUT_SOURCE_ACCOUNT {self.source} does not exist on chain; nothing was sent")
        limit = asyncio.Semaphore(MERGE_CONCURRENCY)

        async def one(channel: Channel) -> MergeResult:
            async with limit:
                return await self._merge_one(channel, keys[channel.account])

        return list(await asyncio.gather(*(one(c) for c in channels)))

    async def _merge_one(self, channel: Channel, keypair: Keypair) -> MergeResult:
        account = channel.account
        before = (await asyncio.to_thread(self._rows)).get(account)
        if before is not None:
            # Park it first: acquire() never hands out an account out of rotation, so once
            # the check below finds no holder, no payout can take the channel mid-merge.
            await asyncio.to_thread(leases.take_out_of_rotation, self.engine, account, MERGING_NOTE)
            now = (await asyncio.to_thread(self._rows)).get(account)
            if now is not None and _is_held(now):
                await self._restore(account, before)
                until = now.expires_at.isoformat() if now.expires_at is not None else "its envelope settles"
                return MergeResult(channel, "refused", reason=f"leased to payout {now.holder!r} until {until}")
        balance = (await self.balances([account]))[account]
        if balance is None:
            await asyncio.to_thread(leases.remove, self.engine, account)
            return MergeResult(channel, "missing", reason="no such account on chain; lease row removed")
        try:
            sent, moved = await self._send_merge(account, keypair)
        except RPC_ERRORS as exc:  # before sending: submit() itself survives RPC failures
            if before is not None:
                await self._restore(account, before)
            return MergeResult(channel, "failed", reason=f"the Stellar RPC failed: {type(exc).__name__}")
        except OutcomeUnknown as exc:
            # It may still apply: keep the channel parked, saying why.
            await asyncio.to_thread(leases.take_out_of_rotation, self.engine, account, f"merge outcome unknown: {exc}")
            return MergeResult(channel, "failed", reason=str(exc))
        except PoolError as exc:
            if before is not None:
                await self._restore(account, before)
            return MergeResult(channel, "failed", reason=str(exc))
        try:
            await asyncio.to_thread(leases.remove, self.engine, account)
        except leases.LeaseLost as exc:  # cannot happen while it is out of rotation; say so if it does
            return MergeResult(channel, "failed", moved, sent, f"merged, but its lease row stays: {exc}")
        return MergeResult(channel, "merged", moved, sent)

    async def _restore(self, account: str, before: leases.AccountLease) -> None:
        if before.in_rotation:
            await asyncio.to_thread(leases.put_in_rotation, self.engine, account)
        else:
            await asyncio.to_thread(leases.take_out_of_rotation, self.engine, account, before.note or "")

    async def _send_merge(self, account: str, keypair: Keypair) -> tuple[Sent, int]:
        loaded = await self.rpc.load_account(account)
        max_time = int(time.time()) + self.settings.PAYOUTS_ENVELOPE_TTL_SECONDS
        passphrase, base_fee = self.settings.STELLAR_NETWORK_PASSPHRASE, await self._base_fee()
        envelope = (
            TransactionBuilder(Account(account, loaded.sequence), passphrase, base_fee=base_fee)
            .add_time_bounds(0, max_time)
            .append_account_merge_op(self.source)
            .build()
        )
        envelope.sign(keypair)
        sent, result = await self._submit(envelope, max_time, "the channel's derived key")
        results = result.result.results or []
        merged = results[0].tr.account_merge_result if results and results[0].tr is not None else None
        moved = merged.source_account_balance.int64 if merged is not None and merged.source_account_balance else 0
        return sent, moved

    # -- sending -----------------------------------------------------------------------

    async def submit(self, envelope: TransactionEnvelope, max_time: int, signer: str) -> Sent:
        """Send ``envelope`` and follow it by hash until it is applied (:class:`Sent`), failed
        or provably dead (:class:`PoolError`), resending the same envelope while it is not
        found. :class:`OutcomeUnknown` if the RPC cannot tell in time. ``signer`` names the
        key that signed it, for a txBAD_AUTH message."""
        return (await self._submit(envelope, max_time, signer))[0]

    async def _submit(
        self, envelope: TransactionEnvelope, max_time: int, signer: str
    ) -> tuple[Sent, x.TransactionResult]:
        tx_hash, signed = envelope.hash_hex(), envelope.to_xdr()
        operations = len(envelope.transaction.operations)
        try:
            since_ledger = (await self.rpc.get_latest_ledger()).sequence  # the envelope cannot predate it
        except RPC_ERRORS as exc:
            raise PoolError(
                f"the Stellar RPC failed ({type(exc).__name__}); transaction {tx_hash} was not sent"
            ) from None
        ambiguous = False  # an answer was lost, or it was accepted once: an ERROR then proves nothing
        give_up = max_time + SETTLE_GRACE_SECONDS
        while True:
            try:
                answer = await self.rpc.send_transaction(signed)
            except RPC_ERRORS:
                ambiguous = True
            else:
                if answer.status in (SendTransactionStatus.PENDING, SendTransactionStatus.DUPLICATE):
                    ambiguous = True
                elif answer.status == SendTransactionStatus.ERROR and not ambiguous:
                    code = _result_codes(answer.error_result_xdr) if answer.error_result_xdr else "ERROR"
                    hint = f" (is {signer} a signer of its source account?)" if "txBAD_AUTH" in code else ""
                    raise PoolError(f"the network rejected transaction {tx_hash}: {code}{hint}; nothing was applied")
            # Answers other than PENDING/DUPLICATE (TRY_AGAIN_LATER, a late ERROR) may hide
            # an applied envelope (promise 4): look it up before deciding anything.
            await asyncio.sleep(self.poll_seconds)
            try:
                found = await self.rpc.get_transaction(tx_hash)
            except RPC_ERRORS:
                found = None
            if found is not None and found.status == GetTransactionStatus.SUCCESS:
                result = x.TransactionResult.from_xdr(found.result_xdr or "")
                return Sent(tx_hash, found.ledger or 0, result.fee_charged.int64, operations), result
            if found is not None and found.status == GetTransactionStatus.FAILED:
                result = x.TransactionResult.from_xdr(found.result_xdr or "")
                raise PoolError(
                    f"transaction {tx_hash} failed in ledger {found.ledger}: {_result_codes(found.result_xdr or '')}; "
                    f"only its fee ({result.fee_charged.int64} stroops) was charged"
                )
            if found is not None and found.latest_ledger_close_time > max_time and found.oldest_ledger <= since_ledger:
                # Promise 2: not found by an RPC past the bound that remembers every ledger
                # the envelope could be in. It never applied and never will.
                raise PoolError(f"transaction {tx_hash} expired without being applied; nothing moved")
            if time.time() > give_up:
                raise OutcomeUnknown(
                    f"transaction {tx_hash} is not settled {SETTLE_GRACE_SECONDS} s after its bound: it may still apply"
                )
