"""Initial schema: payouts (one row per idempotency key) and transactions (one per envelope).

Revision ID: 0001_initial
Revises:
Create Date: 2026-02-22

``transactions`` is the public contract of shared/DESIGN.md §3: the seed's monitoring
queries read its ``status``, ``created_at``, ``updated_at`` and ``confirmed_at``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIMESTAMP = sa.DateTime(timezone=True)  # timestamptz on PostgreSQL
_PAYOUT_STATES = "'RECEIVED', 'BUILDING', 'BUILT', 'AWAITING_SIGNATURE', 'SUBMITTED', 'CONFIRMED', 'FAILED'"
_ENVELOPE_STATES = "'queued', 'submitted', 'confirmed', 'failed', 'expired'"


def upgrade() -> None:
    op.create_table(
        "payouts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("payout_id", sa.String(128), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("amount", sa.String(32), nullable=False),
        sa.Column("stroops", sa.BigInteger(), nullable=False),
        sa.Column("asset", sa.String(80), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("tx_hash", sa.String(64), nullable=True),
        sa.Column("ledger", sa.BigInteger(), nullable=True),
        sa.Column("fee_charged", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.UniqueConstraint("idempotency_key", name="uq_payouts_idempotency_key"),
        sa.CheckConstraint(f"status IN ({_PAYOUT_STATES})", name="ck_payouts_status"),
        sa.CheckConstraint("stroops > 0", name="ck_payouts_stroops_positive"),
    )
    op.create_index("ix_payouts_status", "payouts", ["status"])

    op.create_table(
        "transactions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "idempotency_key",
            sa.String(128),
            sa.ForeignKey("payouts.idempotency_key", name="fk_transactions_idempotency_key_payouts"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(64), nullable=False),
        sa.Column("envelope_xdr", sa.Text(), nullable=False),
        sa.Column("source_account", sa.String(69), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("max_time", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fee_charged", sa.BigInteger(), nullable=True),
        sa.Column("ledger", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.Column("confirmed_at", _TIMESTAMP, nullable=True),
        sa.UniqueConstraint("tx_hash", name="uq_transactions_tx_hash"),
        sa.CheckConstraint(f"status IN ({_ENVELOPE_STATES})", name="ck_transactions_status"),
    )
    op.create_index("ix_transactions_idempotency_key", "transactions", ["idempotency_key"])
    op.create_index("ix_transactions_status_updated_at", "transactions", ["status", "updated_at"])
    op.create_index("ix_transactions_created_at", "transactions", ["created_at"])


def downgrade() -> None:
    op.drop_table("transactions")
    op.drop_table("payouts")
