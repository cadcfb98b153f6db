"""Activities that talk to the Stellar network: build + simulate + fee check, sign with the
hot key, check an external signature, submit, and look an envelope up by hash.

Every RPC call goes through stellar-sdk's ``SorobanServerAsync``. Transport failures and
5xx answers raise, and the workflow's retry policy retries them; answers that settle
something (a fee above the cap, a bad signature) raise non-retryable
``ApplicationError`` types named in :data:`NON_RETRYABLE`.
"""

from __future__ import annotations

import time

from stellar_sdk import Keypair, TransactionEnvelope
from stellar_sdk import xdr as x
from stellar_sdk.exceptions import PrepareTransactionException
from stellar_sdk.soroban_rpc import GetTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio import activity
from temporalio.exceptions import ApplicationError

from payouts.assets import resolve_asset
from payouts.config import PayoutSettings
from payouts.envelopes import EnvelopeError, build_payout_transaction, check_signed_envelope
from payouts.messages import BuildEnvelopeInput, BuiltEnvelope, EnvelopeLookup, SignatureInput, SubmitResult

FEE_CAP_EXCEEDED = "FeeCapExceeded"
SIMULATION_FAILED = "SimulationFailed"
SIGNATURE_REJECTED = "SignatureRejected"
NON_RETRYABLE = [FEE_CAP_EXCEEDED, SIMULATION_FAILED, SIGNATURE_REJECTED]

BASE_INCLUSION_FEE = 100


class ChainActivities:
    """Holds the RPC client and settings; the hot-key secret is read here and nowhere else."""

    def __init__(self, settings: PayoutSettings, rpc: SorobanServerAsync) -> None:
        self.settings = settings
        self.rpc = rpc

    @activity.defn
    async def build_envelope(self, request: BuildEnvelopeInput) -> BuiltEnvelope:
        settings = self.settings
        source = await self.rpc.load_account(settings.PAYOUT_SOURCE_ACCOUNT)
        validity = (
            settings.PAYOUTS_SIGNATURE_WINDOW_SECONDS
            if request.external_signing
            else settings.PAYOUTS_ENVELOPE_TTL_SECONDS
        )
        # Bid what recent ledgers charged (p90), so a fee surge does not strand the
        # envelope in the queue; the cap below still bounds the total.
        stats = await self.rpc.get_fee_stats()
        inclusion_fee = max(BASE_INCLUSION_FEE, stats.soroban_inclusion_fee.p90)
        envelope = build_payout_transaction(
            source,
            settings.STELLAR_NETWORK_PASSPHRASE,
            request.destination,
            request.stroops,
            int(time.time()) + validity,
            asset=resolve_asset(request.asset, settings.PAYOUT_USDC_ISSUER),
            contract_id=settings.PAYOUT_CONTRACT_ID,
            method=settings.PAYOUT_METHOD_NAME,
            base_fee=inclusion_fee,
        )
        try:
            prepared = await self.rpc.prepare_transaction(envelope)
        except PrepareTransactionException as exc:
            raise ApplicationError(
                f"simulation failed: {exc.simulate_transaction_response.error}",
                type=SIMULATION_FAILED,
                non_retryable=True,
            ) from None
        tx = prepared.transaction
        fee = tx.fee
        if fee > settings.PAYOUTS_MAX_GAS_STROOPS:
            raise ApplicationError(
                f"fee {fee} stroops exceeds PAYOUTS_MAX_GAS_STROOPS={settings.PAYOUTS_MAX_GAS_STROOPS}",
                type=FEE_CAP_EXCEEDED,
                non_retryable=True,
            )
        bounds = tx.preconditions.time_bounds if tx.preconditions is not None else None
        assert bounds is not None and tx.soroban_data is not None
        return BuiltEnvelope(
            unsigned_xdr=prepared.to_xdr(),
            tx_hash=prepared.hash_hex(),
            source_account=source.account.account_id,
            sequence=tx.sequence,
            max_time=bounds.max_time,
            fee=fee,
            resource_fee=tx.soroban_data.resource_fee.int64,
            built_at_ledger=stats.latest_ledger,
        )

    @activity.defn
    async def sign_with_hot_key(self, unsigned: BuiltEnvelope) -> str:
        secret = self.settings.PAYOUT_HOT_SIGNER_SECRET
        if secret is None:
            raise ApplicationError("no hot key configured", type=SIGNATURE_REJECTED, non_retryable=True)
        envelope = TransactionEnvelope.from_xdr(unsigned.unsigned_xdr, self.settings.STELLAR_NETWORK_PASSPHRASE)
        envelope.sign(Keypair.from_secret(secret.get_secret_value()))
        return envelope.to_xdr()

    @activity.defn
    async def check_signature(self, signature: SignatureInput) -> str | None:
        """None when ``signed_xdr`` is the built transaction, signed well enough; else the reason."""
        source = self.settings.PAYOUT_SOURCE_ACCOUNT
        key = x.LedgerKey(
            x.LedgerEntryType.ACCOUNT,
            account=x.LedgerKeyAccount(Keypair.from_public_key(source).xdr_account_id()),
        )
        entries = (await self.rpc.get_ledger_entries([key])).entries or []
        if not entries:
            return f"source account {source} does not exist"
        account = x.LedgerEntryData.from_xdr(entries[0].xdr).account
        assert account is not None
        thresholds = account.thresholds.thresholds
        weights = {
            Keypair.from_raw_ed25519_public_key(s.key.ed25519.uint256).public_key: s.weight.uint32
            for s in account.signers
            if s.key.ed25519 is not None
        }
        weights[source] = thresholds[0]
        try:
            check_signed_envelope(
                signature.signed_xdr,
                signature.tx_hash,
                self.settings.STELLAR_NETWORK_PASSPHRASE,
                weights,
                thresholds[2],
            )
        except EnvelopeError as exc:
            return str(exc)
        return None

    @activity.defn
    async def submit_envelope(self, signed_xdr: str) -> SubmitResult:
        sent = await self.rpc.send_transaction(signed_xdr)
        code = None
        if sent.error_result_xdr:
            code = x.TransactionResult.from_xdr(sent.error_result_xdr).result.code.name
        return SubmitResult(status=sent.status.value, latest_ledger=sent.latest_ledger, error_code=code)

    @activity.defn
    async def look_up_envelope(self, tx_hash: str) -> EnvelopeLookup:
        found = await self.rpc.get_transaction(tx_hash)
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
