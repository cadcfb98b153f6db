"""Exact amounts: decimal strings with at most 7 places, converted to stroops (int64).

Also how a rejected input is quoted in an error message (:func:`shown`): error messages
reach terminals, logs and exception reports, so nothing shaped like a secret seed is ever
echoed (promise 6), even when a seed was typed into the wrong field.
"""

from __future__ import annotations

import re
from decimal import Decimal

STROOPS_PER_UNIT = 10_000_000
MAX_STROOPS = 2**63 - 1
# ASCII digits only and fullmatch: Python's \d also matches other scripts' digits
# ("１２", "١٢"), and $ also matches before a trailing newline.
_AMOUNT = re.compile(r"(?P<whole>[0-9]{1,13})(?:\.(?P<fraction>[0-9]{1,7}))?")
_DECIMAL = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?")
_MAX_WHOLE_DIGITS = len(str(MAX_STROOPS // STROOPS_PER_UNIT))
# A Stellar secret seed (StrKey "S…"), checksum or not: a mistyped seed is still secret.
SECRET_SEED = re.compile(r"S[A-Z2-7]{55}")


class AmountError(ValueError):
    """An amount that is not a positive decimal string of at most 7 places within int64 stroops."""


def hide_secret_seeds(text: str) -> str:
    """``text`` with everything shaped like a secret seed replaced by a placeholder."""
    return SECRET_SEED.sub("S…(a secret seed, not shown)", text)


def shown(value: str) -> str:
    """How an input value is quoted in an error message: its ``repr``, seeds hidden."""
    return hide_secret_seeds(repr(value))


def to_stroops(amount: str) -> int:
    """``"100.5"`` → ``1005000000``. Raises :class:`AmountError` naming the rule broken.

    Only plain decimal strings of ASCII digits are accepted: no sign, exponent, spaces,
    thousands separators or other scripts' digits, so what the caller wrote is exactly
    what is paid.
    """
    if not isinstance(amount, str):
        raise AmountError('amount must be a decimal string such as "100.5", not a number')
    match = _AMOUNT.fullmatch(amount)
    if match is None:
        decimal = _DECIMAL.fullmatch(amount)
        if decimal is not None and len(decimal["fraction"] or "") > 7:
            raise AmountError(f"amount {shown(amount)} has more than 7 decimal places")
        if decimal is not None and len(decimal["whole"].lstrip("0")) > _MAX_WHOLE_DIGITS:
            raise AmountError(f"amount {shown(amount)} exceeds the largest Stellar amount (922337203685.4775807)")
        if decimal is not None:  # a small number behind many leading zeros
            raise AmountError(f"amount {shown(amount)} is not a plain decimal string (at most 13 digits before '.')")
        raise AmountError(
            f"amount {shown(amount)} is not a plain decimal string (ASCII digits, optional '.' and up to 7 places)"
        )
    stroops = int(match["whole"]) * STROOPS_PER_UNIT + int((match["fraction"] or "").ljust(7, "0"))
    if stroops <= 0:
        raise AmountError("amount must be greater than 0")
    if stroops > MAX_STROOPS:
        raise AmountError(f"amount {shown(amount)} exceeds the largest Stellar amount (922337203685.4775807)")
    return stroops


def from_stroops(stroops: int) -> str:
    """``1005000000`` → ``"100.5"`` (canonical: no trailing zeros)."""
    text = format(Decimal(stroops) / STROOPS_PER_UNIT, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
