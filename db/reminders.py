"""The reminder rules (a core service): leads waiting in «новый», follow-ups falling due, the daily digest,
and the follow-up timing the handlers use (snooze, due-time presets, typed due times).

The jobs decide who is reminded of what and when; they write facts (``ReminderJobs`` lists the payloads)
and ``bot.presentation.reminders`` words them when the delivery worker sends them. Every job takes
``now`` (aware UTC): the scheduler passes the real time, the tests a chosen one. Jobs never talk to
Telegram: each writes outbox rows in its own unit of work, in the same transaction as the state change
that says "this was sent", under a deterministic idempotency key. A crash before the
commit loses both (and the next tick does it again); a restart after it finds nothing left to do.

Working hours (``[reminders] working_hours`` in ``[crm] timezone``) hold back what the system starts
on its own: new-lead reminders and escalations wait for the next working morning. A follow-up's own
reminder comes at the time the person chose, and the digest at ``digest_time``.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from db.durations import in_working_hours
from db.enums import DuePreset, LeadStatus, SnoozeUntil
from db.errors import InvalidInput
from db.models import Lead, User
from db.repositories.followups import FollowUpItem, responsible_id
from db.settings import CrmSection, RemindersSection
from db.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

# Rows handled per job run; the rest wait for the next tick (keeps each run short).
BATCH = 200
# Items listed per section of a digest; the rest are counted.
DIGEST_ITEMS = 15
SNOOZE_MORNING = time(10, 0)
EVENING = time(18, 0)


class Kind(StrEnum):
    """``outbox.kind`` of what the jobs queue."""

    REMINDER = "reminder"
    REMINDER_ESCALATION = "reminder_escalation"
    FOLLOWUP_DUE = "followup_due"
    FOLLOWUP_OVERDUE = "followup_overdue"
    DIGEST = "digest"


# ---- time ------------------------------------------------------------------------------------------------


def local_at(now: datetime, tz: ZoneInfo, clock: time, *, days: int = 0) -> datetime:
    """``clock`` on the local day ``days`` after ``now``'s, as aware UTC."""
    day = now.astimezone(tz).date() + timedelta(days=days)
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


def next_working_start(now: datetime, hours: tuple[time, time], tz: ZoneInfo) -> datetime:
    """``now`` itself inside working hours, else the next time they begin."""
    if in_working_hours(now, hours, tz):
        return now
    today = local_at(now, tz, hours[0])
    return today if today > now else local_at(now, tz, hours[0], days=1)


def snooze_until(choice: SnoozeUntil, now: datetime, tz: ZoneInfo) -> datetime:
    if choice is SnoozeUntil.HOUR:
        return now + timedelta(hours=1)
    return local_at(now, tz, SNOOZE_MORNING, days=1)


def preset_due(preset: DuePreset, now: datetime, tz: ZoneInfo) -> datetime:
    if preset is DuePreset.IN_HOUR:
        return (now + timedelta(hours=1)).replace(second=0, microsecond=0)
    if preset is DuePreset.TODAY_18:
        return local_at(now, tz, EVENING)
    return local_at(now, tz, SNOOZE_MORNING, days=1)


_DMY = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})\s+(\d{1,2})[:.](\d{2})")
_YMD = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:\s+|T)(\d{1,2}):(\d{2})")


def due_examples(now: datetime, tz: ZoneInfo) -> dict[str, str]:
    sample = (now.astimezone(tz) + timedelta(days=1)).replace(hour=14, minute=30)
    return {"example": sample.strftime("%d.%m.%Y %H:%M"), "example_iso": sample.strftime("%Y-%m-%d %H:%M")}


def parse_due(raw: str, now: datetime, tz: ZoneInfo) -> datetime:
    """``25.12.2025 14:30`` or ``2025-12-25 14:30`` (local time) -> aware UTC, in the future."""
    text = " ".join((raw or "").split())
    parts: tuple[int, int, int, int, int] | None = None
    if match := _DMY.fullmatch(text):
        d, m, y, hh, mm = map(int, match.groups())
        parts = (y, m, d, hh, mm)
    elif match := _YMD.fullmatch(text):
        y, m, d, hh, mm = map(int, match.groups())
        parts = (y, m, d, hh, mm)
    moment: datetime | None = None
    if parts is not None:
        y, m, d, hh, mm = parts
        try:
            moment = datetime(y, m, d, hh, mm, tzinfo=tz).astimezone(UTC)
        except ValueError:
            moment = None
    if moment is None:
        raise InvalidInput("due_at", "due_invalid", "expected a date and time", **due_examples(now, tz))
    if moment <= now:
        raise InvalidInput("due_at", "due_past", "the due time is in the past")
    return moment


# ---- the jobs --------------------------------------------------------------------------------------------


class ReminderSettings(Protocol):
    @property
    def crm(self) -> CrmSection: ...

    @property
    def reminders(self) -> RemindersSection: ...


def _stamp(moment: datetime) -> int:
    return int(moment.timestamp())


class ReminderJobs:
    """The scheduler's jobs, bound to a unit-of-work factory and the settings.

    They decide who hears what and when; each outbox row holds facts (``kind`` + payload, below), the
    presentation layer (``bot.presentation.reminders``) words them when the row is sent. Payloads
    (``lang``: the recipient's chosen language, None for the default)::

        reminder, reminder_escalation  {"lead_id", "number", "lang"}
        followup_due                   {"followup_id", "lead_id", "lang"}
        followup_overdue               {"followup_id", "lead_id", "who_id", "lang"}
        digest (a salesperson's)       {"scope": "seller", "date", "lang", "leads": [lead ids], "leads_total",
                                        "overdue": [follow-up ids], "overdue_total", "today": [...], "today_total"}
        digest (a head's)              {"scope": "team", "date", "lang", "statuses": {status: count},
                                        "unassigned", "overdue": [[users.id, follow-ups, leads], ...],
                                        "overdue_people"}
    """

    def __init__(self, uow_factory: UnitOfWorkFactory, settings: ReminderSettings) -> None:
        self.uow_factory = uow_factory
        self.settings = settings
        self.cfg = settings.reminders
        self.tz = settings.crm.tz

    def _working(self, now: datetime) -> bool:
        return in_working_hours(now, self.cfg.working_hours, self.tz)

    async def tick(self, now: datetime) -> int:
        """One scheduler tick: everything but the digest. Returns how many messages were queued."""
        queued = await self.remind_new_leads(now)
        queued += await self.remind_followups(now)
        queued += await self.escalate_overdue_followups(now)
        return queued

    # ---- leads waiting in «новый» ----------------------------------------------------------------------

    async def remind_new_leads(self, now: datetime) -> int:
        async with self.uow_factory() as uow:
            if await uow.reminders.arm(self.cfg.new_lead_after):
                await uow.commit()
        if not self._working(now):
            return 0
        async with self.uow_factory() as uow:
            due = await uow.reminders.due_lead_ids(now, limit=BATCH)
        queued = 0
        for lead_id in due:
            # One transaction per lead: a bad row cannot hold the others back.
            async with self.uow_factory() as uow:
                lead = await uow.reminders.due_lead(lead_id, now)
                if lead is None:
                    continue
                queued += await self._remind_lead(uow, lead, now)
                await uow.commit()
        return queued

    async def _remind_lead(self, uow: UnitOfWork, lead: Lead, now: datetime) -> int:
        assert lead.next_reminder_at is not None
        number = lead.reminder_count + 1
        stamp = _stamp(lead.next_reminder_at)
        assignee = await uow.reminders.active_user(lead.assigned_to_id)
        heads = await uow.reminders.heads()
        facts = {"lead_id": lead.id, "number": number}
        queued = 0
        for user in [assignee] if assignee is not None else heads:
            queued += await self._enqueue(
                uow, f"remind:{lead.id}:{number}:{stamp}:{user.id}", user, Kind.REMINDER, facts
            )
        if assignee is not None and number == self.cfg.escalate_after:
            for head in heads:
                queued += await self._enqueue(
                    uow, f"remind-escalate:{lead.id}:{stamp}:{head.id}", head, Kind.REMINDER_ESCALATION, facts
                )
        lead.reminder_count = number
        lead.next_reminder_at = now + self.cfg.repeat_every
        return queued

    async def _enqueue(self, uow: UnitOfWork, key: str, user: User, kind: str, facts: dict[str, Any]) -> int:
        row = await uow.outbox.enqueue(
            key=key,
            chat_id=user.telegram_id,
            kind=kind,
            payload={**facts, "lang": user.language},
            user_id=user.id,
        )
        return 0 if row is None else 1

    # ---- follow-ups ----------------------------------------------------------------------------------------

    async def _followup_recipients(self, uow: UnitOfWork, item: FollowUpItem) -> list[User]:
        """The lead's salesperson, or whoever set it; the heads when neither is active any more."""
        for user_id in (responsible_id(item.followup, item.lead), item.followup.created_by_id):
            user = await uow.reminders.active_user(user_id)
            if user is not None:
                return [user]
        return await uow.reminders.heads()

    async def remind_followups(self, now: datetime) -> int:
        """Each follow-up whose time has come reminds its assignee once (again only after a snooze)."""
        async with self.uow_factory() as uow:
            due = await uow.followups.due_unreminded(now, limit=BATCH)
        queued = 0
        for followup_id in due:
            async with self.uow_factory() as uow:
                item = await uow.followups.load(followup_id)
                if item is None or not _still_due(item, now):
                    continue
                stamp = _stamp(item.followup.due_at)
                facts = {"followup_id": followup_id, "lead_id": item.lead.id}
                for user in await self._followup_recipients(uow, item):
                    queued += await self._enqueue(
                        uow, f"followup:{followup_id}:due:{stamp}:{user.id}", user, Kind.FOLLOWUP_DUE, facts
                    )
                item.followup.reminded_at = now
                await uow.commit()
        return queued

    async def escalate_overdue_followups(self, now: datetime) -> int:
        """An open follow-up past due by ``overdue_escalate_after`` is reported to the ROPs, once."""
        if not self._working(now):
            return 0
        cutoff = now - self.cfg.overdue_escalate_after
        async with self.uow_factory() as uow:
            overdue = await uow.followups.overdue_unescalated(cutoff, limit=BATCH)
        queued = 0
        for followup_id in overdue:
            async with self.uow_factory() as uow:
                item = await uow.followups.load(followup_id)
                if (
                    item is None
                    or item.followup.done_at is not None
                    or item.followup.escalated_at is not None
                    or item.followup.due_at > cutoff
                ):
                    continue
                facts = {
                    "followup_id": followup_id,
                    "lead_id": item.lead.id,
                    "who_id": responsible_id(item.followup, item.lead),
                }
                for head in await uow.reminders.heads():
                    queued += await self._enqueue(
                        uow, f"followup:{followup_id}:overdue:{head.id}", head, Kind.FOLLOWUP_OVERDUE, facts
                    )
                item.followup.escalated_at = now
                await uow.commit()
        return queued

    # ---- the daily digest ------------------------------------------------------------------------------

    async def send_digests(self, now: datetime) -> int:
        """Today's digests, once per person per local day (``digest:{user_id}:{date}``).

        Runs at ``digest_time`` and once when the bot starts: before ``digest_time`` it does nothing,
        after it it sends whatever today's run has not sent yet (the bot was down at 09:00).
        """
        local = now.astimezone(self.tz)
        if local.time() < self.cfg.digest_time:
            return 0
        today = local.date()
        day_end = local_at(now, self.tz, time(0), days=1)
        queued = 0
        async with self.uow_factory() as uow:
            sellers = await uow.reminders.active_sellers()
            heads = await uow.reminders.heads()
            keys = {user.id: f"digest:{user.id}:{today.isoformat()}" for user in sellers + heads}
            sent = await uow.reminders.existing_keys(list(keys.values()))
            for seller in sellers:
                if keys[seller.id] in sent:
                    continue
                facts = await self._seller_digest(uow, seller, now, today, day_end)
                if facts is not None:
                    queued += await self._enqueue(uow, keys[seller.id], seller, Kind.DIGEST, facts)
            team: dict[str, Any] | None = None
            for head in heads:
                if keys[head.id] not in sent:
                    team = team if team is not None else await self._team_digest(uow, now, today)
                    queued += await self._enqueue(uow, keys[head.id], head, Kind.DIGEST, team)
            await uow.commit()
        return queued

    async def _seller_digest(
        self, uow: UnitOfWork, seller: User, now: datetime, today: date, day_end: datetime
    ) -> dict[str, Any] | None:
        """Their leads in «новый», follow-ups overdue and due today; None when there is nothing."""
        leads, leads_total = await uow.reminders.new_leads_of(seller.id, limit=DIGEST_ITEMS)
        overdue, overdue_total = await uow.followups.open_of(seller.id, due_before=now, limit=DIGEST_ITEMS)
        later, later_total = await uow.followups.open_of(
            seller.id, due_from=now, due_before=day_end, limit=DIGEST_ITEMS
        )
        if not (leads_total or overdue_total or later_total):
            return None
        return {
            "scope": "seller",
            "date": today.isoformat(),
            "leads": [lead.id for lead in leads],
            "leads_total": leads_total,
            "overdue": [item.followup.id for item in overdue],
            "overdue_total": overdue_total,
            "today": [item.followup.id for item in later],
            "today_total": later_total,
        }

    async def _team_digest(self, uow: UnitOfWork, now: datetime, today: date) -> dict[str, Any]:
        """Counts by status and the people with overdue work (the most behind first)."""
        counts = await uow.reminders.status_counts()
        followups = await uow.followups.overdue_by_person(now)
        waiting = await uow.reminders.waiting_new_by_assignee(now - self.cfg.new_lead_after)
        people = await uow.reminders.users_by_id(set(followups) | set(waiting))
        ranked = sorted(people, key=lambda uid: (-(followups.get(uid, 0) + waiting.get(uid, 0)), uid))
        return {
            "scope": "team",
            "date": today.isoformat(),
            "statuses": {str(status): counts.get(status, 0) for status in LeadStatus},
            "unassigned": await uow.reminders.unassigned_new(),
            "overdue": [[uid, followups.get(uid, 0), waiting.get(uid, 0)] for uid in ranked[:DIGEST_ITEMS]],
            "overdue_people": len(ranked),
        }


def _still_due(item: FollowUpItem, now: datetime) -> bool:
    followup = item.followup
    return followup.done_at is None and followup.reminded_at is None and followup.due_at <= now


def presets_ahead(now: datetime, tz: ZoneInfo) -> list[DuePreset]:
    """The due-time buttons worth showing now ("today 18:00" disappears in the evening)."""
    return [preset for preset in DuePreset if preset_due(preset, now, tz) > now]
