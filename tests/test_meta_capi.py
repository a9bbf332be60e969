"""Meta's Conversions API for CRM: stage events over real HTTP to the fake Graph API (tests/fake_graph.py).

Nothing reaches Meta: the fake listens on 127.0.0.1 and checks each event as the CRM payload
specification asks, refusing the whole request when one event is wrong, as Meta does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from bot.config import MetaSection, load_settings
from db.enums import LeadStatus
from integrations.common import AuthFailed, JobKind, LeadSnapshot, Outcome, RetryLater, SyncJob
from integrations.meta_capi import MAX_EVENTS, SPLIT_BUDGET, TOO_OLD, MetaCapiAdapter
from tests.fake_graph import CAPI_TOKEN, PIXEL_ID, FakeGraph

LEADGEN_ID = "1234567890123450"


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    async with FakeGraph() as server:
        yield server


def section(graph: FakeGraph, **overrides: Any) -> MetaSection:
    values: dict[str, Any] = {
        "graph_url": graph.base_url,
        "pixel_id": PIXEL_ID,
        "capi_access_token": CAPI_TOKEN,
        "capi_rate": 1000.0,  # the tests' own pace: the limiter is tested on its own below
        "timeout": "5s",
        **overrides,
    }
    return MetaSection.model_validate(values)


@pytest.fixture
async def adapter(graph: FakeGraph) -> AsyncIterator[MetaCapiAdapter]:
    made = MetaCapiAdapter(section(graph))
    yield made
    await made.aclose()


@pytest.fixture
def job_ids() -> Iterator[Iterator[int]]:
    yield iter(range(1, 1_000_000))


def snapshot(lead_id: int, leadgen_id: str | None, status: LeadStatus = LeadStatus.IN_WORK) -> LeadSnapshot:
    created = datetime.now(UTC) - timedelta(days=1)
    return LeadSnapshot(
        lead_id=lead_id,
        client_name="Aziz",
        phone_number="+998901234567",
        status=status,
        source="Instagram",
        budget=None,
        notes=None,
        assignee_telegram_id=None,
        created_at=created,
        updated_at=created,
        leadgen_id=leadgen_id,
    )


def stage_job(
    job_id: int,
    *,
    lead_id: int = 7,
    leadgen_id: str | None = LEADGEN_ID,
    status: str = LeadStatus.IN_WORK.value,
    at: datetime | str | None = None,
    kind: JobKind = JobKind.STAGE,
    deleted: bool = False,
) -> SyncJob:
    moment = at if at is not None else datetime.now(UTC) - timedelta(minutes=3)
    return SyncJob(
        id=job_id,
        lead_id=lead_id,
        kind=kind,
        payload={"status": status, "at": moment.isoformat() if isinstance(moment, datetime) else moment},
        attempts=0,
        remote_id=None,
        lead=None if deleted else snapshot(lead_id, leadgen_id),
    )


def many(count: int, *, first_lead: int = 1) -> list[SyncJob]:
    return [stage_job(n, lead_id=first_lead + n, leadgen_id=str(10**15 + first_lead + n)) for n in range(count)]


# ---- what is sent ------------------------------------------------------------------------------------------


async def test_one_stage_becomes_one_event_as_meta_documents_it(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

    outcomes = await adapter.deliver([stage_job(41, lead_id=7, status=LeadStatus.CLOSED.value, at=at)])

    assert outcomes == [Outcome.done(41)]
    assert graph.events == [
        {
            "event_name": "Closed won",
            "event_time": int(at.timestamp()),
            "event_id": f"leadbot-7-3-{int(at.timestamp())}",
            "action_source": "system_generated",
            "user_data": {"lead_id": int(LEADGEN_ID)},
            "custom_data": {"event_source": "crm", "lead_event_source": "LeadBot"},
        }
    ]
    # One request, to the dataset's events edge, the token in the body and never in the address.
    assert graph.requests == [(f"/v25.0/{PIXEL_ID}/events", {})]


async def test_every_status_has_an_english_stage_name(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    jobs = [stage_job(n, status=status.value) for n, status in enumerate(LeadStatus, start=1)]

    assert all(outcome.ok for outcome in await adapter.deliver(jobs))

    assert [event["event_name"] for event in graph.events] == ["New lead", "In work", "Closed won", "Refused"]


async def test_stage_names_can_be_overridden(graph: FakeGraph) -> None:
    adapter = MetaCapiAdapter(section(graph), stage_names={"новый": "Initial lead from Facebook"})
    try:
        await adapter.deliver([stage_job(1, status="новый"), stage_job(2, status="закрыт")])
    finally:
        await adapter.aclose()

    assert [event["event_name"] for event in graph.events] == ["Initial lead from Facebook", "Closed won"]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-03-01T10:00:00Z", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("2026-03-01T15:00:00+05:00", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("2026-03-01T10:00:00", datetime(2026, 3, 1, 10, tzinfo=UTC)),  # no offset: UTC
    ],
)
async def test_the_time_of_the_change_is_read_as_utc(
    adapter: MetaCapiAdapter, written: str, expected: datetime
) -> None:
    event = adapter.event_for(stage_job(1, at=written), expected + timedelta(days=1))

    assert isinstance(event, dict)
    assert event["event_time"] == int(expected.timestamp())


async def test_2500_jobs_go_in_three_requests(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    jobs = many(2500)

    outcomes = await adapter.deliver(jobs)

    assert outcomes == [Outcome.done(job.id) for job in jobs]
    assert graph.batches == [MAX_EVENTS, MAX_EVENTS, 500]
    assert len(graph.events) == 2500
    assert adapter.batch_size == MAX_EVENTS


# ---- what is never sent -------------------------------------------------------------------------------------


async def test_an_event_older_than_7_days_is_never_sent(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    now = datetime.now(UTC)
    old = stage_job(1, at=now - timedelta(days=7, minutes=1))
    fresh = stage_job(2, lead_id=8, at=now - timedelta(days=6, hours=23))

    outcomes = await adapter.deliver([old, fresh])

    assert outcomes == [Outcome.failed(1, TOO_OLD, permanent=True), Outcome.done(2)]
    assert len(graph.events) == 1 and graph.events[0]["event_time"] == int(fresh_at(fresh).timestamp())
    assert graph.rejected == []  # Meta would have refused the whole request for the old one


async def test_only_old_events_make_no_request(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    old = stage_job(1, at=datetime.now(UTC) - timedelta(days=30))

    assert await adapter.deliver([old]) == [Outcome.failed(1, TOO_OLD, permanent=True)]
    assert graph.requests == []


async def test_the_fake_refuses_an_old_event_as_meta_does(graph: FakeGraph) -> None:
    """The fake's 7-day rule, checked with a request the adapter would never make."""
    event = {
        "event_name": "In work",
        "event_time": int(time.time()) - 8 * 24 * 3600,
        "action_source": "system_generated",
        "user_data": {"lead_id": int(LEADGEN_ID)},
        "custom_data": {"event_source": "crm", "lead_event_source": "LeadBot"},
    }
    async with httpx.AsyncClient() as client:
        response = await post_raw(client, graph, [event])

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["error_subcode"], error["error_user_title"]) == (
        100,
        2804003,
        "Event Timestamp Too Old",
    )
    assert graph.events == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"action_source": "website"}, "action_source must be system_generated"),
        ({"custom_data": {"lead_event_source": "LeadBot"}}, "event_source must be crm"),
        ({"custom_data": {"event_source": "crm"}}, "lead_event_source is required"),
        ({"user_data": {"lead_id": LEADGEN_ID}}, "lead_id must be the lead's id, an integer"),
        ({"event_time": int(time.time()) + 3600}, "in the future"),
    ],
)
async def test_the_fake_checks_the_crm_payload(graph: FakeGraph, change: dict[str, Any], message: str) -> None:
    good = {
        "event_name": "In work",
        "event_time": int(time.time()) - 60,
        "action_source": "system_generated",
        "user_data": {"lead_id": int(LEADGEN_ID)},
        "custom_data": {"event_source": "crm", "lead_event_source": "LeadBot"},
    }
    async with httpx.AsyncClient() as client:
        response = await post_raw(client, graph, [good, {**good, **change}])

    assert response.status_code == 400
    assert message in response.json()["error"]["error_user_msg"]
    assert graph.events == []  # one bad event: the whole request refused


async def test_a_lead_without_a_meta_lead_id_fails_for_good(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    outcomes = await adapter.deliver([stage_job(1, leadgen_id=None), stage_job(2, leadgen_id="12ab")])

    assert [(o.ok, o.permanent) for o in outcomes] == [(False, True), (False, True)]
    assert outcomes[0].error is not None and "no Meta lead id (leadgen_id)" in outcomes[0].error
    assert outcomes[1].error is not None and "is not a number" in outcomes[1].error
    assert graph.requests == []


async def test_a_deleted_lead_is_done_with_nothing_sent(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    assert await adapter.deliver([stage_job(1, deleted=True)]) == [Outcome.done(1)]
    assert graph.requests == []


@pytest.mark.parametrize(
    ("job", "error"),
    [
        (stage_job(1, kind=JobKind.UPDATE), "stage changes only, not a update job"),
        (stage_job(1, status="lost"), "unknown status 'lost'"),
        (stage_job(1, at="yesterday"), "is not an ISO-8601 time"),
        (stage_job(1, at=datetime.now(UTC) + timedelta(hours=1)), "is in the future"),
    ],
)
async def test_jobs_meta_cannot_take_fail_for_good(
    graph: FakeGraph, adapter: MetaCapiAdapter, job: SyncJob, error: str
) -> None:
    [outcome] = await adapter.deliver([job])

    assert (outcome.ok, outcome.permanent) == (False, True)
    assert outcome.error is not None and error in outcome.error
    assert graph.requests == []


# ---- what Meta answers --------------------------------------------------------------------------------------


async def test_a_bad_token_is_auth_failed_without_the_token(graph: FakeGraph) -> None:
    wrong = "EAAB-a-wrong-token-that-must-never-be-shown"
    adapter = MetaCapiAdapter(section(graph, capi_access_token=wrong))
    try:
        with pytest.raises(AuthFailed) as caught:
            await adapter.deliver([stage_job(1)])
    finally:
        await adapter.aclose()

    message = str(caught.value)
    assert "code 190" in message and "Invalid OAuth access token" in message
    assert wrong not in message and CAPI_TOKEN not in message
    assert graph.events == []


async def test_an_unknown_dataset_is_auth_failed(graph: FakeGraph) -> None:
    adapter = MetaCapiAdapter(section(graph, pixel_id="999"))
    try:
        with pytest.raises(AuthFailed, match="subcode 33"):
            await adapter.deliver([stage_job(1)])
    finally:
        await adapter.aclose()


async def test_a_token_echoed_by_the_remote_side_is_masked(graph: FakeGraph) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        token = dict(httpx.QueryParams(request.content.decode()))["access_token"]
        return httpx.Response(400, json={"error": {"message": f"bad token {token}", "code": 100}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(echo)) as http:
        [outcome] = await MetaCapiAdapter(section(graph), http=http).deliver([stage_job(1)])

    assert outcome.error is not None and "bad token ***" in outcome.error and CAPI_TOKEN not in outcome.error


@pytest.mark.parametrize("code", [4, 17, 32, 613])
async def test_a_rate_limit_is_retry_later_and_pauses_sending(graph: FakeGraph, code: int) -> None:
    graph.rate_limit, graph.limit_code = 1, code
    adapter = MetaCapiAdapter(section(graph), limit_pause=0.4)
    try:
        await adapter.deliver([stage_job(1)])
        with pytest.raises(RetryLater, match=f"code {code}") as caught:
            await adapter.deliver([stage_job(2)])
        assert caught.value.retry_after == 0.4
        assert graph.limit_errors == 1

        graph.rate_limit = None
        started = time.monotonic()
        assert await adapter.deliver([stage_job(3)]) == [Outcome.done(3)]
        assert time.monotonic() - started >= 0.35  # nobody sent during the pause
    finally:
        await adapter.aclose()
    assert len(graph.events) == 2


async def test_a_business_rate_limit_waits_as_long_as_meta_says(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    graph.rate_limit, graph.limit_code, graph.regain_minutes = 0, 80004, 3

    with pytest.raises(RetryLater, match="code 80004") as caught:
        await adapter.deliver([stage_job(1)])

    assert caught.value.retry_after == 180.0
    assert graph.limit_errors == 1


async def test_an_http_429_is_retry_later(graph: FakeGraph) -> None:
    def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "7"}, text="slow down")

    async with httpx.AsyncClient(transport=httpx.MockTransport(limited)) as http:
        with pytest.raises(RetryLater) as caught:
            await MetaCapiAdapter(section(graph), http=http).deliver([stage_job(1)])

    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_graph_outage_is_retry_later_then_works(
    graph: FakeGraph, adapter: MetaCapiAdapter, status: int
) -> None:
    graph.fail_next(status)

    with pytest.raises(RetryLater, match=f"answered {status}"):
        await adapter.deliver([stage_job(1)])

    assert await adapter.deliver([stage_job(1)]) == [Outcome.done(1)]
    assert len(graph.events) == 1


async def test_a_timeout_is_retry_later(graph: FakeGraph) -> None:
    graph.delay = 1.0
    adapter = MetaCapiAdapter(section(graph, timeout=0.2))
    try:
        with pytest.raises(RetryLater, match="did not answer in time"):
            await adapter.deliver([stage_job(1)])
    finally:
        await adapter.aclose()


async def test_no_connection_is_retry_later(graph: FakeGraph) -> None:
    adapter = MetaCapiAdapter(section(graph, graph_url="http://127.0.0.1:9"))
    try:
        with pytest.raises(RetryLater, match="could not be reached"):
            await adapter.deliver([stage_job(1)])
    finally:
        await adapter.aclose()


async def test_fewer_events_received_than_sent_is_retry_later(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    graph.miscount_next()

    with pytest.raises(RetryLater, match="received 1 of 2 events"):
        await adapter.deliver([stage_job(1), stage_job(2, lead_id=8)])


async def test_one_bad_event_costs_only_itself(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    jobs = many(1000)
    bad = jobs[613]
    assert bad.lead is not None and bad.lead.leadgen_id is not None
    graph.refused_lead_ids.add(int(bad.lead.leadgen_id))

    outcomes = await adapter.deliver(jobs)

    refused = [o for o in outcomes if not o.ok]
    assert [(o.job_id, o.permanent) for o in refused] == [(bad.id, True)]
    assert refused[0].error is not None and "Invalid Lead ID" in refused[0].error
    assert len(graph.events) == 999
    assert graph.events_calls <= 1 + SPLIT_BUDGET  # halving: about two requests per level, ten levels


async def test_splitting_stops_at_its_budget_and_the_rest_comes_back(
    graph: FakeGraph, adapter: MetaCapiAdapter
) -> None:
    jobs = many(64)
    for job in jobs[::2]:  # every other event is bad: the halving cannot isolate them all cheaply
        assert job.lead is not None and job.lead.leadgen_id is not None
        graph.refused_lead_ids.add(int(job.lead.leadgen_id))

    outcomes = await adapter.deliver(jobs)

    assert graph.events_calls == 1 + SPLIT_BUDGET
    assert len(outcomes) == 64 and {o.job_id for o in outcomes} == {job.id for job in jobs}
    for_good = [o for o in outcomes if not o.ok and o.permanent]
    for_now = [o for o in outcomes if not o.ok and not o.permanent]
    assert for_good and for_now  # some bad ones found, the rest to be sent again
    assert all(o.job_id in {j.id for j in jobs[::2]} for o in for_good)
    assert all(o.error is not None and "sent again later" in o.error for o in for_now)


async def test_a_limit_after_a_request_went_through_keeps_what_was_delivered(
    graph: FakeGraph, adapter: MetaCapiAdapter
) -> None:
    graph.rate_limit = 1
    jobs = many(1500)

    outcomes = await adapter.deliver(jobs)

    assert all(o.ok for o in outcomes[:1000])
    assert all(not o.ok and not o.permanent and o.retry_after is not None for o in outcomes[1000:])
    assert len(graph.events) == 1000 and graph.limit_errors == 1


async def test_other_kinds_and_stages_in_one_batch(graph: FakeGraph, adapter: MetaCapiAdapter) -> None:
    jobs = [stage_job(1), stage_job(2, kind=JobKind.COMMENT), stage_job(3, deleted=True), stage_job(4, lead_id=9)]

    outcomes = await adapter.deliver(jobs)

    assert [o.job_id for o in outcomes] == [1, 2, 3, 4]
    assert [(o.ok, o.permanent) for o in outcomes] == [(True, False), (False, True), (True, False), (True, False)]
    assert graph.batches == [2]


async def test_the_limiter_paces_requests(graph: FakeGraph) -> None:
    adapter = MetaCapiAdapter(section(graph, capi_rate=10.0))
    try:
        started = time.monotonic()
        for n in range(4):
            await adapter.deliver([stage_job(n)])
        assert time.monotonic() - started >= 0.25  # four requests at 10/s: three intervals of 0.1 s
    finally:
        await adapter.aclose()


def test_the_adapter_needs_a_dataset_and_a_token(graph: FakeGraph) -> None:
    with pytest.raises(ValueError, match="pixel_id and capi_access_token"):
        MetaCapiAdapter(section(graph, capi_access_token=None))
    with pytest.raises(ValueError, match="pixel_id and capi_access_token"):
        MetaCapiAdapter(section(graph, pixel_id=None))


# ---- the settings ------------------------------------------------------------------------------------------


def test_the_capi_settings_default_to_off() -> None:
    meta = MetaSection()

    assert (meta.pixel_id, meta.capi_access_token, meta.capi_rate, meta.capi_max_attempts) == (None, None, 5.0, 12)
    assert meta.capi_enabled is False


def test_capi_is_enabled_by_a_dataset_and_a_token_alone() -> None:
    meta = MetaSection(pixel_id=" 1234567890 ", capi_access_token="secret-token")

    assert meta.capi_enabled and not meta.enabled  # lead intake (app_secret, ...) is another matter
    assert meta.pixel_id == "1234567890"
    assert "secret-token" not in repr(meta)


@pytest.mark.parametrize(
    ("values", "enabled"),
    [
        ({"pixel_id": "123"}, False),
        ({"capi_access_token": "t"}, False),
        ({"pixel_id": "", "capi_access_token": "t"}, False),
        ({"pixel_id": "123", "capi_access_token": "  "}, False),
        ({"pixel_id": 123, "capi_access_token": "t"}, True),  # a TOML number
    ],
)
def test_blank_values_leave_capi_off(values: dict[str, Any], enabled: bool) -> None:
    assert MetaSection.model_validate(values).capi_enabled is enabled


@pytest.mark.parametrize(
    "values",
    [
        {"pixel_id": "act_123"},
        {"pixel_id": "12 34"},
        {"capi_rate": 0},
        {"capi_rate": -1},
        {"capi_rate": "inf"},
        {"capi_max_attempts": 0},
    ],
)
def test_bad_capi_values_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MetaSection.model_validate(values)


def test_capi_settings_from_the_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[meta]\npixel_id = 555\ncapi_rate = 2.5\n", encoding="utf-8")
    monkeypatch.setenv("LEADBOT_META__CAPI_ACCESS_TOKEN", "from-env")

    meta = load_settings(path).meta

    assert meta.capi_enabled and meta.pixel_id == "555" and meta.capi_rate == 2.5
    assert meta.capi_access_token is not None and meta.capi_access_token.get_secret_value() == "from-env"


# ---- helpers -----------------------------------------------------------------------------------------------


def fresh_at(job: SyncJob) -> datetime:
    return datetime.fromisoformat(job.payload["at"])


async def post_raw(client: httpx.AsyncClient, graph: FakeGraph, events: list[dict[str, Any]]) -> httpx.Response:
    url = f"{graph.base_url}/v25.0/{PIXEL_ID}/events"
    return await client.post(url, json={"data": events, "access_token": CAPI_TOKEN})
