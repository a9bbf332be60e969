"""The remote CRMs' workers, built from the settings: one ``SyncWorker`` per integration configured."""

from __future__ import annotations

from datetime import timedelta

from bot.config import Settings
from db.integrations import AMOCRM, BITRIX24, META
from db.uow import UnitOfWorkFactory
from integrations.common import Adapter
from integrations.tokens import DatabaseTokenStore
from integrations.worker import SyncWorker


def create_adapter(settings: Settings, factory: UnitOfWorkFactory, name: str) -> Adapter:
    if name == AMOCRM:
        from integrations.amocrm import AmoCrmAdapter

        return AmoCrmAdapter(settings.amocrm, DatabaseTokenStore(factory, AMOCRM))
    if name == BITRIX24:
        from integrations.bitrix24 import Bitrix24Adapter

        return Bitrix24Adapter(settings.bitrix24)
    if name == META:
        from integrations.meta_capi import MetaCapiAdapter

        return MetaCapiAdapter(settings.meta)
    raise ValueError(f"unknown integration {name!r}")


def max_attempts(settings: Settings, name: str) -> int:
    return {
        AMOCRM: settings.amocrm.max_attempts,
        BITRIX24: settings.bitrix24.max_attempts,
        META: settings.meta.capi_max_attempts,
    }[name]


def create_sync_workers(
    settings: Settings, factory: UnitOfWorkFactory, *, poll: float = 2.0, retry_after: timedelta | None = None
) -> list[SyncWorker]:
    workers = []
    for name in sorted(settings.integrations):
        options = {} if retry_after is None else {"retry_after": retry_after}
        workers.append(
            SyncWorker(
                factory,
                create_adapter(settings, factory, name),
                max_attempts=max_attempts(settings, name),
                poll=poll,
                **options,
            )
        )
    return workers
