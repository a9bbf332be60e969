"""The errors router's catch-all: the apology, the traceback in the log, and the guard that counts it.

Every other test fails when one of its updates ends here (``pytest_runtest_call`` in tests/conftest.py);
this one provokes it on purpose and says so with the ``unexpected_error`` marker.
"""

from __future__ import annotations

import logging

import pytest

import handlers.lead_card
from tests.conftest import Harness, Team


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
