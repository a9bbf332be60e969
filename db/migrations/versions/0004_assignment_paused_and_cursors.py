"""automatic assignment: a salesperson can be paused, round-robin cursors per scope

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.create_table(
        "assignment_cursors",
        sa.Column("scope", sa.String(length=96), nullable=False),
        sa.Column("last_user_id", ID, nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["last_user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("scope"),
    )


def downgrade() -> None:
    op.drop_table("assignment_cursors")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("paused")
