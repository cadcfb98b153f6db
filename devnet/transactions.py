"""Reading transaction envelopes: decoding, hashing, and the checks of stellar-core's
``checkValid`` that do not depend on the transaction queue."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from stellar_sdk import xdr as x

from devnet.entries import AccountEntry, account_key, account_raw, account_strkey, xdr_asset_problem
from devnet.errors import NotSupported
from devnet.host import check_supported, contract_id_preimage
from devnet.state import LedgerState, LedgerTxn

BASE_FEE = 100
TC = x.TransactionResultCode
OT = x.OperationType

_SUPPORTED_OPS = {
    OT.CREATE_ACCOUNT,
    OT.PAYMENT,
    OT.CHANGE_TRUST,
    OT.ACCOUNT_MERGE,
    OT.INVOKE_HOST_FUNCTION,
}

# Indices into AccountEntry.thresholds (master weight, low, medium, high).
THRESHOLD_LOW, THRESHOLD_MEDIUM, THRESHOLD_HIGH = 1, 2, 3

# CAP-71's credentials (ADDRESS_V2, ADDRESS_WITH_DELEGATES) are XDR of protocol 27 and later
# (stellar-protocol core/cap-0071.md; stellar-core src/util/ProtocolVersion.h, FIRST_PROTOCOL_CAP71).
FIRST_PROTOCOL_ADDRESS_V2 = 27
_CAP71_CREDENTIALS = {
    x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS_V2,
    x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS_WITH_DELEGATES,
}


class MalformedEnvelope(ValueError):
    """The transaction parameter is not a base64 XDR TransactionEnvelope."""


def muxed_account_id(account: x.MuxedAccount) -> str:
    """The G… account behind a (possibly muxed) account."""
    if account.type == x.CryptoKeyType.KEY_TYPE_ED25519:
        assert account.ed25519 is not None
        return account_strkey(account.ed25519.uint256)
    assert account.med25519 is not None
    return account_strkey(account.med25519.ed25519.uint256)


@dataclass(frozen=True)
class Invalid:
    """Why :func:`check_valid` rejects a transaction. ``op_results`` is set for txFAILED
    from an operation's own checks (one result per operation, as stellar-core reports it)."""

    code: x.TransactionResultCode
    op_results: list[x.OperationResult] | None = None


def threshold_level(op: x.Operation) -> int:
    """The threshold an operation's source must meet (stellar-core ``getThresholdLevel``):
    high for AccountMerge, medium for the other operations devnet supports."""
    return THRESHOLD_HIGH if op.body.type == OT.ACCOUNT_MERGE else THRESHOLD_MEDIUM


def _unchecked_result(op_type: x.OperationType) -> x.OperationResult:
    """An operation's result before it is applied: opINNER with result code 0, as in
    the transaction result that stellar-core's ``checkValid`` fills in."""
    if op_type == OT.CREATE_ACCOUNT:
        tr = x.OperationResultTr(
            op_type, create_account_result=x.CreateAccountResult(x.CreateAccountResultCode.CREATE_ACCOUNT_SUCCESS)
        )
    elif op_type == OT.PAYMENT:
        tr = x.OperationResultTr(op_type, payment_result=x.PaymentResult(x.PaymentResultCode.PAYMENT_SUCCESS))
    elif op_type == OT.CHANGE_TRUST:
        tr = x.OperationResultTr(
            op_type, change_trust_result=x.ChangeTrustResult(x.ChangeTrustResultCode.CHANGE_TRUST_SUCCESS)
        )
    elif op_type == OT.INVOKE_HOST_FUNCTION:
        # The default result stellar-core starts from: code 0 (SUCCESS) with a zero hash.
        tr = x.OperationResultTr(
            op_type,
            invoke_host_function_result=x.InvokeHostFunctionResult(
                x.InvokeHostFunctionResultCode.INVOKE_HOST_FUNCTION_SUCCESS, success=x.Hash(bytes(32))
            ),
        )
    else:
        assert op_type == OT.ACCOUNT_MERGE
        tr = x.OperationResultTr(
            op_type,
            account_merge_result=x.AccountMergeResult(
                x.AccountMergeResultCode.ACCOUNT_MERGE_SUCCESS, source_account_balance=x.Int64(0)
            ),
        )
    return x.OperationResult(x.OperationResultCode.opINNER, tr=tr)


def check_operation(op: x.Operation, source: str) -> x.OperationResult | None:
    """An operation's own checks that need no ledger state (stellar-core ``doCheckValid``),
    for the operations where devnet makes them at submission: the failing result, or None.

    - AccountMerge: merging an account into itself is ACCOUNT_MERGE_MALFORMED (muxed IDs
      compare by their underlying account).
    - InvokeHostFunction: creating a contract from an invalid asset (a code that
      stellar-core's isAssetValid refuses) fails without a result code of its own
      (stellar-core src/transactions/InvokeHostFunctionOpFrame.cpp, doCheckValidForSoroban
      returns false and leaves the operation's default result).
    """
    body = op.body
    if body.type == OT.INVOKE_HOST_FUNCTION:
        assert body.invoke_host_function_op is not None
        preimage = contract_id_preimage(body.invoke_host_function_op.host_function)
        if (
            preimage is not None
            and preimage.type == x.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ASSET
            and preimage.from_asset is not None
            and xdr_asset_problem(preimage.from_asset) is not None
        ):
            return _unchecked_result(OT.INVOKE_HOST_FUNCTION)
    if body.type == OT.ACCOUNT_MERGE:
        assert body.destination is not None
        if muxed_account_id(body.destination) == source:
            return x.OperationResult(
                x.OperationResultCode.opINNER,
                tr=x.OperationResultTr(
                    OT.ACCOUNT_MERGE,
                    account_merge_result=x.AccountMergeResult(x.AccountMergeResultCode.ACCOUNT_MERGE_MALFORMED),
                ),
            )
    return None


@dataclass
class ParsedTransaction:
    """A decoded V1 transaction envelope and the facts the rules need."""

    envelope: x.TransactionEnvelope
    envelope_xdr: str
    tx: x.Transaction
    hash: bytes
    source: str
    seq_num: int
    fee: int
    min_time: int
    max_time: int
    min_ledger: int
    max_ledger: int
    soroban: x.SorobanTransactionData | None
    # The first protocol whose XDR can carry the envelope (stellar-core validateXDRForProtocol).
    first_protocol: int = 0

    @property
    def hash_hex(self) -> str:
        return self.hash.hex()

    @property
    def resource_fee(self) -> int:
        return self.soroban.resource_fee.int64 if self.soroban is not None else 0

    @property
    def inclusion_fee(self) -> int:
        return self.fee - self.resource_fee

    def op_sources(self) -> list[str]:
        return [
            muxed_account_id(op.source_account) if op.source_account is not None else self.source
            for op in self.tx.operations
        ]


def transaction_hash(tx: x.Transaction, network_id: bytes) -> bytes:
    payload = x.TransactionSignaturePayload(
        network_id=x.Hash(network_id),
        tagged_transaction=x.TransactionSignaturePayloadTaggedTransaction(x.EnvelopeType.ENVELOPE_TYPE_TX, tx=tx),
    )
    return hashlib.sha256(payload.to_xdr_bytes()).digest()


def parse_envelope(envelope_xdr: str, network_id: bytes) -> ParsedTransaction:
    """Decode a base64 envelope. Raises :class:`MalformedEnvelope` or :class:`NotSupported`."""
    try:
        raw = base64.b64decode(envelope_xdr, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedEnvelope("transaction: not valid base64") from exc
    try:
        envelope = x.TransactionEnvelope.from_xdr_bytes(raw)
    except Exception as exc:  # xdrlib3 raises assorted errors on truncated or bad input
        raise MalformedEnvelope(f"transaction: not a TransactionEnvelope XDR ({type(exc).__name__})") from exc
    if envelope.type == x.EnvelopeType.ENVELOPE_TYPE_TX_FEE_BUMP:
        raise NotSupported("a fee-bump transaction envelope")
    if envelope.type != x.EnvelopeType.ENVELOPE_TYPE_TX or envelope.v1 is None:
        raise NotSupported(f"envelope type {envelope.type.name}")
    tx = envelope.v1.tx
    for op in tx.operations:
        if op.body.type not in _SUPPORTED_OPS:
            raise NotSupported(f"operation {op.body.type.name}")
        if op.body.invoke_host_function_op is not None:
            check_supported(op.body.invoke_host_function_op.host_function)
    min_time = max_time = min_ledger = max_ledger = 0
    cond = tx.cond
    if cond.type == x.PreconditionType.PRECOND_TIME:
        assert cond.time_bounds is not None
        min_time, max_time = cond.time_bounds.min_time.time_point.uint64, cond.time_bounds.max_time.time_point.uint64
    elif cond.type == x.PreconditionType.PRECOND_V2:
        assert cond.v2 is not None
        v2 = cond.v2
        if (
            v2.min_seq_num is not None
            or v2.min_seq_age.duration.uint64
            or v2.min_seq_ledger_gap.uint32
            or v2.extra_signers
        ):
            raise NotSupported("preconditions other than time and ledger bounds")
        if v2.time_bounds is not None:
            min_time, max_time = v2.time_bounds.min_time.time_point.uint64, v2.time_bounds.max_time.time_point.uint64
        if v2.ledger_bounds is not None:
            min_ledger, max_ledger = v2.ledger_bounds.min_ledger.uint32, v2.ledger_bounds.max_ledger.uint32
    soroban = tx.ext.soroban_data if tx.ext.v == 1 else None
    first_protocol = 0
    for op in tx.operations:
        invoke = op.body.invoke_host_function_op
        if invoke is None:
            continue
        for entry in invoke.auth:
            if entry.credentials.type == x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS_WITH_DELEGATES:
                # CAP-71-01 delegation (custom accounts) is not modelled.
                raise NotSupported("authorization credentials SOROBAN_CREDENTIALS_ADDRESS_WITH_DELEGATES")
            if entry.credentials.type in _CAP71_CREDENTIALS:
                first_protocol = FIRST_PROTOCOL_ADDRESS_V2
    return ParsedTransaction(
        envelope=envelope,
        envelope_xdr=base64.b64encode(raw).decode(),
        tx=tx,
        hash=transaction_hash(tx, network_id),
        source=muxed_account_id(tx.source_account),
        seq_num=tx.seq_num.sequence_number.int64,
        fee=tx.fee.uint32,
        min_time=min_time,
        max_time=max_time,
        min_ledger=min_ledger,
        max_ledger=max_ledger,
        soroban=soroban,
        first_protocol=first_protocol,
    )


def signed_weight(account: AccountEntry, payload: bytes, signatures: list[tuple[bytes, bytes]], used: set[int]) -> int:
    """Sum of the weights of the account's signers that signed ``payload``.

    ``signatures`` are (hint, signature) pairs; indices of the ones that verified are
    added to ``used`` so unused signatures can be detected (txBAD_AUTH_EXTRA).
    """
    weight = 0
    for key_id, key_weight in account.signer_weights().items():
        raw_key = account_raw(key_id)
        for index, (hint, signature) in enumerate(signatures):
            if hint != raw_key[-4:]:
                continue
            try:
                VerifyKey(raw_key).verify(payload, signature)
            except (BadSignatureError, ValueError):
                continue
            used.add(index)
            weight += key_weight
            break
    return weight


def time_bounds_code(
    ptx: ParsedTransaction, close_time: int, ledger_seq: int, upper_bound_offset: int = 0
) -> x.TransactionResultCode | None:
    """txTOO_EARLY / txTOO_LATE for the ledger that would include the transaction.

    ``upper_bound_offset`` is how much later than ``close_time`` that ledger may close: the
    transaction must still be valid then (stellar-core TransactionFrame ``isTooLate``:
    maxTime < closeTime + upperBoundCloseTimeOffset)."""
    if ptx.min_time and close_time < ptx.min_time:
        return TC.txTOO_EARLY
    if ptx.max_time and ptx.max_time < close_time + upper_bound_offset:
        return TC.txTOO_LATE
    if ptx.min_ledger and ledger_seq < ptx.min_ledger:
        return TC.txTOO_EARLY
    if ptx.max_ledger and ledger_seq >= ptx.max_ledger:
        return TC.txTOO_LATE
    return None


def check_valid(
    ptx: ParsedTransaction,
    state: LedgerState | LedgerTxn,
    next_ledger_seq: int,
    close_time: int,
    min_resource_fee: int | None,
    upper_bound_offset: int = 0,
) -> Invalid | None:
    """stellar-core's ``checkValid`` for a transaction about to enter the queue or a ledger.

    ``min_resource_fee`` is the non-refundable fee the declared Soroban resources cost (None
    for classic transactions); ``close_time`` and ``upper_bound_offset`` as for
    :func:`time_bounds_code`. Returns why the transaction is invalid, or None when it is valid.
    """
    ops = ptx.tx.operations
    if not ops:
        return Invalid(TC.txMISSING_OPERATION)
    is_soroban = any(op.body.type == OT.INVOKE_HOST_FUNCTION for op in ops)
    if is_soroban and (len(ops) != 1 or ptx.soroban is None):
        return Invalid(TC.txMALFORMED)
    if not is_soroban and ptx.soroban is not None:
        return Invalid(TC.txMALFORMED)
    code = time_bounds_code(ptx, close_time, next_ledger_seq, upper_bound_offset)
    if code is not None:
        return Invalid(code)
    if ptx.inclusion_fee < BASE_FEE * len(ops):
        return Invalid(TC.txINSUFFICIENT_FEE)
    if min_resource_fee is not None and ptx.resource_fee < min_resource_fee:
        return Invalid(TC.txSOROBAN_INVALID)
    source = state.get(account_key(ptx.source))
    if not isinstance(source, AccountEntry):
        return Invalid(TC.txNO_ACCOUNT)
    if ptx.seq_num != source.seq_num + 1:
        return Invalid(TC.txBAD_SEQ)
    assert ptx.envelope.v1 is not None
    signatures = [(s.hint.signature_hint, s.signature.signature) for s in ptx.envelope.v1.signatures]
    used: set[int] = set()
    # Each distinct source (transaction and operations) must meet its threshold: low for
    # the transaction itself (fee and sequence), each operation's own level for its source
    # (medium, or high for AccountMerge; see threshold_level).
    needed: dict[str, int] = {ptx.source: source.thresholds[THRESHOLD_LOW]}
    op_sources = ptx.op_sources()
    for op, op_source in zip(ops, op_sources, strict=True):
        account = state.get(account_key(op_source))
        if not isinstance(account, AccountEntry):
            return Invalid(TC.txFAILED if op_source != ptx.source else TC.txNO_ACCOUNT)
        needed[op_source] = max(needed.get(op_source, 0), account.thresholds[threshold_level(op)])
    for account_id, threshold in needed.items():
        account = state.get(account_key(account_id))
        assert isinstance(account, AccountEntry)
        if signed_weight(account, ptx.hash, signatures, used) < max(threshold, 1):
            return Invalid(TC.txBAD_AUTH)
    # The operations' own checks; the first failing one fails the transaction (txFAILED)
    # with its result among the operations' results, as in stellar-core's checkValid.
    for index, (op, op_source) in enumerate(zip(ops, op_sources, strict=True)):
        failed = check_operation(op, op_source)
        if failed is not None:
            results = [_unchecked_result(o.body.type) for o in ops]
            results[index] = failed
            return Invalid(TC.txFAILED, results)
    if len(used) != len(signatures):
        return Invalid(TC.txBAD_AUTH_EXTRA)
    if source.available_balance() < ptx.fee:
        return Invalid(TC.txINSUFFICIENT_BALANCE)
    return None
