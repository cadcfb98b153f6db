"""Soroban authorization entries: how the payout account authorizes a transfer that a
channel account carries.

When the transaction's source is a channel, simulation returns an authorization entry
with *address credentials* for the payout account: a nonce, and the root invocation
(``transfer(payer, to, amount)`` on the asset's contract, or the payout contract's
method). The payout account signs

    payload = SHA-256( HashIdPreimage ENVELOPE_TYPE_SOROBAN_AUTHORIZATION {
                           network_id = SHA-256(network passphrase),
                           nonce, signature_expiration_ledger, invocation } )

with ed25519, and the signature goes into the entry as the account contract's
``Vec<Map{public_key: Bytes(32), signature: Bytes(64)}>`` (sorted by public key; the
signers' weights must reach the account's medium threshold). The nonce makes the
authorization usable once: whatever transaction carries it, the transfer happens at
most once, and not at all after ``signature_expiration_ledger``.

An external signer (HSM/KMS) gets the unsigned entry (base64 ``SorobanAuthorizationEntry``
with the expiration ledger already set) and the payload above, and answers with the same
entry, signature filled in (``stellar_sdk.auth.authorize_entry`` does exactly that);
:func:`check_signed_authorization` holds it to promise 8.
"""

from __future__ import annotations

from enum import StrEnum

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from stellar_sdk import Address, Keypair, StrKey, TransactionEnvelope
from stellar_sdk import xdr as x
from stellar_sdk.auth import authorization_payload_hash, authorize_entry, build_authorization_preimage
from stellar_sdk.operation import InvokeHostFunction

from payouts.envelopes import EnvelopeError, decode_xdr, require_canonical, signed_xdr_size_problem


def _operation(envelope: TransactionEnvelope) -> InvokeHostFunction:
    ops = envelope.transaction.operations
    if len(ops) != 1 or not isinstance(ops[0], InvokeHostFunction):
        raise EnvelopeError("a payout transaction has exactly one InvokeHostFunction operation")
    return ops[0]


def _address_credentials(entry: x.SorobanAuthorizationEntry) -> x.SorobanAddressCredentials | None:
    creds = entry.credentials
    return creds.address if creds.address is not None else creds.address_v2


def _address_of(entry: x.SorobanAuthorizationEntry) -> str | None:
    creds = _address_credentials(entry)
    if creds is None or creds.address.account_id is None:
        return None
    key = creds.address.account_id.account_id.ed25519
    return None if key is None else StrKey.encode_ed25519_public_key(key.uint256)


def unsigned_authorization(
    envelope: TransactionEnvelope, payer: str, nonce: int, valid_until_ledger: int
) -> x.SorobanAuthorizationEntry:
    """The authorization entry ``payer`` signs for the envelope's contract call, built
    directly (no simulation needed): the call is the whole invocation tree, since neither
    a SAC ``transfer`` nor the payout contract's method asks anyone else's authorization."""
    function = _operation(envelope).host_function.invoke_contract
    if function is None:
        raise EnvelopeError("a payout transaction invokes a contract function")
    return x.SorobanAuthorizationEntry(
        credentials=x.SorobanCredentials(
            x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS,
            address=x.SorobanAddressCredentials(
                address=Address(payer).to_xdr_sc_address(),
                nonce=x.Int64(nonce),
                signature_expiration_ledger=x.Uint32(valid_until_ledger),
                signature=x.SCVal(x.SCValType.SCV_VOID),
            ),
        ),
        root_invocation=x.SorobanAuthorizedInvocation(
            function=x.SorobanAuthorizedFunction(
                x.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN,
                contract_fn=function,
            ),
            sub_invocations=[],
        ),
    )


def authorization_payload(entry: x.SorobanAuthorizationEntry, network_passphrase: str) -> bytes:
    """The 32 bytes the payout account's key signs for ``entry`` (see the module docstring)."""
    creds = _address_credentials(entry)
    if creds is None:
        raise EnvelopeError("the authorization entry has no address credentials")
    expiration = creds.signature_expiration_ledger.uint32
    return authorization_payload_hash(build_authorization_preimage(entry, expiration, network_passphrase))


def sign_entry(
    entry: x.SorobanAuthorizationEntry, signer: Keypair, valid_until_ledger: int, network_passphrase: str
) -> x.SorobanAuthorizationEntry:
    return authorize_entry(entry, signer, valid_until_ledger, network_passphrase)


def with_authorization(
    envelope: TransactionEnvelope, payer: str, signed: x.SorobanAuthorizationEntry
) -> TransactionEnvelope:
    """A copy of ``envelope`` (without signatures) carrying ``signed`` as ``payer``'s
    authorization entry, in place of the one it had, if any."""
    copy = TransactionEnvelope.from_xdr(envelope.to_xdr(), envelope.network_passphrase)
    copy.signatures = []
    operation = _operation(copy)
    operation.auth = [e for e in operation.auth if _address_of(e) != payer] + [signed]
    return copy


def check_signed_authorization(
    signed_entry_xdr: str,
    expected: x.SorobanAuthorizationEntry,
    network_passphrase: str,
    signer_weights: dict[str, int],
    threshold: int,
) -> x.SorobanAuthorizationEntry:
    """Promise 8 for an authorization entry: the signed entry must be ``expected`` (same
    address, nonce, expiration ledger and invocation), in canonical base64, with
    signatures by the payer's signers, valid under the configured network, whose weights
    reach ``threshold``. Returns the entry; raises :class:`EnvelopeError` with the reason
    otherwise."""
    problem = signed_xdr_size_problem(signed_entry_xdr)
    if problem is not None:
        raise EnvelopeError(problem)
    signed = decode_xdr(x.SorobanAuthorizationEntry, signed_entry_xdr)
    if signed is None:
        raise EnvelopeError("not a base64 SorobanAuthorizationEntry XDR")
    # The entry goes into envelopes as decoded, but a lenient decode must not make junk
    # count as a signature: the signer's output is taken only in its exact form.
    require_canonical(signed_entry_xdr, signed.to_xdr())
    got, want = _address_credentials(signed), _address_credentials(expected)
    assert want is not None
    if (
        got is None
        or signed.credentials.type != expected.credentials.type
        or got.address.to_xdr_bytes() != want.address.to_xdr_bytes()
        or got.nonce != want.nonce
        or got.signature_expiration_ledger != want.signature_expiration_ledger
        or signed.root_invocation.to_xdr_bytes() != expected.root_invocation.to_xdr_bytes()
    ):
        raise EnvelopeError("the signed authorization is not the entry that was handed out (entry differs)")
    payload = authorization_payload(signed, network_passphrase)
    weight = 0
    for public_key, signature in _signature_pairs(got.signature):
        signer = StrKey.encode_ed25519_public_key(public_key)
        if signer_weights.get(signer, 0) <= 0:
            raise EnvelopeError(f"{signer} is not a signer of the payout account")
        try:
            VerifyKey(public_key).verify(payload, signature)
        except (BadSignatureError, ValueError):
            raise EnvelopeError(
                f"the signature by {signer} does not verify for this authorization under the configured "
                f"network ({network_passphrase!r})"
            ) from None
        weight += signer_weights[signer]
    if weight < max(threshold, 1):
        raise EnvelopeError(f"signature weight {weight} is below the payout account's threshold {threshold}")
    return signed


def _signature_pairs(value: x.SCVal) -> list[tuple[bytes, bytes]]:
    """``Vec<Map{public_key, signature}>`` as (public key, signature) pairs, strictly
    ascending by key, as the account contract requires."""
    malformed = EnvelopeError(
        "the authorization's signature must be Vec<Map{public_key: Bytes(32), signature: Bytes(64)}>"
    )
    if value.type == x.SCValType.SCV_VOID:
        raise EnvelopeError("the authorization carries no signature")
    if value.type != x.SCValType.SCV_VEC or value.vec is None or not value.vec.sc_vec:
        raise malformed
    pairs: list[tuple[bytes, bytes]] = []
    for item in value.vec.sc_vec:
        if item.type != x.SCValType.SCV_MAP or item.map is None:
            raise malformed
        fields = {
            e.key.sym.sc_symbol: e.val for e in item.map.sc_map if e.key.sym is not None and e.val.bytes is not None
        }
        public_key, signature = fields.get(b"public_key"), fields.get(b"signature")
        if public_key is None or signature is None or public_key.bytes is None or signature.bytes is None:
            raise malformed
        key_bytes, signature_bytes = public_key.bytes.sc_bytes, signature.bytes.sc_bytes
        if len(key_bytes) != 32 or len(signature_bytes) != 64:
            raise malformed
        if pairs and key_bytes <= pairs[-1][0]:
            raise EnvelopeError("the authorization's signatures must be sorted by public key, without duplicates")
        pairs.append((key_bytes, signature_bytes))
    return pairs


# -- Whether a nonce was used ------------------------------------------------------------
#
# A transaction that carries the entry consumes its nonce: the host writes a TEMPORARY
# contract-data entry (key SCV_LEDGER_KEY_NONCE) live until ledger
# max(signature_expiration_ledger, apply ledger + minimum temporary TTL - 1)
# (rs-soroban-env soroban-env-host src/auth.rs, consume_nonce), and stellar-rpc's
# getLedgerEntries stops returning a temporary entry once it is past that ledger (stellar-core
# src/main/QueryServer.cpp: an archived temporary entry is "not found"). So an absent entry
# means "unused" only while a use could not yet have expired; the engine keeps, per
# authorization, the ledger through which it has proven the nonce unused, and never reads
# more into an absence than that.


class NonceState(StrEnum):
    """What the engine can prove about an authorization's nonce (``authorizations.status``)."""

    LIVE = "live"  # not used so far, and still usable: carry it, or wait
    USED = "used"  # a transaction consumed it: the transfer happened
    UNUSED = "unused"  # provably never used, and past its expiration: it can never pay
    UNKNOWN = "unknown"  # neither can be proven (history gone): an operator decides


def unused_through_after_absence(
    unused_through: int, valid_until_ledger: int, observed_at: int, min_temporary_ttl: int
) -> int | None:
    """The ledger through which the nonce is proven unused, given that its entry was absent
    from a ledger-entry read at ledger ``observed_at``; None if the absence proves nothing
    new because an entry written after ``unused_through`` may already have expired.

    A use in ledger L > ``unused_through`` leaves an entry live at least through
    max(``valid_until_ledger``, L + ``min_temporary_ttl`` - 1) >=
    max(``valid_until_ledger``, ``unused_through`` + ``min_temporary_ttl``). If that is at
    least ``observed_at`` + 1, the entry would be present at ``observed_at`` (whether the
    RPC compares its TTL with the ledger it read or the next one), so its absence proves
    no use in any ledger up to ``observed_at``.
    """
    if observed_at <= unused_through:
        return unused_through
    # No use after its expiration ledger; otherwise a use would still be visible.
    if unused_through >= valid_until_ledger or observed_at + 1 <= max(
        valid_until_ledger, unused_through + min_temporary_ttl
    ):
        return observed_at
    return None


def nonce_state(unused_through: int, valid_until_ledger: int) -> NonceState:
    """LIVE or UNUSED for a nonce proven unused through ``unused_through``: the entry is
    usable in ledgers up to ``valid_until_ledger`` (the host refuses it in a later one)."""
    return NonceState.UNUSED if unused_through >= valid_until_ledger else NonceState.LIVE


def nonce_key(payer: str, nonce: int) -> x.LedgerKey:
    """The ledger key of the entry a use of ``payer``'s ``nonce`` writes."""
    return x.LedgerKey(
        x.LedgerEntryType.CONTRACT_DATA,
        contract_data=x.LedgerKeyContractData(
            contract=Address(payer).to_xdr_sc_address(),
            key=x.SCVal(x.SCValType.SCV_LEDGER_KEY_NONCE, nonce_key=x.SCNonceKey(x.Int64(nonce))),
            durability=x.ContractDataDurability.TEMPORARY,
        ),
    )


def consumes_nonce(result_meta_xdr: str, payer: str, nonce: int) -> bool:
    """Whether an applied transaction (its ``resultMetaXdr``) created the entry of
    ``payer``'s ``nonce``, i.e. used that authorization."""
    wanted = nonce_key(payer, nonce).contract_data
    assert wanted is not None
    meta = x.TransactionMeta.from_xdr(result_meta_xdr)
    body = meta.v4 or meta.v3
    if body is None:
        return False
    for operation in body.operations:
        for change in operation.changes.ledger_entry_changes:
            entry = change.created
            data = entry.data.contract_data if entry is not None else None
            if (
                data is not None
                and data.key.type == x.SCValType.SCV_LEDGER_KEY_NONCE
                and data.key.nonce_key is not None
                and data.key.nonce_key.nonce.int64 == nonce
                and data.contract.to_xdr_bytes() == wanted.contract.to_xdr_bytes()
            ):
                return True
    return False
