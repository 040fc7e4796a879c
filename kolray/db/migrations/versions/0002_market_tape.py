"""market tape: each token's price from chain state (kolray.market)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "market_tape",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("mint", sa.String(length=44), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("price_sol", sa.Float(), nullable=True),
        sa.Column("market_cap_sol", sa.Float(), nullable=True),
        sa.Column("liquidity_sol", sa.Float(), nullable=True),
        sa.Column("venue", sa.String(length=32), nullable=True),
        sa.Column("graduated", sa.Boolean(), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mint", "slot", name="uq_market_tape_mint_slot"),
    )
    with op.batch_alter_table("market_tape", schema=None) as batch_op:
        batch_op.create_index("ix_market_tape_mint_time", ["mint", "time"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("market_tape", schema=None) as batch_op:
        batch_op.drop_index("ix_market_tape_mint_time")
    op.drop_table("market_tape")
