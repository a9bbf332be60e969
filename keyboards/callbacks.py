"""Every CallbackData factory of the bot. Ids and enum codes only: a button never carries free text."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

from aiogram.filters.callback_data import CallbackData
from pydantic import BeforeValidator

from db.enums import DuePreset, Role, SnoozeUntil, StatusCode
from db.ids import parse_index, parse_row_id
from db.repositories.integrations import AMOCRM, BITRIX24, META

CALLBACK_DATA_LIMIT = 64


def _read_with(parse: Callable[[str], int | None]) -> BeforeValidator:
    """A number field read by ``parse`` (db/ids.py), from button data and from code alike.

    A value outside the column's range fails validation, a ``ValueError``: aiogram's filter then takes
    the press for another class's, and an unmatched press ends in the stale-button alert (handlers/fallback.py).
    """

    def check(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        number = parse(value) if isinstance(value, str) else None
        if number is None:
            raise ValueError("not a number this bot could have sent")
        return number

    return BeforeValidator(check)


RowId = Annotated[int, _read_with(parse_row_id)]  # 1..2^63-1: leads.id, users.id, followups.id
Index = Annotated[int, _read_with(parse_index)]  # 0..2^63-1: pages, positions, "0 = none" ids


class MenuAction(StrEnum):
    NEW = "new"
    LEADS = "leads"
    MY_LEADS = "my"
    FIND = "find"
    TASKS = "tasks"
    USERS = "users"
    INVITE = "invite"
    OUTBOX = "outbox"


class MenuCB(CallbackData, prefix="mn"):
    action: MenuAction


class LangCB(CallbackData, prefix="lg"):
    lang: str


class LeadAction(StrEnum):
    OPEN = "o"
    STATUS = "s"  # show the allowed status moves
    COMMENT = "c"  # start writing a comment
    ASSIGN = "a"  # show salespeople to assign
    EDIT = "e"  # show editable fields
    DELETE = "d"  # ask for confirmation
    DELETE_CONFIRM = "D"
    MORE_COMMENTS = "mc"
    MORE_HISTORY = "mh"
    TAKE = "t"  # a salesperson takes the lead (into work / from the team chat)
    FOLLOWUP = "f"  # set a follow-up
    CARD = "k"  # redraw the card in the message the button is on ("« Back" of the card's sub-menus)


class LeadCB(CallbackData, prefix="ld"):
    action: LeadAction
    lead_id: RowId

    @classmethod
    def packed(cls, action: LeadAction, lead_id: int) -> str:
        """``LeadCB(action=action, lead_id=lead_id).pack()`` without building and validating a model.

        A card carries up to eight of these and a list page ten, on every update that shows one; the
        arguments are typed, and tests/test_callbacks.py checks the result is ``pack()``'s.
        """
        return f"{cls.__prefix__}{cls.__separator__}{action.value}{cls.__separator__}{int(lead_id)}"


class LeadStatusCB(CallbackData, prefix="ls"):
    lead_id: RowId
    code: StatusCode


class AssignCB(CallbackData, prefix="as"):
    lead_id: RowId
    user_id: RowId


class AssignPageCB(CallbackData, prefix="asp"):
    """A page of the assign menu, counted from 0; ``back``: the menu sits under the card (not /assign's)."""

    lead_id: RowId
    page: Index
    back: bool = True


class EditField(StrEnum):
    CLIENT_NAME = "n"
    PHONE_NUMBER = "p"
    SOURCE = "s"
    BUDGET = "b"
    NOTES = "t"
    CLOSING_DATE = "d"


class LeadEditCB(CallbackData, prefix="le"):
    lead_id: RowId
    field: EditField
    clear: bool = False  # empty an optional field (notes, closing date) instead of asking for a value


class LeadSourceCB(CallbackData, prefix="lsr"):
    """Set a lead's source; ``index`` points into settings.crm.sources."""

    lead_id: RowId
    index: Index


class MoreKind(StrEnum):
    COMMENTS = "c"
    HISTORY = "h"


class LeadMoreCB(CallbackData, prefix="lm"):
    """A page of a lead's comments or history, newest first; ``before_id`` 0 starts at the newest."""

    kind: MoreKind
    lead_id: RowId
    before_id: Index = 0


class UserAction(StrEnum):
    OPEN = "o"
    SET_ROLE = "r"
    DEACTIVATE = "d"
    ACTIVATE = "a"
    PAUSE = "p"  # on leave: no new leads from automatic assignment
    RESUME = "u"


class UserCB(CallbackData, prefix="us"):
    action: UserAction
    user_id: RowId
    role: Role | None = None


class NewLeadAction(StrEnum):
    SOURCE = "s"  # value = index into settings.crm.sources
    SKIP_BUDGET = "sb"
    SKIP_NOTES = "sn"
    ASSIGNEE = "a"  # value = users.id of a salesperson
    ASSIGNEE_PAGE = "ap"  # value = page of the salespeople, counted from 0
    SKIP_ASSIGNEE = "sa"
    CREATE = "c"
    CANCEL = "x"


class NewLeadCB(CallbackData, prefix="nl"):
    """A button of the /new conversation; each action is valid at its own step only."""

    action: NewLeadAction
    value: Index = 0


# ---- reminders and follow-ups ----


class FollowUpDueCB(CallbackData, prefix="fd"):
    preset: DuePreset


class ImportAction(StrEnum):
    RUN = "r"
    CANCEL = "x"


class ImportCB(CallbackData, prefix="im"):
    """A button under an import's preview; the file itself is in the conversation's state."""

    action: ImportAction


class FollowUpAction(StrEnum):
    DONE = "d"


class FollowUpCB(CallbackData, prefix="fu"):
    action: FollowUpAction
    followup_id: RowId
    in_list: bool = False  # pressed under /tasks: redraw the list afterwards


class SnoozeTarget(StrEnum):
    LEAD = "l"  # a reminder about a lead waiting in «новый»
    FOLLOWUP = "f"


class SnoozeCB(CallbackData, prefix="sz"):
    target: SnoozeTarget
    target_id: RowId
    until: SnoozeUntil
    in_list: bool = False


class OutboxAction(StrEnum):
    REFRESH = "r"
    RETRY_FAILED = "f"


class OutboxCB(CallbackData, prefix="ob"):
    """/outbox buttons (admins): redraw the overview, re-queue every failed notification."""

    action: OutboxAction


class IntegrationCode(StrEnum):
    """An integration as a button names it: one of the known names, never free text."""

    AMOCRM = AMOCRM
    BITRIX24 = BITRIX24
    META = META


class IntegrationsAction(StrEnum):
    REFRESH = "r"
    RETRY_FAILED = "f"  # of ``integration``


class IntegrationsCB(CallbackData, prefix="ig"):
    """/integrations buttons (admins): redraw the view, re-queue one integration's failed jobs."""

    action: IntegrationsAction
    integration: IntegrationCode | None = None


# ---- leads list ----


class LeadListAction(StrEnum):
    SHOW = "s"  # the first page with these filters (also "reset" when no filter is set)
    OLDER = "o"  # page ``page``: leads older than ``cursor`` (keyset, before_id)
    NEWER = "n"  # page ``page``: leads newer than ``cursor`` (keyset, after_id)
    PICK_STATUS = "ps"  # show the status choices, keeping the other filters
    PICK_SOURCE = "po"
    PICK_SELLER = "pa"
    EXPORT = "x"  # these filters' leads as an Excel file (/export)


class LeadListCB(CallbackData, prefix="ll"):
    """A /leads button. ``status`` is a StatusCode, ``source`` an index into settings.crm.sources,
    ``seller`` a users.id (0: unassigned); None means "any". Validated by the handler, not trusted."""

    action: LeadListAction
    status: Index | None = None
    source: Index | None = None
    seller: Index | None = None
    page: Index = 1
    cursor: Index | None = None

    @classmethod
    def packed(
        cls,
        action: LeadListAction,
        *,
        status: int | None = None,
        source: int | None = None,
        seller: int | None = None,
        page: int = 1,
        cursor: int | None = None,
    ) -> str:
        """``LeadListCB(...).pack()`` without building a model (a list page carries up to five)."""
        values = (status, source, seller, page, cursor)
        encoded = cls.__separator__.join("" if value is None else str(int(value)) for value in values)
        data = f"{cls.__prefix__}{cls.__separator__}{action.value}{cls.__separator__}{encoded}"
        if len(data.encode()) > CALLBACK_DATA_LIMIT:
            raise ValueError(f"callback data too long: {data!r}")
        return data


# ---- people ----


class InviteCB(CallbackData, prefix="iv"):
    """Create a one-time invite link for ``role`` (the role buttons of the invite menu)."""

    role: Role


class UsersPageCB(CallbackData, prefix="up"):
    """A page of the /users list, counted from 0."""

    page: Index = 0
