"""Applying the classic operations devnet supports: CreateAccount, Payment, ChangeTrust,
AccountMerge.

Each function applies one operation to a :class:`~devnet.state.LedgerTxn` and returns the
operation's XDR result; a result code other than success means the transaction fails and
its ledger changes are discarded by the caller.
"""

from __future__ import annotations

from stellar_sdk import Asset, StrKey
from stellar_sdk import xdr as x

from devnet.entries import (
    BASE_RESERVE,
    MAX_INT64,
    AccountEntry,
    TrustlineEntry,
    account_key,
    asset_string,
    trustline_key,
)
from devnet.errors import NotSupported
from devnet.state import LedgerTxn
from devnet.transactions import muxed_account_id

CA = x.CreateAccountResultCode
PAY = x.PaymentResultCode
CT = x.ChangeTrustResultCode
AM = x.AccountMergeResultCode


def _account_id(account_id: x.AccountID) -> str:
    assert account_id.account_id.ed25519 is not None
    return StrKey.encode_ed25519_public_key(account_id.account_id.ed25519.uint256)


def _inner(op_type: x.OperationType, **result: object) -> x.OperationResult:
    return x.OperationResult(x.OperationResultCode.opINNER, tr=x.OperationResultTr(op_type, **result))  # type: ignore[arg-type]


def is_success(result: x.OperationResult) -> bool:
    if result.code != x.OperationResultCode.opINNER or result.tr is None:
        return False
    tr = result.tr
    inner = (
        tr.create_account_result
        or tr.payment_result
        or tr.change_trust_result
        or tr.account_merge_result
        or tr.invoke_host_function_result
    )
    assert inner is not None
    return int(inner.code.value) == 0


def sdk_asset(asset: x.Asset) -> Asset:
    return Asset.from_xdr_object(asset)


def create_account(ltx: LedgerTxn, source_id: str, op: x.CreateAccountOp) -> x.OperationResult:
    def result(code: x.CreateAccountResultCode) -> x.OperationResult:
        return _inner(x.OperationType.CREATE_ACCOUNT, create_account_result=x.CreateAccountResult(code))

    destination = _account_id(op.destination)
    amount = op.starting_balance.int64
    if amount <= 0 or destination == source_id:
        return result(CA.CREATE_ACCOUNT_MALFORMED)
    if ltx.get(account_key(destination)) is not None:
        return result(CA.CREATE_ACCOUNT_ALREADY_EXIST)
    if amount < 2 * BASE_RESERVE:
        return result(CA.CREATE_ACCOUNT_LOW_RESERVE)
    source = ltx.load(account_key(source_id))
    assert isinstance(source, AccountEntry)
    if source.available_balance() < amount:
        return result(CA.CREATE_ACCOUNT_UNDERFUNDED)
    source.balance -= amount
    ltx.put(source)
    ltx.put(AccountEntry(destination, balance=amount, seq_num=ltx.ledger_seq << 32))
    return result(CA.CREATE_ACCOUNT_SUCCESS)


def payment(ltx: LedgerTxn, source_id: str, op: x.PaymentOp) -> x.OperationResult:
    def result(code: x.PaymentResultCode) -> x.OperationResult:
        return _inner(x.OperationType.PAYMENT, payment_result=x.PaymentResult(code))

    destination = muxed_account_id(op.destination)
    amount = op.amount.int64
    asset = sdk_asset(op.asset)
    if amount <= 0:
        return result(PAY.PAYMENT_MALFORMED)
    if ltx.get(account_key(destination)) is None:
        return result(PAY.PAYMENT_NO_DESTINATION)
    if asset.is_native():
        source = ltx.load(account_key(source_id))
        assert isinstance(source, AccountEntry)
        if source.available_balance() < amount:
            return result(PAY.PAYMENT_UNDERFUNDED)
        source.balance -= amount
        ltx.put(source)
        dest = ltx.load(account_key(destination))
        assert isinstance(dest, AccountEntry)
        if dest.balance + amount > MAX_INT64:
            return result(PAY.PAYMENT_LINE_FULL)
        dest.balance += amount
        ltx.put(dest)
        return result(PAY.PAYMENT_SUCCESS)
    name = asset_string(asset)
    assert asset.issuer is not None  # a credit asset
    if ltx.get(account_key(asset.issuer)) is None:
        return result(PAY.PAYMENT_NO_ISSUER)
    if source_id != asset.issuer:
        line = ltx.load(trustline_key(source_id, name))
        if not isinstance(line, TrustlineEntry):
            return result(PAY.PAYMENT_SRC_NO_TRUST)
        if not line.authorized:
            return result(PAY.PAYMENT_SRC_NOT_AUTHORIZED)
        if line.balance < amount:
            return result(PAY.PAYMENT_UNDERFUNDED)
        line.balance -= amount
        ltx.put(line)
    if destination != asset.issuer:
        dest_line = ltx.load(trustline_key(destination, name))
        if not isinstance(dest_line, TrustlineEntry):
            return result(PAY.PAYMENT_NO_TRUST)
        if not dest_line.authorized:
            return result(PAY.PAYMENT_NOT_AUTHORIZED)
        if dest_line.balance + amount > dest_line.limit:
            return result(PAY.PAYMENT_LINE_FULL)
        dest_line.balance += amount
        ltx.put(dest_line)
    return result(PAY.PAYMENT_SUCCESS)


def change_trust(ltx: LedgerTxn, source_id: str, op: x.ChangeTrustOp) -> x.OperationResult:
    def result(code: x.ChangeTrustResultCode) -> x.OperationResult:
        return _inner(x.OperationType.CHANGE_TRUST, change_trust_result=x.ChangeTrustResult(code))

    line_asset = op.line
    if line_asset.type == x.AssetType.ASSET_TYPE_POOL_SHARE:
        raise NotSupported("a liquidity pool share trustline")
    if line_asset.type == x.AssetType.ASSET_TYPE_NATIVE:
        return result(CT.CHANGE_TRUST_MALFORMED)
    asset = Asset.from_xdr_object(
        x.Asset(line_asset.type, alpha_num4=line_asset.alpha_num4, alpha_num12=line_asset.alpha_num12)
    )
    limit = op.limit.int64
    if limit < 0:
        return result(CT.CHANGE_TRUST_MALFORMED)
    if asset.issuer == source_id:
        return result(CT.CHANGE_TRUST_SELF_NOT_ALLOWED)
    name = asset_string(asset)
    assert asset.issuer is not None  # a credit asset
    key = trustline_key(source_id, name)
    line = ltx.load(key)
    source = ltx.load(account_key(source_id))
    assert isinstance(source, AccountEntry)
    if isinstance(line, TrustlineEntry):
        if limit == 0:
            if line.balance > 0:
                return result(CT.CHANGE_TRUST_INVALID_LIMIT)
            ltx.remove(key)
            source.num_sub_entries -= 1
            ltx.put(source)
            return result(CT.CHANGE_TRUST_SUCCESS)
        if limit < line.balance:
            return result(CT.CHANGE_TRUST_INVALID_LIMIT)
        line.limit = limit
        ltx.put(line)
        return result(CT.CHANGE_TRUST_SUCCESS)
    if limit == 0:
        return result(CT.CHANGE_TRUST_INVALID_LIMIT)
    if ltx.get(account_key(asset.issuer)) is None:
        return result(CT.CHANGE_TRUST_NO_ISSUER)
    if source.balance < (3 + source.num_sub_entries) * BASE_RESERVE:
        return result(CT.CHANGE_TRUST_LOW_RESERVE)
    source.num_sub_entries += 1
    ltx.put(source)
    ltx.put(TrustlineEntry(source_id, name, limit=limit))
    return result(CT.CHANGE_TRUST_SUCCESS)


def account_merge(ltx: LedgerTxn, source_id: str, destination: x.MuxedAccount) -> x.OperationResult:
    """AccountMerge as stellar-core applies it from protocol 16 (``MergeOpFrame::doApplyFromV16``):
    the source account's whole balance (after the transaction's fee) goes to the
    destination and the source account is deleted.

    ACCOUNT_MERGE_IMMUTABLE_SET and ACCOUNT_MERGE_IS_SPONSOR never occur: devnet has no
    account flags and no sponsorships.
    """

    def result(code: x.AccountMergeResultCode, moved: int | None = None) -> x.OperationResult:
        merge_result = x.AccountMergeResult(code, source_account_balance=None if moved is None else x.Int64(moved))
        return _inner(x.OperationType.ACCOUNT_MERGE, account_merge_result=merge_result)

    destination_id = muxed_account_id(destination)
    # doCheckValid (made at submission too, see transactions.check_operation), run again at apply.
    if destination_id == source_id:
        return result(AM.ACCOUNT_MERGE_MALFORMED)
    if ltx.get(account_key(destination_id)) is None:
        return result(AM.ACCOUNT_MERGE_NO_ACCOUNT)
    source = ltx.load(account_key(source_id))
    assert isinstance(source, AccountEntry)
    # Signers are sub-entries too, but do not block a merge: they go with the account.
    if source.num_sub_entries != len(source.signers):
        return result(AM.ACCOUNT_MERGE_HAS_SUB_ENTRIES)
    # The account could be re-created in this very ledger with the starting sequence number
    # (ledgerSeq << 32): merging it must not let its sequence number go backwards.
    if source.seq_num >= ltx.ledger_seq << 32:
        return result(AM.ACCOUNT_MERGE_SEQNUM_TOO_FAR)
    moved = source.balance
    dest = ltx.load(account_key(destination_id))
    assert isinstance(dest, AccountEntry)
    if dest.balance + moved > MAX_INT64:
        return result(AM.ACCOUNT_MERGE_DEST_FULL)
    dest.balance += moved
    ltx.put(dest)
    ltx.remove(source.key())
    return result(AM.ACCOUNT_MERGE_SUCCESS, moved)
