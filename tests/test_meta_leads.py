"""Meta lead ads: the subscription check, signed deliveries, dedupe on leadgen_id, Graph fetch with retries.

The Graph API is a fake on 127.0.0.1 (tests/fake_graph.py): nothing reaches Meta.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiogram import Dispatcher
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select, update

from api.app import create_app
from api.meta import MetaLeadFetcher
from bot.config import Settings
from bot.presentation.cards import render_card
from bot.runner import run_bot
from bot.texts import texts_for
from db.engine import Database
from db.models import Comment, Lead, MetaLeadgen, OutboxMessage, utcnow
from db.repositories import LeadDraft
from db.repositories.meta import Delivery
from db.uow import UnitOfWorkFactory
from tests.api_support import bearer
from tests.conftest import Team
from tests.fake_bot_api import FakeBotAPI
from tests.fake_graph import ACCESS_TOKEN, FakeGraph

APP_SECRET = "meta-app-secret-for-tests"
VERIFY_TOKEN = "verify-me-please"
URL = "/api/meta/webhook"


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    async with FakeGraph() as server:
        yield server


@pytest.fixture
def meta_settings(settings: Settings, graph: FakeGraph) -> Settings:
    return Settings.model_validate(
        {
            **settings.model_dump(mode="python", exclude={"bot", "meta", "assignment"}),
            "bot": {"token": "42:TEST-TOKEN"},
            "assignment": {"mode": "round_robin"},
            "meta": {
                "app_secret": APP_SECRET,
                "verify_token": VERIFY_TOKEN,
                "page_access_token": ACCESS_TOKEN,
                "graph_url": graph.base_url,
                "retry_after": "0s",
                "max_attempts": 3,
                "fields": {"full_name": "client_name", "phone_number": "phone_number", "budget": "budget"},
            },
        }
    )


@pytest.fixture
def meta_app(meta_settings: Settings, database: Database) -> FastAPI:
    return create_app(meta_settings, database)


@pytest.fixture
async def meta_client(meta_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=meta_app), base_url="http://leadbot.test") as c:
        yield c


def fetcher(app: FastAPI) -> MetaLeadFetcher:
    result: MetaLeadFetcher = app.state.meta_fetcher
    return result


def delivery(*leadgen_ids: str, page_id: str = "P1", form_id: str = "F1", ad_id: str = "A1") -> bytes:
    changes = [
        {"field": "leadgen", "value": {"leadgen_id": lid, "page_id": page_id, "form_id": form_id, "ad_id": ad_id}}
        for lid in leadgen_ids
    ]
    return json.dumps({"object": "page", "entry": [{"id": page_id, "time": 1764410000, "changes": changes}]}).encode()


def signed(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


async def post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post(URL, content=body, headers=signed(body) if headers is None else headers)


async def all_of(factory: UnitOfWorkFactory, model: type) -> list[Any]:
    async with factory(read_only=True) as uow:
        return list((await uow.session.scalars(select(model).order_by(model.id))).all())  # type: ignore[attr-defined]


ANSWERS = {"full_name": "Мадина Юсупова", "phone_number": "+998 90 777 66 55", "budget": "80k", "city": "Ташкент"}


async def test_the_subscription_check(meta_client: httpx.AsyncClient) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    ok = await meta_client.get(URL, params=params)
    assert (ok.status_code, ok.text) == (200, "1158201444")
    wrong = await meta_client.get(URL, params={**params, "hub.verify_token": "nope"})
    assert wrong.status_code == 403
    assert (await meta_client.get(URL, params={**params, "hub.mode": "unsubscribe"})).status_code == 403


async def test_not_configured_is_not_found(client: httpx.AsyncClient) -> None:
    assert (await client.get(URL, params={"hub.mode": "subscribe"})).status_code == 404
    assert (await client.post(URL, content=delivery("L1"))).status_code == 404


async def test_a_signed_delivery_becomes_a_lead_its_salesperson_hears_about_at_once(
    meta_client: httpx.AsyncClient, meta_app: FastAPI, graph: FakeGraph, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    """The delivery itself starts the fetch (nothing polls for Meta's rows): ``idle()`` only waits for a pass
    the webhook started, so the lead exists afterwards only because the delivery kicked the fetcher."""
    graph.add_lead("L1", ANSWERS)
    response = await post(meta_client, delivery("L1"))
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 1}
    await fetcher(meta_app).idle()

    [lead] = await all_of(uow_factory, Lead)
    assert (lead.client_name, lead.phone_number, lead.source, lead.budget) == (
        "Мадина Юсупова",
        "+998907776655",
        "Instagram",
        80000.0,
    )
    assert "F1" in lead.notes and "A1" in lead.notes and "L1" in lead.notes and "city: Ташкент" in lead.notes
    assert lead.assigned_to_id == team.seller.id  # automatic assignment
    [row] = await all_of(uow_factory, MetaLeadgen)
    assert (row.status, row.lead_id, row.platform, row.attempts) == ("done", lead.id, "ig", 0)
    outbox = await all_of(uow_factory, OutboxMessage)
    assert [(m.user_id, m.kind) for m in outbox] == [(team.seller.id, "lead_new")]
    [(path, query)] = graph.requests
    assert path == "/v25.0/L1" and "field_data" in query["fields"]


async def test_done_when_the_salesperson_hears_in_telegram_without_waiting_for_a_poll(
    meta_settings: Settings, team: Team, graph: FakeGraph, fake_bot_api: FakeBotAPI, free_tcp_port: int
) -> None:
    """``leadbot run`` with the API served in it, over real HTTP on 127.0.0.1: a signed delivery, the Graph
    fetch, the lead, and the salesperson's Telegram message at the fake Bot API. The outbox is polled only
    every 30 s here and the message is awaited for at most 10 s after the POST, so it arrives only because
    the new lead's commit wakes the delivery worker (no stopwatch: a causal check, not a timed one)."""
    live = meta_settings.model_copy(
        update={
            "bot": meta_settings.bot.model_copy(update={"api_server": fake_bot_api.base_url}),
            "api": meta_settings.api.model_copy(update={"enabled": True, "port": free_tcp_port}),
            "notifications": meta_settings.notifications.model_copy(update={"poll_interval": timedelta(seconds=30)}),
        }
    )
    graph.add_lead("L1", ANSWERS)
    started: asyncio.Future[Dispatcher] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_bot(live, handle_signals=False, started=started))
    waiting: set[asyncio.Future[Any]] = {started, task}
    done, _ = await asyncio.wait(waiting, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # the bot died while starting: show why
    dispatcher = started.result()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_tcp_port}") as http:
            for _ in range(500):
                try:
                    if (await http.get("/api/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.01)
            # A delivery with no leadgen change first: the route's first request pays for lazy imports.
            empty = delivery()
            assert (await http.post(URL, content=empty, headers=signed(empty))).json() == {"received": 0}
            body = delivery("L1")
            response = await http.post(URL, content=body, headers=signed(body))
            assert response.status_code == 200, response.text
            message = await fake_bot_api.wait_for("sendMessage", chat_id=team.seller.chat_id, timeout=10)
    finally:
        await asyncio.wait_for(dispatcher.stop_polling(), timeout=30)
        await asyncio.wait_for(task, timeout=30)
    assert "Мадина Юсупова" in message.text


async def test_the_lead_keeps_its_form_ad_and_leadgen_id_on_the_card_and_in_the_api(
    meta_client: httpx.AsyncClient,
    meta_app: FastAPI,
    meta_settings: Settings,
    graph: FakeGraph,
    uow_factory: UnitOfWorkFactory,
    team: Team,
    tokens: dict[str, str],
) -> None:
    graph.add_lead("L1", ANSWERS)
    await post(meta_client, delivery("L1"))
    await fetcher(meta_app).idle()
    # The client comes back through another form: a comment, and the first delivery stays the origin.
    graph.add_lead("L2", ANSWERS)
    await post(meta_client, delivery("L2", form_id="F2", ad_id="A2"))
    await fetcher(meta_app).idle()
    [lead] = await all_of(uow_factory, Lead)
    assert [row.lead_id for row in await all_of(uow_factory, MetaLeadgen)] == [lead.id, lead.id]

    async with uow_factory(read_only=True) as uow:
        card = await uow.leads.card(team.admin.user, lead.id)
    text = render_card(card, texts_for("ru"), meta_settings.crm).text
    assert "Meta: форма «F1», объявление «A1», lead L1" in text
    assert "F2" not in text.split("Meta:")[1].splitlines()[0]

    detail = await meta_client.get(f"/api/leads/{lead.id}", headers=bearer(tokens["admin"]))
    assert detail.status_code == 200, detail.text
    assert detail.json()["meta"] == {
        "leadgen_id": "L1",
        "form_id": "F1",
        "ad_id": "A1",
        "page_id": "P1",
        "platform": "ig",
    }


async def test_facebook_forms_get_the_facebook_source(
    meta_client: httpx.AsyncClient, meta_app: FastAPI, graph: FakeGraph, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    graph.add_lead("L2", ANSWERS, platform="fb")
    await post(meta_client, delivery("L2"))
    await fetcher(meta_app).idle()
    assert [lead.source for lead in await all_of(uow_factory, Lead)] == ["Facebook"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": "not-even-a-signature"},
    ],
    ids=["missing", "wrong", "garbage"],
)
async def test_a_badly_signed_delivery_is_refused_unread(
    meta_client: httpx.AsyncClient, graph: FakeGraph, uow_factory: UnitOfWorkFactory, headers: dict[str, str]
) -> None:
    response = await post(meta_client, delivery("L1"), headers)
    assert response.status_code == 401
    # Signed with another secret: refused as well.
    body = delivery("L1")
    assert (await post(meta_client, body, signed(body, "another-secret"))).status_code == 401
    assert await all_of(uow_factory, MetaLeadgen) == []
    assert graph.requests == []


async def test_a_signed_delivery_that_is_not_json_is_a_400(meta_client: httpx.AsyncClient) -> None:
    assert (await post(meta_client, b"{not json")).status_code == 400
    # Unsigned, the same body is refused for its signature: it was never parsed.
    unsigned = await post(meta_client, b"{not json", {"Content-Type": "application/json"})
    assert unsigned.status_code == 401


async def test_the_same_leadgen_id_five_times_makes_one_lead(
    meta_client: httpx.AsyncClient, meta_app: FastAPI, graph: FakeGraph, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    graph.add_lead("L1", ANSWERS)
    for _ in range(5):
        assert (await post(meta_client, delivery("L1"))).status_code == 200
        await fetcher(meta_app).idle()
    assert len(await all_of(uow_factory, Lead)) == 1
    assert len(await all_of(uow_factory, MetaLeadgen)) == 1
    assert graph.calls_for("L1") == 1


async def test_a_graph_outage_is_retried_and_the_lead_made_once(
    meta_client: httpx.AsyncClient, meta_app: FastAPI, graph: FakeGraph, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    graph.add_lead("L1", ANSWERS)
    graph.fail_next(500)
    await post(meta_client, delivery("L1"))
    await fetcher(meta_app).idle()
    assert len(await all_of(uow_factory, Lead)) == 1
    [row] = await all_of(uow_factory, MetaLeadgen)
    assert (row.status, row.attempts) == ("done", 1)
    assert graph.calls_for("L1") == 2


async def test_the_delivery_is_answered_before_the_graph_api_is(
    meta_client: httpx.AsyncClient, meta_app: FastAPI, graph: FakeGraph, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    """Meta wants its 200 fast: the answer does not wait for the Graph API. Here the Graph API holds the
    lead's answers until the test lets them go, so a 200 that comes back at all came back without them."""
    graph.add_lead("L1", ANSWERS)
    graph.lead_gate = asyncio.Event()
    response = await asyncio.wait_for(post(meta_client, delivery("L1")), timeout=10)
    assert response.status_code == 200
    assert await all_of(uow_factory, Lead) == []  # not yet: the fetch is still held at the Graph API
    graph.lead_gate.set()
    await fetcher(meta_app).idle()
    assert len(await all_of(uow_factory, Lead)) == 1


async def test_failed_fetches_back_off_doubling_up_to_the_maximum(
    meta_settings: Settings, graph: FakeGraph, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    """Each failure puts the next attempt further off (retry_after doubled, at most max_retry_after) and
    keeps the leadgen id pending; the last allowed attempt that fails ends it as failed, still kept."""
    meta = meta_settings.meta.model_copy(
        update={"retry_after": timedelta(seconds=10), "max_retry_after": timedelta(seconds=30), "max_attempts": 5}
    )
    fetch = MetaLeadFetcher(uow_factory, meta_settings.model_copy(update={"meta": meta}))
    async with uow_factory() as uow:
        await uow.meta.record([Delivery(leadgen_id="L1", page_id="P1", form_id="F1", ad_id="A1")])
        await uow.commit()
    graph.add_lead("L1", ANSWERS)
    graph.fail_next(500, times=5)
    delays = []
    async with httpx.AsyncClient() as http:
        for _ in range(5):
            before = utcnow()
            assert await fetch.run_once(http) == 1
            [row] = await all_of(uow_factory, MetaLeadgen)
            delays.append(round((row.next_attempt_at - before).total_seconds()))
            async with uow_factory() as uow:  # time passes: the row is due again
                await uow.session.execute(update(MetaLeadgen).values(next_attempt_at=utcnow()))
                await uow.commit()
    assert delays[:4] == [10, 20, 30, 30]
    assert (row.status, row.attempts, row.leadgen_id) == ("failed", 5, "L1")
    assert graph.calls_for("L1") == 5
    assert await all_of(uow_factory, Lead) == []


async def test_a_lasting_outage_gives_up_but_keeps_the_leadgen_id(
    meta_client: httpx.AsyncClient, meta_app: FastAPI, graph: FakeGraph, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    graph.add_lead("L1", ANSWERS)
    graph.fail_next(503, times=10)
    await post(meta_client, delivery("L1"))
    await fetcher(meta_app).idle()
    [row] = await all_of(uow_factory, MetaLeadgen)
    assert (row.leadgen_id, row.status, row.attempts) == ("L1", "failed", 3)
    assert "503" in row.last_error
    assert await all_of(uow_factory, Lead) == []


async def test_a_duplicate_phone_comments_the_existing_lead_and_tells_its_salesperson(
    meta_client: httpx.AsyncClient, meta_app: FastAPI, graph: FakeGraph, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    async with uow_factory() as uow:
        existing = await uow.leads.create(
            team.admin.user,
            LeadDraft(client_name="Мадина", phone_number="+998907776655", source="Сайт", assigned_to=team.seller2.id),
        )
        await uow.commit()
    graph.add_lead("L9", ANSWERS)
    await post(meta_client, delivery("L9"))
    await fetcher(meta_app).idle()

    assert [lead.id for lead in await all_of(uow_factory, Lead)] == [existing.id]
    [comment] = await all_of(uow_factory, Comment)
    assert comment.lead_id == existing.id
    assert "Клиент вернулся" in comment.text and "Instagram" in comment.text and "L9" in comment.text
    [row] = await all_of(uow_factory, MetaLeadgen)
    assert (row.status, row.lead_id) == ("done", existing.id)
    outbox = [(m.user_id, m.kind) for m in await all_of(uow_factory, OutboxMessage)]
    assert (team.seller2.id, "lead_comment") in outbox


async def test_answers_without_a_phone_end_the_row_without_retrying(
    meta_client: httpx.AsyncClient, meta_app: FastAPI, graph: FakeGraph, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    graph.add_lead("L5", {"full_name": "Без телефона"})
    await post(meta_client, delivery("L5"))
    await fetcher(meta_app).idle()
    [row] = await all_of(uow_factory, MetaLeadgen)
    assert (row.status, row.attempts) == ("failed", 1)
    assert graph.calls_for("L5") == 1
    assert await all_of(uow_factory, Lead) == []


async def test_other_changes_are_ignored(meta_client: httpx.AsyncClient, uow_factory: UnitOfWorkFactory) -> None:
    body = json.dumps({"object": "page", "entry": [{"changes": [{"field": "feed", "value": {}}]}]}).encode()
    response = await post(meta_client, body)
    assert (response.status_code, response.json()) == (200, {"received": 0})
    assert await all_of(uow_factory, MetaLeadgen) == []


def test_secrets_are_secret() -> None:
    settings = Settings.model_validate({"meta": {"app_secret": APP_SECRET}})
    assert isinstance(settings.meta.app_secret, SecretStr)
    assert APP_SECRET not in repr(settings.meta)
    assert not settings.meta.enabled
