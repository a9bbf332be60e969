"""The reminder jobs: leads waiting in «новый», follow-ups falling due, and the daily digest.

Every job takes ``now`` (aware UTC): the scheduler passes the real time, the tests a chosen one. Jobs
never talk to Telegram: each writes outbox rows in its own unit of work, in the same transaction as
the state change that says "this was sent", under a deterministic idempotency key. A crash before the
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
from zoneinfo import ZoneInfo

from aiogram.types import InlineKeyboardMarkup

from bot.config import Settings
from bot.notifications import message_payload
from bot.texts import Texts, pick_language, texts_for
from bot.views import cut, esc, format_dt, format_phone_html, status_label, user_label
from db.enums import LeadStatus
from db.errors import InvalidInput
from db.models import Lead, User
from db.repositories.followups import FollowUpItem, responsible_id
from db.uow import UnitOfWork, UnitOfWorkFactory
from keyboards.callbacks import DuePreset, SnoozeUntil
from keyboards.followups import escalation_keyboard, followup_keyboard, reminder_keyboard

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


def in_working_hours(now: datetime, hours: tuple[time, time], tz: ZoneInfo) -> bool:
    """Whether ``now`` falls in ``[start, end)`` local; a range like 22:00-06:00 runs over midnight."""
    start, end = hours
    clock = now.astimezone(tz).time()
    if start == end:
        return True
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


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


# ---- rendering -------------------------------------------------------------------------------------------


def _stamp(moment: datetime) -> int:
    return int(moment.timestamp())


class ReminderJobs:
    """The scheduler's jobs, bound to a unit-of-work factory and the settings."""

    def __init__(self, uow_factory: UnitOfWorkFactory, settings: Settings) -> None:
        self.uow_factory = uow_factory
        self.settings = settings
        self.cfg = settings.reminders
        self.tz = settings.crm.tz

    def _texts(self, user: User) -> Texts:
        return texts_for(pick_language(user.language, None, self.settings.bot.default_language))

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
        queued = 0
        for user in [assignee] if assignee is not None else heads:
            texts = self._texts(user)
            queued += await self._enqueue(
                uow,
                f"remind:{lead.id}:{number}:{stamp}:{user.id}",
                user,
                Kind.REMINDER,
                texts.t("reminders.new_lead", number=number, **self._lead_params(texts, lead)),
                reminder_keyboard(texts, lead.id),
            )
        if assignee is not None and number == self.cfg.escalate_after:
            for head in heads:
                texts = self._texts(head)
                queued += await self._enqueue(
                    uow,
                    f"remind-escalate:{lead.id}:{stamp}:{head.id}",
                    head,
                    Kind.REMINDER_ESCALATION,
                    texts.t("reminders.escalation", number=number, **self._lead_params(texts, lead)),
                    escalation_keyboard(texts, lead.id),
                )
        lead.reminder_count = number
        lead.next_reminder_at = now + self.cfg.repeat_every
        return queued

    def _lead_params(self, texts: Texts, lead: Lead) -> dict[str, object]:
        return {
            "lead_id": lead.id,
            "client": esc(lead.client_name),
            "phone": format_phone_html(lead.phone_number),
            "source": esc(lead.source),
            "assignee": user_label(lead.assigned_to, texts),
            "since": format_dt(lead.created_at, self.tz),
        }

    async def _enqueue(
        self, uow: UnitOfWork, key: str, user: User, kind: str, text: str, markup: InlineKeyboardMarkup | None
    ) -> int:
        row = await uow.outbox.enqueue(
            key=key, chat_id=user.telegram_id, kind=kind, payload=message_payload(text, markup), user_id=user.id
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

    def _followup_params(self, texts: Texts, item: FollowUpItem) -> dict[str, object]:
        return {
            "lead_id": item.lead.id,
            "client": esc(item.lead.client_name),
            "phone": format_phone_html(item.lead.phone_number),
            "text": esc(item.followup.text),
            "due": format_dt(item.followup.due_at, self.tz),
        }

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
                for user in await self._followup_recipients(uow, item):
                    texts = self._texts(user)
                    queued += await self._enqueue(
                        uow,
                        f"followup:{followup_id}:due:{stamp}:{user.id}",
                        user,
                        Kind.FOLLOWUP_DUE,
                        texts.t("followups.due", **self._followup_params(texts, item)),
                        followup_keyboard(texts, followup_id, item.lead.id),
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
                users = await uow.reminders.users_by_id({responsible_id(item.followup, item.lead)})
                who = users.get(responsible_id(item.followup, item.lead))
                for head in await uow.reminders.heads():
                    texts = self._texts(head)
                    queued += await self._enqueue(
                        uow,
                        f"followup:{followup_id}:overdue:{head.id}",
                        head,
                        Kind.FOLLOWUP_OVERDUE,
                        texts.t("followups.overdue", who=user_label(who, texts), **self._followup_params(texts, item)),
                        escalation_keyboard(texts, item.lead.id),
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
                text = await self._seller_digest(uow, seller, now, today, day_end)
                if text is not None:
                    queued += await self._enqueue(uow, keys[seller.id], seller, Kind.DIGEST, text, None)
            for head in heads:
                if keys[head.id] not in sent:
                    text = await self._team_digest(uow, head, now, today)
                    queued += await self._enqueue(uow, keys[head.id], head, Kind.DIGEST, text, None)
            await uow.commit()
        return queued

    async def _seller_digest(
        self, uow: UnitOfWork, seller: User, now: datetime, today: date, day_end: datetime
    ) -> str | None:
        """Their leads in «новый», follow-ups overdue and due today; None when there is nothing."""
        texts = self._texts(seller)
        leads, leads_total = await uow.reminders.new_leads_of(seller.id, limit=DIGEST_ITEMS)
        overdue, overdue_total = await uow.followups.open_of(seller.id, due_before=now, limit=DIGEST_ITEMS)
        later, later_total = await uow.followups.open_of(
            seller.id, due_from=now, due_before=day_end, limit=DIGEST_ITEMS
        )
        if not (leads_total or overdue_total or later_total):
            return None
        lines = [texts.t("digest.seller.header", date=today.strftime("%d.%m.%Y"))]
        if leads_total:
            lines += ["", texts.t("digest.seller.new", count=leads_total)]
            lines += [
                texts.t(
                    "digest.lead_item",
                    lead_id=lead.id,
                    client=esc(lead.client_name),
                    source=esc(lead.source),
                    since=format_dt(lead.created_at, self.tz),
                )
                for lead in leads
            ]
            lines += _more(texts, leads_total - len(leads))
        for title, items, total in (
            ("digest.seller.overdue", overdue, overdue_total),
            ("digest.seller.today", later, later_total),
        ):
            if total:
                lines += ["", texts.t(title, count=total)]
                lines += [texts.t("digest.followup_item", **self._followup_params(texts, item)) for item in items]
                lines += _more(texts, total - len(items))
        return cut("\n".join(lines))

    async def _team_digest(self, uow: UnitOfWork, head: User, now: datetime, today: date) -> str:
        """Counts by status and the people with overdue work."""
        texts = self._texts(head)
        counts = await uow.reminders.status_counts()
        lines = [texts.t("digest.team.header", date=today.strftime("%d.%m.%Y")), "", texts.t("digest.team.statuses")]
        lines += [
            texts.t("digest.team.status_item", status=status_label(texts, status), count=counts.get(status, 0))
            for status in LeadStatus
        ]
        unassigned = await uow.reminders.unassigned_new()
        if unassigned:
            lines.append(texts.t("digest.team.unassigned", count=unassigned))
        followups = await uow.followups.overdue_by_person(now)
        waiting = await uow.reminders.waiting_new_by_assignee(now - self.cfg.new_lead_after)
        people = await uow.reminders.users_by_id(set(followups) | set(waiting))
        lines.append("")
        if not people:
            lines.append(texts.t("digest.team.no_overdue"))
        else:
            lines.append(texts.t("digest.team.overdue"))
            ranked = sorted(people.values(), key=lambda u: (-(followups.get(u.id, 0) + waiting.get(u.id, 0)), u.id))
            lines += [
                texts.t(
                    "digest.team.overdue_item",
                    name=user_label(user, texts),
                    followups=followups.get(user.id, 0),
                    leads=waiting.get(user.id, 0),
                )
                for user in ranked[:DIGEST_ITEMS]
            ]
            lines += _more(texts, len(ranked) - DIGEST_ITEMS)
        return cut("\n".join(lines))


def _still_due(item: FollowUpItem, now: datetime) -> bool:
    followup = item.followup
    return followup.done_at is None and followup.reminded_at is None and followup.due_at <= now


def _more(texts: Texts, rest: int) -> list[str]:
    return [texts.t("digest.more", count=rest)] if rest > 0 else []


def presets_ahead(now: datetime, tz: ZoneInfo) -> list[DuePreset]:
    """The due-time buttons worth showing now ("today 18:00" disappears in the evening)."""
    return [preset for preset in DuePreset if preset_due(preset, now, tz) > now]
