"""The failures activities report to ``PayoutWorkflow``: ``ApplicationError`` types, in one place.

Non-retryable types settle something (the workflow decides what next); the others are
retried by the workflow's retry policies. The workflow matches on these names, so they
are part of the replay contract: renaming one changes what a recorded history means.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from payouts.errors import AlreadyPaid

# Building: nothing was signed or sent.
FEE_CAP_EXCEEDED = "FeeCapExceeded"
SIMULATION_FAILED = "SimulationFailed"
SIGNATURE_REJECTED = "SignatureRejected"
# The signed authorization a payout carries expired before a channel could carry it.
AUTHORIZATION_EXPIRED = "AuthorizationExpired"
# Retryable: every source account is leased; the workflow's retry policy waits.
NO_FREE_ACCOUNT = "NoFreeAccount"
# The payout has an older envelope that is not settled: it is settled before a new one is sent.
UNSETTLED_ENVELOPE = "UnsettledEnvelope"
# The key already names another payout.
IDEMPOTENCY_CONFLICT = "IdempotencyConflict"
# The key already paid (the DB says so, whatever the history says): finish CONFIRMED.
ALREADY_PAID = "AlreadyPaid"

NON_RETRYABLE = [FEE_CAP_EXCEEDED, SIMULATION_FAILED, SIGNATURE_REJECTED, AUTHORIZATION_EXPIRED, ALREADY_PAID]


def already_paid(exc: AlreadyPaid) -> ApplicationError:
    return ApplicationError(str(exc), type=ALREADY_PAID, non_retryable=True)


def no_free_account(message: str) -> ApplicationError:
    """Benign: logged at DEBUG and not counted as a failure; the retry policy waits."""
    return ApplicationError(message, type=NO_FREE_ACCOUNT, category=ApplicationErrorCategory.BENIGN)
