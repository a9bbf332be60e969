"""The amoCRM adapter (integrations.amocrm) against a fake amoCRM over real HTTP on 127.0.0.1
(tests/fake_amocrm.py): what is sent for each kind of job, the status mapping, linking by phone instead of
duplicating, the rate limit, errors, OAuth with rotating refresh tokens, webhooks, and the settings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import ValidationError

from db.enums import LeadStatus
from integrations.amocrm import (
    AmoCrmAdapter,
    AmoCrmSection,
    ForeignWebhook,
    RemoteLeadChange,
    SetupFailed,
    parse_webhook,
    webhook_secret_matches,
)
from integrations.common import AuthFailed, JobKind, LeadSnapshot, MemoryTokenStore, Outcome, RateLimiter, SyncJob
from tests.fake_amocrm import (
    ACCESS_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    DECISION,
    FIRST_CONTACT,
    LOST,
    MAIN_PIPELINE,
    NEGOTIATION,
    OTHER_PIPELINE,
    REDIRECT_URI,
    REFRESH_TOKEN,
    WON,
    FakeAmoCrm,
)

SELLER_TG, MANAGER_TG, UNMAPPED_TG = 2001, 2002, 2003
USERS = {SELLER_TG: 5001, MANAGER_TG: 5002}
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def snapshot(
    lead_id: int,
    *,
    name: str = "Алишер Каримов",
    phone: str = "+998901234567",
    status: LeadStatus = LeadStatus.NEW,
    source: str = "Instagram",
    budget: float | None = 85_000.0,
    assignee: int | None = SELLER_TG,
) -> LeadSnapshot:
    return LeadSnapshot(lead_id, name, phone, status, source, budget, None, assignee, NOW, NOW)


def job(
    job_id: int,
    kind: JobKind,
    lead: LeadSnapshot | None,
    *,
    remote_id: str | None = None,
    attempts: int = 0,
    comment: str | None = None,
    first_sync: bool = False,
) -> SyncJob:
    lead_id = lead.lead_id if lead is not None else job_id
    return SyncJob(job_id, lead_id, kind, {}, attempts, remote_id, lead, comment=comment, first_sync=first_sync)


def phone(n: int) -> str:
    return f"+99890{n:07d}"


def long_lived(amo: FakeAmoCrm, **settings: Any) -> AmoCrmSection:
    return AmoCrmSection.model_validate({"base_url": amo.base_url, "long_lived_token": ACCESS_TOKEN} | settings)


def oauth(amo: FakeAmoCrm, **settings: Any) -> AmoCrmSection:
    credentials = {
        "base_url": amo.base_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
        "refresh_token": REFRESH_TOKEN,
    }
    return AmoCrmSection.model_validate(credentials | settings)


@pytest.fixture
async def amo() -> AsyncIterator[FakeAmoCrm]:
    async with FakeAmoCrm() as server:
        yield server


@pytest.fixture
async def adapter(amo: FakeAmoCrm) -> AsyncIterator[AmoCrmAdapter]:
    connected = AmoCrmAdapter(long_lived(amo, users=USERS), MemoryTokenStore())
    yield connected
    await connected.aclose()


def bodies(amo: FakeAmoCrm, path: str) -> list[Any]:
    return [request.body for request in amo.requests if request.path == "/api/v4" + path]


def assert_failed(outcome: Outcome, *, permanent: bool, containing: str = "") -> None:
    assert not outcome.ok and outcome.permanent is permanent, outcome
    assert containing in (outcome.error or ""), outcome


# -- what each kind of job sends ------------------------------------------------------------------------


async def test_a_new_lead_goes_with_its_contact_phone_and_source_tag_in_one_call(
    amo: FakeAmoCrm, adapter: AmoCrmAdapter
) -> None:
    [outcome] = await adapter.deliver([job(1, JobKind.CREATE, snapshot(10))])

    assert outcome.ok and outcome.remote_id is not None
    lead = amo.leads[int(outcome.remote_id)]
    assert lead["name"] == "Алишер Каримов" and lead["price"] == 85_000
    assert (lead["pipeline_id"], lead["status_id"]) == (MAIN_PIPELINE, FIRST_CONTACT)
    assert lead["responsible_user_id"] == 5001 and lead["tags"] == ["Instagram"]
    assert lead["phone"] == "+998901234567"
    assert amo.contacts[lead["contact_id"]]["name"] == "Алишер Каримов"
    [body] = bodies(amo, "/leads/complex")
    contact = body[0]["_embedded"]["contacts"][0]
    assert contact["custom_fields_values"] == [
        {"field_code": "PHONE", "values": [{"value": "+998901234567", "enum_code": "WORK"}]}
    ]
    # A first try has nothing to link: no phone lookup before it.
    assert amo.count("/contacts") == 0


async def test_120_new_leads_take_three_calls_of_at_most_50(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    jobs = [job(n, JobKind.CREATE, snapshot(100 + n, name=f"Клиент {n}", phone=phone(n))) for n in range(120)]

    outcomes = await adapter.deliver(jobs)

    assert [len(body) for body in bodies(amo, "/leads/complex")] == [50, 50, 20]
    assert all(outcome.ok for outcome in outcomes)
    # Each answer is matched to its own job: the remote lead carries the job's name and phone.
    for n, outcome in enumerate(outcomes):
        assert outcome.job_id == n and outcome.remote_id is not None
        remote = amo.leads[int(outcome.remote_id)]
        assert (remote["name"], remote["phone"]) == (f"Клиент {n}", phone(n))
    assert len(amo.leads) == 120


async def test_an_update_sends_the_leads_current_state(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    remote = amo.add_lead("Алишер", "+998901234567")
    changed = snapshot(10, name="Алишер Каримов", status=LeadStatus.IN_WORK, budget=90_000.4, assignee=MANAGER_TG)

    [outcome] = await adapter.deliver([job(1, JobKind.UPDATE, changed, remote_id=str(remote))])

    assert outcome.ok
    lead = amo.leads[remote]
    assert (lead["name"], lead["price"], lead["status_id"]) == ("Алишер Каримов", 90_000, NEGOTIATION)
    assert lead["responsible_user_id"] == 5002


async def test_an_update_leaves_an_unmapped_assignee_and_a_missing_budget_as_amo_needs(
    amo: FakeAmoCrm, adapter: AmoCrmAdapter
) -> None:
    remote = amo.add_lead("Алишер", "+998901234567")
    amo.leads[remote]["price"] = 50_000

    await adapter.deliver(
        [job(1, JobKind.UPDATE, snapshot(10, budget=None, assignee=UNMAPPED_TG), remote_id=str(remote))]
    )

    [[sent]] = bodies(amo, "/leads")
    assert "responsible_user_id" not in sent
    assert amo.leads[remote]["responsible_user_id"] == 5001  # kept as it was there
    assert amo.leads[remote]["price"] == 0  # no budget here: none there either


async def test_an_update_waits_for_its_create_and_a_deleted_lead_sends_nothing(
    amo: FakeAmoCrm, adapter: AmoCrmAdapter
) -> None:
    outcomes = await adapter.deliver(
        [job(1, JobKind.UPDATE, snapshot(10)), job(2, JobKind.UPDATE, None, remote_id="5")]
    )

    assert_failed(outcomes[0], permanent=False, containing="not yet created")
    assert outcomes[1].ok
    assert amo.count("/leads", "PATCH") == 0


async def test_a_comment_becomes_a_note_on_the_remote_lead(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    first, second = amo.add_lead("А", phone(1)), amo.add_lead("Б", phone(2))
    jobs = [
        job(1, JobKind.COMMENT, snapshot(10), remote_id=str(first), comment="Перезвонить после обеда"),
        job(2, JobKind.COMMENT, snapshot(11), remote_id=str(second), comment="Хочет 3 комнаты"),
        job(3, JobKind.COMMENT, snapshot(12), comment="Ещё не создан там"),
    ]

    outcomes = await adapter.deliver(jobs)

    assert outcomes[0].ok and outcomes[1].ok
    assert_failed(outcomes[2], permanent=False, containing="not yet created")
    assert amo.leads[first]["notes"] == ["Перезвонить после обеда"]
    assert amo.leads[second]["notes"] == ["Хочет 3 комнаты"]
    assert amo.count("/leads/notes") == 1


async def test_a_retried_comment_that_reached_amo_is_not_noted_twice(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    lead = amo.add_lead("А", phone(1))
    amo.leads[lead]["notes"].append("Перезвонить после обеда")  # the first try got there; its answer was lost
    retried = job(1, JobKind.COMMENT, snapshot(10), remote_id=str(lead), comment="Перезвонить после обеда", attempts=1)
    other = job(2, JobKind.COMMENT, snapshot(10), remote_id=str(lead), comment="Новый комментарий", attempts=1)

    outcomes = await adapter.deliver([retried, other])

    assert outcomes[0].ok and outcomes[1].ok
    assert amo.leads[lead]["notes"] == ["Перезвонить после обеда", "Новый комментарий"]
    assert amo.count(f"/leads/{lead}/notes", "GET") == 2 and amo.count("/leads/notes", "POST") == 1


async def test_a_pull_brings_the_remote_status_back_mapped_to_ours(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    won, lost, later_stage, elsewhere = (amo.add_lead(f"Клиент {n}", phone(n)) for n in range(4))
    amo.move(won, WON)
    amo.move(lost, LOST)
    amo.move(later_stage, DECISION)  # a third stage: none of ours maps to it
    amo.move(elsewhere, 80002, OTHER_PIPELINE)
    jobs = [job(n, JobKind.PULL, snapshot(n), remote_id=str(remote)) for n, remote in enumerate(amo.leads)]

    outcomes = await adapter.deliver(jobs)

    assert all(outcome.ok for outcome in outcomes)
    assert [outcome.remote_status for outcome in outcomes] == [LeadStatus.CLOSED, LeadStatus.REFUSED, None, None]


async def test_a_pull_of_a_lead_gone_there_fails_for_good(adapter: AmoCrmAdapter) -> None:
    [outcome] = await adapter.deliver([job(1, JobKind.PULL, snapshot(10), remote_id="999")])

    assert_failed(outcome, permanent=True, containing="no lead 999")


async def test_a_stage_event_is_not_amos(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    [outcome] = await adapter.deliver([job(1, JobKind.STAGE, snapshot(10))])

    assert_failed(outcome, permanent=True, containing="Meta")
    assert amo.requests == []


# -- the status mapping -----------------------------------------------------------------------------


async def test_by_default_the_main_pipelines_first_two_stages_then_won_and_lost(
    amo: FakeAmoCrm, adapter: AmoCrmAdapter
) -> None:
    mapping = await adapter.mapping()

    # The unsorted stage sorts first but is amo's inbox, not a stage of ours; the list is out of order.
    assert mapping.pipeline_id == MAIN_PIPELINE
    assert mapping.to_amo == {
        LeadStatus.NEW: FIRST_CONTACT,
        LeadStatus.IN_WORK: NEGOTIATION,
        LeadStatus.CLOSED: WON,
        LeadStatus.REFUSED: LOST,
    }
    statuses = [LeadStatus.NEW, LeadStatus.IN_WORK, LeadStatus.CLOSED, LeadStatus.REFUSED]
    outcomes = await adapter.deliver(
        [job(n, JobKind.CREATE, snapshot(n, status=s, phone=phone(n))) for n, s in enumerate(statuses)]
    )
    assert [amo.leads[int(o.remote_id or 0)]["status_id"] for o in outcomes] == [FIRST_CONTACT, NEGOTIATION, WON, LOST]
    # Read once, then kept.
    await adapter.deliver([job(9, JobKind.CREATE, snapshot(9, phone=phone(9)))])
    assert amo.count("/leads/pipelines") == 1


async def test_a_named_pipeline_and_an_explicit_status_table(amo: FakeAmoCrm) -> None:
    section = long_lived(amo, pipeline_id=OTHER_PIPELINE, statuses={"в работе": 80001, "новый": 80002})
    adapter = AmoCrmAdapter(section, MemoryTokenStore())
    try:
        outcomes = await adapter.deliver(
            [
                job(1, JobKind.CREATE, snapshot(1, phone=phone(1), status=LeadStatus.NEW)),
                job(2, JobKind.CREATE, snapshot(2, phone=phone(2), status=LeadStatus.IN_WORK)),
            ]
        )
        assert [amo.leads[int(o.remote_id or 0)]["status_id"] for o in outcomes] == [80002, 80001]
        assert {amo.leads[int(o.remote_id or 0)]["pipeline_id"] for o in outcomes} == {OTHER_PIPELINE}
        assert amo.count(f"/leads/pipelines/{OTHER_PIPELINE}") == 1 and amo.count("/leads/pipelines") == 0
        assert await adapter.status_for(80001, OTHER_PIPELINE) == LeadStatus.IN_WORK
        assert await adapter.status_for(WON, OTHER_PIPELINE) == LeadStatus.CLOSED
        assert await adapter.status_for(WON, MAIN_PIPELINE) is None  # not our pipeline
    finally:
        await adapter.aclose()


async def test_a_status_the_pipeline_lacks_holds_every_job_rather_than_refusing_each(amo: FakeAmoCrm) -> None:
    adapter = AmoCrmAdapter(long_lived(amo, statuses={"новый": 80001}), MemoryTokenStore())
    try:
        with pytest.raises(SetupFailed, match="новый=80001"):
            await adapter.deliver([job(1, JobKind.CREATE, snapshot(1))])
        assert amo.count("/leads/complex") == 0
    finally:
        await adapter.aclose()


async def test_a_missing_pipeline_is_a_setup_failure(amo: FakeAmoCrm) -> None:
    adapter = AmoCrmAdapter(long_lived(amo, pipeline_id=12345), MemoryTokenStore())
    try:
        with pytest.raises(SetupFailed, match="no pipeline 12345"):
            await adapter.deliver([job(1, JobKind.UPDATE, snapshot(1), remote_id="1")])
    finally:
        await adapter.aclose()


# -- never a duplicate ------------------------------------------------------------------------------


async def test_a_retried_create_links_the_lead_an_earlier_try_made(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    [first] = await adapter.deliver([job(1, JobKind.CREATE, snapshot(10))])
    # The worker crashed before recording the answer: the same job comes again, one attempt later.
    [again] = await adapter.deliver([job(1, JobKind.CREATE, snapshot(10), attempts=1)])

    assert again.ok and again.remote_id == first.remote_id
    assert len(amo.leads) == 1 and amo.count("/leads/complex") == 1
    assert amo.requests[-1].query == {"query": "998901234567", "with": "leads"}


async def test_a_retried_create_that_never_arrived_is_created(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    # amo's query matches parts of numbers: this contact's number contains ours but is another one.
    amo.add_lead("Другой", "+9989012345670")

    [outcome] = await adapter.deliver([job(1, JobKind.CREATE, snapshot(10), attempts=2)])

    assert outcome.ok and amo.count("/contacts") == 1
    assert amo.leads[int(outcome.remote_id or 0)]["phone"] == "+998901234567"
    assert len(amo.leads) == 2


async def test_the_first_sync_links_a_lead_made_there_by_hand(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    older = amo.add_lead("Алишер", "+998 (90) 123-45-67")
    newer = amo.add_lead("Алишер", "998901234567")

    assert await adapter.find_lead_by_phone("+998901234567") == str(newer)
    [outcome] = await adapter.deliver([job(1, JobKind.CREATE, snapshot(10), first_sync=True)])

    assert outcome.remote_id == str(newer) and older in amo.leads
    assert amo.count("/leads/complex") == 0
    assert await adapter.find_lead_by_phone("+998935550000") is None  # 204: nobody


# -- the rate limit ---------------------------------------------------------------------------------


async def test_a_429_is_retry_later_and_pauses_every_request(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    remote = amo.add_lead("Алишер", phone(1))
    await adapter.mapping()
    amo.fail_next(429, retry_after="1")

    [refused] = await adapter.deliver([job(1, JobKind.PULL, snapshot(1), remote_id=str(remote))])
    [pulled] = await adapter.deliver([job(1, JobKind.PULL, snapshot(1), remote_id=str(remote))])

    assert_failed(refused, permanent=False, containing="429")
    assert refused.retry_after == 1.0
    assert pulled.ok
    limited, after = amo.requests[-2:]
    assert after.at - limited.at >= 0.95


async def burst(pace: float | None) -> tuple[FakeAmoCrm, list[Outcome]]:
    """100 pulls (101 requests with the pipeline) against amo's 7 requests a window; the window is shortened
    five times and the adapter's pace with it, so this takes 3 s rather than 17."""
    async with FakeAmoCrm(rate_limit=7, window=0.2) as amo:
        adapter = AmoCrmAdapter(long_lived(amo), MemoryTokenStore())
        assert adapter.limiter.rate == adapter.section.rate == 6.5
        adapter.limiter = RateLimiter(pace or adapter.section.rate / 0.2)
        remotes = [amo.add_lead(f"Клиент {n}", phone(n)) for n in range(100)]
        jobs = [job(n, JobKind.PULL, snapshot(n), remote_id=str(remote)) for n, remote in enumerate(remotes)]
        try:
            outcomes = await adapter.deliver(jobs[:50]) + await adapter.deliver(jobs[50:])
        finally:
            await adapter.aclose()
    return amo, outcomes


async def test_a_burst_of_100_jobs_stays_under_the_limit() -> None:
    amo, outcomes = await burst(pace=None)

    assert amo.limit_errors == 0
    assert all(outcome.ok for outcome in outcomes)
    assert len(amo.requests) == 101


async def test_the_same_burst_unpaced_is_refused_by_the_fake() -> None:
    # The control for the test above: without the limiter's pace, the fake does answer 429.
    amo, outcomes = await burst(pace=10_000)

    assert amo.limit_errors >= 1
    assert any(not outcome.ok and outcome.retry_after == 1.0 for outcome in outcomes)


# -- errors -----------------------------------------------------------------------------------------


async def test_a_5xx_or_an_outage_is_retried_later(amo: FakeAmoCrm, adapter: AmoCrmAdapter) -> None:
    await adapter.mapping()
    amo.fail_next(502)
    jobs = [job(n, JobKind.CREATE, snapshot(n, phone=phone(n))) for n in range(3)]
    outcomes = await adapter.deliver(jobs)
    assert all(not o.ok and not o.permanent and "502" in (o.error or "") for o in outcomes)

    amo.outage(0.4, status=500)
    outcomes = await adapter.deliver(jobs)
    assert all(not o.ok and not o.permanent for o in outcomes)
    await asyncio.sleep(0.4)
    assert all(o.ok for o in await adapter.deliver(jobs))
    assert len(amo.leads) == 3


async def test_a_slow_amo_is_retried_later(amo: FakeAmoCrm) -> None:
    adapter = AmoCrmAdapter(long_lived(amo, timeout=0.2), MemoryTokenStore())
    amo.delay = 0.5
    try:
        [outcome] = await adapter.deliver([job(1, JobKind.COMMENT, None, remote_id="1", comment="x")])
    finally:
        await adapter.aclose()
    assert_failed(outcome, permanent=False, containing="did not answer POST /api/v4/leads/notes in time")


async def test_an_unreachable_amo_is_retried_later() -> None:
    # Port 1 (tcpmux) is not served here: the connection is refused at once.
    section = AmoCrmSection.model_validate({"base_url": "http://127.0.0.1:1", "long_lived_token": ACCESS_TOKEN})
    adapter = AmoCrmAdapter(section, MemoryTokenStore())
    try:
        [outcome] = await adapter.deliver([job(1, JobKind.COMMENT, None, remote_id="1", comment="x")])
    finally:
        await adapter.aclose()
    assert_failed(outcome, permanent=False, containing="could not be reached")


async def test_a_400_fails_the_refused_lead_for_good_and_the_rest_of_its_batch_goes_through(
    amo: FakeAmoCrm, adapter: AmoCrmAdapter
) -> None:
    present = amo.add_lead("Есть", phone(1))
    jobs = [
        job(1, JobKind.UPDATE, snapshot(1, status=LeadStatus.IN_WORK), remote_id=str(present)),
        job(2, JobKind.UPDATE, snapshot(2), remote_id="424242"),  # deleted there
    ]

    outcomes = await adapter.deliver(jobs)

    assert outcomes[0].ok and amo.leads[present]["status_id"] == NEGOTIATION
    assert_failed(outcomes[1], permanent=True, containing="Lead not found")
    assert amo.count("/leads", "PATCH") == 2


async def test_a_400_for_every_lead_of_a_batch_fails_them_all_once(amo: FakeAmoCrm) -> None:
    adapter = AmoCrmAdapter(long_lived(amo, users={SELLER_TG: 9999}), MemoryTokenStore())
    try:
        outcomes = await adapter.deliver([job(n, JobKind.CREATE, snapshot(n, phone=phone(n))) for n in range(2)])
    finally:
        await adapter.aclose()

    for outcome in outcomes:
        assert_failed(outcome, permanent=True, containing="responsible_user_id: User not found")
    assert amo.count("/leads/complex") == 1 and amo.leads == {}


# -- credentials ------------------------------------------------------------------------------------


async def test_a_401_refreshes_once_and_the_rotated_refresh_token_is_saved(amo: FakeAmoCrm) -> None:
    store = MemoryTokenStore(
        {"access_token": "revoked", "refresh_token": REFRESH_TOKEN, "expires_at": time.time() + 3600}
    )
    adapter = AmoCrmAdapter(oauth(amo), store)
    try:
        [outcome] = await adapter.deliver([job(1, JobKind.CREATE, snapshot(10))])
    finally:
        await adapter.aclose()

    assert outcome.ok and len(amo.leads) == 1
    assert [(r.path, r.status) for r in amo.requests] == [
        ("/api/v4/leads/pipelines", 401),
        ("/oauth2/access_token", 200),
        ("/api/v4/leads/pipelines", 200),
        ("/api/v4/leads/complex", 200),
    ]
    assert store.saves == 1 and store.tokens is not None
    assert store.tokens["refresh_token"] == "amo-refresh-1" and store.tokens["access_token"] == "amo-access-1"
    assert store.tokens["expires_at"] > time.time() + 86000
    # The token used is dead there: a second use is refused.
    async with httpx.AsyncClient() as client:
        reuse = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "refresh_token",
                 "refresh_token": REFRESH_TOKEN, "redirect_uri": REDIRECT_URI}  # fmt: skip
        answer = await client.post(amo.base_url + "/oauth2/access_token", json=reuse)
    assert answer.status_code == 400 and answer.json()["hint"] == "Token has been revoked"


async def test_the_first_request_starts_from_the_configured_refresh_token(amo: FakeAmoCrm) -> None:
    store = MemoryTokenStore()
    adapter = AmoCrmAdapter(oauth(amo), store)
    try:
        await adapter.mapping()
        await adapter.mapping()
    finally:
        await adapter.aclose()

    assert [(r.path, r.status) for r in amo.requests] == [
        ("/oauth2/access_token", 200),
        ("/api/v4/leads/pipelines", 200),
    ]
    assert store.tokens is not None and store.tokens["refresh_token"] == "amo-refresh-1"


async def test_an_expired_access_token_is_refreshed_before_use(amo: FakeAmoCrm) -> None:
    # The fake would still take it: only its expiry, as stored, says to refresh.
    store = MemoryTokenStore(
        {"access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN, "expires_at": time.time() - 1}
    )
    adapter = AmoCrmAdapter(oauth(amo), store)
    try:
        await adapter.mapping()
    finally:
        await adapter.aclose()

    assert [r.path for r in amo.requests] == ["/oauth2/access_token", "/api/v4/leads/pipelines"]
    assert amo.requests[-1].status == 200


async def test_a_new_refresh_token_in_the_settings_takes_over_from_a_dead_stored_one(amo: FakeAmoCrm) -> None:
    # An admin authorized LeadBot again and pasted the new token: the stored chain is dead.
    store = MemoryTokenStore({"access_token": "revoked", "refresh_token": "amo-refresh-dead", "expires_at": 0})
    adapter = AmoCrmAdapter(oauth(amo), store)
    try:
        await adapter.mapping()
    finally:
        await adapter.aclose()

    assert [(r.path, r.status) for r in amo.requests] == [
        ("/oauth2/access_token", 400),
        ("/oauth2/access_token", 200),
        ("/api/v4/leads/pipelines", 200),
    ]
    assert store.tokens is not None and store.tokens["refresh_token"] == "amo-refresh-1"


async def test_two_requests_refused_at_once_refresh_only_once(amo: FakeAmoCrm) -> None:
    # A second refresh would spend the rotated token the first one just got, and lock LeadBot out.
    store = MemoryTokenStore(
        {"access_token": "revoked", "refresh_token": REFRESH_TOKEN, "expires_at": time.time() + 3600}
    )
    adapter = AmoCrmAdapter(oauth(amo), store)
    remotes = [amo.add_lead(f"Клиент {n}", phone(n)) for n in range(2)]
    try:
        found = await asyncio.gather(*(adapter.find_lead_by_phone(phone(n)) for n in range(2)))
    finally:
        await adapter.aclose()

    assert found == [str(r) for r in remotes]
    assert [r.status for r in amo.requests if r.path == "/api/v4/contacts"] == [401, 401, 200, 200]
    assert amo.count("/oauth2/access_token") == 1 and store.saves == 1


async def test_a_refused_long_lived_token_is_auth_failed_without_the_token(amo: FakeAmoCrm) -> None:
    secret = "a-long-lived-token-amo-never-issued"
    adapter = AmoCrmAdapter(long_lived(amo, long_lived_token=secret), MemoryTokenStore())
    try:
        with pytest.raises(AuthFailed) as refused:
            await adapter.deliver([job(1, JobKind.CREATE, snapshot(10))])
    finally:
        await adapter.aclose()

    assert "long-lived token" in str(refused.value) and secret not in str(refused.value)
    assert amo.count("/leads/pipelines") == 1  # no second try with the same token


async def test_a_dead_refresh_token_is_auth_failed_without_any_secret(amo: FakeAmoCrm) -> None:
    amo.refresh_tokens.clear()
    adapter = AmoCrmAdapter(oauth(amo), MemoryTokenStore())
    try:
        with pytest.raises(AuthFailed) as refused:
            await adapter.deliver([job(1, JobKind.COMMENT, snapshot(1), remote_id="1", comment="x")])
    finally:
        await adapter.aclose()

    message = str(refused.value)
    assert "Token has been revoked" in message
    assert REFRESH_TOKEN not in message and CLIENT_SECRET not in message


async def test_after_a_success_an_auth_failure_becomes_outcomes_so_nothing_is_sent_twice(amo: FakeAmoCrm) -> None:
    remote = amo.add_lead("Алишер", phone(1))
    adapter = AmoCrmAdapter(long_lived(amo), MemoryTokenStore())
    jobs = [
        job(1, JobKind.UPDATE, snapshot(1), remote_id=str(remote)),
        job(2, JobKind.COMMENT, snapshot(2), remote_id=str(remote), comment="Заметка"),
    ]
    try:
        amo.fail_next(401, path="/api/v4/leads/notes")
        outcomes = await adapter.deliver(jobs)
    finally:
        await adapter.aclose()

    # The update went through before the note was refused: raising would have it sent again.
    assert outcomes[0].ok
    assert_failed(outcomes[1], permanent=False, containing="authorisation: amoCRM refused the long-lived token")
    assert amo.count("/leads", "PATCH") == 1 and amo.leads[remote]["notes"] == []


# -- webhooks ---------------------------------------------------------------------------------------


def test_a_status_webhook_names_the_lead_and_its_new_status(amo: FakeAmoCrm) -> None:
    remote = amo.add_lead("Алишер", phone(1))
    body = amo.move(remote, WON)

    changes = parse_webhook(parse_qsl(body), long_lived(amo))

    assert changes == [RemoteLeadChange(str(remote), WON, MAIN_PIPELINE)]


def test_an_update_webhook_and_a_lead_named_twice(amo: FakeAmoCrm) -> None:
    form = {
        "leads[update][0][id]": "31",
        "leads[update][0][status_id]": str(NEGOTIATION),
        "leads[update][0][pipeline_id]": str(MAIN_PIPELINE),
        "leads[update][0][name]": "Алишер",
        "leads[update][1][id]": "32",
        "leads[status][0][id]": "32",
        "leads[status][0][status_id]": str(LOST),
        "leads[status][0][pipeline_id]": str(MAIN_PIPELINE),
        "leads[delete][0][id]": "33",
        "account[subdomain]": "leadbot",
    }

    changes = parse_webhook(form, long_lived(amo))

    assert changes == [
        RemoteLeadChange("32", LOST, MAIN_PIPELINE),
        RemoteLeadChange("31", NEGOTIATION, MAIN_PIPELINE),
    ]


def test_a_webhook_about_another_pipeline_is_left_out(amo: FakeAmoCrm) -> None:
    ours, theirs = amo.add_lead("А", phone(1)), amo.add_lead("Б", phone(2), pipeline_id=OTHER_PIPELINE)
    form = parse_qsl(amo.move(ours, NEGOTIATION)) + [
        (key.replace("[0]", "[1]"), value)
        for key, value in parse_qsl(amo.move(theirs, 80002))
        if key.startswith("leads")
    ]

    assert parse_webhook(form, long_lived(amo, pipeline_id=MAIN_PIPELINE)) == [
        RemoteLeadChange(str(ours), NEGOTIATION, MAIN_PIPELINE)
    ]
    # Without a pipeline named, both pass here and the adapter's mapping leaves the other one out.
    assert len(parse_webhook(form, long_lived(amo))) == 2


async def test_status_for_leaves_out_other_pipelines_than_the_main_one(adapter: AmoCrmAdapter) -> None:
    assert await adapter.status_for(NEGOTIATION, MAIN_PIPELINE) == LeadStatus.IN_WORK
    assert await adapter.status_for(80002, OTHER_PIPELINE) is None
    assert await adapter.status_for(LOST, OTHER_PIPELINE) is None
    assert await adapter.status_for(DECISION, MAIN_PIPELINE) is None


def test_a_webhook_from_another_account_is_refused() -> None:
    section = AmoCrmSection.model_validate({"base_url": "https://leadbot.amocrm.ru", "long_lived_token": "x"})
    form = {"leads[status][0][id]": "1", "leads[status][0][status_id]": "142", "account[subdomain]": "rival"}

    with pytest.raises(ForeignWebhook, match="rival"):
        parse_webhook(form, section)
    assert parse_webhook(form | {"account[subdomain]": "leadbot"}, section) == [RemoteLeadChange("1", 142, None)]


def test_the_webhook_secret_is_compared_whole() -> None:
    secret = "s" * 24
    section = AmoCrmSection.model_validate({"webhook_secret": secret})

    assert webhook_secret_matches(section, secret)
    assert not webhook_secret_matches(section, secret[:-1]) and not webhook_secret_matches(section, None)
    assert not webhook_secret_matches(AmoCrmSection(), secret)


# -- the settings -----------------------------------------------------------------------------------


def test_the_section_reads_a_complete_configuration() -> None:
    section = AmoCrmSection.model_validate(
        {
            "base_url": " https://leadbot.amocrm.ru/ ",
            "long_lived_token": "token",
            "statuses": {"Новый": 1, "закрыт": 2},
            "users": {"2001": 5001},
            "timeout": "30s",
        }
    )

    assert section.base_url == "https://leadbot.amocrm.ru" and section.enabled
    assert section.statuses == {"новый": 1, "закрыт": 2} and section.users == {2001: 5001}
    assert section.timeout.total_seconds() == 30
    assert not AmoCrmSection().enabled
    assert not AmoCrmSection(base_url="https://leadbot.amocrm.ru").enabled


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"base_url": "leadbot.amocrm.ru"}, "not an address"),
        ({"base_url": "ftp://leadbot.amocrm.ru"}, "not an address"),
        ({"statuses": {"сделка": 142}}, "unknown status 'сделка'"),
        ({"statuses": {"закрыт": 142, "отказ": 142}}, "two of our statuses"),
        ({"client_id": "id", "client_secret": "secret"}, "OAuth needs redirect_uri, refresh_token"),
        ({"long_lived_token": "t", "client_id": "id"}, "not both"),
        ({"rate": 10}, "less than or equal to 7"),
        ({"webhook_secret": "short"}, "shorter than 16"),
        ({"timeout": "0s"}, "longer than zero"),
    ],
)
def test_the_section_refuses_a_bad_configuration(settings: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        AmoCrmSection.model_validate(settings)


def test_an_adapter_needs_an_enabled_section() -> None:
    with pytest.raises(ValueError, match="base_url"):
        AmoCrmAdapter(AmoCrmSection(), MemoryTokenStore())
