"""The errors router's catch-all: the apology, the traceback in the log, and the guard that counts it.

Every other test fails when one of its updates ends here (``pytest_runtest_call`` in tests/conftest.py);
this one provokes it on purpose and says so with the ``unexpected_error`` marker.
"""

from __future__ import annotations

import logging

import pytest

import handlers.lead_card
from tests.conftest import UNEXPECTED_ERROR_MARKER, Harness, Team, pytest_runtest_call


@pytest.mark.unexpected_error
async def test_an_unexpected_error_is_apologised_for_and_logged_with_its_traceback(
    harness: Harness, team: Team, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(handlers.lead_card, "_card", broken)
    with caplog.at_level(logging.ERROR, logger="handlers.errors"):
        await harness.send(team.admin, "/lead 1")
    assert "Что-то пошло не так" in harness.last_text(team.admin.chat_id)
    # What the guard in tests/conftest.py looks for: an ERROR record with the exception attached.
    logged = [r for r in caplog.records if r.name == "handlers.errors" and r.exc_info]
    assert [type(r.exc_info[1]) for r in logged if r.exc_info] == [RuntimeError]


class _Item:
    """The part of a pytest item the guard reads: its markers."""

    def __init__(self, marked: bool) -> None:
        self.marked = marked

    def get_closest_marker(self, name: str) -> object | None:
        return object() if self.marked and name == UNEXPECTED_ERROR_MARKER else None


@pytest.mark.unexpected_error  # provokes the catch-all to watch the guard of tests/conftest.py catch it
async def test_the_guard_fails_a_test_whose_update_ended_in_the_catch_all(
    harness: Harness, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(handlers.lead_card, "_card", broken)
    # The guard is a hook wrapper: driven by hand here around an update, as pytest drives it around a test.
    for marked, clean in ((False, False), (True, True)):
        guard = pytest_runtest_call(_Item(marked))  # type: ignore[arg-type]
        next(guard)
        await harness.send(team.admin, "/lead 1")
        if clean:
            with pytest.raises(StopIteration):
                guard.send(None)
        else:
            with pytest.raises(AssertionError, match="1 update\\(s\\) ended in the errors router's catch-all"):
                guard.send(None)
    guard = pytest_runtest_call(_Item(False))  # type: ignore[arg-type]
    next(guard)
    await harness.send(team.admin, "/help")  # answered: nothing for the guard
    with pytest.raises(StopIteration):
        guard.send(None)
