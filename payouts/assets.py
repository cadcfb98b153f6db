"""Payout assets: ``XLM``, ``USDC`` (issuer from configuration) or ``CODE:ISSUER``."""

from __future__ import annotations

import re

from stellar_sdk import Asset, StrKey

from payouts.amounts import shown

# ASCII class and fullmatch: with re.match, "$" would let a trailing newline through.
_CODE = re.compile(r"[A-Za-z0-9]{1,12}")


class AssetError(ValueError):
    """An asset that is not XLM, USDC or CODE:ISSUER with a valid code and issuer."""


def validate_asset(text: str) -> str:
    """Check the asset's syntax and return it unchanged (``USDC`` stays symbolic)."""
    if text in ("XLM", "USDC"):
        return text
    code, sep, issuer = text.partition(":")
    if not sep:
        raise AssetError(f"asset {shown(text)} must be XLM, USDC or CODE:ISSUER")
    if not _CODE.fullmatch(code):
        raise AssetError(f"asset code {shown(code)} must be 1-12 letters or digits")
    if code.upper() == "XLM":
        raise AssetError("asset XLM:… is not allowed: the native asset is plain XLM")
    if not StrKey.is_valid_ed25519_public_key(issuer):
        raise AssetError(f"asset issuer {shown(issuer)} must be a G… account ID")
    return text


def resolve_asset(text: str, usdc_issuer: str | None) -> Asset:
    """The stellar-sdk :class:`Asset` of a validated asset string."""
    if text == "XLM":
        return Asset.native()
    if text == "USDC":
        if usdc_issuer is None:
            raise AssetError("asset USDC needs a configured USDC issuer")
        return Asset("USDC", usdc_issuer)
    code, _, issuer = validate_asset(text).partition(":")
    return Asset(code, issuer)
