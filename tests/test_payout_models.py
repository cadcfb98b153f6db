"""Edge validation of payout requests: amounts, assets, destinations, keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from stellar_sdk import Keypair, StrKey

from payouts.amounts import MAX_STROOPS, AmountError, from_stroops, hide_secret_seeds, to_stroops
from payouts.assets import AssetError, resolve_asset, validate_asset
from payouts.models import PayoutRequest, is_valid_idempotency_key

G = Keypair.random().public_key
C = StrKey.encode_contract(bytes(range(32)))


def request(**overrides: object) -> PayoutRequest:
    body: dict[str, object] = {
        "payout_id": "round-1-winner-1",
        "destination": G,
        "amount": "100.5",
        "asset": "XLM",
        "idempotency_key": "round-1:winner-1:2026-02-22",
    }
    body.update(overrides)
    return PayoutRequest.model_validate(body)


@pytest.mark.parametrize(
    ("amount", "stroops"),
    [("1", 10_000_000), ("100.5", 1_005_000_000), ("0.0000001", 1), ("922337203685.4775807", MAX_STROOPS)],
)
def test_amount_to_stroops(amount: str, stroops: int) -> None:
    assert to_stroops(amount) == stroops


@pytest.mark.parametrize(
    ("amount", "rule"),
    [
        ("0", "greater than 0"),
        ("0.0000000", "greater than 0"),
        ("1.00000001", "more than 7 decimal places"),
        ("922337203685.4775808", "exceeds the largest"),
        ("-1", "plain decimal"),
        ("1e3", "plain decimal"),
        (" 1", "plain decimal"),
        ("1,000", "plain decimal"),
        ("", "plain decimal"),
        (".5", "plain decimal"),
        # ASCII digits only, and nothing after them (not even a newline)
        ("12\n", "plain decimal"),
        ("１２", "plain decimal"),
        ("١٢.٥", "plain decimal"),
        ("𝟙", "plain decimal"),
        ("1.5\n", "plain decimal"),
        ("1.0000000\n", "plain decimal"),
        # too large, however written
        ("99999999999999", "exceeds the largest"),
        ("1" + "0" * 5000, "exceeds the largest"),
        ("00000000000001", "at most 13 digits before"),
    ],
)
def test_bad_amounts_name_the_rule(amount: str, rule: str) -> None:
    with pytest.raises(AmountError, match=rule):
        to_stroops(amount)


@given(st.integers(min_value=1, max_value=MAX_STROOPS))
def test_stroops_round_trip(stroops: int) -> None:
    assert to_stroops(from_stroops(stroops)) == stroops


def test_valid_request_and_fingerprint_ignores_formatting() -> None:
    a, b = request(amount="1.5"), request(amount="1.5000000")
    assert a.stroops == b.stroops == 15_000_000
    assert a.fingerprint() == b.fingerprint()
    assert request(amount="1.6").fingerprint() != a.fingerprint()
    assert request(destination=C).destination == C


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("destination", "G" + "A" * 55, "checksum"),
        ("destination", Keypair.random().secret, "G… account ID or a C… contract ID"),
        ("destination", "MA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJVAAAAAAAAAAAAAGZK", "muxed"),
        ("amount", 100, "string"),
        ("amount", "1.00000001", "7 decimal places"),
        ("asset", "EURO:notanissuer", "issuer"),
        ("asset", "TOOLONGASSETCODE:" + G, "1-12"),
        ("asset", "BTC", "CODE:ISSUER"),
        ("idempotency_key", "has space", "pattern"),
        ("idempotency_key", "k" * 129, "at most 128"),
        ("payout_id", "", "at least 1"),
    ],
)
def test_invalid_request_names_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        request(**{field: value})
    errors = info.value.errors()
    assert errors[0]["loc"] == (field,)
    assert message in str(info.value)


def test_leading_zeros_within_13_digits_are_plain() -> None:
    assert to_stroops("0000000000001") == to_stroops("1") == 10_000_000


SEED = Keypair.random().secret


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("destination", SEED, "not an S… secret seed"),
        ("destination", SEED[:-1] + ("A" if SEED[-1] != "A" else "B"), "G… account ID"),
        ("asset", f"EURC:{SEED}", "asset issuer"),
        ("asset", SEED, "must be XLM, USDC or CODE:ISSUER"),
        ("amount", SEED, "plain decimal"),
        ("amount", f"1 {SEED}", "plain decimal"),
        ("payout_id", SEED + "!", "pattern"),
        ("idempotency_key", f"{SEED} ", "pattern"),
    ],
)
def test_a_secret_seed_in_any_field_is_not_shown(field: str, value: str, rule: str) -> None:
    """Promise 6: the error names the field and the rule, and shows no part of the seed."""
    with pytest.raises(ValidationError) as info:
        request(**{field: value})
    message = str(info.value)
    assert info.value.errors()[0]["loc"] == (field,) and rule in message, message
    assert not any(SEED[i : i + 12] in message for i in range(len(SEED) - 11)), message


def test_hide_secret_seeds() -> None:
    assert hide_secret_seeds(f"issuer {SEED}!") == "issuer S…(a secret seed, not shown)!"
    assert hide_secret_seeds(G) == G  # account IDs stay readable


def test_idempotency_key_check_takes_the_whole_string() -> None:
    assert is_valid_idempotency_key("round-1:winner-1")
    for key in ("k-1\n", "k-1\r\n", "\nk-1", "", "k" * 129, "ｋ"):
        assert not is_valid_idempotency_key(key), key


def test_unknown_field_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        request(memo="x")


def test_assets() -> None:
    assert validate_asset("XLM") == "XLM"
    assert resolve_asset("USDC", G).issuer == G
    assert resolve_asset(f"EURC:{G}", None).code == "EURC"
    with pytest.raises(AssetError, match="USDC issuer"):
        resolve_asset("USDC", None)
    with pytest.raises(AssetError, match="native"):
        validate_asset(f"XLM:{G}")
    for code in ("EURC\n", "ＥＵＲＣ", "EURC ", "EU\nRC"):
        with pytest.raises(AssetError, match="1-12 letters or digits"):
            validate_asset(f"{code}:{G}")
