"""the reports' facts about each lead kept on the lead (assigned_at, first_response_at, ever_in_work),
filled from the history and comments already there

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

The rules are db.lead_facts's, written out here as they stand today (a migration does not change with
the code): one set-based UPDATE per column, each a single pass over the rows it reads (an aggregate
joined to the leads by id), not a subquery per lead.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

leads = sa.table(
    "leads",
    sa.column("id", sa.Integer()),
    sa.column("assigned_to_id", sa.Integer()),
    sa.column("created_at", sa.DateTime()),
    sa.column("assigned_at", sa.DateTime()),
    sa.column("first_response_at", sa.DateTime()),
    sa.column("ever_in_work", sa.Boolean()),
)
history = sa.table(
    "lead_history",
    sa.column("lead_id", sa.Integer()),
    sa.column("action", sa.String()),
    sa.column("new_value", sa.Text()),
    sa.column("changed_by_id", sa.Integer()),
    sa.column("changed_at", sa.DateTime()),
)
comments = sa.table(
    "comments",
    sa.column("lead_id", sa.Integer()),
    sa.column("created_by_id", sa.Integer()),
    sa.column("created_at", sa.DateTime()),
)


def _backfill() -> None:
    # assigned_at: the latest «assigned» history row.
    assigned = (
        sa.select(history.c.lead_id, sa.func.max(history.c.changed_at).label("at"))
        .where(history.c.action == "assigned")
        .group_by(history.c.lead_id)
        .subquery("assigned")
    )
    op.execute(leads.update().values(assigned_at=assigned.c.at).where(leads.c.id == assigned.c.lead_id))

    # first_response_at: the assignee's first status change or comment at or after the last assignment
    # (the lead's creation without one); assigned_at is filled by now.
    actions = sa.union_all(
        sa.select(
            history.c.lead_id.label("lead_id"),
            history.c.changed_by_id.label("who"),
            history.c.changed_at.label("at"),
        ).where(history.c.action == "status_changed"),
        sa.select(comments.c.lead_id, comments.c.created_by_id, comments.c.created_at),
    ).subquery("actions")
    lead = leads.alias("lead")
    first = (
        sa.select(actions.c.lead_id, sa.func.min(actions.c.at).label("at"))
        .select_from(actions.join(lead, lead.c.id == actions.c.lead_id))
        .where(
            actions.c.who == lead.c.assigned_to_id,
            actions.c.at >= sa.func.coalesce(lead.c.assigned_at, lead.c.created_at),
        )
        .group_by(actions.c.lead_id)
        .subquery("first")
    )
    op.execute(leads.update().values(first_response_at=first.c.at).where(leads.c.id == first.c.lead_id))

    # ever_in_work: a status change to «в работе» in its history.
    in_work = sa.select(history.c.lead_id).where(
        history.c.action == "status_changed", history.c.new_value == "в работе"
    )
    op.execute(leads.update().values(ever_in_work=sa.true()).where(leads.c.id.in_(in_work)))


# Plain ALTER TABLE on both databases (SQLite 3.35+, which RETURNING needs already): a batch would
# rebuild the leads table, which SQLite's foreign keys refuse once other tables point at its rows.
def upgrade() -> None:
    op.add_column("leads", sa.Column("assigned_at", sa.DateTime(), nullable=True))
    op.add_column("leads", sa.Column("first_response_at", sa.DateTime(), nullable=True))
    op.add_column("leads", sa.Column("ever_in_work", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    _backfill()


def downgrade() -> None:
    op.drop_column("leads", "ever_in_work")
    op.drop_column("leads", "first_response_at")
    op.drop_column("leads", "assigned_at")
