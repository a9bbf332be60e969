"""The /integrations view (admins): per integration configured, its queue, links, last outcome and the
latest failed jobs. Every error shown came from a remote system: shortened as plain text, then escaped."""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from bot.presentation.cards import shorten
from bot.presentation.views import cut, esc, format_dt
from bot.texts import Texts
from db.repositories.integrations import CRM_INTEGRATIONS, DONE, FAILED, PENDING, SENDING, IntegrationOverview

LAST_ERROR_PREVIEW = 300
JOB_ERROR_PREVIEW = 150


def integration_name(texts: Texts, integration: str) -> str:
    return texts.t(f"integration.{integration}")


def render_integrations(texts: Texts, overviews: Sequence[IntegrationOverview], tz: ZoneInfo) -> str:
    if not overviews:
        return "\n".join([texts.t("integrations.title"), "", texts.t("integrations.none")])
    lines = [texts.t("integrations.title")]
    for overview in overviews:
        lines += ["", *_block(texts, overview, tz)]
    return cut("\n".join(lines))


def _block(texts: Texts, overview: IntegrationOverview, tz: ZoneInfo) -> list[str]:
    counts = overview.counts
    lines = [
        texts.t("integrations.name", name=integration_name(texts, overview.integration)),
        texts.t("integrations.queue", pending=counts[PENDING], sending=counts[SENDING]),
        texts.t("integrations.done", done=counts[DONE], failed=counts[FAILED]),
    ]
    if overview.integration in CRM_INTEGRATIONS:  # Meta's Conversions API sends events; it links nothing
        lines.append(texts.t("integrations.linked", linked=overview.linked))
    lines.append(texts.t("integrations.last_success", at=format_dt(overview.last_success_at, tz)))
    if overview.last_error:
        lines.append(
            texts.t(
                "integrations.last_error",
                at=format_dt(overview.last_error_at, tz),
                error=esc(shorten(overview.last_error, LAST_ERROR_PREVIEW)),
            )
        )
    else:
        lines.append(texts.t("integrations.no_error"))
    if overview.failed:
        lines.append(texts.t("integrations.failed_header"))
        for job in overview.failed:
            kind = f"integrations.kind.{job.kind}"
            lines.append(
                texts.t(
                    "integrations.failed_row",
                    lead_id=job.lead_id,
                    kind=texts.t(kind) if texts.has(kind) else esc(job.kind),
                    attempts=job.attempts,
                    error=esc(shorten(job.last_error or "—", JOB_ERROR_PREVIEW)),
                )
            )
    return lines
