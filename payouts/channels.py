"""Channel accounts: the pool of accounts that carry payouts as transaction sources.

One source account lands at most one transaction per ledger (promise 5), so payouts go
through a pool of ``PAYOUTS_CHANNEL_COUNT`` channel accounts. A channel is the
transaction's source and pays its fee; the payout account (``PAYOUT_SOURCE_ACCOUNT``)
only authorizes the transfer, with a Soroban authorization entry (address credentials)
signed by its key. Channels hold nothing but fee money.

Channel keys are derived, not stored: channel ``i``'s ed25519 seed is
``HMAC-SHA256(key=raw seed of PAYOUTS_CHANNEL_SECRET, message="payouts-channel/i")``. The
worker and the pool CLI derive the same accounts from the same secret, and no channel
secret is ever written to the DB or to workflow history.

With ``PAYOUTS_CHANNEL_COUNT=0`` the pool is the payout account itself, leased to one
payout at a time.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from stellar_sdk import Keypair, StrKey

from payouts.config import PayoutSettings
from payouts.leases import Role


def channel_keypair(channel_secret: str, index: int) -> Keypair:
    """The keypair of channel ``index`` (0-based) derived from ``channel_secret`` (S…)."""
    if index < 0:
        raise ValueError("channel index must be 0 or more")
    root = StrKey.decode_ed25519_secret_seed(channel_secret)
    seed = hmac.new(root, f"payouts-channel/{index}".encode(), hashlib.sha256).digest()
    return Keypair.from_raw_ed25519_seed(seed)


@dataclass(frozen=True)
class SourcePool:
    """The accounts payouts lease as their transaction source, and their role."""

    accounts: tuple[str, ...]
    role: Role

    @property
    def uses_channels(self) -> bool:
        return self.role == "channel"


class ChannelKeys:
    """The pool from settings, with the channel signing keys (held in memory only)."""

    def __init__(self, settings: PayoutSettings) -> None:
        secret = settings.PAYOUTS_CHANNEL_SECRET
        count = settings.PAYOUTS_CHANNEL_COUNT
        self._keys: dict[str, Keypair] = {}
        if count > 0 and secret is not None:
            for index in range(count):
                keypair = channel_keypair(secret.get_secret_value(), index)
                self._keys[keypair.public_key] = keypair
            self.pool = SourcePool(tuple(self._keys), "channel")
        else:
            self.pool = SourcePool((settings.PAYOUT_SOURCE_ACCOUNT,), "source")

    def keypair(self, account: str) -> Keypair:
        """The channel's keypair; ``KeyError`` for an account that is not a channel."""
        return self._keys[account]

    def __repr__(self) -> str:  # never show keys
        return f"ChannelKeys({self.pool.role}, {len(self.pool.accounts)} accounts)"
