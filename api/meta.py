"""Meta lead ads: turning a recorded ``leadgen_id`` into a lead, through the Graph API, with retries.

The webhook (``api.routes.meta``) only records each leadgen id (``db.repositories.meta``) and kicks the
fetcher. The fetcher claims due rows in a short unit of work, asks the Graph API for each lead's answers
with no unit open, then writes the result in another unit: a new lead (source Instagram or Facebook by
the form's platform, created by the integration user as webhook leads are, so it is assigned and
announced as any new lead), or, when a live lead has the phone already, a comment on that lead ("the
client came back"), which its salesperson is notified of as of any comment. A failed fetch (a Graph
outage, a timeout, an error answer) is tried again with backoff; answers that can make no lead (no valid
phone) end the row as ``failed``. Rows are never deleted: a leadgen id is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from bot.config import Settings
from bot.texts import texts_for
from db.errors import DuplicateLead, InvalidInput
from db.models import utcnow
from db.repositories.leads import LeadDraft
from db.repositories.meta import Claimed
from db.uow import UnitOfWork, UnitOfWorkFactory
from db.validation import MAX_COMMENT, MAX_NOTES, clean_name, normalize_phone, parse_budget

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
# The longest the fetcher sleeps before looking again for rows due later.
MAX_SLEEP = 60.0
GRAPH_FIELDS = "created_time,field_data,ad_id,form_id,platform"


class FetchFailed(Exception):
    """The Graph API gave no answers this time (to be tried again)."""


@dataclass(slots=True)
class Answers:
    platform: str | None
    form_id: str | None
    ad_id: str | None
    fields: list[tuple[str, str]]  # (field name, its answer), in the form's order


def parse_answers(data: Any) -> Answers:
    if not isinstance(data, dict):
        raise FetchFailed("the Graph API answered something other than an object")
    fields: list[tuple[str, str]] = []
    for item in data.get("field_data") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        values = [str(v) for v in item.get("values") or [] if v is not None]
        fields.append((item["name"], ", ".join(values)))
    platform = data.get("platform")
    return Answers(
        platform=platform if isinstance(platform, str) else None,
        form_id=str(data["form_id"]) if data.get("form_id") is not None else None,
        ad_id=str(data["ad_id"]) if data.get("ad_id") is not None else None,
        fields=fields,
    )


class MetaLeadFetcher:
    def __init__(self, factory: UnitOfWorkFactory, settings: Settings) -> None:
        self.factory = factory
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._again = False

    # ---- running -----------------------------------------------------------------------------------------

    def kick(self) -> None:
        """Work through the due rows now (in the background); a running pass looks once more at its end."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.drain(), name="leadbot-meta-fetch")
        else:
            self._again = True

    async def stop(self) -> None:
        """Stop a pass that is running or sleeping (shutdown); rows not done stay queued for next time."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def idle(self) -> None:
        """Wait for the background pass to end (tests; shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def drain(self) -> None:
        """Handle due rows until none is left pending (sleeping until rows waiting for a retry are due)."""
        async with httpx.AsyncClient(timeout=self.settings.meta.timeout.total_seconds()) as client:
            while True:
                try:
                    if await self.run_once(client):
                        continue
                    async with self.factory(read_only=True) as uow:
                        next_due = await uow.meta.next_due_at()
                except Exception:
                    log.exception("meta lead fetcher: a pass failed; trying again shortly")
                    await asyncio.sleep(5)
                    continue
                if next_due is None:
                    if self._again:
                        self._again = False
                        continue
                    return
                await asyncio.sleep(min(max((next_due - utcnow()).total_seconds(), 0.0), MAX_SLEEP))

    async def run_once(self, client: httpx.AsyncClient) -> int:
        """Claim the due rows and handle each; how many were claimed."""
        async with self.factory() as uow:
            claimed = await uow.meta.claim(utcnow(), lease=LEASE)
            await uow.commit()
        for row in claimed:
            await self._handle(client, row)
        return len(claimed)

    # ---- one row -------------------------------------------------------------------------------------------

    async def _fetch(self, client: httpx.AsyncClient, leadgen_id: str) -> Answers:
        meta = self.settings.meta
        assert meta.page_access_token is not None
        url = f"{meta.graph_url}/{meta.graph_version}/{leadgen_id}"
        params = {"fields": GRAPH_FIELDS, "access_token": meta.page_access_token.get_secret_value()}
        try:
            response = await client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise FetchFailed(f"the Graph API answered {response.status_code}: {response.text[:300]}")
        try:
            return parse_answers(response.json())
        except ValueError:
            raise FetchFailed("the Graph API answered something other than JSON") from None

    async def _handle(self, client: httpx.AsyncClient, row: Claimed) -> None:
        try:
            answers = await self._fetch(client, row.leadgen_id)
        except FetchFailed as exc:
            await self._failed(row, str(exc), retry=True)
            return
        try:
            async with self.factory() as uow:
                lead_id = await self._intake(uow, row, answers)
                await uow.meta.done(row.id, lead_id, platform=answers.platform)
                await uow.commit()
        except InvalidInput as exc:
            await self._failed(row, f"{exc.field}: {exc.message}", retry=False)

    async def _failed(self, row: Claimed, error: str, *, retry: bool) -> None:
        meta = self.settings.meta
        attempts = row.attempts + 1
        retry_at = None
        if retry and attempts < meta.max_attempts:
            delay = min(meta.retry_after * (2 ** (attempts - 1)), meta.max_retry_after)
            retry_at = utcnow() + delay
        log.warning("meta lead %s: %s (%s)", row.leadgen_id, error, "will retry" if retry_at else "given up")
        async with self.factory() as uow:
            await uow.meta.failed(row.id, error, retry_at=retry_at)
            await uow.commit()

    async def _intake(self, uow: UnitOfWork, row: Claimed, answers: Answers) -> int:
        """The lead for these answers (a new one, or the live lead with the phone, commented)."""
        meta = self.settings.meta
        texts = texts_for(self.settings.bot.default_language)
        source = (
            meta.instagram_source if (answers.platform or "").lower() in ("ig", "instagram") else meta.facebook_source
        )
        form_id = answers.form_id or row.form_id or "?"
        mapped: dict[str, str] = {}
        extra: list[str] = []
        for name, value in answers.fields:
            target = meta.fields.get(name)
            if target is not None and target not in mapped and value.strip():
                mapped[target] = value
            elif value.strip():
                extra.append(f"{name}: {value}")
        phone = normalize_phone(mapped.get("phone_number", ""), uow.leads.crm.phone_region)
        actor = await uow.tokens.integration_user()
        existing = await uow.leads.find_live_by_phone(phone)
        came_back = texts.t("meta.came_back", source=source, form=form_id, leadgen=row.leadgen_id)
        if existing is not None:
            await uow.leads.add_comment(actor, existing.id, "\n".join([came_back, *extra])[:MAX_COMMENT])
            return existing.id
        notes = [
            texts.t(
                "meta.origin", source=source, form=form_id, ad=answers.ad_id or row.ad_id or "?", leadgen=row.leadgen_id
            )
        ]
        budget = None
        if mapped.get("budget"):
            try:
                budget = parse_budget(mapped["budget"])
            except InvalidInput:
                extra.insert(0, f"budget: {mapped['budget']}")
        if mapped.get("notes"):
            notes.append(mapped["notes"])
        notes.extend(extra)
        try:
            name = clean_name(mapped.get("client_name"))
        except InvalidInput:
            name = phone
        draft = LeadDraft(
            client_name=name, phone_number=phone, source=source, budget=budget, notes="\n".join(notes)[:MAX_NOTES]
        )
        try:
            lead = await uow.leads.create(actor, draft)
        except DuplicateLead as exc:  # created meanwhile by someone else
            await uow.leads.add_comment(actor, exc.existing_lead_id, "\n".join([came_back, *extra])[:MAX_COMMENT])
            return exc.existing_lead_id
        return lead.id
