"""Activities that build and sign payout envelopes: lease a source account, build +
simulate + fee check, authorize and sign; and check external signatures.

``build_envelope`` and ``request_authorization`` run as local activities: they are short,
send nothing, and are safe to repeat (a retry gets the same lease back and builds a fresh,
equivalent envelope that nobody has seen). Every RPC call goes through stellar-sdk's
``SorobanServerAsync``; transport failures raise and are retried by the workflow's retry
policy, answers that settle something raise the non-retryable ``ApplicationError`` types
in :data:`NON_RETRYABLE`.

Who signs what (see :mod:`payouts.channels` and :mod:`payouts.authorization`):

============================  =========================  ====================================
mode                          transaction source signs   payout account authorizes by
============================  =========================  ====================================
hot key, no channels          hot key                    the envelope signature
external, no channels         the external signer        the envelope signature
hot key, channels             the channel's key          auth entry signed with the hot key
external, channels            the channel's key          auth entry signed by the signer
============================  =========================  ====================================

With channels, the signed authorization entry, not the envelope, is what pays: its nonce
lets at most one transaction use it. An authorization is recorded in the DB before it
leaves the worker (:mod:`payouts.authorization_store`), a key has at most one that may
still pay, and a payout keeps carrying the same signed entry in new envelopes until its
nonce is provably ``used`` or provably ``unused`` past its expiration
(:meth:`ChainActivities.authorization_state`); only then is a new one asked for, so an
entry that leaked (a dead envelope is public) can never pay a second time.

Before anything is built or authorized, the key is checked against the DB's record of
payments (:func:`payouts.db.payment_of`): a key that paid gets nothing new, whatever the
workflow's history says.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, replace

from sqlalchemy.engine import Engine
from stellar_sdk import Account, Keypair, TransactionEnvelope
from stellar_sdk import xdr as x
from stellar_sdk.exceptions import PrepareTransactionException, SorobanRpcErrorResponse
from stellar_sdk.soroban_rpc import GetFeeStatsResponse
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.failures import (
    AUTHORIZATION_EXPIRED,
    FEE_CAP_EXCEEDED,
    NO_FREE_ACCOUNT,
    SIGNATURE_REJECTED,
    SIMULATION_FAILED,
    already_paid,
    no_free_account,
)
from payouts import authorization_store, leases
from payouts.assets import resolve_asset
from payouts.authorization import (
    NonceState,
    authorization_payload,
    check_signed_authorization,
    consumes_nonce,
    nonce_key,
    nonce_state,
    sign_entry,
    unsigned_authorization,
    unused_through_after_absence,
    with_authorization,
)
from payouts.channels import ChannelKeys
from payouts.config import PayoutSettings
from payouts.envelopes import EnvelopeError, build_payout_transaction, check_signed_envelope
from payouts.errors import AlreadyPaid
from payouts.messages import AuthorizationRequest, BuildEnvelopeInput, BuiltEnvelope, NonceReport, SignatureInput

log = logging.getLogger("payouts.activities.chain")

BASE_INCLUSION_FEE = 100
# An authorization entry stays valid this many ledgers per second of the envelope's
# validity: Stellar closes a ledger every ~5 s, so this errs long. A long validity is
# harmless: the entry's nonce lets at most one transaction use it.
AUTH_LEDGERS_PER_SECOND = 1
# An authorization is carried only while it stays valid this many ledgers past the latest.
AUTH_MARGIN_LEDGERS = 3
# Extra seconds a fresh lease is held beyond the envelope's validity, for the build.
LEASE_BUILD_SECONDS = 30
FEE_STATS_MAX_AGE_SECONDS = 1.0
# A payout waits this long for a lease within one build attempt; then the attempt fails
# (NoFreeAccount, retried with backoff) so that a local activity never runs for long.
LEASE_WAIT_SECONDS = 5.0
# A waiting payout asks the DB again this often: leases released by other processes are
# only seen this way. A release in this process hands the lease on at once.
LEASE_POLL_SECONDS = 0.5
# The network's configuration (minimum temporary TTL, ledger close target) changes only by
# a network upgrade: read at most this often.
NETWORK_PARAMETERS_MAX_AGE_SECONDS = 600.0
# When the RPC does not serve them: stellar-core's 5 s ledger target, and a TTL of one
# ledger (the most conservative: an absence then proves nothing once the nonce expired).
FALLBACK_LEDGER_CLOSE_MS = 5_000
FALLBACK_MIN_TEMPORARY_TTL = 1
# A signature must arrive this long before the envelope's bound, in ledgers of the
# network's cadence plus slack: stellar-core refuses (txTOO_LATE) an envelope whose bound
# is less than about two ledgers after the last close (see settle_envelope).
SIGNING_MARGIN_LEDGERS = 3
SIGNING_MARGIN_SLACK_SECONDS = 5
HISTORY_PAGE = 200


@dataclass(frozen=True)
class NetworkParameters:
    """What the engine reads of the network's configuration (CONFIG_SETTING entries)."""

    min_temporary_ttl: int
    ledger_close_ms: int

    def signing_margin_seconds(self) -> int:
        return -(-SIGNING_MARGIN_LEDGERS * self.ledger_close_ms // 1000) + SIGNING_MARGIN_SLACK_SECONDS


def _recheck_seconds(latest: int, valid_until: int, network: NetworkParameters) -> int:
    """When to look at a live nonce again: once it has expired if that is near, and never
    later than half its minimum TTL from now, so the next absence still proves it unused
    (a later look needs a search of the ledger history)."""
    ledgers = max(1, min(valid_until + 1 - latest, max(network.min_temporary_ttl // 2, 1)))
    return max(1, -(-ledgers * network.ledger_close_ms // 1000))


def _config_setting_key(setting: x.ConfigSettingID) -> x.LedgerKey:
    return x.LedgerKey(x.LedgerEntryType.CONFIG_SETTING, config_setting=x.LedgerKeyConfigSetting(setting))


def _require_unexpired(entry: x.SorobanAuthorizationEntry, latest_ledger: int) -> None:
    """Raise :data:`AUTHORIZATION_EXPIRED` unless ``entry`` can still be applied a few
    ledgers from now: simulation runs against the next ledger, and the envelope needs a
    ledger or two to be included (the host refuses it in any ledger past the expiration)."""
    credentials = entry.credentials.address or entry.credentials.address_v2
    if credentials is not None and credentials.signature_expiration_ledger.uint32 < latest_ledger + AUTH_MARGIN_LEDGERS:
        raise ApplicationError(
            f"the signed authorization expired at ledger {credentials.signature_expiration_ledger.uint32} "
            f"(latest ledger {latest_ledger}) before a channel carried it",
            type=AUTHORIZATION_EXPIRED,
            non_retryable=True,
        )


@dataclass(frozen=True)
class _AccountState:
    sequence: int
    balance: int
    signer_weights: dict[str, int]
    medium_threshold: int


class ChainActivities:
    """Holds the RPC client, DB engine, settings and channel keys; the hot-key secret is
    read here and nowhere else."""

    def __init__(self, settings: PayoutSettings, rpc: SorobanServerAsync, engine: Engine) -> None:
        self.settings = settings
        self.rpc = rpc
        self.engine = engine
        self.keys = ChannelKeys(settings)
        # Payouts of this process waiting for a lease, first come first served.
        self._waiting: deque[asyncio.Event] = deque()
        self._fee_stats: tuple[float, GetFeeStatsResponse] | None = None
        self._hot: Keypair | None = None
        self._network_parameters: tuple[float, NetworkParameters] | None = None

    # -- leases ------------------------------------------------------------------------

    async def _lease(self, holder: str, validity: int) -> str:
        """A lease for ``holder``, waiting up to :data:`LEASE_WAIT_SECONDS` for one.

        The payouts of this process waiting for a lease stand in line, and only the first
        asks the DB (every :data:`LEASE_POLL_SECONDS`; leases freed by other processes are
        only seen so). A release in this process, or the first leaving the line, hands the
        turn on at once. Every waiter asking on its own cost a write transaction per waiter
        per poll: hundreds of payouts queued for a few channels made the lease table the
        bottleneck (seen in the chaos run, bench/chaos).

        Waiting is not failing: raising per empty poll cost more CPU (a formatted
        traceback per failed activity attempt) than the rest of a payout."""
        accounts = list(self.keys.pool.accounts)
        hold = validity + LEASE_BUILD_SECONDS
        deadline = time.monotonic() + LEASE_WAIT_SECONDS
        turn = asyncio.Event()
        self._waiting.append(turn)
        try:
            while True:
                turn.clear()  # before asking: a release while the DB answers is not lost
                first = self._waiting[0] is turn
                if first:
                    account = await asyncio.to_thread(leases.acquire, self.engine, holder, accounts, hold)
                    if account is not None:
                        return account
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise no_free_account("every source account is leased")
                try:
                    await asyncio.wait_for(
                        turn.wait(), timeout=min(remaining, LEASE_POLL_SECONDS) if first else remaining
                    )
                except TimeoutError:
                    pass
        finally:
            was_first = self._waiting[0] is turn
            self._waiting.remove(turn)
            if was_first and self._waiting:
                self._waiting[0].set()

    async def _release(self, account: str, holder: str) -> None:
        """Give back a lease this build took; one bound to a refused envelope stays."""
        if await asyncio.to_thread(leases.release_unbound, self.engine, account, holder):
            self.lease_released()

    def lease_released(self) -> None:
        """A lease of this process came free: the first payout in line asks for it now."""
        if self._waiting:
            self._waiting[0].set()

    # -- building ----------------------------------------------------------------------

    @activity.defn
    async def build_envelope(self, request: BuildEnvelopeInput) -> BuiltEnvelope:
        settings = self.settings
        validity = (
            settings.PAYOUTS_SIGNATURE_WINDOW_SECONDS
            if request.external_signing and not self.keys.pool.uses_channels
            else settings.PAYOUTS_ENVELOPE_TTL_SECONDS
        )
        # Never shorter than the network accepts: stellar-core refuses (txTOO_LATE) a bound
        # within about two ledgers of the last close, so a short TTL on slow ledgers would
        # be refused every time.
        validity = max(validity, 2 * (await self._network()).signing_margin_seconds())
        if not settings.PAYOUTS_LIVE_EXECUTION:
            # Build-only: nothing will be sent by us, so nothing is leased.
            return await self._build(request, settings.PAYOUT_SOURCE_ACCOUNT, validity)
        paid, held = await asyncio.to_thread(authorization_store.before_build, self.engine, request.idempotency_key)
        if paid is not None:
            # Nothing is built or authorized for a key the DB knows as paid.
            raise already_paid(AlreadyPaid(request.idempotency_key, paid.tx_hash))
        account = await self._lease(request.idempotency_key, validity)
        try:
            return await self._build(request, account, validity, held)
        except ApplicationError as exc:
            if exc.type != NO_FREE_ACCOUNT and exc.non_retryable:
                await self._release(account, request.idempotency_key)
            raise

    async def _build(
        self,
        request: BuildEnvelopeInput,
        account: str,
        validity: int,
        held: authorization_store.AuthorizationRecord | None = None,
    ) -> BuiltEnvelope:
        settings = self.settings
        payer = settings.PAYOUT_SOURCE_ACCOUNT
        channel = account != payer
        state = await self._account_state(account)
        note = None
        if channel and state is None:
            note = "the account does not exist on chain; create it with `payouts-starter channels ensure`"
        elif channel and state is not None and state.balance < settings.PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS:
            note = (
                f"balance {state.balance} stroops is below PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS="
                f"{settings.PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS}; top it up with `payouts-starter channels ensure`"
            )
        if note is not None:
            # Not the payout's fault: park the channel and let the payout wait for another.
            log.warning("channel %s taken out of rotation: %s", account, note)
            await asyncio.to_thread(leases.take_out_of_rotation, self.engine, account, note)
            await self._release(account, request.idempotency_key)
            raise no_free_account(f"channel {account} is out of rotation: {note}")
        if state is None:
            raise ApplicationError(f"account {account} does not exist", type=SIMULATION_FAILED, non_retryable=True)
        # Bid what recent ledgers charged (p90), so a fee surge does not strand the
        # envelope in the queue, and at least what the network named for a refused one;
        # the cap below still bounds the total. A replacement is built on the account its
        # refused envelope is bound to, at the sequence number the chain still has: the
        # same one, so that at most one of the two can apply.
        stats = await self._recent_fee_stats()
        bid = max(BASE_INCLUSION_FEE, stats.soroban_inclusion_fee.p90)
        if request.replaces is not None and request.replaces.source_account == account:
            bid = max(bid, request.replaces.min_inclusion_fee)
        envelope = self._payout_transaction(request, Account(account, state.sequence), validity, bid)
        nonce, authorization = None, None
        if channel:
            signed_entry = request.signed_authorization
            if signed_entry is None:
                # The hot key authorizes now, once a channel is leased (so the entry is
                # fresh; recorded with the envelope that carries it, before that is
                # sent); the key's recorded authorization instead, if one may still pay.
                authorization = (
                    await self._hot_signed(held)
                    if held is not None
                    else self._authorization(envelope, stats.latest_ledger, validity, sign=True)
                )
                signed_entry = authorization.signed_entry_xdr
                assert signed_entry is not None
            entry = x.SorobanAuthorizationEntry.from_xdr(signed_entry)
            _require_unexpired(entry, stats.latest_ledger)
            envelope = with_authorization(envelope, payer, entry)
            credentials = entry.credentials.address or entry.credentials.address_v2
            nonce = credentials.nonce.int64 if credentials is not None else None
        prepared = await self._simulate(envelope)
        tx = prepared.transaction
        if tx.fee > settings.PAYOUTS_MAX_GAS_STROOPS:
            raise ApplicationError(
                f"fee {tx.fee} stroops exceeds PAYOUTS_MAX_GAS_STROOPS={settings.PAYOUTS_MAX_GAS_STROOPS}",
                type=FEE_CAP_EXCEEDED,
                non_retryable=True,
            )
        bounds = tx.preconditions.time_bounds if tx.preconditions is not None else None
        assert bounds is not None and tx.soroban_data is not None
        unsigned_xdr = prepared.to_xdr()
        signed_xdr = None
        if channel:
            prepared.sign(self.keys.keypair(account))
            signed_xdr = prepared.to_xdr()
        elif settings.PAYOUTS_SIGN_WITH_HOT_KEY and settings.PAYOUTS_LIVE_EXECUTION:
            prepared.sign(self._hot_keypair())
            signed_xdr = prepared.to_xdr()
        network = await self._network()
        return BuiltEnvelope(
            unsigned_xdr=unsigned_xdr,
            tx_hash=prepared.hash_hex(),
            source_account=account,
            sequence=tx.sequence,
            max_time=bounds.max_time,
            fee=tx.fee,
            resource_fee=tx.soroban_data.resource_fee.int64,
            built_at_ledger=stats.latest_ledger,
            sign_by=bounds.max_time - network.signing_margin_seconds(),
            signed_xdr=signed_xdr,
            auth_nonce=nonce,
            authorization=authorization,
        )

    # -- authorizations (channels) -----------------------------------------------------

    @activity.defn
    async def request_authorization(self, request: BuildEnvelopeInput) -> AuthorizationRequest:
        """Channels with an external signer: the payout account's authorization entry to be
        signed, recorded in the DB before the signer sees it (refused for a key that
        paid); the key's unsettled authorization instead, if it has one (the same nonce
        again, and its signature if a signer gave one). Nothing is leased: a channel is
        leased only to carry a signed authorization."""
        settings = self.settings
        window = settings.PAYOUTS_SIGNATURE_WINDOW_SECONDS
        # The carrier does not matter to the entry: any channel, any sequence.
        envelope = self._payout_transaction(request, Account(self.keys.pool.accounts[0], 0), window)
        latest = (await self.rpc.get_latest_ledger()).sequence
        fresh = self._authorization(envelope, latest, window, sign=False)
        try:
            recorded = await asyncio.to_thread(
                authorization_store.record,
                self.engine,
                request.idempotency_key,
                settings.PAYOUT_SOURCE_ACCOUNT,
                fresh.nonce,
                fresh.entry_xdr,
                fresh.valid_until_ledger,
                fresh.expires_at,
                latest,
            )
        except AlreadyPaid as exc:
            raise already_paid(exc) from None
        return fresh if recorded.nonce == fresh.nonce else self._request_of(recorded)

    async def _hot_signed(self, held: authorization_store.AuthorizationRecord) -> AuthorizationRequest:
        """The key's recorded authorization, signed with the hot key if it never was (made
        for an external signer before the worker's mode changed)."""
        if held.signed_entry_xdr is not None:
            return self._request_of(held)
        entry = x.SorobanAuthorizationEntry.from_xdr(held.entry_xdr)
        passphrase = self.settings.STELLAR_NETWORK_PASSPHRASE
        signed = sign_entry(entry, self._hot_keypair(), held.valid_until_ledger, passphrase).to_xdr()
        payer = self.settings.PAYOUT_SOURCE_ACCOUNT
        await asyncio.to_thread(authorization_store.record_signature, self.engine, payer, held.nonce, signed)
        return replace(self._request_of(held), signed_entry_xdr=signed)

    def _request_of(self, record: authorization_store.AuthorizationRecord) -> AuthorizationRequest:
        return record.request(self.settings.STELLAR_NETWORK_PASSPHRASE)

    def _authorization(
        self, envelope: TransactionEnvelope, latest_ledger: int, window: int, *, sign: bool
    ) -> AuthorizationRequest:
        """A fresh authorization (new nonce) for the envelope's call, signed with the hot key
        if ``sign``; valid until ``window`` ledgers past ``latest_ledger``."""
        settings = self.settings
        valid_until = latest_ledger + window * AUTH_LEDGERS_PER_SECOND
        nonce = secrets.randbits(63)
        entry = unsigned_authorization(envelope, settings.PAYOUT_SOURCE_ACCOUNT, nonce, valid_until)
        signed = (
            sign_entry(entry, self._hot_keypair(), valid_until, settings.STELLAR_NETWORK_PASSPHRASE).to_xdr()
            if sign
            else None
        )
        return AuthorizationRequest(
            entry_xdr=entry.to_xdr(),
            payload_hex=authorization_payload(entry, settings.STELLAR_NETWORK_PASSPHRASE).hex(),
            nonce=nonce,
            valid_until_ledger=valid_until,
            expires_at=int(time.time()) + window,
            signed_entry_xdr=signed,
            unused_through_ledger=latest_ledger,
        )

    @activity.defn
    async def authorization_state(self, authorization: AuthorizationRequest) -> NonceReport:
        """What can be proven about the authorization's nonce, recorded in the DB:

        - ``used``: its entry exists (a transaction consumed it: the payout was made);
        - ``live``/``unused``: absent, read while a use could not yet have expired (see
          :func:`payouts.authorization.unused_through_after_absence`): unused so far, and
          ``unused`` once past its expiration ledger;
        - otherwise the ledgers not yet proven are searched in the RPC's transaction
          history for the use (``used``, with the transaction) or its absence
          (``unused``); ``unknown`` when that history no longer reaches them.

        An absence alone never proves a nonce unused once its entry may have expired.
        """
        payer = self.settings.PAYOUT_SOURCE_ACCOUNT
        network = await self._network()
        found = await self.rpc.get_ledger_entries([nonce_key(payer, authorization.nonce)])
        unused_through, valid_until = authorization.unused_through_ledger, authorization.valid_until_ledger
        if found.entries:
            used_ledger = found.entries[0].last_modified_ledger
            used_by = await self._find_nonce_use(authorization.nonce, used_ledger, used_ledger)
            report = NonceReport(NonceState.USED.value, unused_through, used_ledger, used_by and used_by[0])
        else:
            proven = unused_through_after_absence(
                unused_through, valid_until, found.latest_ledger, network.min_temporary_ttl
            )
            if proven is not None:
                report = NonceReport(
                    nonce_state(proven, valid_until).value,
                    proven,
                    recheck_seconds=_recheck_seconds(found.latest_ledger, valid_until, network),
                )
            else:
                report = await self._settle_from_history(authorization, min(found.latest_ledger, valid_until))
        await asyncio.to_thread(
            authorization_store.observe,
            self.engine,
            payer,
            authorization.nonce,
            NonceState(report.state),
            report.unused_through_ledger,
            used_ledger=report.used_ledger,
            used_tx_hash=report.used_tx_hash,
        )
        return report

    async def _settle_from_history(self, authorization: AuthorizationRequest, through: int) -> NonceReport:
        """Search ledgers (unused_through, ``through``] for a use of the nonce."""
        first = authorization.unused_through_ledger + 1
        health = await self.rpc.get_health()
        if health.oldest_ledger > first:
            log.warning(
                "nonce %s: ledgers %d..%d are outside the RPC's history (oldest %d): its use cannot be settled",
                authorization.nonce, first, through, health.oldest_ledger,
            )  # fmt: skip
            return NonceReport(NonceState.UNKNOWN.value, authorization.unused_through_ledger)
        used = await self._find_nonce_use(authorization.nonce, first, through)
        if used is not None:
            tx_hash, ledger = used
            return NonceReport(NonceState.USED.value, authorization.unused_through_ledger, ledger, tx_hash)
        return NonceReport(nonce_state(through, authorization.valid_until_ledger).value, through)

    async def _find_nonce_use(self, nonce: int, first: int, last: int) -> tuple[str, int] | None:
        """The successful transaction in ledgers ``first``..``last`` that consumed the payout
        account's ``nonce`` (its meta creates the nonce entry), with its ledger."""
        payer = self.settings.PAYOUT_SOURCE_ACCOUNT
        try:
            page = await self.rpc.get_transactions(start_ledger=first, limit=HISTORY_PAGE)
        except SorobanRpcErrorResponse as exc:
            log.warning("getTransactions from ledger %d: %s", first, exc.message)
            return None
        while True:
            for tx in page.transactions:
                if tx.ledger > last:
                    return None
                if tx.status == "SUCCESS" and consumes_nonce(tx.result_meta_xdr, payer, nonce):
                    return tx.transaction_hash, tx.ledger
            if len(page.transactions) < HISTORY_PAGE:
                return None
            page = await self.rpc.get_transactions(cursor=page.cursor, limit=HISTORY_PAGE)

    def _payout_transaction(
        self, request: BuildEnvelopeInput, source: Account, validity: int, base_fee: int = BASE_INCLUSION_FEE
    ) -> TransactionEnvelope:
        """The unsimulated payout call from ``source``, valid ``validity`` seconds from now."""
        settings = self.settings
        return build_payout_transaction(
            source,
            settings.STELLAR_NETWORK_PASSPHRASE,
            request.destination,
            request.stroops,
            int(time.time()) + validity,
            asset=resolve_asset(request.asset, settings.PAYOUT_USDC_ISSUER),
            contract_id=settings.PAYOUT_CONTRACT_ID,
            method=settings.PAYOUT_METHOD_NAME,
            base_fee=base_fee,
            payer=settings.PAYOUT_SOURCE_ACCOUNT,
        )

    async def _simulate(self, envelope: TransactionEnvelope) -> TransactionEnvelope:
        try:
            return await self.rpc.prepare_transaction(envelope)
        except PrepareTransactionException as exc:
            raise ApplicationError(
                f"simulation failed: {exc.simulate_transaction_response.error}",
                type=SIMULATION_FAILED,
                non_retryable=True,
            ) from None

    async def _recent_fee_stats(self) -> GetFeeStatsResponse:
        """getFeeStats, at most :data:`FEE_STATS_MAX_AGE_SECONDS` old: fees move per ledger,
        and asking once per payout cost an RPC round trip each. Its ``latest_ledger`` is
        still a ledger an envelope built now cannot predate."""
        now = time.monotonic()
        if self._fee_stats is None or now - self._fee_stats[0] > FEE_STATS_MAX_AGE_SECONDS:
            self._fee_stats = (now, await self.rpc.get_fee_stats())
        return self._fee_stats[1]

    async def _network(self) -> NetworkParameters:
        """The network's minimum temporary TTL and ledger close target, from its
        CONFIG_SETTING entries (STATE_ARCHIVAL, SCP_TIMING), read at most every
        :data:`NETWORK_PARAMETERS_MAX_AGE_SECONDS`; conservative fallbacks when the RPC
        does not serve them."""
        now = time.monotonic()
        if (
            self._network_parameters is not None
            and now - self._network_parameters[0] < NETWORK_PARAMETERS_MAX_AGE_SECONDS
        ):
            return self._network_parameters[1]
        keys = [
            _config_setting_key(x.ConfigSettingID.CONFIG_SETTING_STATE_ARCHIVAL),
            _config_setting_key(x.ConfigSettingID.CONFIG_SETTING_SCP_TIMING),
        ]
        min_ttl, close_ms = FALLBACK_MIN_TEMPORARY_TTL, FALLBACK_LEDGER_CLOSE_MS
        for item in (await self.rpc.get_ledger_entries(keys)).entries or []:
            setting = x.LedgerEntryData.from_xdr(item.xdr).config_setting
            if setting is None:
                continue
            if setting.state_archival_settings is not None:
                min_ttl = setting.state_archival_settings.min_temporary_ttl.uint32
            if setting.contract_scp_timing is not None:
                close_ms = setting.contract_scp_timing.ledger_target_close_time_milliseconds.uint32
        parameters = NetworkParameters(min_ttl, close_ms)
        self._network_parameters = (now, parameters)
        return parameters

    def _hot_keypair(self) -> Keypair:
        if self._hot is None:
            secret = self.settings.PAYOUT_HOT_SIGNER_SECRET
            if secret is None:
                raise ApplicationError("no hot key configured", type=SIGNATURE_REJECTED, non_retryable=True)
            self._hot = Keypair.from_secret(secret.get_secret_value())
        return self._hot

    async def _account_state(self, account: str) -> _AccountState | None:
        """The account's sequence, balance, signers and medium threshold; None if missing."""
        key = x.LedgerKey(
            x.LedgerEntryType.ACCOUNT,
            account=x.LedgerKeyAccount(Keypair.from_public_key(account).xdr_account_id()),
        )
        entries = (await self.rpc.get_ledger_entries([key])).entries or []
        if not entries:
            return None
        entry = x.LedgerEntryData.from_xdr(entries[0].xdr).account
        assert entry is not None
        thresholds = entry.thresholds.thresholds
        weights = {
            Keypair.from_raw_ed25519_public_key(s.key.ed25519.uint256).public_key: s.weight.uint32
            for s in entry.signers
            if s.key.ed25519 is not None
        }
        weights[account] = thresholds[0]
        return _AccountState(entry.seq_num.sequence_number.int64, entry.balance.int64, weights, thresholds[2])

    # -- external signatures -----------------------------------------------------------

    @activity.defn
    async def check_signature(self, signature: SignatureInput) -> str | None:
        """None when ``signed_xdr`` is what was handed out, signed well enough; else the reason.
        A good signature of an authorization entry is recorded with it."""
        settings = self.settings
        payer = settings.PAYOUT_SOURCE_ACCOUNT
        state = await self._account_state(payer)
        if state is None:
            return f"source account {payer} does not exist"
        try:
            if signature.authorization is not None:
                signed = check_signed_authorization(
                    signature.signed_xdr,
                    x.SorobanAuthorizationEntry.from_xdr(signature.authorization),
                    settings.STELLAR_NETWORK_PASSPHRASE,
                    state.signer_weights,
                    state.medium_threshold,
                )
                # Kept, so that a later run carries it instead of asking the signer again.
                credentials = signed.credentials.address or signed.credentials.address_v2
                assert credentials is not None
                await asyncio.to_thread(
                    authorization_store.record_signature,
                    self.engine,
                    payer,
                    credentials.nonce.int64,
                    signature.signed_xdr,
                )
            else:
                check_signed_envelope(
                    signature.signed_xdr,
                    signature.tx_hash,
                    settings.STELLAR_NETWORK_PASSPHRASE,
                    state.signer_weights,
                    state.medium_threshold,
                )
        except EnvelopeError as exc:
            return str(exc)
        return None
