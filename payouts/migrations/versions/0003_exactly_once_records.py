"""What exactly-once needs the DB to remember beyond Temporal's history.

Revision ID: 0003_exactly_once_records
Revises: 0002_account_leases
Create Date: 2026-12-01

- ``transactions.built_at_ledger``: the latest ledger when the envelope was built; it can
  be in no ledger up to this one. A NOT_FOUND settles an envelope as dead only from an
  RPC whose history reaches back to it. Rows from before this revision have none, and
  are then never declared dead from retention alone.
- ``transactions.auth_nonce``: the nonce of the payout account's authorization entry the
  envelope carries (channels), linking it to ``authorizations``.
- table ``authorizations``: every Soroban authorization of the payout account handed out
  or carried, with the observations that prove whether its nonce was used.
- payout state ``PARKED``: the engine cannot prove whether an envelope or authorization
  applied; an operator decides.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_exactly_once_records"
down_revision: str | Sequence[str] | None = "0002_account_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIMESTAMP = sa.DateTime(timezone=True)
_OLD_PAYOUT_STATES = "'RECEIVED', 'BUILDING', 'BUILT', 'AWAITING_SIGNATURE', 'SUBMITTED', 'CONFIRMED', 'FAILED'"
_PAYOUT_STATES = _OLD_PAYOUT_STATES + ", 'PARKED'"
_AUTHORIZATION_STATES = "'live', 'used', 'unused', 'unknown'"


def upgrade() -> None:
    with op.batch_alter_table("transactions") as table:
        table.add_column(sa.Column("built_at_ledger", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("auth_nonce", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("payouts") as table:
        table.drop_constraint("ck_payouts_status", type_="check")
        table.create_check_constraint("ck_payouts_status", f"status IN ({_PAYOUT_STATES})")
    op.create_table(
        "authorizations",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "idempotency_key",
            sa.String(128),
            sa.ForeignKey("payouts.idempotency_key", name="fk_authorizations_idempotency_key_payouts"),
            nullable=False,
        ),
        sa.Column("payer", sa.String(56), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("entry_xdr", sa.Text(), nullable=False),
        sa.Column("signed_entry_xdr", sa.Text(), nullable=True),
        sa.Column("valid_until_ledger", sa.BigInteger(), nullable=False),
        sa.Column("sign_by", sa.BigInteger(), nullable=False),
        sa.Column("unused_through_ledger", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("used_ledger", sa.BigInteger(), nullable=True),
        sa.Column("used_tx_hash", sa.String(64), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.UniqueConstraint("payer", "nonce", name="uq_authorizations_payer_nonce"),
        sa.CheckConstraint(f"status IN ({_AUTHORIZATION_STATES})", name="ck_authorizations_status"),
    )
    op.create_index("ix_authorizations_idempotency_key", "authorizations", ["idempotency_key"])


def downgrade() -> None:
    op.drop_index("ix_authorizations_idempotency_key", table_name="authorizations")
    op.drop_table("authorizations")
    with op.batch_alter_table("payouts") as table:
        table.drop_constraint("ck_payouts_status", type_="check")
        table.create_check_constraint("ck_payouts_status", f"status IN ({_OLD_PAYOUT_STATES})")
    with op.batch_alter_table("transactions") as table:
        table.drop_column("auth_nonce")
        table.drop_column("built_at_ledger")
