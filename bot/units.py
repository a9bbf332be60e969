"""Units of work as every interface gets them (``create_uow_factory``), in a module that imports no
aiogram: the API and ``leadbot sync`` use it without paying for the bot's imports."""

from __future__ import annotations

from bot.config import Settings
from db.engine import Database
from db.integrations import EventSinks, IntegrationRules
from db.notifications import NotificationRules
from db.uow import EventSink, UnitOfWorkFactory


def create_uow_factory(settings: Settings, database: Database, *, sink: EventSink | None = None) -> UnitOfWorkFactory:
    """The one way every interface (bot, API, jobs) gets units of work, so all emit the same events.

    ``sink`` defaults to the core's notification rules (``db.notifications.NotificationRules``), which
    queue facts in the outbox (``bot.presentation`` words them when the delivery worker sends them),
    then the integration rules (``db.integrations.IntegrationRules``), which queue each change for the
    remote CRMs configured.
    """
    if sink is None:
        sink = EventSinks(NotificationRules(settings), IntegrationRules(settings.integrations))
    return UnitOfWorkFactory(database, settings, sink)
