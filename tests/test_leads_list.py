"""/leads (filters, keyset paging, in-place navigation) and /find, driven through the production dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from sqlalchemy import select

from db.enums import LeadStatus, StatusCode
from db.models import Lead, utcnow
from db.repositories import LeadDraft, LeadFilter
from db.uow import UnitOfWorkFactory
from keyboards.callbacks import CALLBACK_DATA_LIMIT, LeadAction, LeadCB, LeadListAction, LeadListCB, MenuAction, MenuCB
from tests.conftest import Harness, Member, Team

STATUSES = [LeadStatus.NEW, LeadStatus.IN_WORK, LeadStatus.CLOSED, LeadStatus.REFUSED]
INTERNAL_ERROR = "Что-то пошло не так"


@dataclass(frozen=True)
class Row:
    id: int
    status: str
    source: str
    assigned_to_id: int | None


def phone(n: int) -> str:
    return f"+99890{1_000_000 + n}"


async def make_leads(
    uow_factory: UnitOfWorkFactory,
    team: Team,
    count: int,
    *,
    name: Callable[[int], str] = lambda i: f"Клиент {i}",
    status: Callable[[int], LeadStatus] = lambda i: STATUSES[i % 4],
    source: Callable[[int], str] = lambda i: ["Instagram", "Facebook", "Google Ads"][i % 3],
    seller: Callable[[int], Member | None] | None = None,
    start: int = 0,
) -> list[int]:
    """``count`` leads, oldest first; the i-th gets the status/source/assignee the callables say."""
    pick = seller or (lambda i: team.seller if i % 2 == 0 else (team.seller2 if i % 5 == 0 else None))
    ids = []
    async with uow_factory() as uow:
        for i in range(start, start + count):
            who = pick(i)
            lead = await uow.leads.create(
                team.mop.user,
                LeadDraft(
                    client_name=name(i),
                    phone_number=phone(i),
                    source=source(i),
                    assigned_to=who.id if who else None,
                ),
            )
            lead.status = status(i)
            ids.append(lead.id)
        await uow.commit()
    return ids


async def live_rows(uow_factory: UnitOfWorkFactory) -> list[Row]:
    """Every live lead, newest first, straight from the table: what the expectations are computed from."""
    async with uow_factory() as uow:
        leads = (await uow.session.scalars(select(Lead).where(Lead.deleted_at.is_(None)))).unique().all()
        rows = [Row(lead.id, lead.status, lead.source, lead.assigned_to_id) for lead in leads]
    return sorted(rows, key=lambda r: -r.id)


def shown_ids(harness: Harness, member: Member) -> list[int]:
    return [
        LeadCB.unpack(data).lead_id
        for _, data in harness.last_buttons(member.chat_id)
        if data.startswith("ld:") and LeadCB.unpack(data).action == LeadAction.OPEN
    ]


def list_button(harness: Harness, member: Member, action: LeadListAction) -> LeadListCB | None:
    for _, data in harness.last_buttons(member.chat_id):
        if data.startswith("ll:") and LeadListCB.unpack(data).action == action:
            return LeadListCB.unpack(data)
    return None


def no_internal_errors(harness: Harness) -> None:
    assert not any(INTERNAL_ERROR in text for text in harness.alerts())
    assert not any(INTERNAL_ERROR in m.text for m in harness.session.of(SendMessage))


@pytest.fixture
async def leads25(uow_factory: UnitOfWorkFactory, team: Team) -> list[int]:
    return await make_leads(uow_factory, team, 25)


# ---- paging ----------------------------------------------------------------------------------------


async def test_pages_forward_and_back_with_exact_ids_edited_in_place(
    harness: Harness, team: Team, leads25: list[int]
) -> None:
    newest_first = sorted(leads25, reverse=True)
    admin = team.admin
    await harness.send(admin, "/leads")
    assert shown_ids(harness, admin) == newest_first[0:10]
    assert "стр. 1" in harness.last_text(admin.chat_id)
    assert list_button(harness, admin, LeadListAction.NEWER) is None
    sent_before = len(harness.session.of(SendMessage))

    await harness.press(admin, "Старее")
    assert isinstance(harness.last(admin.chat_id), EditMessageText)
    assert shown_ids(harness, admin) == newest_first[10:20]
    assert "стр. 2" in harness.last_text(admin.chat_id)

    await harness.press(admin, "Старее")
    assert shown_ids(harness, admin) == newest_first[20:25]
    assert "стр. 3" in harness.last_text(admin.chat_id)
    assert list_button(harness, admin, LeadListAction.OLDER) is None

    await harness.press(admin, "Новее")
    assert shown_ids(harness, admin) == newest_first[10:20]
    assert "стр. 2" in harness.last_text(admin.chat_id)

    await harness.press(admin, "Новее")
    assert shown_ids(harness, admin) == newest_first[0:10]
    assert "стр. 1" in harness.last_text(admin.chat_id)
    assert list_button(harness, admin, LeadListAction.NEWER) is None
    # Navigation never sent a new message: every step edited the list in place.
    assert len(harness.session.of(SendMessage)) == sent_before
    no_internal_errors(harness)


async def test_paging_is_keyset_not_offset(harness: Harness, team: Team, uow_factory: UnitOfWorkFactory) -> None:
    ids = await make_leads(uow_factory, team, 15)
    await harness.send(team.admin, "/leads")
    older = list_button(harness, team.admin, LeadListAction.OLDER)
    assert older is not None and older.cursor == min(shown_ids(harness, team.admin))
    # New leads arriving meanwhile do not shift page 2 (an OFFSET would repeat rows).
    await make_leads(uow_factory, team, 3, start=100)
    await harness.click(team.admin, older)
    assert shown_ids(harness, team.admin) == sorted(ids, reverse=True)[10:15]


async def test_main_menu_buttons_open_the_list(harness: Harness, team: Team, leads25: list[int]) -> None:
    await harness.click(team.finance, MenuCB(action=MenuAction.LEADS))
    assert isinstance(harness.last(team.finance.chat_id), SendMessage)
    assert shown_ids(harness, team.finance) == sorted(leads25, reverse=True)[:10]
    await harness.click(team.seller, MenuCB(action=MenuAction.MY_LEADS))
    rows = await live_rows(harness.uow_factory)
    assert shown_ids(harness, team.seller) == [r.id for r in rows if r.assigned_to_id == team.seller.id][:10]
    assert "Мои лиды" in harness.last_text(team.seller.chat_id)


# ---- filters ---------------------------------------------------------------------------------------


async def test_status_filter(harness: Harness, team: Team, leads25: list[int]) -> None:
    await harness.send(team.admin, "/leads")
    await harness.press(team.admin, "Статус")
    assert "Выберите статус" in harness.last_text(team.admin.chat_id)
    await harness.press(team.admin, "в работе")
    rows = await live_rows(harness.uow_factory)
    expected = [r.id for r in rows if r.status == LeadStatus.IN_WORK][:10]
    assert expected and shown_ids(harness, team.admin) == expected
    assert "статус: в работе" in harness.last_text(team.admin.chat_id)


async def test_source_filter(harness: Harness, team: Team, leads25: list[int]) -> None:
    await harness.send(team.admin, "/leads")
    await harness.press(team.admin, "Источник")
    await harness.press(team.admin, "Facebook")
    rows = await live_rows(harness.uow_factory)
    expected = [r.id for r in rows if r.source == "Facebook"][:10]
    assert expected and shown_ids(harness, team.admin) == expected
    assert "источник: Facebook" in harness.last_text(team.admin.chat_id)


async def test_salesperson_and_unassigned_filters(harness: Harness, team: Team, leads25: list[int]) -> None:
    rows = await live_rows(harness.uow_factory)
    await harness.send(team.rop, "/leads")
    await harness.press(team.rop, "Продажник")
    captions = [text for text, _ in harness.last_buttons(team.rop.chat_id)]
    # Active salespeople only: the deactivated one and the non-sellers are not offered.
    assert any("Второй Продажник" in c for c in captions)
    assert not any("Бывший" in c or "Моп" in c or "Фин" in c for c in captions)
    await harness.press(team.rop, "Второй Продажник")
    expected = [r.id for r in rows if r.assigned_to_id == team.seller2.id][:10]
    assert expected and shown_ids(harness, team.rop) == expected
    assert "продажник: Второй Продажник" in harness.last_text(team.rop.chat_id)

    await harness.press(team.rop, "Продажник ▾")
    await harness.press(team.rop, "Без продажника")
    expected = [r.id for r in rows if r.assigned_to_id is None][:10]
    assert expected and shown_ids(harness, team.rop) == expected
    assert "без продажника" in harness.last_text(team.rop.chat_id)


async def test_filters_combine_and_survive_paging(harness: Harness, team: Team, uow_factory: UnitOfWorkFactory) -> None:
    await make_leads(
        uow_factory,
        team,
        30,
        status=lambda i: LeadStatus.IN_WORK if i % 3 else LeadStatus.NEW,
        source=lambda i: "Instagram" if i % 4 else "Сайт",
        seller=lambda i: team.seller if i % 5 else team.seller2,
    )
    rows = await live_rows(uow_factory)
    expected = [
        r.id
        for r in rows
        if r.status == LeadStatus.IN_WORK and r.source == "Instagram" and r.assigned_to_id == team.seller.id
    ]
    assert len(expected) > 10
    harness.settings.crm.page_size = 10
    mop = team.mop
    await harness.send(mop, "/leads")
    await harness.press(mop, "Статус")
    await harness.press(mop, "в работе")
    await harness.press(mop, "Источник")
    await harness.press(mop, "Instagram")
    await harness.press(mop, "Продажник")
    await harness.press(mop, "Продажник Иванов")
    assert shown_ids(harness, mop) == expected[:10]
    await harness.press(mop, "Старее")
    assert shown_ids(harness, mop) == expected[10:20]
    assert harness.last_text(mop.chat_id).startswith(
        "<b>Лиды · статус: в работе · источник: Instagram · продажник: Продажник Иванов · стр. 2</b>"
    )


async def test_header_shows_filter_and_page(harness: Harness, team: Team, uow_factory: UnitOfWorkFactory) -> None:
    await make_leads(uow_factory, team, 9, status=lambda i: LeadStatus.IN_WORK, source=lambda i: "Instagram")
    harness.settings.crm.page_size = 2
    cb = LeadListCB(action=LeadListAction.SHOW, status=int(StatusCode.IN_WORK), source=0)
    await harness.click(team.admin, cb)
    await harness.press(team.admin, "Старее")
    await harness.press(team.admin, "Старее")
    header = harness.last_text(team.admin.chat_id).split("\n")[0]
    assert header == "<b>Лиды · статус: в работе · источник: Instagram · стр. 3</b>"


async def test_reset_clears_every_filter(harness: Harness, team: Team, leads25: list[int]) -> None:
    await harness.click(team.admin, LeadListCB(action=LeadListAction.SHOW, status=int(StatusCode.CLOSED), source=1))
    assert "статус: закрыт" in harness.last_text(team.admin.chat_id)
    await harness.press(team.admin, "Сбросить")
    assert shown_ids(harness, team.admin) == sorted(leads25, reverse=True)[:10]
    text = harness.last_text(team.admin.chat_id)
    assert "статус" not in text and "источник" not in text
    assert not any("Сбросить" in caption for caption, _ in harness.last_buttons(team.admin.chat_id))


async def test_empty_result_keeps_the_filter_and_offers_reset(harness: Harness, team: Team, leads25: list[int]) -> None:
    sources = harness.settings.crm.sources
    unused = next(i for i, s in enumerate(sources) if s not in {"Instagram", "Facebook", "Google Ads"})
    await harness.click(team.admin, LeadListCB(action=LeadListAction.SHOW, source=unused))
    text = harness.last_text(team.admin.chat_id)
    assert f"источник: {sources[unused]}" in text
    assert "По этому фильтру лидов нет" in text
    assert shown_ids(harness, team.admin) == []
    assert any("Сбросить" in caption for caption, _ in harness.last_buttons(team.admin.chat_id))


async def test_empty_team_list(harness: Harness, team: Team) -> None:
    await harness.send(team.admin, "/leads")
    assert "Лидов нет" in harness.last_text(team.admin.chat_id)
    assert list_button(harness, team.admin, LeadListAction.OLDER) is None


# ---- who sees what ---------------------------------------------------------------------------------


async def test_seller_sees_only_own_and_has_no_salesperson_filter(
    harness: Harness, team: Team, leads25: list[int]
) -> None:
    rows = await live_rows(harness.uow_factory)
    own = [r.id for r in rows if r.assigned_to_id == team.seller.id]
    await harness.send(team.seller, "/leads")
    assert shown_ids(harness, team.seller) == own[:10]
    captions = [text for text, _ in harness.last_buttons(team.seller.chat_id)]
    assert any("Статус" in c for c in captions) and any("Источник" in c for c in captions)
    assert not any("Продажник" in c for c in captions)
    await harness.press(team.seller, "Статус")
    await harness.press(team.seller, "новый")
    assert (
        shown_ids(harness, team.seller)
        == [r.id for r in rows if r.assigned_to_id == team.seller.id and r.status == LeadStatus.NEW][:10]
    )


async def test_seller_forging_another_sellers_filter_still_sees_own(
    harness: Harness, team: Team, leads25: list[int]
) -> None:
    rows = await live_rows(harness.uow_factory)
    await harness.click(team.seller, LeadListCB(action=LeadListAction.SHOW, seller=team.seller2.id))
    shown = shown_ids(harness, team.seller)
    assert shown == [r.id for r in rows if r.assigned_to_id == team.seller.id][:10]
    assert not {r.id for r in rows if r.assigned_to_id == team.seller2.id} & set(shown)
    await harness.click(team.seller, LeadListCB(action=LeadListAction.PICK_SELLER))
    assert "недоступен" in harness.alerts()[-1]


async def test_finance_sees_all(harness: Harness, team: Team, leads25: list[int]) -> None:
    await harness.send(team.finance, "/leads")
    assert shown_ids(harness, team.finance) == sorted(leads25, reverse=True)[:10]
    assert list_button(harness, team.finance, LeadListAction.PICK_SELLER) is not None


async def test_deleted_leads_never_appear(harness: Harness, team: Team, uow_factory: UnitOfWorkFactory) -> None:
    ids = await make_leads(uow_factory, team, 12, name=lambda i: f"Удаляемый {i}")
    gone = max(ids)
    async with uow_factory() as uow:
        await uow.leads.delete(team.rop.user, gone)
        await uow.commit()
    newest_first = sorted(ids, reverse=True)
    await harness.send(team.admin, "/leads")
    assert shown_ids(harness, team.admin) == newest_first[1:11]
    await harness.press(team.admin, "Старее")
    assert shown_ids(harness, team.admin) == newest_first[11:]
    await harness.click(team.admin, LeadListCB(action=LeadListAction.SHOW, status=int(STATUSES[11 % 4].code)))
    assert shown_ids(harness, team.admin) and gone not in shown_ids(harness, team.admin)
    await harness.send(team.admin, "/find удаляемый 11")
    assert "ничего не найдено" in harness.last_text(team.admin.chat_id)
    await harness.send(team.admin, f"/find {phone(11)[-7:]}")
    assert "ничего не найдено" in harness.last_text(team.admin.chat_id)


# ---- forged and outdated buttons ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "forged",
    [
        LeadListCB(action=LeadListAction.SHOW, source=99),
        LeadListCB(action=LeadListAction.SHOW, status=9),
        LeadListCB(action=LeadListAction.PICK_SOURCE, status=0),
        LeadListCB(action=LeadListAction.OLDER, seller=10**12, cursor=5),
    ],
    ids=["source-index", "status-code", "status-zero", "huge-seller"],
)
async def test_forged_filters_get_a_clear_answer(
    harness: Harness, team: Team, leads25: list[int], forged: LeadListCB
) -> None:
    await harness.click(team.admin, forged)
    assert harness.alerts() == ["Этот фильтр больше недоступен. Откройте список заново: /leads"]
    assert not harness.session.of(EditMessageText)


async def test_forged_seller_id_of_a_non_seller(harness: Harness, team: Team, leads25: list[int]) -> None:
    for not_a_seller in (team.mop, team.admin, team.finance):
        await harness.click(team.admin, LeadListCB(action=LeadListAction.SHOW, seller=not_a_seller.id))
    assert len(harness.alerts()) == 3
    assert all("недоступен" in a for a in harness.alerts())


async def test_forged_page_and_cursor_are_clamped(harness: Harness, team: Team, leads25: list[int]) -> None:
    newest_first = sorted(leads25, reverse=True)
    await harness.click(team.admin, LeadListCB(action=LeadListAction.SHOW, page=0))
    assert "стр. 1" in harness.last_text(team.admin.chat_id)
    assert shown_ids(harness, team.admin) == newest_first[:10]
    await harness.click(team.admin, LeadListCB(action=LeadListAction.OLDER, page=0, cursor=newest_first[9]))
    assert "стр. 2" in harness.last_text(team.admin.chat_id)
    assert shown_ids(harness, team.admin) == newest_first[10:20]
    await harness.click(team.admin, LeadListCB(action=LeadListAction.OLDER, page=3, cursor=2**63 - 1))
    assert shown_ids(harness, team.admin) == newest_first[:10]
    await harness.click(team.admin, LeadListCB(action=LeadListAction.NEWER, page=2, cursor=0))
    assert shown_ids(harness, team.admin) == newest_first[:10]
    assert "стр. 1" in harness.last_text(team.admin.chat_id)
    no_internal_errors(harness)


@pytest.mark.parametrize(
    "forged",
    ["ll:s::-1::1:", "ll:s::::-7:", f"ll:o::::3:{10**30}", "ll:n::::2:-3", f"ll:s:::{2**63}:1:"],
    ids=["negative-source", "negative-page", "huge-cursor", "negative-cursor", "seller-past-64-bits"],
)
async def test_numbers_out_of_range_are_a_stale_button(
    harness: Harness, team: Team, leads25: list[int], forged: str
) -> None:
    await harness.click(team.admin, forged)
    assert harness.alerts() == ["Эта кнопка устарела. Откройте карточку заново."]
    assert not harness.session.of(EditMessageText)


async def test_garbage_callback_data_is_answered(harness: Harness, team: Team) -> None:
    await harness.click(team.admin, "ll:zz:x:y:z:w:v")
    await harness.click(team.admin, "ll:s:1:2")
    assert len(harness.alerts()) == 2
    no_internal_errors(harness)


async def test_callback_data_fits_64_bytes(harness: Harness, team: Team, uow_factory: UnitOfWorkFactory) -> None:
    worst = LeadListCB(
        action=LeadListAction.PICK_SELLER,
        status=int(StatusCode.REFUSED),
        source=len(harness.settings.crm.sources) - 1,
        seller=9_999_999_999,
        page=999_999,
        cursor=9_999_999_999,
    )
    assert len(worst.pack().encode()) <= CALLBACK_DATA_LIMIT
    await make_leads(uow_factory, team, 25)
    await harness.send(team.admin, "/leads")
    await harness.press(team.admin, "Старее")
    for picker in ("Статус", "Источник", "Продажник"):
        await harness.press(team.admin, picker)
        for _, data in harness.last_buttons(team.admin.chat_id):
            assert len(data.encode()) <= CALLBACK_DATA_LIMIT
        await harness.press(team.admin, "Назад")
    every = [data for r in harness.session.requests if hasattr(r, "reply_markup") for data in _datas(r.reply_markup)]
    assert every and all(len(d.encode()) <= CALLBACK_DATA_LIMIT for d in every)


def _datas(markup: object) -> list[str]:
    rows = getattr(markup, "inline_keyboard", None) or []
    return [b.callback_data for row in rows for b in row if b.callback_data]


# ---- message size ----------------------------------------------------------------------------------


async def test_long_names_never_exceed_the_message_limit(
    harness: Harness, team: Team, uow_factory: UnitOfWorkFactory
) -> None:
    harness.settings.crm.page_size = 50
    ids = await make_leads(uow_factory, team, 50, name=lambda i: f"{i}" + "<&>" * 66)
    await harness.send(team.admin, "/leads")
    request = harness.last(team.admin.chat_id)
    assert len(request.text) <= 4096
    assert "&lt;&amp;&gt;" in request.text and "<&>" not in request.text
    # Rows that did not fit are still reachable through their buttons.
    assert shown_ids(harness, team.admin) == sorted(ids, reverse=True)
    assert "и ещё" in request.text
    await harness.send(team.admin, "/find &>")
    assert len(harness.last_text(team.admin.chat_id)) <= 4096


# ---- /find -----------------------------------------------------------------------------------------


@pytest.fixture
async def people(uow_factory: UnitOfWorkFactory, team: Team) -> dict[str, int]:
    names = {
        "ivan": ("Иван Петров", team.seller),
        "ivanova": ("Мария ИВАНОВА", team.seller2),
        "petr": ("Пётр Сидоров", None),
        "john": ("John Smith", team.seller),
    }
    result = {}
    async with uow_factory() as uow:
        for n, (key, (name, who)) in enumerate(names.items()):
            lead = await uow.leads.create(
                team.mop.user,
                LeadDraft(
                    client_name=name,
                    phone_number=f"+99893{7_700_000 + n * 1111}",
                    source="Instagram",
                    assigned_to=who.id if who else None,
                ),
            )
            result[key] = lead.id
        await uow.commit()
    return result


async def test_find_by_cyrillic_name_part_in_any_case(harness: Harness, team: Team, people: dict[str, int]) -> None:
    await harness.send(team.mop, "/find иВаН")
    assert set(shown_ids(harness, team.mop)) == {people["ivan"], people["ivanova"]}
    await harness.send(team.mop, "/find ПЕТР")  # «ё» in «Пётр» is matched by «е»
    assert set(shown_ids(harness, team.mop)) == {people["ivan"], people["petr"]}
    await harness.send(team.mop, "/find sMiTh")
    assert shown_ids(harness, team.mop) == [people["john"]]
    assert "Поиск «sMiTh»" in harness.last_text(team.mop.chat_id)


async def test_find_by_phone_digits(harness: Harness, team: Team, people: dict[str, int]) -> None:
    async with harness.uow_factory() as uow:
        lead = await uow.leads.get(team.admin.user, people["petr"])
    digits = lead.phone_number[-7:]
    await harness.send(team.admin, f"/find {digits[:3]} {digits[3:5]}-{digits[5:]}")
    assert shown_ids(harness, team.admin) == [people["petr"]]


async def test_sellers_find_does_not_reveal_others_leads(harness: Harness, team: Team, people: dict[str, int]) -> None:
    await harness.send(team.seller, "/find иван")
    assert shown_ids(harness, team.seller) == [people["ivan"]]
    await harness.send(team.seller, "/find петр")
    assert shown_ids(harness, team.seller) == [people["ivan"]]
    await harness.send(team.seller2, "/find сидоров")
    assert shown_ids(harness, team.seller2) == []
    assert "ничего не найдено" in harness.last_text(team.seller2.chat_id)


async def test_find_shows_one_page_and_says_there_are_more(
    harness: Harness, team: Team, uow_factory: UnitOfWorkFactory
) -> None:
    ids = await make_leads(uow_factory, team, 13)
    await harness.send(team.admin, "/find клиент")
    assert shown_ids(harness, team.admin) == sorted(ids, reverse=True)[:10]
    assert "Показаны первые 10" in harness.last_text(team.admin.chat_id)


async def test_find_without_text_asks_then_searches(harness: Harness, team: Team, people: dict[str, int]) -> None:
    await harness.send(team.mop, "/find")
    assert "Что ищем" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, None)  # e.g. a sticker: not text
    assert "Пришлите текст" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "и")
    assert harness.last_text(team.mop.chat_id) == "Для поиска нужно хотя бы 2 символа."
    await harness.send(team.mop, "иванова")  # still asked: the short text did not end the question
    assert shown_ids(harness, team.mop) == [people["ivanova"]]
    await harness.send(team.mop, "иван")  # the question is over: plain text is no longer a search
    assert shown_ids(harness, team.mop) == []


async def test_menu_find_button_asks_for_the_text(harness: Harness, team: Team, people: dict[str, int]) -> None:
    await harness.click(team.finance, MenuCB(action=MenuAction.FIND))
    assert "Что ищем" in harness.last_text(team.finance.chat_id)
    assert harness.session.of(AnswerCallbackQuery)
    await harness.send(team.finance, "smith")
    assert shown_ids(harness, team.finance) == [people["john"]]


async def test_find_too_short(harness: Harness, team: Team) -> None:
    await harness.send(team.admin, "/find  я ")
    assert harness.last_text(team.admin.chat_id) == "Для поиска нужно хотя бы 2 символа."


async def test_find_takes_like_wildcards_literally(
    harness: Harness, team: Team, uow_factory: UnitOfWorkFactory
) -> None:
    names = ["Ann_Lee", "AnnXLee", "Скидка 50% Ко", "Скидка 500 Ко", "A/B Отдел", "AB Отдел"]
    ids = dict(zip(names, await make_leads(uow_factory, team, len(names), name=lambda i: names[i]), strict=True))
    await harness.send(team.admin, "/find n_l")
    assert shown_ids(harness, team.admin) == [ids["Ann_Lee"]]
    await harness.send(team.admin, "/find 50%")
    assert shown_ids(harness, team.admin) == [ids["Скидка 50% Ко"]]
    await harness.send(team.admin, "/find a/b")
    assert shown_ids(harness, team.admin) == [ids["A/B Отдел"]]


async def test_page_with_text_and_updated_since_filters(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    """The API's filters go through the same prebuilt list statements: text, changed-since, a seller's scope."""
    ids = await make_leads(uow_factory, team, 12, name=lambda i: f"Клиент {i}" if i % 3 else f"Особый {i}")
    async with uow_factory() as uow:
        special = [lead_id for i, lead_id in enumerate(ids) if i % 3 == 0]
        page = await uow.leads.page(team.admin.user, LeadFilter(text="особ"), limit=10)
        assert [row.id for row in page.items] == sorted(special, reverse=True) and not page.has_more
        page = await uow.leads.page(team.admin.user, LeadFilter(text="особ"), limit=2, before_id=special[-1])
        assert [row.id for row in page.items] == sorted(special, reverse=True)[1:3] and page.has_more
        own = await uow.leads.page(team.seller.user, LeadFilter(text="особ"), limit=10)
        assert all(row.assigned_to_id == team.seller.id for row in own.items)
        assert {row.id for row in own.items} == {lead_id for i, lead_id in enumerate(ids) if i % 3 == 0 and i % 2 == 0}
        newest = (await uow.session.get(Lead, ids[-1])) or pytest.fail("no lead")
        newest.updated_at = utcnow() + timedelta(days=1)
        await uow.session.flush()
        since = await uow.leads.page(team.admin.user, LeadFilter(updated_since=newest.updated_at), limit=10)
        assert [row.id for row in since.items] == [ids[-1]]
