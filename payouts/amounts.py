"""Exact amounts: decimal strings with at most 7 places, converted to stroops (int64)."""

from __future__ import annotations

import re
from decimal import Decimal

STROOPS_PER_UNIT = 10_000_000
MAX_STROOPS = 2**63 - 1
_AMOUNT = re.compile(r"^(?P<whole>\d{1,13})(?:\.(?P<fraction>\d{1,7}))?$")


class AmountError(ValueError):
    """An amount that is not a positive decimal string of at most 7 places within int64 stroops."""


def to_stroops(amount: str) -> int:
    """``"100.5"`` → ``1005000000``. Raises :class:`AmountError` naming the rule broken.

    Only plain decimal strings are accepted: no sign, exponent, spaces or thousands
    separators, so what the caller wrote is exactly what is paid.
    """
    if not isinstance(amount, str):
        raise AmountError('amount must be a decimal string such as "100.5", not a number')
    match = _AMOUNT.match(amount)
    if match is None:
        if re.fullmatch(r"\d+\.\d{8,}", amount):
            raise AmountError(f"amount {amount!r} has more than 7 decimal places")
        raise AmountError(f"amount {amount!r} is not a plain decimal string (digits, optional '.' and up to 7 places)")
    stroops = int(match["whole"]) * STROOPS_PER_UNIT + int((match["fraction"] or "").ljust(7, "0"))
    if stroops <= 0:
        raise AmountError("amount must be greater than 0")
    if stroops > MAX_STROOPS:
        raise AmountError(f"amount {amount!r} exceeds the largest Stellar amount (922337203685.4775807)")
    return stroops


def from_stroops(stroops: int) -> str:
    """``1005000000`` → ``"100.5"`` (canonical: no trailing zeros)."""
    text = format(Decimal(stroops) / STROOPS_PER_UNIT, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
