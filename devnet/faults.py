"""Fault injection: what the admin endpoint can make devnet do wrong, on purpose.

Faults are rules with an optional RPC ``method`` filter and a ``count`` (how many
matching requests they hit; absent = until cleared):

- ``drop_response``: process the request, then close the connection without answering
  (the request took effect; the client cannot know).
- ``delay``: wait ``ms`` milliseconds before processing.
- ``http_error``: answer with HTTP ``status`` (default 503) without processing.
- ``try_again_later``: ``sendTransaction`` answers TRY_AGAIN_LATER without queueing.

and network conditions that hold until cleared:

- ``fee_surge`` (stroops per operation, at least 100): outside traffic fills every ledger,
  bidding that much per operation (``devnet.surge.build_phase``). A transaction bidding less
  per operation is not included: it waits in the queue and is dropped after 4 ledgers. One
  bidding at least that much is included (ties go to devnet's transactions) and the phase
  is surge priced: it pays the lowest included bid, i.e. the surge fee while outside traffic
  is included. ``getFeeStats`` counts the outside traffic (the ledger's room left, each at
  the surge fee) from the first ledger closed under the surge until those ledgers leave its
  windows. The outside traffic takes no room in devnet's queue. ``fee_surge: 100`` is traffic
  at the base fee: inclusion as without a surge.
- ``ledger_stall``: no ledger closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RuleKind = Literal["drop_response", "delay", "http_error", "try_again_later"]


class FaultRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: RuleKind
    method: str | None = Field(default=None, description="RPC method to hit; any method if absent")
    count: int | None = Field(default=None, ge=1, description="requests to hit; until cleared if absent")
    ms: int = Field(default=0, ge=0, le=600_000, description="delay in milliseconds")
    status: int = Field(default=503, ge=500, le=599, description="HTTP status for http_error")


class FaultRequest(BaseModel):
    """Body of ``POST /admin/faults``: rules to add and conditions to set."""

    model_config = ConfigDict(extra="forbid")

    rules: list[FaultRule] = Field(default_factory=list)
    fee_surge: int | None = Field(default=None, ge=100, description="surge inclusion fee per operation, stroops")
    ledger_stall: bool | None = None


@dataclass
class _ActiveRule:
    rule: FaultRule
    remaining: int | None
    hits: int = 0


class Faults:
    """The faults in force."""

    def __init__(self) -> None:
        self._rules: list[_ActiveRule] = []
        self.surge_fee: int | None = None
        self.ledger_stall = False

    def apply(self, request: FaultRequest) -> None:
        self._rules.extend(_ActiveRule(rule, rule.count) for rule in request.rules)
        if request.fee_surge is not None:
            self.surge_fee = request.fee_surge
        if request.ledger_stall is not None:
            self.ledger_stall = request.ledger_stall

    def clear(self) -> None:
        self._rules.clear()
        self.surge_fee = None
        self.ledger_stall = False

    def take(self, kind: RuleKind, method: str) -> FaultRule | None:
        """The first live rule of ``kind`` that matches ``method``, counting the hit."""
        for active in self._rules:
            rule = active.rule
            if rule.kind != kind or (rule.method is not None and rule.method != method):
                continue
            if active.remaining is not None:
                if active.remaining <= 0:
                    continue
                active.remaining -= 1
            active.hits += 1
            return rule
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "rules": [{**a.rule.model_dump(), "remaining": a.remaining, "hits": a.hits} for a in self._rules],
            "fee_surge": self.surge_fee,
            "ledger_stall": self.ledger_stall,
        }
