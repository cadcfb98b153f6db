"""Configuration: one error naming every bad variable; the secret never prints."""

from __future__ import annotations

import pytest
from stellar_sdk import Keypair, StrKey

from payouts.config import ConfigError, load_settings

SOURCE = Keypair.random()
REQUIRED = {
    "SOROBAN_RPC_URL": "http://127.0.0.1:8000",
    "STELLAR_NETWORK_PASSPHRASE": "Standalone Network ; February 2017",
    "PAYOUT_SOURCE_ACCOUNT": SOURCE.public_key,
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [
        *REQUIRED,
        "PAYOUT_CONTRACT_ID",
        "PAYOUTS_SIGN_WITH_HOT_KEY",
        "PAYOUT_HOT_SIGNER_SECRET",
        "PAYOUTS_MAX_ATTEMPTS",
        "PAYOUTS_MAX_GAS_STROOPS",
        "PAYOUTS_FEE_CAP_WAIT_SECONDS",
        "PAYOUTS_LIVE_EXECUTION",
    ]:
        monkeypatch.delenv(name, raising=False)


def test_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.PAYOUTS_MAX_GAS_STROOPS == 2_000_000 and settings.PAYOUTS_FEE_CAP_WAIT_SECONDS == 600
    assert settings.PAYOUTS_MAX_ATTEMPTS == 5
    assert settings.PAYOUTS_CONFIRM_POLL_MS == 2_500 and settings.PAYOUTS_CONFIRM_MAX_POLLS == 20
    assert settings.PAYOUT_METHOD_NAME == "distribute_winnings"
    assert not settings.PAYOUTS_LIVE_EXECUTION and not settings.PAYOUTS_SIGN_WITH_HOT_KEY
    assert settings.TEMPORAL_TASK_QUEUE == "payouts"


def test_one_error_lists_every_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYOUT_SOURCE_ACCOUNT", "GNOTANACCOUNT")
    monkeypatch.setenv("PAYOUT_CONTRACT_ID", SOURCE.public_key)
    monkeypatch.setenv("PAYOUTS_MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    for expected in (
        "SOROBAN_RPC_URL: missing",
        "STELLAR_NETWORK_PASSPHRASE: missing",
        "PAYOUT_SOURCE_ACCOUNT: must be a G",
        "PAYOUT_CONTRACT_ID: must be a C",
        "PAYOUTS_MAX_ATTEMPTS",
    ):
        assert expected in message


def test_hot_key_requires_secret_and_never_prints_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PAYOUTS_SIGN_WITH_HOT_KEY", "true")
    with pytest.raises(ConfigError, match="PAYOUT_HOT_SIGNER_SECRET: required"):
        load_settings()
    monkeypatch.setenv("PAYOUT_HOT_SIGNER_SECRET", SOURCE.secret)
    settings = load_settings(PAYOUT_CONTRACT_ID=StrKey.encode_contract(bytes(32)))
    assert SOURCE.secret not in repr(settings) and SOURCE.secret not in str(settings.model_dump())
    assert settings.PAYOUT_HOT_SIGNER_SECRET is not None
    assert settings.PAYOUT_HOT_SIGNER_SECRET.get_secret_value() == SOURCE.secret


def test_invalid_secret_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    almost = SOURCE.secret[:-1] + ("A" if SOURCE.secret[-1] != "A" else "B")
    monkeypatch.setenv("PAYOUT_HOT_SIGNER_SECRET", almost)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "PAYOUT_HOT_SIGNER_SECRET: must be an S" in str(info.value)
    assert almost not in str(info.value)
