"""Settings from the environment (the seed's configuration reference, plus Temporal and DB).

``load_settings()`` reads every variable at once and raises one :class:`ConfigError`
listing every missing or invalid variable, so an operator fixes them in one go.

Decisions where the seed is silent:
- ``PAYOUT_CONTRACT_ID`` is optional: when set, payouts call ``PAYOUT_METHOD_NAME`` on that
  contract (``distribute_winnings(to, amount)``); when unset, they are Stellar Asset
  Contract ``transfer`` calls from ``PAYOUT_SOURCE_ACCOUNT``.
- ``PAYOUT_USDC_ISSUER`` names the issuer behind the asset shorthand ``USDC``.
- ``PAYOUTS_ENVELOPE_TTL_SECONDS`` (hot key, default 120) and
  ``PAYOUTS_SIGNATURE_WINDOW_SECONDS`` (external signer, default 900) set the envelope's
  time bound; an envelope is replaced only after its bound has provably passed.
- ``PAYOUTS_FEE_CAP_WAIT_SECONDS`` (default 600): a fee above ``PAYOUTS_MAX_GAS_STROOPS``
  (a surge) is waited out, rebuilding on durable timers that back off, before the payout
  fails: surges pass within ledgers, and nothing is signed or sent while it waits.
- ``PAYOUTS_CHANNEL_COUNT`` (default 0) channel accounts, derived from
  ``PAYOUTS_CHANNEL_SECRET`` (see :mod:`payouts.channels`), are the transactions' source
  and pay their fees; ``PAYOUT_SOURCE_ACCOUNT`` then only authorizes the transfer. A
  channel whose balance falls below ``PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS`` is taken out
  of rotation until it is topped up. With no channels, the source account is leased to
  one payout at a time.
- ``PAYOUTS_SIGN_WITH_HOT_KEY=true`` requires ``PAYOUT_HOT_SIGNER_SECRET``; the secret is a
  :class:`~pydantic.SecretStr`, so it never prints, and nothing else reads it but the
  signing activity.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from stellar_sdk import StrKey

S = TypeVar("S", bound=BaseSettings)


class ConfigError(ValueError):
    """Every invalid or missing environment variable, one per line."""


class TemporalSettings(BaseSettings):
    """What a client of the engine (starter CLI, SDK user, API) needs: where Temporal is."""

    # An empty variable counts as unset (docker-compose passes `VAR: ${VAR:-}` as "").
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True, env_ignore_empty=True)

    TEMPORAL_ADDRESS: str = "localhost:7233"
    TEMPORAL_NAMESPACE: str = "default"
    TEMPORAL_TASK_QUEUE: str = "payouts"


class PayoutSettings(TemporalSettings):
    """Everything a worker needs."""

    SOROBAN_RPC_URL: str = Field(pattern=r"^https?://\S+$")
    STELLAR_NETWORK_PASSPHRASE: str = Field(min_length=1)
    PAYOUT_SOURCE_ACCOUNT: str
    PAYOUT_CONTRACT_ID: str | None = None
    PAYOUT_METHOD_NAME: str = Field(default="distribute_winnings", pattern=r"^[A-Za-z0-9_]{1,32}$")
    PAYOUT_USDC_ISSUER: str | None = None

    PAYOUTS_LIVE_EXECUTION: bool = False
    PAYOUTS_SIGN_WITH_HOT_KEY: bool = False
    PAYOUT_HOT_SIGNER_SECRET: SecretStr | None = None

    PAYOUTS_MAX_GAS_STROOPS: int = Field(default=2_000_000, ge=100, le=2**63 - 1)
    # A fee above the cap is waited out (nothing signed or sent meanwhile, durable timers
    # backing off) for this long before the payout fails; 0: fail at once.
    PAYOUTS_FEE_CAP_WAIT_SECONDS: int = Field(default=600, ge=0, le=7 * 86_400)
    PAYOUTS_MAX_ATTEMPTS: int = Field(default=5, ge=1, le=100)
    PAYOUTS_CONFIRM_POLL_MS: int = Field(default=2_500, ge=50, le=600_000)
    PAYOUTS_CONFIRM_MAX_POLLS: int = Field(default=20, ge=1, le=10_000)
    # How long an envelope stays valid (its time bound): signed at once with the hot key,
    # or waiting for an external signer. Past it, the envelope is rebuilt or declared dead.
    PAYOUTS_ENVELOPE_TTL_SECONDS: int = Field(default=120, ge=10, le=86_400)
    PAYOUTS_SIGNATURE_WINDOW_SECONDS: int = Field(default=900, ge=30, le=86_400)

    PAYOUTS_CHANNEL_COUNT: int = Field(default=0, ge=0, le=1_000)
    PAYOUTS_CHANNEL_SECRET: SecretStr | None = None
    PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS: int = Field(default=20_000_000, ge=0, le=2**63 - 1)

    DATABASE_URL: str = "sqlite:///payouts.db"

    # Where the worker serves Prometheus metrics (Temporal SDK + payout metrics), e.g.
    # 0.0.0.0:9464; unset: not served. Log lines as text or JSON (payouts.logs).
    PAYOUTS_METRICS_ADDRESS: str | None = Field(default=None, pattern=r"^[^\s:]+:[0-9]{1,5}$")
    PAYOUTS_LOG_FORMAT: Literal["text", "json"] = "text"

    @field_validator("PAYOUT_SOURCE_ACCOUNT", "PAYOUT_USDC_ISSUER")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not StrKey.is_valid_ed25519_public_key(value):
            raise ValueError("must be a G… account ID")
        return value

    @field_validator("PAYOUT_CONTRACT_ID")
    @classmethod
    def _contract(cls, value: str | None) -> str | None:
        if value is not None and not StrKey.is_valid_contract(value):
            raise ValueError("must be a C… contract ID")
        return value

    @field_validator("PAYOUT_HOT_SIGNER_SECRET", "PAYOUTS_CHANNEL_SECRET")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not StrKey.is_valid_ed25519_secret_seed(value.get_secret_value()):
            raise ValueError("must be an S… secret seed")  # the value itself is never echoed
        return value

    @model_validator(mode="after")
    def _hot_key_needs_secret(self) -> PayoutSettings:
        if self.PAYOUTS_SIGN_WITH_HOT_KEY and self.PAYOUT_HOT_SIGNER_SECRET is None:
            raise ValueError("PAYOUT_HOT_SIGNER_SECRET: required when PAYOUTS_SIGN_WITH_HOT_KEY is true")
        if self.PAYOUTS_CHANNEL_COUNT > 0 and self.PAYOUTS_CHANNEL_SECRET is None:
            raise ValueError("PAYOUTS_CHANNEL_SECRET: required when PAYOUTS_CHANNEL_COUNT is above 0")
        return self


def load_settings(**overrides: object) -> PayoutSettings:
    """Worker settings from the environment (``overrides`` win, for tests and CLIs)."""
    return _load(PayoutSettings, overrides)


def load_temporal_settings(**overrides: object) -> TemporalSettings:
    return _load(TemporalSettings, overrides)


def load(cls: type[S], **overrides: object) -> S:
    """Settings of class ``cls`` (a :class:`TemporalSettings` subclass, e.g. the API's)
    from the environment, with every problem in one :class:`ConfigError`."""
    return _load(cls, overrides)


def _load(cls: type[S], overrides: dict[str, object]) -> S:
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_input=False, include_url=False):
            name = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {'missing' if error['type'] == 'missing' else message}" if name else message)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
