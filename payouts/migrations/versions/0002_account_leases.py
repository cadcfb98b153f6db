"""Account leases: one unconfirmed envelope per source or channel account (promise 5).

Revision ID: 0002_account_leases
Revises: 0001_initial
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_account_leases"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "account_leases",
        sa.Column("account", sa.String(56), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("tx_hash", sa.String(64), nullable=True),
        sa.Column("expires_at", _TIMESTAMP, nullable=True),
        sa.Column("in_rotation", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.CheckConstraint("role IN ('source', 'channel')", name="ck_account_leases_role"),
    )


def downgrade() -> None:
    op.drop_table("account_leases")
