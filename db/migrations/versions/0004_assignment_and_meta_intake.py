"""automatic assignment (a salesperson can be paused, round-robin cursors) and Meta lead-ads deliveries

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
    op.create_table(
        "meta_leadgen",
        sa.Column("id", ID, nullable=False),
        sa.Column("leadgen_id", sa.String(length=64), nullable=False),
        sa.Column("page_id", sa.String(length=64), nullable=True),
        sa.Column("form_id", sa.String(length=64), nullable=True),
        sa.Column("ad_id", sa.String(length=64), nullable=True),
        sa.Column("platform", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lead_id", ID, nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("leadgen_id"),
    )
    op.create_index("ix_meta_leadgen_due", "meta_leadgen", ["status", "next_attempt_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_meta_leadgen_due", table_name="meta_leadgen")
    op.drop_table("meta_leadgen")
    op.drop_table("assignment_cursors")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("paused")
