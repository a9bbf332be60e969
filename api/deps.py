"""Dependencies, named by what they give a route: ``UowDep``, ``CurrentUser``, ``SettingsDep``.

One request = one unit of work = one commit, as one update is in the bot: ``get_uow`` commits after
the endpoint returned without error and before the response leaves (scope ``function``); any error
rolls everything back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import unauthorized
from bot.config import Settings
from db.models import User
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
    uow: UowDep,
    factory: Annotated[UnitOfWorkFactory, Depends(get_uow_factory)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    if credentials is None:
        raise unauthorized()
    holder = await uow.tokens.authenticate(credentials.credentials)
    if holder is None:
        raise unauthorized("the token is invalid or revoked, or its user was deactivated")
    if holder.touch_due and not uow.read_only:
        await uow.tokens.touch(holder.token_id)  # committed with the request's change
    elif holder.touch_due:
        # Its own short write, so a reading request stays a read (it takes no write lock for this).
        async with factory() as writer:
            await writer.tokens.touch(holder.token_id)
            await writer.commit()
    return holder.user


CurrentUser = Annotated[User, Depends(get_current_user)]
