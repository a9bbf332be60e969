"""CRM integrations: the durable queue of changes for amoCRM, Bitrix24 and Meta, the links between our
leads and theirs, and each integration's state

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "integration_jobs",
        sa.Column("id", ID, nullable=False),
        sa.Column("integration", sa.String(length=16), nullable=False),
        sa.Column("lead_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index(
        "ix_integration_jobs_due", "integration_jobs", ["integration", "status", "next_attempt_at", "id"], unique=False
    )
    op.create_index(
        "ix_integration_jobs_lead", "integration_jobs", ["integration", "lead_id", "status", "id"], unique=False
    )
    op.create_table(
        "integration_links",
        sa.Column("id", ID, nullable=False),
        sa.Column("integration", sa.String(length=16), nullable=False),
        sa.Column("lead_id", ID, nullable=False),
        sa.Column("remote_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("integration", "lead_id", name="uq_integration_links_lead"),
        sa.UniqueConstraint("integration", "remote_id", name="uq_integration_links_remote"),
    )
    op.create_table(
        "integration_state",
        sa.Column("integration", sa.String(length=16), nullable=False),
        sa.Column("sender_id", sa.String(length=64), nullable=True),
        sa.Column("sender_until", sa.DateTime(), nullable=True),
        sa.Column("last_success_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(), nullable=True),
        sa.Column("secrets", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("integration"),
    )


def downgrade() -> None:
    op.drop_table("integration_state")
    op.drop_table("integration_links")
    op.drop_index("ix_integration_jobs_lead", table_name="integration_jobs")
    op.drop_index("ix_integration_jobs_due", table_name="integration_jobs")
    op.drop_table("integration_jobs")
