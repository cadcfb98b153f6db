"""Payout envelopes: built as requested, decoded back, and external signatures checked
(promise 8) — offline, against keys made here."""

from __future__ import annotations

import pytest
from stellar_sdk import Account, Asset, Keypair, Network, StrKey, TransactionEnvelope

from payouts.envelopes import EnvelopeError, build_payout_transaction, check_signed_envelope, decode_payout

PASSPHRASE = Network.STANDALONE_NETWORK_PASSPHRASE
SOURCE = Keypair.random()
DESTINATION = Keypair.random().public_key
CONTRACT = StrKey.encode_contract(bytes(range(32)))


def build(**overrides: object) -> TransactionEnvelope:
    args: dict[str, object] = {"asset": Asset.native()}
    args.update(overrides)
    return build_payout_transaction(
        Account(SOURCE.public_key, 41),
        PASSPHRASE,
        DESTINATION,
        1_005_000_000,
        1_800_000_000,
        **args,  # type: ignore[arg-type]
    )


def test_sac_transfer_decodes_to_the_request() -> None:
    envelope = build()
    call = decode_payout(envelope.to_xdr(), PASSPHRASE)
    assert call.source == SOURCE.public_key
    assert call.contract_id == Asset.native().contract_id(PASSPHRASE)
    assert (call.function, call.destination, call.stroops, call.max_time) == (
        "transfer",
        DESTINATION,
        1_005_000_000,
        1_800_000_000,
    )
    assert envelope.transaction.sequence == 42
    assert call.hash == envelope.hash_hex()


def test_contract_call_decodes_to_the_request() -> None:
    call = decode_payout(build(asset=None, contract_id=CONTRACT).to_xdr(), PASSPHRASE)
    assert (call.contract_id, call.function, call.destination, call.stroops) == (
        CONTRACT,
        "distribute_winnings",
        DESTINATION,
        1_005_000_000,
    )


def signed(envelope: TransactionEnvelope, *keys: Keypair) -> str:
    copy = TransactionEnvelope.from_xdr(envelope.to_xdr(), envelope.network_passphrase)
    for key in keys:
        copy.sign(key)
    return copy.to_xdr()


def test_correct_signature_is_accepted() -> None:
    envelope = build()
    checked = check_signed_envelope(
        signed(envelope, SOURCE), envelope.hash_hex(), PASSPHRASE, {SOURCE.public_key: 1}, 0
    )
    assert checked.hash_hex() == envelope.hash_hex()


def test_rejections_name_the_reason() -> None:
    envelope = build()
    expected = envelope.hash_hex()
    weights = {SOURCE.public_key: 1}
    cases = {
        "hash differs": signed(build(contract_id=CONTRACT, asset=None), SOURCE),
        "no signature": envelope.to_xdr(),
        "does not verify": signed(envelope, Keypair.random()),
        "not a base64": "AAAA",
    }
    for reason, xdr in cases.items():
        with pytest.raises(EnvelopeError, match=reason):
            check_signed_envelope(xdr, expected, PASSPHRASE, weights, 0)
    other_network = TransactionEnvelope.from_xdr(envelope.to_xdr(), Network.TESTNET_NETWORK_PASSPHRASE)
    other_network.sign(SOURCE)
    with pytest.raises(EnvelopeError, match=r"does not verify.*signed for the network 'Test SDF Network"):
        check_signed_envelope(other_network.to_xdr(), expected, PASSPHRASE, weights, 0)
    cosigner = Keypair.random()
    with pytest.raises(EnvelopeError, match="below the source account's threshold 2"):
        check_signed_envelope(
            signed(envelope, SOURCE), expected, PASSPHRASE, {SOURCE.public_key: 1, cosigner.public_key: 1}, 2
        )
    both = signed(envelope, SOURCE, cosigner)
    assert check_signed_envelope(both, expected, PASSPHRASE, {SOURCE.public_key: 1, cosigner.public_key: 1}, 2)
