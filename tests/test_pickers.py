"""Salesperson pickers (the /leads filter, the assign menu and /assign, the /new assignee step) page their
people 20 at a time, so a large team never breaks Telegram's inline-keyboard limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from aiogram.methods import EditMessageText, SendMessage
from aiogram.types import InlineKeyboardMarkup

from bot.texts import texts_for
from db.enums import Role
from db.repositories import LeadDraft
from handlers.new_lead import NewLead
from keyboards.callbacks import (
    CALLBACK_DATA_LIMIT,
    AssignCB,
    AssignPageCB,
    LeadAction,
    LeadCB,
    LeadListAction,
    LeadListCB,
    NewLeadAction,
    NewLeadCB,
)
from keyboards.pager import PEOPLE_PER_PAGE, page_of
from tests.conftest import Harness, Member, Team, add_member
from tests.test_lead_card import load, make_lead
from tests.test_new_lead import all_leads, state_of, walk

T = texts_for("ru")
PREV, NEXT = T.t("common.prev"), T.t("common.next")
CROWD = 45
LONG_LAST_NAME = "Длиннофамильная" * 8  # a name far over a button's 64 characters


@dataclass(frozen=True)
class Person:
    id: int
    name: str


@pytest.fixture
async def sellers(harness: Harness, team: Team) -> list[Person]:
    """45 more active salespeople (one with a very long name); every active salesperson, in picker order."""
    async with harness.uow_factory() as uow:
        for index in range(CROWD):
            last = LONG_LAST_NAME if index == CROWD - 1 else "Тестов"
            await add_member(uow, 50_000 + index, Role.SELLER, f"Seller{index:02d}", last)
        await uow.commit()
    async with harness.uow_factory() as uow:
        return [Person(user.id, user.full_name) for user in await uow.users.active_sellers()]


# ---- what the bot sent ---------------------------------------------------------------------------------


def markups(harness: Harness) -> list[InlineKeyboardMarkup]:
    return [
        request.reply_markup
        for request in harness.session.requests
        if isinstance(request, SendMessage | EditMessageText) and isinstance(request.reply_markup, InlineKeyboardMarkup)
    ]


def assert_within_limits(harness: Harness) -> None:
    """Every inline keyboard sent: ≤ 100 buttons, ≤ 8 a row, ~10 KB of JSON, captions ≤ 64 characters."""
    sent = markups(harness)
    assert sent
    for markup in sent:
        rows = markup.inline_keyboard
        assert sum(len(row) for row in rows) <= 100
        assert all(1 <= len(row) <= 8 for row in rows)
        assert len(markup.model_dump_json(exclude_none=True).encode()) <= 10_000
        for row in rows:
            for button in row:
                assert 0 < len(button.text) <= 64, button.text
                assert len((button.callback_data or "").encode()) <= CALLBACK_DATA_LIMIT


def last_markup(harness: Harness, member: Member) -> InlineKeyboardMarkup:
    markup = harness.last(member.chat_id).reply_markup
    assert isinstance(markup, InlineKeyboardMarkup)
    return markup


def captions(harness: Harness, member: Member) -> list[str]:
    return [text for text, _ in harness.last_buttons(member.chat_id)]


def nav_captions(harness: Harness, member: Member) -> list[str]:
    return [text for text in captions(harness, member) if text in (PREV, NEXT)]


def data_of(harness: Harness, member: Member, caption: str) -> str:
    found = [data for text, data in harness.last_buttons(member.chat_id) if text == caption]
    assert len(found) == 1, (caption, harness.last_buttons(member.chat_id))
    return found[0]


def nav_data(harness: Harness, member: Member) -> list[str]:
    return [data for text, data in harness.last_buttons(member.chat_id) if text in (PREV, NEXT)]


# How each picker names a salesperson in its buttons' data: the salesperson's id, or None for other buttons.
PersonOf = Callable[[str], int | None]


def list_person(data: str) -> int | None:
    if not data.startswith("ll:"):
        return None
    cb = LeadListCB.unpack(data)
    return cb.seller if cb.action == LeadListAction.SHOW and cb.seller else None


def assign_person(data: str) -> int | None:
    return AssignCB.unpack(data).user_id if data.startswith("as:") else None


def new_lead_person(data: str) -> int | None:
    if not data.startswith("nl:"):
        return None
    cb = NewLeadCB.unpack(data)
    return cb.value if cb.action == NewLeadAction.ASSIGNEE else None


def people_shown(harness: Harness, member: Member, person_of: PersonOf) -> list[int]:
    return [pid for _, data in harness.last_buttons(member.chat_id) if (pid := person_of(data)) is not None]


def caption_of(harness: Harness, member: Member, person_of: PersonOf, person_id: int) -> str:
    return next(text for text, data in harness.last_buttons(member.chat_id) if person_of(data) == person_id)


async def choose(harness: Harness, member: Member, person_of: PersonOf, person_id: int) -> None:
    """Press the button of ``person_id`` in the last message to ``member``."""
    data = next(data for _, data in harness.last_buttons(member.chat_id) if person_of(data) == person_id)
    await harness.click(member, data)


async def walk_pages(harness: Harness, member: Member, person_of: PersonOf) -> list[list[int]]:
    """From the page on screen, press "Next »" until there is none; the people of every page seen."""
    pages = [people_shown(harness, member, person_of)]
    while NEXT in captions(harness, member):
        await harness.press(member, NEXT)
        pages.append(people_shown(harness, member, person_of))
        assert len(pages) <= 10, "paging never ends"
    return pages


def expected_pages(people: list[Person]) -> list[list[int]]:
    ids = [person.id for person in people]
    return [ids[start : start + PEOPLE_PER_PAGE] for start in range(0, len(ids), PEOPLE_PER_PAGE)]


# ---- the pager itself ----------------------------------------------------------------------------------


def test_page_of_clamps_and_slices() -> None:
    items = list(range(45))
    first = page_of(items, 0)
    assert first.items == tuple(range(20)) and (first.page, first.has_prev, first.has_next) == (0, False, True)
    middle = page_of(items, 1)
    assert middle.items == tuple(range(20, 40)) and (middle.has_prev, middle.has_next) == (True, True)
    for forged in (2, 3, 999, 10**30):
        last = page_of(items, forged)
        assert last.items == tuple(range(40, 45)) and (last.page, last.has_prev, last.has_next) == (2, True, False)
    assert page_of(items, -7) == first
    exact = page_of(list(range(40)), 5)
    assert (exact.page, exact.items[-1], exact.has_next) == (1, 39, False)
    empty = page_of([], 3)
    assert (empty.items, empty.page, empty.has_prev, empty.has_next) == ((), 0, False, False)
    assert page_of(items, 1, size=7).items == tuple(range(7, 14))


# ---- (1) the /leads salesperson filter -----------------------------------------------------------------


async def open_seller_filter(harness: Harness, member: Member) -> None:
    await harness.send(member, "/leads")
    await harness.click(member, data_of(harness, member, T.t("leads.btn.seller")))


async def test_list_seller_filter_pages(harness: Harness, team: Team, sellers: list[Person]) -> None:
    expected = expected_pages(sellers)
    assert len(expected) == 3
    rop = team.rop
    await open_seller_filter(harness, rop)
    fixed = [T.t("leads.btn.unassigned"), T.t("leads.btn.any_seller"), T.t("common.back")]

    pages = await walk_pages(harness, rop, list_person)
    assert pages == expected
    assert pages[-1][-1] == sellers[-1].id
    assert_within_limits(harness)

    # Every page kept "Unassigned", "All salespeople" and « Back; the first page only "Next »".
    pickers = [
        m for m in markups(harness) if any(list_person(b.callback_data or "") for r in m.inline_keyboard for b in r)
    ]
    assert len(pickers) == 3
    for markup in pickers:
        texts = [b.text for row in markup.inline_keyboard for b in row]
        assert all(any(caption in text for text in texts) for caption in fixed)
    assert [b.text for row in pickers[0].inline_keyboard for b in row if b.text in (PREV, NEXT)] == [NEXT]
    assert nav_captions(harness, rop) == [PREV]

    await harness.press(rop, PREV)
    assert people_shown(harness, rop, list_person) == expected[1]
    assert nav_captions(harness, rop) == [PREV, NEXT]
    await harness.press(rop, PREV)
    assert people_shown(harness, rop, list_person) == expected[0]

    # The page travels 1-based in LeadListCB.page; a forged one is clamped, a negative one is refused.
    await harness.click(rop, LeadListCB(action=LeadListAction.PICK_SELLER, page=999))
    assert people_shown(harness, rop, list_person) == expected[-1]
    await harness.click(rop, LeadListCB(action=LeadListAction.PICK_SELLER, page=0))
    assert people_shown(harness, rop, list_person) == expected[0]
    assert harness.alerts() == []
    await harness.click(rop, "ll:pa::::-5:")
    assert harness.alerts() == [T.t("common.stale_button")]
    assert_within_limits(harness)


async def test_list_seller_chosen_from_page_two_filters_and_keeps_its_mark(
    harness: Harness, team: Team, sellers: list[Person]
) -> None:
    chosen = sellers[PEOPLE_PER_PAGE + 3]
    other = sellers[1]
    async with harness.uow_factory() as uow:
        mine = await uow.leads.create(
            team.mop.user, LeadDraft("Клиент выбранного", "+998901111111", "Сайт", None, None, chosen.id)
        )
        theirs = await uow.leads.create(
            team.mop.user, LeadDraft("Клиент другого", "+998902222222", "Сайт", None, None, other.id)
        )
        await uow.commit()
        mine_id, theirs_id = mine.id, theirs.id

    rop = team.rop
    await open_seller_filter(harness, rop)
    await harness.press(rop, NEXT)
    await choose(harness, rop, list_person, chosen.id)
    text = harness.last_text(rop.chat_id)
    assert T.t("leads.header.seller", name=chosen.name) in text
    opened = [LeadCB.unpack(data).lead_id for _, data in harness.last_buttons(rop.chat_id) if data.startswith("ld:")]
    assert opened == [mine_id] and theirs_id not in opened

    # Back in the picker, the chosen salesperson carries its ✓ on its own page, and nobody else does.
    await harness.click(rop, data_of(harness, rop, T.t("leads.btn.seller")))
    assert not any(text.startswith("✓") for text in captions(harness, rop))
    await harness.press(rop, NEXT)
    marked = [text for text in captions(harness, rop) if text.startswith("✓")]
    assert marked == [caption_of(harness, rop, list_person, chosen.id)]
    assert chosen.name[:20] in marked[0]
    assert not any(T.t("leads.btn.any_seller") in text and text.startswith("✓") for text in captions(harness, rop))
    # The picker's « / » keep the list's filter.
    assert LeadListCB.unpack(nav_data(harness, rop)[0]).seller == chosen.id
    assert_within_limits(harness)


# ---- (2) the card's assign menu and /assign ------------------------------------------------------------


async def test_card_assign_menu_pages_and_assigns_from_page_two(
    harness: Harness, team: Team, sellers: list[Person]
) -> None:
    expected = expected_pages(sellers)
    lead_id = await make_lead(harness, team, assigned=team.seller)
    rop = team.rop
    await harness.send(rop, f"/lead {lead_id}")
    await harness.click(rop, LeadCB(action=LeadAction.ASSIGN, lead_id=lead_id))
    assert len(people_shown(harness, rop, assign_person)) == PEOPLE_PER_PAGE
    assert nav_captions(harness, rop) == [NEXT]
    assert captions(harness, rop)[-1] == T.t("common.back")

    pages = await walk_pages(harness, rop, assign_person)
    assert pages == expected and pages[-1][-1] == sellers[-1].id
    # The card stays above the menu on every page; the current assignee keeps its ✓.
    assert T.t("card.choose.assignee") in harness.last_text(rop.chat_id)
    assert f"#{lead_id}" in harness.last_text(rop.chat_id)
    assert caption_of(harness, rop, assign_person, team.seller.id).startswith("✓ ")
    assert [t for t in captions(harness, rop) if t.startswith("✓")] == [
        caption_of(harness, rop, assign_person, team.seller.id)
    ]
    assert captions(harness, rop)[-1] == T.t("common.back")
    assert all(AssignPageCB.unpack(data).back for data in nav_data(harness, rop))

    await harness.press(rop, PREV)
    assert people_shown(harness, rop, assign_person) == expected[1]
    assert not any(text.startswith("✓") for text in captions(harness, rop))

    for forged, page in ((999, -1), (0, 0), (2**40, -1)):
        await harness.click(rop, AssignPageCB(lead_id=lead_id, page=forged))
        assert people_shown(harness, rop, assign_person) == expected[page]
    assert harness.alerts() == []
    await harness.click(rop, f"asp:{lead_id}:-3:1")
    assert harness.alerts() == [T.t("common.stale_button")]

    await harness.click(rop, AssignPageCB(lead_id=lead_id, page=1))
    chosen = expected[1][5]
    await choose(harness, rop, assign_person, chosen)
    assert (await load(harness, lead_id)).assigned_to_id == chosen
    assert_within_limits(harness)


async def test_assign_command_pages_keep_its_text_and_assign(
    harness: Harness, team: Team, sellers: list[Person]
) -> None:
    expected = expected_pages(sellers)
    lead_id = await make_lead(harness, team, name="Клиент <b>", assigned=None)
    admin = team.admin
    await harness.send(admin, f"/assign {lead_id}")
    question = harness.last_text(admin.chat_id)
    assert question == T.t("card.assign.choose", lead_id=lead_id, name="Клиент &lt;b&gt;")
    assert isinstance(harness.last(admin.chat_id), SendMessage)
    assert people_shown(harness, admin, assign_person) == expected[0]
    assert T.t("common.back") not in captions(harness, admin)

    pages = await walk_pages(harness, admin, assign_person)
    assert pages == expected
    last = harness.last(admin.chat_id)
    assert isinstance(last, EditMessageText) and last.text == question
    assert T.t("common.back") not in captions(harness, admin)
    assert not any(AssignPageCB.unpack(data).back for data in nav_data(harness, admin))

    await harness.press(admin, PREV)
    assert people_shown(harness, admin, assign_person) == expected[1]
    await harness.click(admin, AssignPageCB(lead_id=lead_id, page=999, back=False))
    assert people_shown(harness, admin, assign_person) == expected[-1]
    assert harness.last_text(admin.chat_id) == question

    chosen = expected[-1][0]
    await choose(harness, admin, assign_person, chosen)
    assert (await load(harness, lead_id)).assigned_to_id == chosen
    assert_within_limits(harness)


async def test_assign_page_checks_permissions(harness: Harness, team: Team, sellers: list[Person]) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    await harness.click(team.seller, AssignPageCB(lead_id=lead_id, page=1))
    await harness.click(team.rop, AssignPageCB(lead_id=lead_id + 1000, page=1))
    assert len(harness.alerts()) == 2
    assert harness.session.of(EditMessageText) == []
    assert (await load(harness, lead_id)).assigned_to_id == team.seller.id


# ---- (3) the /new assignee step ------------------------------------------------------------------------


async def test_new_lead_assignee_step_pages_and_assigns_from_page_two(
    harness: Harness, team: Team, sellers: list[Person]
) -> None:
    expected = expected_pages(sellers)
    mop = team.mop
    await walk(harness, mop, "assignee")
    fixed = [T.t("common.skip"), T.t("common.cancel")]
    assert people_shown(harness, mop, new_lead_person) == expected[0]
    assert nav_captions(harness, mop) == [NEXT]
    assert captions(harness, mop)[-2:] == fixed

    pages = await walk_pages(harness, mop, new_lead_person)
    assert pages == expected and pages[-1][-1] == sellers[-1].id
    assert isinstance(harness.last(mop.chat_id), EditMessageText)
    assert T.t("newlead.ask_assignee") in harness.last_text(mop.chat_id)
    assert captions(harness, mop)[-2:] == fixed
    assert nav_captions(harness, mop) == [PREV]

    await harness.press(mop, PREV)
    assert people_shown(harness, mop, new_lead_person) == expected[1]
    assert captions(harness, mop)[-2:] == fixed

    for forged, page in ((999, -1), (0, 0)):
        await harness.click(mop, NewLeadCB(action=NewLeadAction.ASSIGNEE_PAGE, value=forged))
        assert people_shown(harness, mop, new_lead_person) == expected[page]
    assert await state_of(harness, mop) == NewLead.assignee.state
    assert harness.alerts() == []
    await harness.click(mop, "nl:ap:-4")
    assert harness.alerts() == [T.t("common.stale_button")]
    assert await state_of(harness, mop) == NewLead.assignee.state
    harness.session.clear()

    await harness.click(mop, NewLeadCB(action=NewLeadAction.ASSIGNEE_PAGE, value=1))
    chosen = expected[1][-1]
    await choose(harness, mop, new_lead_person, chosen)
    assert await state_of(harness, mop) == NewLead.confirm.state
    # A page button of the step just left is stale now.
    await harness.click(mop, NewLeadCB(action=NewLeadAction.ASSIGNEE_PAGE, value=0))
    assert harness.alerts() == [T.t("newlead.other_step")]
    await harness.press(mop, T.t("newlead.btn.create"))
    leads = await all_leads(harness)
    assert len(leads) == 1 and leads[0].assigned_to_id == chosen
    assert_within_limits(harness)


# ---- a small team --------------------------------------------------------------------------------------


async def test_small_team_pickers_have_no_navigation(harness: Harness, team: Team) -> None:
    # Another phone than the one walk() types into /new.
    lead_id = await make_lead(harness, team, assigned=team.seller, phone="+998907654321")
    both = {team.seller.id, team.seller2.id}

    await open_seller_filter(harness, team.rop)
    assert set(people_shown(harness, team.rop, list_person)) == both
    assert nav_captions(harness, team.rop) == []

    await harness.click(team.rop, LeadCB(action=LeadAction.ASSIGN, lead_id=lead_id))
    assert set(people_shown(harness, team.rop, assign_person)) == both
    assert nav_captions(harness, team.rop) == []
    await harness.send(team.admin, f"/assign {lead_id}")
    assert set(people_shown(harness, team.admin, assign_person)) == both
    assert nav_captions(harness, team.admin) == []

    await walk(harness, team.mop, "assignee")
    assert set(people_shown(harness, team.mop, new_lead_person)) == both
    assert nav_captions(harness, team.mop) == []
    # A forged page of a one-page picker is the one page.
    await harness.click(team.mop, NewLeadCB(action=NewLeadAction.ASSIGNEE_PAGE, value=3))
    assert set(people_shown(harness, team.mop, new_lead_person)) == both
    assert_within_limits(harness)
