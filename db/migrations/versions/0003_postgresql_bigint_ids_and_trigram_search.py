"""PostgreSQL: 64-bit ids, and a trigram index for the name search

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

SQLite's INTEGER is 64-bit already and its search stays a LIKE over the folded name, so on SQLite this
revision changes nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every id and every reference to one.
ID_COLUMNS = {
    "users": ["id"],
    "invites": ["id", "created_by_id", "used_by_id"],
    "leads": ["id", "assigned_to_id", "created_by_id", "deleted_by_id"],
    "comments": ["id", "lead_id", "created_by_id"],
    "lead_history": ["id", "lead_id", "changed_by_id"],
    "followups": ["id", "lead_id", "created_by_id"],
    "outbox": ["id", "user_id"],
    "api_tokens": ["id", "user_id"],
    "idempotency_keys": ["id", "lead_id"],
}


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    for table, columns in ID_COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
        op.execute(f"ALTER SEQUENCE IF EXISTS {table}_id_seq AS bigint")
    # /find and the API's q match a fragment anywhere in the folded name: a trigram index answers that.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        "CREATE INDEX ix_leads_search_name_trgm ON leads USING gin (search_name gin_trgm_ops) "
        "WHERE deleted_at IS NULL"
    )


def downgrade() -> None:
    if not _postgresql():
        return
    op.execute("DROP INDEX IF EXISTS ix_leads_search_name_trgm")
    for table, columns in ID_COLUMNS.items():
        op.execute(f"ALTER SEQUENCE IF EXISTS {table}_id_seq AS integer")
        for column in columns:
            op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
