"""Benchmark of issue 12's reports: the analytics on 1,000,000 leads and the Excel export of 100,000.

    python -m bench.bench_reports [--leads 1000000] [--export-leads 100000] [--runs 5] [--rebuild]
                                  [--history] [--no-export] [--backfill]

The databases are ``bench._data``'s (built once, cached in the temp directory, each run on a private
copy): leads created evenly over the last two years, so 30 days hold about 1/24 of them.

1. ``uow.analytics.summary(actor, period)``, the call ``/stats`` and ``GET /api/analytics/summary``
   share, in a read unit, for today, the last 7 and the last 30 days, as an admin (the team's leads)
   and as a salesperson (their own): the median of ``--runs`` runs after one warm-up. Then
   ``GET /api/analytics/summary?from=…&to=…`` for 30 days in-process (httpx ``ASGITransport``, a real
   bearer token). The statements the analytics sends are captured (``before_cursor_execute`` on the
   read engine) and their ``EXPLAIN QUERY PLAN`` printed: the period's leads must be found by an index,
   not a full ``SCAN leads``.
2. ``bot.xlsx_export.export_to_file`` (what ``/export`` and ``GET /api/leads/export.xlsx`` run) as an
   admin with no filter, each in a subprocess of its own: rows per second and the peak resident memory
   above the process's resident size just before; beside it the same rows and joins read
   with raw ``sqlite3`` (the floor), and raw ``sqlite3`` rows written with a bare XlsxWriter
   ``write_row`` in ``constant_memory`` mode. Memory: the child resets its peak resident size (VmHWM, via
   ``/proc/self/clear_refs``) just before the work and reads it after.

``--history`` first gives every live lead created in the last 31 days the history a real one has (its
``created`` row, its ``assigned`` row, the salesperson's status changes to «в работе» and on to its
status now, a comment) and the report facts the repositories would have kept on it as those rows were
written (``db.lead_facts``): the base data set has history on 200 leads only. ``--no-export`` skips
part 2.

``--backfill`` instead times migration 0008 (which adds the report facts to ``leads`` and fills them from
the history and comments) on a database at revision 0007 whose live leads all have such history, then
checks a sample of 5,000 leads against ``db.lead_facts.refresh``.

Not a test: the figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, func, select

from api.app import create_app
from bench._data import BenchData, cached_database, fresh_copy
from bot.config import Settings
from bot.texts import texts_for
from bot.xlsx_export import export_to_file
from db import lead_facts
from db.analytics import Period
from db.engine import Database, open_database
from db.enums import Role
from db.migrate import upgrade
from db.models import Lead
from db.repositories import LeadFilter
from db.uow import UnitOfWorkFactory

PERIODS = (("today", 1), ("7 days", 7), ("30 days", 30))


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _settings(path: Path) -> Settings:
    return Settings.model_validate({"database": {"url": _url(path)}})


def _period(settings: Settings, days: int) -> Period:
    today = datetime.now(settings.crm.tz).date()
    return Period.today(today) if days == 1 else Period.last_days(today, days)


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in kB: VmRSS (resident now) or VmHWM (its peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> int:
    """Resets this process's VmHWM to its resident size now (Linux: ``5`` into clear_refs); answers that
    size. ru_maxrss would not do: a child's starts at its parent's peak (fork copies it)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _status_kb("VmRSS")


async def _actors(factory: UnitOfWorkFactory, data: BenchData) -> dict[str, Any]:
    admin_id = data.users(Role.ADMIN)[0]
    seller_id = data.users(Role.SELLER)[0]
    async with factory(read_only=True) as uow:
        admin = await uow.users.by_telegram_id(data.telegram_id(admin_id))
        seller = await uow.users.by_telegram_id(data.telegram_id(seller_id))
    assert admin is not None and seller is not None
    return {"admin": admin, "salesperson": seller}


def _plans(path: Path, statements: list[tuple[str, Any]]) -> list[tuple[str, list[str]]]:
    raw = sqlite3.connect(path)
    try:
        out = []
        for sql, params in statements:
            rows = raw.execute("EXPLAIN QUERY PLAN " + sql, tuple(params or ())).fetchall()
            out.append((sql, [str(row[3]) for row in rows]))
        return out
    finally:
        raw.close()


async def _analytics(data: BenchData, runs: int) -> None:
    settings = _settings(data.path)
    database = open_database(settings.database.url)
    factory = UnitOfWorkFactory(database, settings)
    try:
        actors = await _actors(factory, data)
        print(f"\nanalytics: uow.analytics.summary, {data.leads:,} leads, median of {runs} runs after a warm-up\n")
        print("| period | who | leads in period | median ms | min ms | max ms |")
        print("|---|---|---:|---:|---:|---:|")
        for label, days in PERIODS:
            period = _period(settings, days)
            for who, actor in actors.items():
                times = []
                created = 0
                for run in range(runs + 1):
                    started = time.perf_counter()
                    async with factory(read_only=True) as uow:
                        summary = await uow.analytics.summary(actor, period)
                    if run:
                        times.append((time.perf_counter() - started) * 1000)
                    created = summary.total.created
                print(
                    f"| {label} | {who} | {created:,} | {statistics.median(times):,.0f} |"
                    f" {min(times):,.0f} | {max(times):,.0f} |"
                )
        await _plans_of_analytics(database, factory, actors, settings, data.path)
        await _api(settings, database, actors["admin"], runs)
    finally:
        await database.dispose()


async def _plans_of_analytics(
    database: Database, factory: UnitOfWorkFactory, actors: dict[str, Any], settings: Settings, path: Path
) -> None:
    seen: list[tuple[str, Any]] = []

    def listener(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, params))

    engine = database.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for actor in actors.values():
            async with factory(read_only=True) as uow:
                await uow.analytics.summary(actor, _period(settings, 30))
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    print("\nquery plans of the statements the 30-day analytics sends (admin, then salesperson):")
    full_scan = False
    for sql, details in _plans(path, [s for s in seen if s[0].lstrip().upper().startswith("SELECT")]):
        print("\n" + " ".join(sql.split())[:300] + (" …" if len(" ".join(sql.split())) > 300 else ""))
        for step in details:
            print(f"    {step}")
            if step.strip() == "SCAN leads" or step.startswith("SCAN leads "):
                full_scan = True
    print(f"\nfull SCAN leads in any plan: {'YES' if full_scan else 'no'}")


async def _api(settings: Settings, database: Database, admin: Any, runs: int) -> None:
    app = create_app(settings, database)
    async with app.state.uow_factory() as uow:
        token = await uow.tokens.issue(admin)
        await uow.commit()
    period = _period(settings, 30)
    url = f"/api/analytics/summary?from={period.first.isoformat()}&to={period.last.isoformat()}"
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        times = []
        for run in range(runs + 1):
            started = time.perf_counter()
            response = await client.get(url, headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, response.text
            if run:
                times.append(elapsed)
        created = response.json()["total"]["created"]
    print(
        f"\nGET {url} as admin: {created:,} leads, median {statistics.median(times):,.0f} ms"
        f" (min {min(times):,.0f}, max {max(times):,.0f}), {len(response.content):,} bytes"
    )


# --- the export, each measurement in a subprocess of its own -------------------------------------------

_RAW_EXPORT_SQL = (
    "SELECT l.id, l.client_name, l.phone_number, l.status, l.source, l.budget, l.notes, l.assigned_to_id,"
    " a.first_name, a.last_name, l.created_by_id, c.first_name, c.last_name, l.created_at, l.updated_at,"
    " l.closing_date, l.refusal_reason, l.deleted_at"
    " FROM leads l LEFT JOIN users a ON a.id = l.assigned_to_id JOIN users c ON c.id = l.created_by_id"
    " WHERE l.deleted_at IS NULL ORDER BY l.id DESC"
)


async def _child_export(path: Path, data: BenchData) -> dict[str, Any]:
    settings = _settings(path)
    database = open_database(settings.database.url)
    factory = UnitOfWorkFactory(database, settings)
    try:
        actors = await _actors(factory, data)
        texts = texts_for("ru")
        before = _reset_peak()
        started = time.perf_counter()
        async with factory(read_only=True) as uow:
            out, rows = await export_to_file(
                uow, actors["admin"], LeadFilter(), _period(settings, 30), texts, settings.crm
            )
        elapsed = time.perf_counter() - started
    finally:
        await database.dispose()
    return {"rows": rows, "seconds": elapsed, "before_kb": before, "file": out}


def _child_raw(path: Path, write: bool) -> dict[str, Any]:
    import xlsxwriter

    raw = sqlite3.connect(path)
    before = _reset_peak()
    started = time.perf_counter()
    rows = 0
    size = 0
    cursor = raw.execute(_RAW_EXPORT_SQL)
    if write:
        handle, out = tempfile.mkstemp(suffix=".xlsx")
        os.close(handle)
        workbook = xlsxwriter.Workbook(out, {"constant_memory": True})
        sheet = workbook.add_worksheet()
        while batch := cursor.fetchmany(1000):
            for values in batch:
                rows += 1
                sheet.write_row(rows, 0, values)
        workbook.close()
        size = os.path.getsize(out)
        os.unlink(out)
    else:
        while batch := cursor.fetchmany(1000):
            rows += len(batch)
    elapsed = time.perf_counter() - started
    raw.close()
    return {"rows": rows, "seconds": elapsed, "before_kb": before, "bytes": size}


def _child(kind: str, path: Path, leads: int) -> None:
    data = cached_database(leads, log=False)
    data = BenchData(path=path, leads=data.leads, team=data.team, hot=data.hot)
    if kind == "export":
        result = asyncio.run(_child_export(path, data))
        out = result.pop("file")
        result["bytes"] = os.path.getsize(out)
        os.unlink(out)
    else:
        result = _child_raw(path, write=kind == "raw+xlsxwriter")
    result["peak_kb"] = _status_kb("VmHWM")
    print(json.dumps(result))


def _export(data: BenchData) -> None:
    rows_out = []
    for kind, label in (
        ("raw", "raw sqlite3: the same rows and joins, fetched (floor)"),
        ("raw+xlsxwriter", "raw sqlite3 + bare XlsxWriter write_row"),
        ("export", "export_to_file (/export, GET /api/leads/export.xlsx)"),
    ):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.bench_reports",
                *("--child", kind, "--path", str(data.path)),
                *("--export-leads", str(data.leads)),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows_out.append((label, result))
    print(f"\nExcel export, {data.leads:,} leads (admin, no filter), one subprocess each\n")
    print("| what | rows | seconds | rows/s | RSS before, MB | peak RSS, MB | peak − before, MB | file MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows_out:
        before, peak = r["before_kb"] / 1024, r["peak_kb"] / 1024
        size = f"{r['bytes'] / 1e6:.1f}" if r["bytes"] else "—"
        print(
            f"| {label} | {r['rows']:,} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} | {before:.1f} |"
            f" {peak:.1f} | {peak - before:.1f} | {size} |"
        )
    floor, bare, export = (r for _, r in rows_out)
    print(f"\nexport vs raw fetch: {export['seconds'] / floor['seconds']:.1f}× the time")
    print(f"export vs raw fetch + bare XlsxWriter: {export['seconds'] / bare['seconds']:.1f}× the time")


def _give_history(path: Path, days: int | None = 31, *, facts: bool = True) -> None:
    """Realistic history and a comment for the live leads created in the last ``days`` days (all of them
    for None), in raw sqlite3, written a chunk of leads at a time; with ``facts``, the report facts the
    repositories would have kept on them (a database before migration 0008 has no such columns)."""
    rng = random.Random(12)
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        since = "" if days is None else (datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)).strftime(fmt)
        leads = connection.execute(
            "SELECT id, created_at, created_by_id, assigned_to_id, status FROM leads"
            " WHERE deleted_at IS NULL AND created_at >= ?",
            (since,),
        ).fetchall()
        written = [0, 0]
        connection.execute("BEGIN")
        for first in range(0, len(leads), 50_000):
            history: list[tuple[object, ...]] = []
            comments: list[tuple[object, ...]] = []
            # What the repositories keep on the lead as they write such rows (db.lead_facts): assigned at,
            # first response (the comment, before any status change), ever «в работе».
            kept: list[tuple[object, ...]] = []
            for lead_id, created_s, creator, assignee, status in leads[first : first + 50_000]:
                created = datetime.fromisoformat(created_s)
                history.append((lead_id, "created", None, None, "новый", creator, created_s))
                if assignee is None:
                    continue
                history.append((lead_id, "assigned", None, None, f"seller {assignee}", creator, created_s))
                at = created + timedelta(seconds=rng.randrange(60, 6 * 3600))
                comments.append((lead_id, "Позвонил, перезвонить завтра", assignee, at.strftime(fmt)))
                kept.append((created_s, at.strftime(fmt), status != "новый", lead_id))
                if status == "новый":
                    continue
                at += timedelta(seconds=rng.randrange(60, 3600))
                history.append((lead_id, "status_changed", None, "новый", "в работе", assignee, at.strftime(fmt)))
                if status != "в работе":
                    at += timedelta(seconds=rng.randrange(3600, 5 * 86400))
                    history.append((lead_id, "status_changed", None, "в работе", status, assignee, at.strftime(fmt)))
            connection.executemany(
                "INSERT INTO lead_history (lead_id, action, field, old_value, new_value, changed_by_id, changed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                history,
            )
            connection.executemany(
                "INSERT INTO comments (lead_id, text, created_by_id, created_at) VALUES (?, ?, ?, ?)", comments
            )
            if facts:
                connection.executemany(
                    "UPDATE leads SET assigned_at = ?, first_response_at = ?, ever_in_work = ? WHERE id = ?", kept
                )
            written[0] += len(history)
            written[1] += len(comments)
        connection.execute("COMMIT")
        print(f"history: {written[0]:,} rows and {written[1]:,} comments for {len(leads):,} leads")
    finally:
        connection.close()


# The revision before the report facts were kept on the lead: --backfill migrates from it.
BEFORE_FACTS = "0007"


async def _upgrade_seconds(path: Path) -> float:
    database = open_database(_url(path))
    try:
        started = time.perf_counter()
        await upgrade(database.write_engine)
        return time.perf_counter() - started
    finally:
        await database.dispose()


async def _recomputed_differently(path: Path, sample: int) -> tuple[int, int]:
    """(leads sampled, how many of them db.lead_facts.refresh would change): the backfill's check."""
    database = open_database(_url(path))
    columns = (Lead.id, Lead.assigned_at, Lead.first_response_at, Lead.ever_in_work)
    try:
        async with database.writer() as session:
            total = int(await session.scalar(select(func.max(Lead.id))) or 0)
            ids = sorted(random.Random(8).sample(range(1, total + 1), min(sample, total)))
            before = set((await session.execute(select(*columns).where(Lead.id.in_(ids)))).all())
            await lead_facts.refresh(session, ids)
            after = set((await session.execute(select(*columns).where(Lead.id.in_(ids)))).all())
            await session.rollback()
        return len(before), len(after - before)
    finally:
        await database.dispose()


def _backfill(leads: int, directory: Path, rebuild: bool) -> None:
    """Migration 0008 on ``leads`` leads that all have history: the seconds of its upgrade (adding the
    columns and filling them), then a sample recomputed by db.lead_facts against what it filled."""
    data = fresh_copy(cached_database(leads, rebuild=rebuild, revision=BEFORE_FACTS), directory)
    _give_history(data.path, days=None, facts=False)
    seconds = asyncio.run(_upgrade_seconds(data.path))
    print(f"\nmigration {BEFORE_FACTS} → head (0008: add the report facts, backfill them): {seconds:.1f} s")
    sampled, changed = asyncio.run(_recomputed_differently(data.path, 5000))
    print(f"backfill vs db.lead_facts.refresh on {sampled:,} random leads: {changed} differ")
    data.path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--export-leads", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--history", action="store_true", help="realistic history for the last 31 days' leads")
    parser.add_argument("--no-export", action="store_true", help="the analytics only")
    parser.add_argument("--backfill", action="store_true", help="time migration 0008 on leads that all have history")
    parser.add_argument("--child", choices=("export", "raw", "raw+xlsxwriter"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.path, args.export_leads)
        return
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="leadbot-bench-") as tmp:
        if args.backfill:
            _backfill(args.leads, Path(tmp), args.rebuild)
            return
        big = fresh_copy(cached_database(args.leads, rebuild=args.rebuild), Path(tmp))
        if args.history:
            _give_history(big.path)
        asyncio.run(_analytics(big, args.runs))
        big.path.unlink()
        if args.no_export:
            return
        small_dir = Path(tmp) / "export"
        small_dir.mkdir()
        small = fresh_copy(cached_database(args.export_leads, rebuild=args.rebuild), small_dir)
        _export(small)


if __name__ == "__main__":
    main()
