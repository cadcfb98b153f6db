"""Domain errors shared by the payout engine's layers (DB, client, activities)."""

from __future__ import annotations


class IdempotencyConflict(Exception):
    """An idempotency key already names a payout with different parameters.

    Starting the same key with another payout ID, destination, amount or asset is a caller
    error, never a silent reuse (shared/DESIGN.md §3). The message names the key and both
    fingerprints (hashes of the parameters), never anything secret.
    """

    def __init__(self, idempotency_key: str, stored_fingerprint: str, requested_fingerprint: str) -> None:
        self.idempotency_key = idempotency_key
        self.stored_fingerprint = stored_fingerprint
        self.requested_fingerprint = requested_fingerprint
        super().__init__(
            f"idempotency key {idempotency_key!r} already names a different payout "
            f"(stored fingerprint {stored_fingerprint[:16]}…, requested {requested_fingerprint[:16]}…)"
        )

    def __reduce__(self) -> tuple[type[IdempotencyConflict], tuple[str, str, str]]:
        return (type(self), (self.idempotency_key, self.stored_fingerprint, self.requested_fingerprint))


class AlreadyPaid(Exception):
    """The key already paid: the DB holds a confirmed envelope or a payment by another
    transaction. Raised instead of recording (or building, or authorizing) anything new
    for it, whatever a workflow's history says (a reset, a restarted or stale run)."""

    def __init__(self, idempotency_key: str, tx_hash: str | None) -> None:
        self.idempotency_key = idempotency_key
        self.tx_hash = tx_hash
        paid_by = f"transaction {tx_hash}" if tx_hash else "a transaction this engine did not send"
        super().__init__(f"payout {idempotency_key!r} is already paid by {paid_by}; nothing new is built")

    def __reduce__(self) -> tuple[type[AlreadyPaid], tuple[str, str | None]]:
        return (type(self), (self.idempotency_key, self.tx_hash))
