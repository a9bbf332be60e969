"""Issue 10: ``leadbot copy-db`` moves a team's SQLite database into PostgreSQL (or another SQLite file)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.config import Settings
from db.copy import TargetNotEmpty, copy_database
from db.engine import open_database
from db.models import Comment, Lead, LeadHistory, User
from db.repositories import LeadDraft
from db.uow import UnitOfWorkFactory
from tests.conftest import SERVER_DATABASE_URL


@pytest.fixture
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The empty database to copy into: the run's PostgreSQL when there is one, else a new SQLite file."""
    if SERVER_DATABASE_URL:
        return str(request.getfixturevalue("db_url"))
    return f"sqlite+aiosqlite:///{tmp_path / 'target.db'}"


async def test_a_sqlite_database_is_copied_whole(
    db_template: Path, tmp_path: Path, settings: Settings, target_url: str
) -> None:
    shutil.copyfile(db_template, tmp_path / "source.db")
    source = open_database(f"sqlite+aiosqlite:///{tmp_path / 'source.db'}")
    source_settings = settings.model_copy(update={"database": settings.database.model_copy(update={"url": ""})})
    factory = UnitOfWorkFactory(source, source_settings)
    async with factory() as uow:
        boss = User(telegram_id=1, role="admin", first_name="Босс", is_active=True)
        seller = User(telegram_id=2, role="seller", first_name="Продажник", is_active=True)
        uow.session.add_all([boss, seller])
        await uow.session.flush()
        ids = []
        for n in range(30):
            lead = await uow.leads.create(boss, LeadDraft(f"Клиент {n}", f"+99890123{n:04d}", "Instagram", 1000.5 * n))
            ids.append(lead.id)
        await uow.leads.assign(boss, ids[3], seller.id)
        await uow.leads.add_comment(boss, ids[3], "Позвонить")
        await uow.commit()

    target = open_database(target_url)
    try:
        copied = {item.table: item.rows for item in await copy_database(source, target)}
        assert copied["leads"] == 30 and copied["users"] == 2 and copied["comments"] == 1
        assert copied["lead_history"] == 31  # 30 "created" rows and one assignment
        target_factory = UnitOfWorkFactory(target, source_settings)
        async with target_factory() as uow:
            for model in (User, Lead, Comment, LeadHistory):
                assert await uow.session.scalar(select(func.count()).select_from(model)) == copied[model.__tablename__]
            lead = await uow.session.get(Lead, ids[3])
            assert lead is not None and lead.assigned_to_id == seller.id and lead.budget == 3001.5
            # New rows continue after the copied ids.
            new = await uow.leads.create(boss, LeadDraft("Новый", "+998909999999", "Сайт"))
            assert new.id == max(ids) + 1
            await uow.commit()
        with pytest.raises(TargetNotEmpty):
            await copy_database(source, target)
    finally:
        await source.dispose()
        await target.dispose()
