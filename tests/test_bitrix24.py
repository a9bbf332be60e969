"""The Bitrix24 adapter against a fake portal over real HTTP (tests/fake_bitrix24.py): what is sent for each
job, batches, the rate limit, errors, events and the section's validation. Nothing reaches Bitrix24."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from db.enums import LeadStatus
from integrations.bitrix24 import (
    LIMIT_PAUSE,
    Bitrix24Adapter,
    Bitrix24Section,
    EventRejected,
    encode_query,
    parse_event,
)
from integrations.common import AuthFailed, JobKind, LeadSnapshot, Outcome, RetryLater, SyncJob
from tests.fake_bitrix24 import APPLICATION_TOKEN, WEBHOOK_CODE, FakeBitrix24, parse_php_query

SELLER_TG = 111
SELLER_B24 = 7
PHONE = "+998901234567"
MOMENT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def snapshot(lead_id: int = 5, **changes: Any) -> LeadSnapshot:
    values: dict[str, Any] = {
        "lead_id": lead_id,
        "client_name": "Aziz Karimov",
        "phone_number": PHONE,
        "status": LeadStatus.NEW,
        "source": "Instagram",
        "budget": 150000.0,
        "notes": "2 rooms, Chilonzor",
        "assignee_telegram_id": SELLER_TG,
        "created_at": MOMENT,
        "updated_at": MOMENT,
    }
    return LeadSnapshot(**{**values, **changes})


def job(
    job_id: int,
    kind: JobKind,
    *,
    lead: LeadSnapshot | None = None,
    remote_id: str | None = None,
    attempts: int = 0,
    comment: str | None = None,
    first_sync: bool = False,
    missing: bool = False,
) -> SyncJob:
    lead = None if missing else (lead or snapshot())
    lead_id = lead.lead_id if lead is not None else 5
    return SyncJob(job_id, lead_id, kind, {}, attempts, remote_id, lead, comment=comment, first_sync=first_sync)


def section_for(portal: FakeBitrix24, **overrides: Any) -> Bitrix24Section:
    values: dict[str, Any] = {
        "webhook_url": portal.webhook_url,
        "application_token": APPLICATION_TOKEN,
        "sources": {"Instagram": "ADVERTISING", "Рекомендация": "RECOMMENDATION"},
        "users": {str(SELLER_TG): SELLER_B24},
        # Fast for tests; the fake's bucket (50) is what the limit tests shrink.
        "rate": 50,
    }
    return Bitrix24Section.model_validate({**values, **overrides})


@pytest.fixture
async def portal() -> AsyncIterator[FakeBitrix24]:
    async with FakeBitrix24() as server:
        yield server


@pytest.fixture
async def adapter(portal: FakeBitrix24) -> AsyncIterator[Bitrix24Adapter]:
    bitrix = Bitrix24Adapter(section_for(portal))
    yield bitrix
    await bitrix.aclose()


async def deliver_with(section: Bitrix24Section, jobs: list[SyncJob]) -> list[Outcome]:
    bitrix = Bitrix24Adapter(section)
    try:
        return await bitrix.deliver(jobs)
    finally:
        await bitrix.aclose()


def assert_no_secret(text: str) -> None:
    assert WEBHOOK_CODE not in text
    assert "/rest/1/" not in text


# --- what is sent --------------------------------------------------------------------------------------


async def test_create_sends_every_field_and_links_the_new_lead(adapter: Bitrix24Adapter, portal: FakeBitrix24) -> None:
    [outcome] = await adapter.deliver([job(1, JobKind.CREATE)])

    assert outcome.ok and outcome.job_id == 1
    remote = portal.leads[int(outcome.remote_id or 0)]
    assert remote == {
        "ID": int(outcome.remote_id or 0),
        "TITLE": "Aziz Karimov (LeadBot #5)",
        "NAME": "Aziz Karimov",
        "PHONE": [{"VALUE": PHONE, "VALUE_TYPE": "WORK"}],
        "STATUS_ID": "NEW",
        "SOURCE_ID": "ADVERTISING",
        "SOURCE_DESCRIPTION": "Instagram",
        "ASSIGNED_BY_ID": SELLER_B24,
        "OPPORTUNITY": 150000.0,
        "CURRENCY_ID": "USD",
        "COMMENTS": "2 rooms, Chilonzor",
    }
    # One plain call, with the notification event asked for; no lookup on a first try.
    assert [method for method, _ in portal.requests] == ["crm.lead.add"]
    assert portal.requests[0][1]["params"] == {"REGISTER_SONET_EVENT": "Y"}


async def test_a_lead_without_budget_notes_or_mapped_seller_leaves_those_out(
    adapter: Bitrix24Adapter, portal: FakeBitrix24
) -> None:
    lead = snapshot(budget=None, notes=None, assignee_telegram_id=999, source="Сайт")
    [outcome] = await adapter.deliver([job(1, JobKind.CREATE, lead=lead)])

    fields = portal.requests[0][1]["fields"]
    assert "OPPORTUNITY" not in fields and "COMMENTS" not in fields and "ASSIGNED_BY_ID" not in fields
    remote = portal.leads[int(outcome.remote_id or 0)]
    assert remote["SOURCE_ID"] == "OTHER" and remote["SOURCE_DESCRIPTION"] == "Сайт"
    assert remote["ASSIGNED_BY_ID"] == 1  # the webhook's own user, as Bitrix24 does


async def test_update_sends_the_current_state(adapter: Bitrix24Adapter, portal: FakeBitrix24) -> None:
    remote_id = portal.add_lead(PHONE)
    lead = snapshot(status=LeadStatus.IN_WORK, client_name="Aziz K.", budget=None, source="Рекомендация")

    [outcome] = await adapter.deliver([job(1, JobKind.UPDATE, lead=lead, remote_id=str(remote_id))])

    assert outcome == Outcome.done(1)
    remote = portal.leads[remote_id]
    assert remote["STATUS_ID"] == "IN_PROCESS"
    assert remote["TITLE"] == "Aziz K. (LeadBot #5)" and remote["NAME"] == "Aziz K."
    assert remote["SOURCE_ID"] == "RECOMMENDATION"
    assert remote["ASSIGNED_BY_ID"] == SELLER_B24
    assert remote["OPPORTUNITY"] is None  # the budget removed here is cleared there
    assert remote["PHONE"] == [{"VALUE": PHONE, "VALUE_TYPE": "WORK"}]  # not sent again (it would be added)


async def test_comment_goes_to_the_lead_timeline(adapter: Bitrix24Adapter, portal: FakeBitrix24) -> None:
    remote_id = portal.add_lead(PHONE)

    [outcome] = await adapter.deliver([job(1, JobKind.COMMENT, remote_id=str(remote_id), comment="Called, no answer")])

    assert outcome == Outcome.done(1)
    assert portal.comments == [{"ID": 1, "ENTITY_ID": remote_id, "ENTITY_TYPE": "lead", "COMMENT": "Called, no answer"}]


async def test_a_retried_comment_that_reached_bitrix24_is_not_added_twice(
    adapter: Bitrix24Adapter, portal: FakeBitrix24
) -> None:
    remote_id = portal.add_lead(PHONE)
    first = job(1, JobKind.COMMENT, remote_id=str(remote_id), comment="Called, no answer")
    await adapter.deliver([first])  # reached Bitrix24; say its answer was lost, so it is tried again
    retried = job(1, JobKind.COMMENT, remote_id=str(remote_id), comment="Called, no answer", attempts=1)
    other = job(2, JobKind.COMMENT, lead=snapshot(6), remote_id=str(remote_id), comment="Wants 3 rooms", attempts=1)

    outcomes = await adapter.deliver([retried, other])

    assert outcomes == [Outcome.done(1), Outcome.done(2)]
    assert [c["COMMENT"] for c in portal.comments] == ["Called, no answer", "Wants 3 rooms"]
    assert portal.calls("crm.timeline.comment.list") == 2


@pytest.mark.parametrize(
    ("status_id", "expected"),
    [
        ("NEW", LeadStatus.NEW),
        ("IN_PROCESS", LeadStatus.IN_WORK),
        ("CONVERTED", LeadStatus.CLOSED),
        ("JUNK", LeadStatus.REFUSED),
        ("PROCESSED", None),  # a stage we do not map
    ],
)
async def test_pull_maps_the_status_back(
    adapter: Bitrix24Adapter, portal: FakeBitrix24, status_id: str, expected: LeadStatus | None
) -> None:
    remote_id = portal.add_lead(PHONE, status_id=status_id)

    [outcome] = await adapter.deliver([job(1, JobKind.PULL, remote_id=str(remote_id))])

    assert outcome == Outcome.done(1, remote_status=expected)
    assert portal.calls("crm.lead.get") == 1


async def test_custom_status_table_is_used_both_ways(portal: FakeBitrix24) -> None:
    portal.status_ids.add("UC_SOLD")
    section = section_for(portal, statuses={"закрыт": "UC_SOLD"})
    remote_id = portal.add_lead(PHONE)

    [update] = await deliver_with(
        section, [job(1, JobKind.UPDATE, lead=snapshot(status=LeadStatus.CLOSED), remote_id=str(remote_id))]
    )
    assert update.ok and portal.leads[remote_id]["STATUS_ID"] == "UC_SOLD"

    portal.move(remote_id, "CONVERTED")  # no longer ours: "закрыт" is UC_SOLD now
    [pull] = await deliver_with(section, [job(2, JobKind.PULL, remote_id=str(remote_id))])
    assert pull == Outcome.done(2, remote_status=None)


async def test_jobs_that_need_no_call(adapter: Bitrix24Adapter, portal: FakeBitrix24) -> None:
    outcomes = await adapter.deliver(
        [
            job(1, JobKind.UPDATE, remote_id="9", missing=True),  # deleted here
            job(2, JobKind.UPDATE),  # not created there yet
            job(3, JobKind.STAGE, remote_id="9"),
            job(4, JobKind.CREATE, remote_id="9"),  # already linked
        ]
    )

    assert outcomes[0] == Outcome.done(1)
    assert not outcomes[1].ok and not outcomes[1].permanent and "not yet created" in (outcomes[1].error or "")
    assert not outcomes[2].ok and outcomes[2].permanent
    assert outcomes[3] == Outcome.done(4, remote_id="9")
    assert portal.requests == []


# --- batches ------------------------------------------------------------------------------------------


async def test_120_updates_go_in_three_batch_requests(adapter: Bitrix24Adapter, portal: FakeBitrix24) -> None:
    remote_ids = [portal.add_lead(f"+99890000{n:04d}") for n in range(120)]
    jobs = [
        job(n + 1, JobKind.UPDATE, lead=snapshot(lead_id=n + 1, status=LeadStatus.IN_WORK), remote_id=str(remote_id))
        for n, remote_id in enumerate(remote_ids)
    ]

    outcomes = await adapter.deliver(jobs)

    assert outcomes == [Outcome.done(n + 1) for n in range(120)]
    assert [method for method, _ in portal.requests] == ["batch"] * 3
    assert [len(body["cmd"]) for _, body in portal.requests] == [50, 50, 20]
    assert portal.calls("crm.lead.update") == 120
    assert all(portal.leads[remote_id]["STATUS_ID"] == "IN_PROCESS" for remote_id in remote_ids)
    assert portal.leads[remote_ids[42]]["TITLE"] == "Aziz Karimov (LeadBot #43)"


async def test_a_mixed_batch_answers_each_job(adapter: Bitrix24Adapter, portal: FakeBitrix24) -> None:
    existing = portal.add_lead("+998901111111", status_id="JUNK")
    # Characters that mean something in a query string must arrive intact.
    tricky = snapshot(lead_id=6, client_name="Ali & Vali = 100% ok?", notes="a+b [x] #1\nвторая строка")

    outcomes = await adapter.deliver(
        [
            job(1, JobKind.CREATE, lead=tricky),
            job(2, JobKind.UPDATE, remote_id=str(existing)),
            job(3, JobKind.COMMENT, remote_id=str(existing), comment="Viewing on Friday"),
            job(4, JobKind.PULL, remote_id=str(existing)),
        ]
    )

    assert [method for method, _ in portal.requests] == ["batch"]
    created = portal.leads[int(outcomes[0].remote_id or 0)]
    assert created["TITLE"] == "Ali & Vali = 100% ok? (LeadBot #6)"
    assert created["COMMENTS"] == "a+b [x] #1\nвторая строка"
    assert created["PHONE"] == [{"VALUE": PHONE, "VALUE_TYPE": "WORK"}]
    assert created["OPPORTUNITY"] == 150000.0 and created["ASSIGNED_BY_ID"] == SELLER_B24
    assert outcomes[1:] == [Outcome.done(2), Outcome.done(3), Outcome.done(4, remote_status=LeadStatus.NEW)]
    # The batch runs in order: the update (NEW) came before the pull.
    assert portal.comments[0]["COMMENT"] == "Viewing on Friday"


async def test_one_refused_command_fails_alone(adapter: Bitrix24Adapter, portal: FakeBitrix24) -> None:
    existing = portal.add_lead(PHONE)

    outcomes = await adapter.deliver(
        [
            job(1, JobKind.UPDATE, remote_id=str(existing)),
            job(2, JobKind.UPDATE, remote_id="999999"),  # deleted there
        ]
    )

    assert outcomes[0] == Outcome.done(1)
    assert not outcomes[1].ok and outcomes[1].permanent
    assert "Not found" in (outcomes[1].error or "")


def test_batch_query_strings_read_back_as_php_reads_them() -> None:
    params = {"id": 12, "fields": {"TITLE": "A&B=c?", "PHONE": [{"VALUE": "+998 90", "VALUE_TYPE": "WORK"}]}}

    query = encode_query(params)

    assert parse_php_query(query) == {
        "id": "12",
        "fields": {"TITLE": "A&B=c?", "PHONE": [{"VALUE": "+998 90", "VALUE_TYPE": "WORK"}]},
    }


async def test_a_value_quoting_a_batch_reference_is_sent_on_its_own(
    adapter: Bitrix24Adapter, portal: FakeBitrix24
) -> None:
    existing = portal.add_lead(PHONE)

    outcomes = await adapter.deliver(
        [
            job(1, JobKind.COMMENT, remote_id=str(existing), comment="see $result[j2] in the old system"),
            job(2, JobKind.COMMENT, remote_id=str(existing), comment="plain"),
            job(3, JobKind.COMMENT, remote_id=str(existing), comment="also plain"),
        ]
    )

    assert all(outcome.ok for outcome in outcomes)
    assert [method for method, _ in portal.requests] == ["batch", "crm.timeline.comment.add"]
    assert portal.comments[-1]["COMMENT"] == "see $result[j2] in the old system"


# --- no duplicates --------------------------------------------------------------------------------------


async def test_a_create_whose_answer_was_lost_links_the_lead_on_retry(
    adapter: Bitrix24Adapter, portal: FakeBitrix24
) -> None:
    portal.lose_next_answers(1)
    with pytest.raises(RetryLater):
        await adapter.deliver([job(1, JobKind.CREATE)])
    assert len(portal.leads) == 1  # made there, but we never heard

    [outcome] = await adapter.deliver([job(1, JobKind.CREATE, attempts=1)])

    assert outcome == Outcome.done(1, remote_id=str(next(iter(portal.leads))))
    assert len(portal.leads) == 1
    assert portal.calls("crm.lead.add") == 1 and portal.calls("crm.duplicate.findbycomm") == 1


async def test_a_retry_with_nothing_there_creates(adapter: Bitrix24Adapter, portal: FakeBitrix24) -> None:
    portal.add_lead("+998907777777")  # another phone

    [outcome] = await adapter.deliver([job(1, JobKind.CREATE, attempts=2)])

    assert outcome.ok and len(portal.leads) == 2
    assert [method for method, _ in portal.requests] == ["crm.duplicate.findbycomm", "crm.lead.add"]


async def test_first_sync_links_by_phone_written_any_way(adapter: Bitrix24Adapter, portal: FakeBitrix24) -> None:
    older = portal.add_lead("+998 90 123-45-67")
    newer = portal.add_lead("998901234567")
    others = [job(n, JobKind.CREATE, lead=snapshot(lead_id=n, phone_number=f"+99893000000{n}")) for n in (2, 3)]

    outcomes = await adapter.deliver([job(1, JobKind.CREATE, first_sync=True), *others])

    assert outcomes[0] == Outcome.done(1, remote_id=str(newer)) and older < newer
    assert outcomes[1].ok and outcomes[2].ok  # not looked up (a first try), created
    assert len(portal.leads) == 4
    assert await adapter.find_lead_by_phone("+998 (90) 123 45 67") == str(newer)
    assert await adapter.find_lead_by_phone("+998935555555") is None


# --- the rate limit -----------------------------------------------------------------------------------


async def test_query_limit_exceeded_retries_later_and_pauses_the_limiter() -> None:
    async with FakeBitrix24(bucket_size=3, drain_rate=1.0) as portal:
        remote_id = str(portal.add_lead(PHONE))
        bitrix = Bitrix24Adapter(section_for(portal, rate=100))
        try:
            for n in range(3):
                assert (await bitrix.deliver([job(n, JobKind.PULL, remote_id=remote_id)]))[0].ok
            with pytest.raises(RetryLater) as caught:
                await bitrix.deliver([job(9, JobKind.PULL, remote_id=remote_id)])
            assert caught.value.retry_after == LIMIT_PAUSE
            assert "QUERY_LIMIT_EXCEEDED" in str(caught.value)
            assert portal.limit_errors == 1

            started = time.monotonic()
            [outcome] = await bitrix.deliver([job(10, JobKind.PULL, remote_id=remote_id)])
            assert outcome.ok
            assert time.monotonic() - started >= LIMIT_PAUSE - 0.05  # nobody sent during the pause
            assert portal.limit_errors == 1
        finally:
            await bitrix.aclose()


async def pull_burst(rate: float, count: int) -> tuple[FakeBitrix24, list[Any]]:
    """``count`` single pulls at once through one adapter; the portal's bucket is 6 deep, 20 a second."""
    async with FakeBitrix24(bucket_size=6, drain_rate=20.0) as portal:
        remote_id = str(portal.add_lead(PHONE))
        bitrix = Bitrix24Adapter(section_for(portal, rate=rate))
        try:
            delivered = await asyncio.gather(
                *(bitrix.deliver([job(n, JobKind.PULL, remote_id=remote_id)]) for n in range(count)),
                return_exceptions=True,
            )
        finally:
            await bitrix.aclose()
        return portal, delivered


async def test_the_limiter_keeps_a_burst_under_the_bucket() -> None:
    paced, delivered = await pull_burst(rate=20.0, count=24)
    assert paced.limit_errors == 0
    assert all(isinstance(result, list) and result[0].ok for result in delivered)

    # The control: the same burst unpaced overflows the bucket, so the check above can fail.
    unpaced, _ = await pull_burst(rate=10_000.0, count=24)
    assert unpaced.limit_errors > 0


# --- errors ---------------------------------------------------------------------------------------------


async def test_server_errors_and_outages_are_retried_later(adapter: Bitrix24Adapter, portal: FakeBitrix24) -> None:
    remote_id = str(portal.add_lead(PHONE))
    portal.fail_next(500)
    with pytest.raises(RetryLater) as caught:
        await adapter.deliver([job(1, JobKind.UPDATE, remote_id=remote_id)])
    assert "INTERNAL_SERVER_ERROR" in str(caught.value)

    portal.outage(0.3)
    with pytest.raises(RetryLater):
        await adapter.deliver([job(1, JobKind.UPDATE, remote_id=remote_id), job(2, JobKind.PULL, remote_id=remote_id)])
    await asyncio.sleep(0.35)

    assert (await adapter.deliver([job(1, JobKind.UPDATE, remote_id=remote_id)]))[0].ok


async def test_a_timeout_and_a_refused_connection_are_retried_later(portal: FakeBitrix24) -> None:
    remote_id = str(portal.add_lead(PHONE))
    portal.delay = 0.5
    with pytest.raises(RetryLater) as slow:
        await deliver_with(section_for(portal, timeout=0.1), [job(1, JobKind.PULL, remote_id=remote_id)])
    assert "no answer in time" in str(slow.value)
    assert_no_secret(str(slow.value))

    async with FakeBitrix24() as gone:
        closed_url = gone.webhook_url
    section = Bitrix24Section.model_validate({"webhook_url": closed_url, "rate": 50})
    with pytest.raises(RetryLater) as refused:
        await deliver_with(section, [job(1, JobKind.PULL, remote_id=remote_id)])
    assert_no_secret(str(refused.value))


async def test_a_refused_field_fails_for_good(portal: FakeBitrix24) -> None:
    section = section_for(portal, statuses={"новый": "NOT_A_STAGE"})

    [outcome] = await deliver_with(section, [job(1, JobKind.CREATE)])

    assert not outcome.ok and outcome.permanent
    assert "NOT_A_STAGE" in (outcome.error or "") and "ERROR_CORE" in (outcome.error or "")
    assert portal.leads == {}


async def test_a_batch_refused_as_a_whole_is_sent_command_by_command(
    adapter: Bitrix24Adapter, portal: FakeBitrix24
) -> None:
    existing = str(portal.add_lead(PHONE))
    portal.fail_next(400, error="ERROR_BATCH_LENGTH_EXCEEDED")

    outcomes = await adapter.deliver(
        [job(1, JobKind.UPDATE, remote_id=existing), job(2, JobKind.PULL, remote_id=existing)]
    )

    assert outcomes == [Outcome.done(1), Outcome.done(2, remote_status=LeadStatus.NEW)]
    assert [method for method, _ in portal.requests] == ["batch", "crm.lead.update", "crm.lead.get"]


async def test_an_outage_after_a_create_keeps_what_was_done() -> None:
    async with FakeBitrix24() as portal:
        existing = str(portal.add_lead(PHONE))
        jobs = [job(1, JobKind.CREATE, lead=snapshot(lead_id=1))]
        jobs += [job(n, JobKind.UPDATE, lead=snapshot(lead_id=n), remote_id=existing) for n in range(2, 53)]
        # The first batch (50 commands, the create among them) goes through; then the portal fails.
        portal.fail_next(500, times=5, after=1)
        bitrix = Bitrix24Adapter(section_for(portal))
        try:
            outcomes = await bitrix.deliver(jobs)
        finally:
            await bitrix.aclose()

    assert outcomes[0].ok and outcomes[0].remote_id is not None  # the new lead's link is not lost
    assert all(outcome.ok for outcome in outcomes[:50])
    assert [outcome.ok for outcome in outcomes[50:]] == [False, False]
    assert not any(outcome.permanent for outcome in outcomes[50:])


async def test_a_wrong_webhook_fails_authentication_without_telling_the_secret(portal: FakeBitrix24) -> None:
    wrong = portal.webhook_url.replace(WEBHOOK_CODE, "wrongcode123")
    section = section_for(portal, webhook_url=wrong)

    for jobs in ([job(1, JobKind.CREATE)], [job(1, JobKind.CREATE), job(2, JobKind.PULL, remote_id="1")]):
        with pytest.raises(AuthFailed) as caught:
            await deliver_with(section, jobs)
        message = str(caught.value)
        assert "INVALID_CREDENTIALS" in message
        assert "wrongcode123" not in message and "/rest/" not in message
    assert portal.leads == {}


async def test_an_address_that_is_no_rest_endpoint_fails_authentication(portal: FakeBitrix24) -> None:
    wrong = portal.webhook_url.replace("/rest/", "/bitrix/rest/")

    with pytest.raises(AuthFailed) as caught:
        await deliver_with(section_for(portal, webhook_url=wrong), [job(1, JobKind.PULL, remote_id="1")])

    assert "HTTP 404" in str(caught.value)
    assert_no_secret(str(caught.value))


async def test_a_redirect_is_a_configuration_problem() -> None:
    async def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://elsewhere.example/"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(redirect))
    section = Bitrix24Section.model_validate({"webhook_url": "http://portal.example/rest/1/abc123/", "rate": 50})
    bitrix = Bitrix24Adapter(section, http=http)
    try:
        with pytest.raises(AuthFailed) as caught:
            await bitrix.deliver([job(1, JobKind.PULL, remote_id="1")])
        assert "abc123" not in str(caught.value)
    finally:
        await bitrix.aclose()
    assert not http.is_closed  # not ours to close
    await http.aclose()


# --- events ---------------------------------------------------------------------------------------------


async def test_an_update_event_names_the_lead(portal: FakeBitrix24) -> None:
    section = section_for(portal)
    remote_id = portal.add_lead(PHONE)

    body = portal.move(remote_id, "CONVERTED")

    assert parse_event(section, body) == str(remote_id)
    assert parse_event(section, body.encode()) == str(remote_id)
    assert parse_event(section, dict(httpx.QueryParams(body))) == str(remote_id)
    # The pull it leads to brings the new status.
    [outcome] = await deliver_with(section, [job(1, JobKind.PULL, remote_id=str(remote_id))])
    assert outcome.remote_status is LeadStatus.CLOSED


async def test_events_with_a_wrong_or_missing_token_are_rejected(portal: FakeBitrix24) -> None:
    remote_id = portal.add_lead(PHONE)
    body = dict(httpx.QueryParams(portal.move(remote_id, "JUNK")))

    with pytest.raises(EventRejected):
        parse_event(section_for(portal), {**body, "auth[application_token]": "forged"})
    with pytest.raises(EventRejected):
        parse_event(section_for(portal), {k: v for k, v in body.items() if k != "auth[application_token]"})
    with pytest.raises(EventRejected):
        parse_event(section_for(portal, application_token=None), body)  # none set: nothing is taken
    with pytest.raises(EventRejected):
        parse_event(section_for(portal), {**body, "data[FIELDS][ID]": "12; drop"})


def test_other_events_name_no_lead() -> None:
    section = Bitrix24Section.model_validate({"application_token": "tok"})
    for event in ("ONCRMLEADADD", "ONCRMLEADDELETE", "ONCRMDEALUPDATE"):
        form = {"event": event, "data[FIELDS][ID]": "5", "auth[application_token]": "tok"}
        assert parse_event(section, form) is None


# --- the section ----------------------------------------------------------------------------------------


def test_section_defaults_and_tables() -> None:
    section = Bitrix24Section.model_validate(
        {"statuses": {"отказ": "UC_LOST"}, "users": {"111": 7}, "sources": {" Instagram ": "ADVERTISING"}}
    )

    assert not section.enabled
    assert section.statuses == {
        LeadStatus.NEW: "NEW",
        LeadStatus.IN_WORK: "IN_PROCESS",
        LeadStatus.CLOSED: "CONVERTED",
        LeadStatus.REFUSED: "UC_LOST",
    }
    assert section.users == {111: 7}
    assert section.source_id("Instagram") == "ADVERTISING" and section.source_id("Сайт") == "OTHER"
    assert section.status_from("UC_LOST") is LeadStatus.REFUSED and section.status_from("JUNK") is None
    assert section.timeout.total_seconds() == 10 and section.rate == 2.0 and section.max_attempts == 12


def test_webhook_url_is_checked_and_completed() -> None:
    section = Bitrix24Section.model_validate({"webhook_url": " https://b24-x.bitrix24.ru/rest/1/abc123 "})
    assert section.enabled
    assert section.webhook_url is not None
    assert section.webhook_url.get_secret_value() == "https://b24-x.bitrix24.ru/rest/1/abc123/"
    assert "abc123" not in repr(section)

    for bad in (
        "ftp://b24-x.bitrix24.ru/rest/1/abc123/",
        "https://b24-x.bitrix24.ru/rest/1/abc123/crm.lead.add.json",
        "https://b24-x.bitrix24.ru/abc123/",
    ):
        with pytest.raises(ValidationError) as caught:
            Bitrix24Section.model_validate({"webhook_url": bad})
        assert "abc123" not in str(caught.value)  # the error never echoes the secret


@pytest.mark.parametrize(
    "values",
    [
        {"statuses": {"потерян": "JUNK"}},  # not a status of ours
        {"statuses": {"отказ": "NEW"}},  # two statuses on one STATUS_ID
        {"statuses": {"отказ": " "}},
        {"rate": 0},
        {"currency": "dollars"},
        {"users": {"abc": 1}},
        {"unknown_key": 1},
    ],
)
def test_section_rejects(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Bitrix24Section.model_validate(values)


def test_an_adapter_needs_a_webhook() -> None:
    with pytest.raises(ValueError, match="webhook_url"):
        Bitrix24Adapter(Bitrix24Section())
