"""The demo's team and leads: a realistic sales team in Tashkent with a month of work behind it.

Written straight into a fresh database (the demo's temporary one), history and comments included, as
if the team had used the bot for a few weeks. Nothing is sent: seeding makes no notifications.
Leads still in «новый» get their first reminder a minute or a few apart, so the reminders show up soon.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from db import lead_facts
from db.engine import Database
from db.enums import HistoryAction, LeadStatus, Role
from db.models import Comment, Lead, LeadHistory, User
from db.settings import DEFAULT_SOURCES


@dataclass(frozen=True, slots=True)
class Member:
    telegram_id: int
    first_name: str
    last_name: str
    role: Role


ADMIN = Member(700001, "Алексей", "Смирнов", Role.ADMIN)
ROP = Member(700002, "Дилноза", "Каримова", Role.ROP)
MOP = Member(700003, "Ольга", "Ким", Role.MOP)
SELLER_A = Member(700004, "Анвар", "Юсупов", Role.SELLER)
SELLER_B = Member(700005, "Бахтиёр", "Рахимов", Role.SELLER)
FINANCE = Member(700006, "Фарида", "Назарова", Role.FINANCE)
TEAM = (ADMIN, ROP, MOP, SELLER_A, SELLER_B, FINANCE)

# People who are not on the team yet: an admin's invitation link brings them in.
NEWCOMERS = (
    Member(700101, "Тимур", "Алиев", Role.SELLER),
    Member(700102, "Севара", "Исмоилова", Role.SELLER),
)

_CLIENTS = [
    "Азиз Турсунов",
    "Нодира Хасанова",
    "Рустам Мирзаев",
    "Гульнора Абдуллаева",
    "Шерзод Умаров",
    "Мадина Садыкова",
    "Jasur Qodirov",
    "Ирина Пак",
    "Ботир Эргашев",
    "Зарина Холматова",
    "Фаррух Нематов",
    "Елена Ли",
    "Улугбек Раджабов",
    "Камола Юлдашева",
    "Сардор Ахмедов",
    "Дмитрий Цой",
    "Малика Бобоева",
    "Отабек Ибрагимов",
    "Наргиза Султанова",
    "Акмаль Хамидов",
    "Светлана Шин",
    "Жахонгир Саидов",
    "Лола Мухамедова",
    "Бекзод Тошматов",
    "Феруза Алимова",
    "Sanjar Rahmonov",
    "Анна Тен",
    "Ислом Каримов",
    "Дильфуза Рашидова",
    "Тимур Валиев",
    "Шахноза Азимова",
    "Павел Хан",
    "Умида Насырова",
    "Абдулла Юнусов",
    "Гузаль Файзиева",
    "Евгений Ни",
]
_NOTES = [
    "2-комнатная в Юнусабаде, до 5 этажа",
    "Ищет 3-комнатную в Мирабадском районе, с ремонтом",
    "Новостройка у метро, рассрочка",
    "Коммерческое помещение под офис, 80–120 м²",
    "Дом в Ташкентской области, участок от 6 соток",
    "Студия для сдачи в аренду",
    "Семья с детьми: рядом школа и парк",
    "Хочет посмотреть объекты в выходные",
    "Ипотека, первый взнос 30%",
    "Обмен своей 1-комнатной на 2-комнатную с доплатой",
    None,
    None,
]
_COMMENTS = [
    "Позвонил, клиент просит перезвонить после 18:00",
    "Отправил подборку из пяти квартир в Telegram",
    "Показ назначен на субботу, 11:00",
    "Клиент посмотрел две квартиры, думает",
    "Уточняет условия рассрочки у банка",
    "Торгуется, просит скидку 3%",
    "Договорились о встрече в офисе",
    "Не берёт трубку, написал в WhatsApp",
]
_REFUSALS = ["Купил через другое агентство", "Не устроила цена", "Отложил покупку на следующий год"]
_OPERATORS = ["90", "91", "93", "94", "95", "97", "98", "99", "88", "33"]


def _phone(rng: random.Random) -> str:
    return f"+998{rng.choice(_OPERATORS)}{rng.randrange(1_000_000, 10_000_000)}"


async def seed(database: Database, *, reminders_start: timedelta = timedelta(minutes=1), rng_seed: int = 15) -> None:
    """The team and about three dozen leads, into an empty, migrated database."""
    rng = random.Random(rng_seed)
    now = datetime.now(UTC)
    async with database.writer() as session:
        users: dict[int, User] = {}
        for member in TEAM:
            user = User(
                telegram_id=member.telegram_id,
                first_name=member.first_name,
                last_name=member.last_name,
                role=member.role,
                is_active=True,
                language="ru",
                created_at=now - timedelta(days=40),
            )
            session.add(user)
            users[member.telegram_id] = user
        await session.flush()
        creators = [users[MOP.telegram_id], users[MOP.telegram_id], users[ROP.telegram_id], users[ADMIN.telegram_id]]
        sellers = [users[SELLER_A.telegram_id], users[SELLER_B.telegram_id]]
        phones: set[str] = set()
        waiting = 0
        # A handful of leads from today, the rest over the month; inserted oldest first, so the ids follow
        # time as they would have (the list shows the newest, today's, first).
        ages = [
            timedelta(minutes=20 + 37 * index) if index < 6 else timedelta(hours=rng.randrange(8, 30 * 24))
            for index in range(len(_CLIENTS))
        ]
        for index in sorted(range(len(_CLIENTS)), key=lambda i: ages[i], reverse=True):
            client = _CLIENTS[index]
            phone = _phone(rng)
            while phone in phones:
                phone = _phone(rng)
            phones.add(phone)
            created = now - ages[index]
            creator = rng.choice(creators)
            status = _status(index, rng)
            assignee = None if status is LeadStatus.NEW and index % 3 == 0 else sellers[index % 2]
            lead = Lead(
                client_name=client,
                phone_number=phone,
                source=DEFAULT_SOURCES[rng.randrange(len(DEFAULT_SOURCES))],
                budget=float(rng.randrange(30, 260) * 1000) if index % 7 != 3 else None,
                notes=rng.choice(_NOTES),
                status=status,
                assigned_to_id=assignee.id if assignee else None,
                created_by_id=creator.id,
                created_at=created,
                updated_at=created,
                reminder_count=0,
            )
            session.add(lead)
            await session.flush()
            at = created
            history = [_entry(lead, creator, HistoryAction.CREATED, None, LeadStatus.NEW.value, at)]
            if assignee is not None:
                at += timedelta(minutes=rng.randrange(5, 90))
                boss = users[ROP.telegram_id] if index % 2 else users[MOP.telegram_id]
                history.append(_entry(lead, boss, HistoryAction.ASSIGNED, None, assignee.full_name, at))
            if status is LeadStatus.NEW:
                waiting += 1
                lead.next_reminder_at = now + reminders_start * waiting
            else:
                at += timedelta(hours=rng.randrange(1, 20))
                worker = assignee or users[ROP.telegram_id]
                history.append(
                    _entry(
                        lead, worker, HistoryAction.STATUS_CHANGED, LeadStatus.NEW.value, LeadStatus.IN_WORK.value, at
                    )
                )
                for text in rng.sample(_COMMENTS, k=rng.randrange(1, 4)):
                    at += timedelta(hours=rng.randrange(2, 40))
                    session.add(Comment(lead_id=lead.id, text=text, created_by_id=worker.id, created_at=min(at, now)))
                if status in (LeadStatus.CLOSED, LeadStatus.REFUSED):
                    at += timedelta(hours=rng.randrange(2, 48))
                    history.append(
                        _entry(
                            lead,
                            worker,
                            HistoryAction.STATUS_CHANGED,
                            LeadStatus.IN_WORK.value,
                            status.value,
                            min(at, now),
                        )
                    )
                    if status is LeadStatus.CLOSED:
                        lead.closing_date = min(at, now).date()
                    else:
                        lead.refusal_reason = rng.choice(_REFUSALS)
                lead.updated_at = min(at, now)
            session.add_all(history)
        # The leads' report facts, from the rows just written (what the repositories keep as they go).
        await lead_facts.refresh(session)
        await session.commit()


def _status(index: int, rng: random.Random) -> LeadStatus:
    if index < 6:
        return LeadStatus.NEW
    roll = rng.random()
    if roll < 0.2:
        return LeadStatus.NEW
    if roll < 0.65:
        return LeadStatus.IN_WORK
    if roll < 0.85:
        return LeadStatus.CLOSED
    return LeadStatus.REFUSED


def _entry(lead: Lead, actor: User, action: HistoryAction, old: str | None, new: str, at: datetime) -> LeadHistory:
    return LeadHistory(
        lead_id=lead.id, action=action.value, old_value=old, new_value=new, changed_by_id=actor.id, changed_at=at
    )
