"""Import benchmark: a spreadsheet of 50,000 leads through ``db.imports.LeadImporter``, beside raw SQL.

In a fresh, migrated SQLite file (or ``--database-url`` for PostgreSQL), with a team of one admin and five
salespeople and automatic assignment off or on, it measures:

- reading and previewing the file (.xlsx and .csv): every row checked, duplicates looked up;
- the import itself (preview again, then the rows in batches of 500 through ``LeadRepository.create``:
  validation, history, assignment), rows per second;
- the peak of Python memory during the .xlsx import (``tracemalloc``, a separate pass on a fresh
  database, as tracing slows the code down);
- for reference, the same rows written with raw ``sqlite3.executemany`` (leads and their history rows)
  in one transaction: the floor, without validation, duplicates or history logic.

    python bench/bench_import.py [--rows 50000] [--mode manual|round_robin]

Figures go to docs/benchmarks.md ("Spreadsheet import").
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openpyxl import Workbook  # noqa: E402

from bot.config import Settings  # noqa: E402
from db.engine import open_database  # noqa: E402
from db.enums import Role  # noqa: E402
from db.imports import LeadImporter  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import User  # noqa: E402
from db.uow import UnitOfWorkFactory  # noqa: E402
from db.validation import fold_for_search  # noqa: E402

HEADER = ["Имя", "Телефон", "Источник", "Бюджет", "Заметки"]
SOURCES = ["Instagram", "Facebook", "Сайт", "Рекомендация"]


def rows(n: int) -> list[list[object]]:
    return [
        [f"Клиент {i}", f"+99890{i:07d}", SOURCES[i % len(SOURCES)], 10_000 + i, f"заметка {i}" if i % 3 else ""]
        for i in range(n)
    ]


def xlsx(data: list[list[object]]) -> bytes:
    book = Workbook(write_only=True)
    sheet = book.create_sheet("Лиды")
    sheet.append(HEADER)
    for row in data:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_bytes(data: list[list[object]]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=";")
    writer.writerow(HEADER)
    writer.writerows(data)
    return out.getvalue().encode("cp1251")


async def fresh(path: Path, mode: str) -> tuple[UnitOfWorkFactory, User, object]:
    url = f"sqlite+aiosqlite:///{path}"
    settings = Settings.model_validate({"database": {"url": url}, "assignment": {"mode": mode}})
    database = open_database(url)
    await upgrade(database.write_engine)
    factory = UnitOfWorkFactory(database, settings)
    async with factory() as uow:
        admin = User(telegram_id=1, role=Role.ADMIN, first_name="Админ", is_active=True)
        uow.session.add(admin)
        for n in range(5):
            uow.session.add(User(telegram_id=100 + n, role=Role.SELLER, first_name=f"Продажник {n}", is_active=True))
        await uow.commit()
    return factory, admin, database


def raw_sql(path: Path, data: list[list[object]]) -> float:
    """The same rows with plain executemany: leads, then one history row each, one transaction."""
    connection = sqlite3.connect(path)
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
    started = time.perf_counter()
    with connection:
        connection.executemany(
            "INSERT INTO leads (client_name, search_name, phone_number, status, source, budget, notes, "
            "created_by_id, created_at, updated_at, reminder_count) VALUES (?, ?, ?, 'новый', ?, ?, ?, 1, ?, ?, 0)",
            [(r[0], fold_for_search(str(r[0])), r[1], r[2], r[3], r[4] or None, now, now) for r in data],
        )
        connection.execute(
            "INSERT INTO lead_history (lead_id, action, new_value, changed_by_id, changed_at) "
            "SELECT id, 'created', 'новый', 1, ? FROM leads",
            (now,),
        )
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--mode", default="manual", choices=["manual", "round_robin", "least_loaded"])
    args = parser.parse_args()
    data = rows(args.rows)
    files = {"xlsx": xlsx(data), "csv": csv_bytes(data)}
    print(f"{args.rows} rows; .xlsx {len(files['xlsx']) / 1e6:.1f} MB, .csv {len(files['csv']) / 1e6:.1f} MB")
    print()
    print("| Case | Time | Rows/s |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, content in files.items():
            factory, admin, database = await fresh(Path(tmp) / f"{kind}.db", args.mode)
            started = time.perf_counter()
            preview = await LeadImporter(factory).preview(admin, content, f"leads.{kind}")
            took = time.perf_counter() - started
            assert preview.to_create == args.rows, preview.invalid_rows()[:3]
            print(f"| preview, .{kind} | {took:.1f} s | {args.rows / took:,.0f} |")
            started = time.perf_counter()
            report = await LeadImporter(factory).run(admin, content, f"leads.{kind}")
            took = time.perf_counter() - started
            assert report.created == args.rows
            print(f"| import, .{kind} (assignment: {args.mode}) | {took:.1f} s | {args.rows / took:,.0f} |")
            await database.dispose()  # type: ignore[attr-defined]
        path = Path(tmp) / "raw.db"
        _, _, database = await fresh(path, args.mode)
        await database.dispose()  # type: ignore[attr-defined]
        took = raw_sql(path, data)
        print(f"| raw SQL executemany (leads + history, no checks) | {took:.1f} s | {args.rows / took:,.0f} |")

        factory, admin, database = await fresh(Path(tmp) / "memory.db", args.mode)
        tracemalloc.start()
        await LeadImporter(factory).run(admin, files["xlsx"], "leads.xlsx")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        await database.dispose()  # type: ignore[attr-defined]
    print()
    print(f"Peak Python memory during the .xlsx import: {peak / 1e6:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
