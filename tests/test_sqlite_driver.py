"""The SQLite connection on the event loop: sqlite3's semantics, and another process's lock never freezes the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import sqlite_driver
from db.engine import create_engine


def _path(url: str) -> str:
    return url.removeprefix("sqlite+aiosqlite:///")


@pytest.fixture
async def scratch(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, str]]:
    """An engine (on the loop) over a fresh file with one small table."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("create table t (id integer primary key, v text not null unique)"))
    yield engine, _path(url)
    await engine.dispose()


async def _driver_connection(engine: AsyncEngine) -> Any:
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        return raw.driver_connection


@contextmanager
def _other_process_writer(path: str) -> Iterator[tuple[threading.Event, threading.Event]]:
    """A second sqlite3 connection (as another process would have) holding the write lock until told.

    Yields ``(locked, release)``. It gives up after 10 s whatever happens, so a frozen loop makes a
    test fail rather than hang.
    """
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("insert into t (v) values ('other process')")
            locked.set()
            release.wait(10)
            connection.execute("COMMIT")
        finally:
            connection.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        assert locked.wait(10)
        yield locked, release
    finally:
        release.set()
        thread.join(10)


@pytest.mark.parametrize("on_loop", [True, False])
async def test_engine_driver_per_setting(tmp_path: Path, on_loop: bool) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", on_loop=on_loop)
    try:
        driver = await _driver_connection(engine)
        assert isinstance(driver, sqlite_driver.InlineConnection) is on_loop
        async with engine.begin() as connection:
            await connection.execute(text("create table t (id integer primary key, v text)"))
            await connection.execute(text("insert into t (v) values (:v)"), [{"v": "a"}, {"v": "b"}])
        async with engine.connect() as connection:
            rows = (await connection.execute(text("select v from t order by id"))).scalars().all()
            timeout = (await connection.execute(text("pragma busy_timeout"))).scalar_one()
        assert rows == ["a", "b"]
        assert timeout == (sqlite_driver.BUSY_TIMEOUT_MS if on_loop else 30_000)
    finally:
        await engine.dispose()


async def test_savepoint_keeps_the_transaction_and_errors_are_sqlite3s(scratch: tuple[AsyncEngine, str]) -> None:
    engine, path = scratch
    async with engine.begin() as connection:
        await connection.execute(text("insert into t (v) values ('kept')"))
        with pytest.raises(exc.IntegrityError) as info:
            async with connection.begin_nested():
                await connection.execute(text("insert into t (v) values ('dropped')"))
                await connection.execute(text("insert into t (v) values ('kept')"))
        assert isinstance(info.value.orig, sqlite3.IntegrityError)
        await connection.execute(text("insert into t (v) values ('after')"))
    with pytest.raises(exc.OperationalError) as syntax:
        async with engine.begin() as connection:
            await connection.execute(text("selec 1"))
    assert isinstance(syntax.value.orig, sqlite3.OperationalError)
    with sqlite3.connect(path) as check:
        assert [v for (v,) in check.execute("select v from t order by id")] == ["kept", "after"]


async def test_another_process_lock_does_not_freeze_the_loop(scratch: tuple[AsyncEngine, str]) -> None:
    engine, path = scratch
    await _driver_connection(engine)  # connected (and its pragmas run) before the lock is taken
    ticks_while_waiting = 0
    waiting = asyncio.Event()
    done = asyncio.Event()

    async def ticker(release: threading.Event) -> None:
        nonlocal ticks_while_waiting
        await waiting.wait()
        while not done.is_set():
            await asyncio.sleep(0.005)
            ticks_while_waiting += 1
            if ticks_while_waiting == 20:  # the loop ran 20 times meanwhile: let the other writer finish
                release.set()

    async def write() -> None:
        waiting.set()
        async with engine.begin() as connection:  # BEGIN IMMEDIATE meets the other writer's lock
            await connection.execute(text("insert into t (v) values ('bot')"))
        done.set()

    with _other_process_writer(path) as (_locked, release):
        await asyncio.gather(ticker(release), write())

    assert ticks_while_waiting >= 20
    with sqlite3.connect(path) as check:
        assert [v for (v,) in check.execute("select v from t order by id")] == ["other process", "bot"]
    async with engine.connect() as connection:  # the short busy timeout is back after the wait
        assert (await connection.execute(text("pragma busy_timeout"))).scalar_one() == sqlite_driver.BUSY_TIMEOUT_MS


async def test_a_lock_held_too_long_fails_as_sqlite3_does(scratch: tuple[AsyncEngine, str]) -> None:
    engine, path = scratch
    driver = await _driver_connection(engine)
    driver.lock_wait = 0.2
    with _other_process_writer(path), pytest.raises(exc.OperationalError) as info:
        async with engine.begin() as connection:
            await connection.execute(text("insert into t (v) values ('bot')"))
    assert isinstance(info.value.orig, sqlite3.OperationalError)
    assert "locked" in str(info.value.orig)
    # The connection is fine afterwards: the lock is gone, the next transaction goes through.
    async with engine.begin() as connection:
        await connection.execute(text("insert into t (v) values ('later')"))
    with sqlite3.connect(path) as check:
        assert [v for (v,) in check.execute("select v from t order by id")] == ["other process", "later"]
