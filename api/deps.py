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


async def get_uow(factory: Annotated[UnitOfWorkFactory, Depends(get_uow_factory)]) -> AsyncIterator[UnitOfWork]:
    async with factory() as uow:
        yield uow
        await uow.commit()


SettingsDep = Annotated[Settings, Depends(get_settings)]
UowDep = Annotated[UnitOfWork, Depends(get_uow, scope="function")]

bearer = HTTPBearer(auto_error=False, description="A personal token: `/token` in the bot or `leadbot token issue`")


async def get_current_user(
    uow: UowDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    if credentials is None:
        raise unauthorized()
    user = await uow.tokens.authenticate(credentials.credentials)
    if user is None:
        raise unauthorized("the token is invalid or revoked, or its user was deactivated")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
