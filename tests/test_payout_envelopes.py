"""Payout envelopes: built as requested, decoded back, and external signatures checked
(promise 8) — offline, against keys made here."""

from __future__ import annotations

import base64

import pytest
from stellar_sdk import Account, Asset, Keypair, Network, StrKey, TransactionBuilder, TransactionEnvelope

from payouts.authorization import check_signed_authorization, sign_entry, unsigned_authorization
from payouts.envelopes import (
    MAX_SIGNED_XDR_CHARS,
    EnvelopeError,
    build_payout_transaction,
    check_signed_envelope,
    check_signed_xdr_form,
    decode_payout,
)

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


NOT_CANONICAL = "not canonical base64"


def junk_variants(xdr: str) -> list[str]:
    """``xdr`` with characters that lenient base64 decoding skips."""
    wrapped = "\n".join(xdr[i : i + 64] for i in range(0, len(xdr), 64))
    return [wrapped, xdr + "\n", " " + xdr, xdr[:10] + "!" + xdr[10:], xdr[:10] + "-_" + xdr[10:], xdr + "\x00"]


def test_a_signed_envelope_must_be_canonical_base64() -> None:
    """What is accepted is recorded and sent verbatim, and the network decodes strictly:
    junk that lenient decoding skips must not pass even with a good signature."""
    envelope = build()
    good = signed(envelope, SOURCE)
    for variant in junk_variants(good):
        with pytest.raises(EnvelopeError, match=NOT_CANONICAL):
            check_signed_envelope(variant, envelope.hash_hex(), PASSPHRASE, {SOURCE.public_key: 1}, 0)
        with pytest.raises(EnvelopeError, match=NOT_CANONICAL):
            check_signed_xdr_form(variant)
    check_signed_xdr_form(good)


def test_non_canonical_padding_bits_are_refused() -> None:
    """Strict base64 that decodes to the same bytes but is not what they encode to."""
    source = Keypair.random()
    for memo in ("a", "abcde", "abcdefghi"):  # 4, 8, 12 bytes: one leaves base64 padding
        envelope = (
            TransactionBuilder(Account(source.public_key, 1), PASSPHRASE, base_fee=100)
            .add_text_memo(memo)
            .append_bump_sequence_op(2)
            .set_timeout(60)
            .build()
        )
        envelope.sign(source)
        good = envelope.to_xdr()
        if good.endswith("="):
            break
    stripped = good.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    odd = stripped[:-1] + alphabet[alphabet.index(stripped[-1]) + 1] + good[len(stripped) :]
    assert base64.b64decode(odd) == base64.b64decode(good) and odd != good
    with pytest.raises(EnvelopeError, match="not canonical XDR"):
        check_signed_envelope(odd, envelope.hash_hex(), PASSPHRASE, {source.public_key: 1}, 0)


def test_signed_xdr_size_limit() -> None:
    too_long = "A" * (MAX_SIGNED_XDR_CHARS + 1)
    for check in (
        lambda: check_signed_envelope(too_long, build().hash_hex(), PASSPHRASE, {SOURCE.public_key: 1}, 0),
        lambda: check_signed_xdr_form(too_long),
    ):
        with pytest.raises(EnvelopeError, match=f"above the limit of {MAX_SIGNED_XDR_CHARS}"):
            check()


def test_fee_bump_envelopes_are_named() -> None:
    envelope = build()
    inner = TransactionEnvelope.from_xdr(signed(envelope, SOURCE), PASSPHRASE)
    bump = TransactionBuilder.build_fee_bump_transaction(SOURCE.public_key, 10_000, inner, PASSPHRASE)
    bump.sign(SOURCE)
    for check in (
        lambda: check_signed_envelope(bump.to_xdr(), envelope.hash_hex(), PASSPHRASE, {SOURCE.public_key: 1}, 0),
        lambda: check_signed_xdr_form(bump.to_xdr()),
    ):
        with pytest.raises(EnvelopeError, match="fee-bump envelopes are not accepted; sign the transaction envelope"):
            check()


def test_signed_xdr_form_takes_envelopes_and_authorization_entries_only() -> None:
    entry = unsigned_authorization(build(), SOURCE.public_key, nonce=7, valid_until_ledger=100)
    check_signed_xdr_form(signed(build(), SOURCE))
    check_signed_xdr_form(sign_entry(entry, SOURCE, 100, PASSPHRASE).to_xdr())
    for text in ("", "AAAA", "not base64!", base64.b64encode(b"\x00" * 7).decode()):
        with pytest.raises(
            EnvelopeError, match="not a base64 transaction envelope XDR, nor a SorobanAuthorizationEntry"
        ):
            check_signed_xdr_form(text)


def test_a_signed_authorization_must_be_canonical_base64() -> None:
    entry = unsigned_authorization(build(), SOURCE.public_key, nonce=7, valid_until_ledger=100)
    good = sign_entry(entry, SOURCE, 100, PASSPHRASE).to_xdr()
    weights = {SOURCE.public_key: 1}
    assert check_signed_authorization(good, entry, PASSPHRASE, weights, 1).to_xdr() == good
    for variant in junk_variants(good):
        with pytest.raises(EnvelopeError, match=NOT_CANONICAL):
            check_signed_authorization(variant, entry, PASSPHRASE, weights, 1)
    with pytest.raises(EnvelopeError, match="MAX_SIGNED_XDR_CHARS"):
        check_signed_authorization("A" * (MAX_SIGNED_XDR_CHARS + 1), entry, PASSPHRASE, weights, 1)
