"""Stellar transaction helpers for payouts: build, decode, and check external signatures.

Two payout kinds (see :mod:`payouts.config`):

- a Stellar Asset Contract ``transfer(from=source, to=destination, amount)``, and
- a call of the payout contract's method (``distribute_winnings(to, amount)``).

Every envelope carries a time bound (``max_time``): after the ledger closes past it, the
envelope can never be applied, which is what lets a payout replace it safely (promise 2).

A signed XDR from an external signer is recorded and sent exactly as given, so besides
being the right transaction with the right signatures (promise 8) it must be exactly the
canonical base64 of the XDR it decodes to (base64 decoding here is lenient, the network's
is not) and at most :data:`MAX_SIGNED_XDR_CHARS` long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from stellar_sdk import (
    Account,
    Address,
    Asset,
    Network,
    StrKey,
    TransactionBuilder,
    TransactionEnvelope,
    scval,
)
from stellar_sdk import xdr as x
from stellar_sdk.operation import InvokeHostFunction

# The longest signed XDR (base64 characters) taken from an external signer. The largest
# transaction the network accepts is 132 KiB (Soroban's tx_max_size_bytes), about 176 K
# characters of base64; a payout envelope or authorization entry is 1-3 K. The limit keeps
# every signature far below Temporal's 2 MB payload limit: the worker's answer to an
# update (accepted or rejected) carries the update's argument, so one near that limit
# cannot be answered at all, and the payout's workflow tasks fail until it is gone.
MAX_SIGNED_XDR_CHARS = 256 * 1024

FEE_BUMP_REFUSED = (
    "fee-bump envelopes are not accepted; sign the transaction envelope in status (unsigned_xdr) and send it unwrapped"
)
_STRICT_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_Xdr = TypeVar("_Xdr", x.TransactionEnvelope, x.SorobanAuthorizationEntry)


class EnvelopeError(ValueError):
    """An envelope that is not what a payout needs; the message says why."""


def signed_xdr_size_problem(signed_xdr: str) -> str | None:
    """Why ``signed_xdr`` is too long to be taken from a signer, or None. Pure Python:
    the workflow calls it in its update validator and signal handler."""
    if len(signed_xdr) <= MAX_SIGNED_XDR_CHARS:
        return None
    return (
        f"the signed XDR is {len(signed_xdr)} characters, above the limit of {MAX_SIGNED_XDR_CHARS} "
        "(MAX_SIGNED_XDR_CHARS); a signed payout envelope is a few thousand"
    )


def require_canonical(given: str, canonical: str) -> None:
    """Raise :class:`EnvelopeError` unless ``given`` is exactly ``canonical``, the
    re-encoding of what it decoded to: it is sent verbatim, and the network decodes strictly."""
    if given == canonical:
        return
    if _STRICT_BASE64.fullmatch(given) is None:
        raise EnvelopeError(
            "not canonical base64: it contains whitespace, line breaks or characters outside "
            "A-Z a-z 0-9 + / = (or misplaced padding); send the base64 on one line, unchanged"
        )
    raise EnvelopeError(
        "not canonical XDR: it decodes, but re-encodes differently (stray padding bits or a legacy "
        "encoding); send the XDR exactly as your Stellar library writes it"
    )


def decode_xdr(cls: type[_Xdr], text: str) -> _Xdr | None:
    """``text`` decoded as ``cls`` (base64 decoded leniently, as stellar-sdk does), or None."""
    try:
        return cls.from_xdr(text)
    except Exception:  # the XDR library raises assorted errors on bad or truncated input
        return None


def check_signed_xdr_form(signed_xdr: str) -> None:
    """What can be checked without the payout: size, then a transaction envelope (not a
    fee-bump) or a SorobanAuthorizationEntry with address credentials, in canonical
    base64. Raises :class:`EnvelopeError` with the reason."""
    problem = signed_xdr_size_problem(signed_xdr)
    if problem is not None:
        raise EnvelopeError(problem)
    envelope = decode_xdr(x.TransactionEnvelope, signed_xdr)
    if envelope is not None:
        if envelope.type == x.EnvelopeType.ENVELOPE_TYPE_TX_FEE_BUMP:
            raise EnvelopeError(FEE_BUMP_REFUSED)
        require_canonical(signed_xdr, envelope.to_xdr())
        return
    entry = decode_xdr(x.SorobanAuthorizationEntry, signed_xdr)
    if entry is None or (entry.credentials.address is None and entry.credentials.address_v2 is None):
        raise EnvelopeError(
            "not a base64 transaction envelope XDR, nor a SorobanAuthorizationEntry with address credentials"
        )
    require_canonical(signed_xdr, entry.to_xdr())


@dataclass(frozen=True)
class PayoutCall:
    """What a payout transaction does, decoded from its XDR."""

    source: str
    contract_id: str
    function: str
    destination: str
    stroops: int
    max_time: int
    hash: str


def build_payout_transaction(
    source: Account,
    network_passphrase: str,
    destination: str,
    stroops: int,
    max_time: int,
    *,
    asset: Asset | None = None,
    contract_id: str | None = None,
    method: str = "distribute_winnings",
    base_fee: int = 100,
    payer: str | None = None,
) -> TransactionEnvelope:
    """An unsigned, unsimulated payout transaction with sequence ``source.sequence + 1``.

    With ``contract_id`` it calls ``method(to, amount)`` on that contract; otherwise it is
    a ``transfer`` on ``asset``'s Stellar Asset Contract from ``payer`` (by default the
    source account; a channel account carries payouts paid by another account).
    """
    if contract_id is not None:
        target, function = contract_id, method
        args = [scval.to_address(destination), scval.to_int128(stroops)]
    else:
        if asset is None:
            raise ValueError("asset is required for a Stellar Asset Contract transfer")
        target, function = asset.contract_id(network_passphrase), "transfer"
        sender = payer or source.account.account_id
        args = [scval.to_address(sender), scval.to_address(destination), scval.to_int128(stroops)]
    return (
        TransactionBuilder(source, network_passphrase, base_fee=base_fee)
        .append_invoke_contract_function_op(target, function, args)
        .add_time_bounds(0, max_time)
        .build()
    )


def parse_envelope(envelope_xdr: str, network_passphrase: str) -> TransactionEnvelope:
    try:
        envelope = TransactionEnvelope.from_xdr(envelope_xdr, network_passphrase)
    except Exception as exc:  # the SDK and xdrlib3 raise assorted errors on bad or truncated input
        raw = decode_xdr(x.TransactionEnvelope, envelope_xdr)
        if raw is not None and raw.type == x.EnvelopeType.ENVELOPE_TYPE_TX_FEE_BUMP:
            raise EnvelopeError(FEE_BUMP_REFUSED) from None
        raise EnvelopeError(f"not a base64 transaction envelope XDR ({type(exc).__name__})") from None
    return envelope


def decode_payout(envelope_xdr: str, network_passphrase: str) -> PayoutCall:
    """The payout an envelope makes; :class:`EnvelopeError` if it is not a payout call."""
    envelope = parse_envelope(envelope_xdr, network_passphrase)
    tx = envelope.transaction
    if len(tx.operations) != 1 or not isinstance(tx.operations[0], InvokeHostFunction):
        raise EnvelopeError("a payout transaction has exactly one InvokeHostFunction operation")
    function = tx.operations[0].host_function
    if function.type != x.HostFunctionType.HOST_FUNCTION_TYPE_INVOKE_CONTRACT or function.invoke_contract is None:
        raise EnvelopeError("a payout transaction invokes a contract function")
    call = function.invoke_contract
    name = call.function_name.sc_symbol.decode(errors="replace")
    args = [scval.to_native(a) for a in call.args]
    if name == "transfer" and len(args) == 3:
        destination, amount = args[1], args[2]
    elif name != "transfer" and len(args) == 2:
        destination, amount = args[0], args[1]
    else:
        raise EnvelopeError(f"unexpected arguments for {name}")
    if not isinstance(destination, Address) or not isinstance(amount, int):
        raise EnvelopeError(f"{name} must be called with (to: Address, amount: i128)")
    contract = call.contract_address.contract_id
    if contract is None:
        raise EnvelopeError("a payout transaction calls a contract address")
    bounds = tx.preconditions.time_bounds if tx.preconditions is not None else None
    return PayoutCall(
        source=tx.source.account_id,
        contract_id=StrKey.encode_contract(contract.contract_id.hash),
        function=name,
        destination=destination.address,
        stroops=amount,
        max_time=bounds.max_time if bounds is not None else 0,
        hash=envelope.hash_hex(),
    )


def check_signed_envelope(
    signed_xdr: str,
    expected_hash: str,
    network_passphrase: str,
    signer_weights: dict[str, int],
    threshold: int,
) -> TransactionEnvelope:
    """Promise 8: the signed XDR must be the very transaction that was built, in
    canonical base64, and carry valid signatures whose weights meet ``threshold``. Returns
    the envelope; raises :class:`EnvelopeError` with the reason otherwise.

    ``signer_weights`` are the source account's signers (master key included) as read
    from the ledger; signatures by other keys, or for another network, count for nothing.
    """
    problem = signed_xdr_size_problem(signed_xdr)
    if problem is not None:
        raise EnvelopeError(problem)
    envelope = parse_envelope(signed_xdr, network_passphrase)
    # Recorded and sent verbatim: junk that lenient decoding skipped would reach the
    # network, which refuses it, and the payout would never settle.
    require_canonical(signed_xdr, envelope.to_xdr())
    if envelope.hash_hex() != expected_hash:
        raise EnvelopeError("the signed XDR is not the transaction that was built (hash differs)")
    if not envelope.signatures:
        raise EnvelopeError("the signed XDR carries no signature")
    payload = envelope.hash()
    weight = 0
    counted: set[str] = set()
    for decorated in envelope.signatures:
        signer = _verify(decorated.signature_hint, decorated.signature, payload, signer_weights)
        if signer is None:
            raise EnvelopeError(
                "a signature does not verify for this transaction under the configured network "
                f"({network_passphrase!r}) by any signer of the source account"
                + _signed_elsewhere(envelope, decorated.signature_hint, decorated.signature, signer_weights)
            )
        if signer not in counted:
            counted.add(signer)
            weight += signer_weights[signer]
    if weight < max(threshold, 1):
        raise EnvelopeError(f"signature weight {weight} is below the source account's threshold {threshold}")
    return envelope


_KNOWN_NETWORKS = (
    Network.PUBLIC_NETWORK_PASSPHRASE,
    Network.TESTNET_NETWORK_PASSPHRASE,
    Network.FUTURENET_NETWORK_PASSPHRASE,
    Network.STANDALONE_NETWORK_PASSPHRASE,
)


def _signed_elsewhere(
    envelope: TransactionEnvelope, hint: bytes, signature: bytes, signer_weights: dict[str, int]
) -> str:
    """``" (it was signed for …)"`` when the signature is valid under a well-known other network."""
    for passphrase in _KNOWN_NETWORKS:
        if passphrase == envelope.network_passphrase:
            continue
        other = TransactionEnvelope(envelope.transaction, passphrase)
        if _verify(hint, signature, other.hash(), signer_weights) is not None:
            return f"; it was signed for the network {passphrase!r}"
    return ""


def _verify(hint: bytes, signature: bytes, payload: bytes, signer_weights: dict[str, int]) -> str | None:
    for signer, weight in signer_weights.items():
        if weight <= 0:
            continue
        raw = StrKey.decode_ed25519_public_key(signer)
        if raw[-4:] != hint:
            continue
        try:
            VerifyKey(raw).verify(payload, signature)
        except (BadSignatureError, ValueError):
            continue
        return signer
    return None
