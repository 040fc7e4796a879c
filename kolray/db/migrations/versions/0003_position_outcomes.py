"""position outcomes: unrealised PnL, peak after entry, drawdown, missed gain, copy multiple (kolray.analyzer.outcomes)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FLOATS = ("unrealised_pnl_sol", "peak_multiple", "drawdown", "missed_gain_sol", "copy_multiple")


def upgrade() -> None:
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unrealised_pnl_sol", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("peak_multiple", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("peak_time", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("drawdown", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("missed_gain_sol", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("copy_multiple", sa.Float(), nullable=True))
    # Stored positions have no outcomes yet: the next analyze rebuilds them in full (its
    # definitions version changed), which fills these columns.


def downgrade() -> None:
    with op.batch_alter_table("positions", schema=None) as batch_op:
        for name in (*_FLOATS, "peak_time"):
            batch_op.drop_column(name)
