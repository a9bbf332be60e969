"""meta lead-ads deliveries by lead: the card and the API show a lead's Meta origin

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_meta_leadgen_lead", "meta_leadgen", ["lead_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_meta_leadgen_lead", table_name="meta_leadgen")
