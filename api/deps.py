"""Dependencies, named by what they give a route: ``UowDep``, ``CurrentUser``, ``SettingsDep``, ``WebhookSource``.

One request = one unit of work = one commit, as one update is in the bot: ``get_uow`` commits after
the endpoint returned without error and before the response leaves (scope ``function``); any error
rolls everything back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.edge import WEBHOOK_SECRET_HEADER
from api.errors import unauthorized
from api.schemas import MAX_ID, MAX_SOURCE, QueryInt, Since, visible_param
from bot.config import Settings
from db.enums import LeadStatus
from db.models import User
from db.repositories import LeadFilter
from db.uow import UnitOfWork, UnitOfWorkFactory


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_uow_factory(request: Request) -> UnitOfWorkFactory:
    factory: UnitOfWorkFactory = request.app.state.uow_factory
    return factory


async def get_uow(
    request: Request, factory: Annotated[UnitOfWorkFactory, Depends(get_uow_factory)]
) -> AsyncIterator[UnitOfWork]:
    # GET and HEAD only read: their unit never takes a write lock (db.engine).
    async with factory(read_only=request.method in ("GET", "HEAD")) as uow:
        yield uow
        await uow.commit()


SettingsDep = Annotated[Settings, Depends(get_settings)]
UowDep = Annotated[UnitOfWork, Depends(get_uow, scope="function")]

bearer = HTTPBearer(auto_error=False, description="A personal token: `/token` in the bot or `leadbot token issue`")


async def get_current_user(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    """The token's user, authenticated by the edge (``api.edge.BearerRoute``) before the body was read.

    ``bearer`` is here for the schema (the security scheme); the edge did the checking.
    """
    actor = getattr(request.state, "actor", None)
    if not isinstance(actor, User):
        raise unauthorized()
    return actor


CurrentUser = Annotated[User, Depends(get_current_user)]

webhook_secret = APIKeyHeader(
    name=WEBHOOK_SECRET_HEADER,
    scheme_name="WebhookSecret",
    auto_error=False,
    description="The secret configured for the source in `[api.webhook_secrets]`",
)


async def get_webhook_source(request: Request, _secret: Annotated[str | None, Depends(webhook_secret)]) -> str:
    """The configured name of the webhook's source, whose secret the edge (``api.edge.WebhookRoute``) checked."""
    source = getattr(request.state, "webhook_source", None)
    if not isinstance(source, str):
        raise unauthorized(f"the {WEBHOOK_SECRET_HEADER} header is required")
    return source


WebhookSource = Annotated[str, Depends(get_webhook_source)]


async def get_list_filter(
    status: Annotated[LeadStatus | None, Query(description="новый, в работе, закрыт, отказ")] = None,
    source: Annotated[
        str | None, Query(max_length=MAX_SOURCE, description="e.g. Instagram"), visible_param("source")
    ] = None,
    assigned_to: Annotated[QueryInt | None, Query(ge=1, le=MAX_ID, description="A salesperson's user id")] = None,
    q: Annotated[
        str | None,
        Query(min_length=2, max_length=100, description="Search text; no control characters, something visible"),
        visible_param("q"),
    ] = None,
    updated_since: Annotated[
        Since | None,
        Query(description="An ISO 8601 time (2025-12-03T10:00:00Z); UTC when no offset is given. Not a number."),
    ] = None,
) -> LeadFilter:
    """The list's filters as query parameters, shared by the list and the Excel export."""
    return LeadFilter(status=status, source=source, assigned_to=assigned_to, text=q, updated_since=updated_since)


ListFilterDep = Annotated[LeadFilter, Depends(get_list_filter)]
