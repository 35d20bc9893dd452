"""Import the citizen directory from CSV: validate every row, upsert by national number.

A bad row is reported as ``FILE:LINE: message`` (national number masked) and skipped;
it never stops the good rows. Parsing is synchronous and runs in a worker thread; the
database writes are async like the rest of the store.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from crm_bridge.db import session_factory
from crm_bridge.models import (
    LANGUAGES,
    PHONE_MAX_LENGTH,
    POSTAL_CODE_MAX_LENGTH,
    Citizen,
)
from crm_bridge.phone import normalise_phone
from crm_bridge.privacy import mask_digits_in_text
from crm_bridge.register_number import validate
from crm_bridge.utc import utc_now

COLUMNS: tuple[str, ...] = (
    "national_number",
    "first_name",
    "last_name",
    "preferred_language",
    "street",
    "postal_code",
    "city",
    "phone",
    "email",
)
REQUIRED: tuple[str, ...] = ("national_number", "first_name", "last_name")
BATCH_SIZE = 500
# Fields copied to the Citizen row; national_number is the key and never changes.
_DATA_FIELDS = COLUMNS[1:]


@dataclass
class ImportReport:
    """Counts per outcome, and one ``FILE:LINE: message`` per rejected row."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class CitizenRow:
    """A validated CSV row, ready to upsert."""

    line: int
    national_number: str
    first_name: str
    last_name: str
    preferred_language: str | None
    street: str | None
    postal_code: str | None
    city: str | None
    phone: str | None
    email: str | None


def _optional(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _delimiter(header_line: str) -> str:
    """Sniff ``;`` (Excel in a Belgian locale) or ``,`` from the known header row."""
    return ";" if header_line.count(";") > header_line.count(",") else ","


def _validate_row(line: int, raw: Mapping[str | None, Any]) -> CitizenRow:
    """Return the clean row or raise ValueError with a message safe to print."""
    if raw.get(None):
        raise ValueError("too many fields")
    values = {key: value for key, value in raw.items() if isinstance(key, str)}

    def text(name: str) -> str | None:
        value = values.get(name)
        return _optional(value) if isinstance(value, str) else None

    national_number = validate(text("national_number") or "")
    first_name, last_name = text("first_name"), text("last_name")
    if not first_name or not last_name:
        raise ValueError("first_name and last_name are required")
    language = text("preferred_language")
    if language is not None:
        language = language.lower()
        if language not in LANGUAGES:
            raise ValueError(
                f"preferred_language {language!r} is not one of {', '.join(LANGUAGES)}"
            )
    raw_phone = text("phone")
    phone = normalise_phone(raw_phone) if raw_phone else None
    if raw_phone and (phone is None or len(phone) > PHONE_MAX_LENGTH):
        raise ValueError("phone is not a phone number")
    postal_code = text("postal_code")
    if postal_code and len(postal_code) > POSTAL_CODE_MAX_LENGTH:
        raise ValueError("postal_code is too long")
    email = text("email")
    if email and ("@" not in email or any(ch.isspace() for ch in email)):
        raise ValueError("email is not an e-mail address")
    return CitizenRow(
        line=line,
        national_number=national_number,
        first_name=first_name,
        last_name=last_name,
        preferred_language=language,
        street=text("street"),
        postal_code=postal_code,
        city=text("city"),
        phone=phone,
        email=email,
    )


def parse_citizens_csv(path: Path) -> tuple[list[CitizenRow], list[tuple[int, str]]]:
    """Read and validate ``path``; return the good rows and ``(line, message)`` errors."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [(0, f"cannot read file: {exc.strerror}")]
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [(data[: exc.start].count(b"\n") + 1, "not UTF-8 text")]
    header_line = content.split("\n", 1)[0]
    reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=_delimiter(header_line))
    header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    problems = []
    if missing := [c for c in REQUIRED if c not in header]:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown := [h for h in header if h not in COLUMNS]:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    if problems:
        return [], [(1, f"bad header: {'; '.join(problems)}")]
    reader.fieldnames = header

    rows: list[CitizenRow] = []
    errors: list[tuple[int, str]] = []
    first_seen: dict[str, int] = {}
    for raw in reader:
        line = reader.line_num
        if not raw.get(None) and not any(isinstance(v, str) and v.strip() for v in raw.values()):
            continue  # a line of empty separators
        try:
            row = _validate_row(line, raw)
        except ValueError as exc:  # InvalidRegisterNumber included
            errors.append((line, str(exc)))
            continue
        if (first := first_seen.setdefault(row.national_number, line)) != line:
            errors.append((line, f"duplicate national number (first on line {first})"))
            continue
        rows.append(row)
    return rows, errors


def _batches(rows: Sequence[CitizenRow], size: int) -> Iterable[Sequence[CitizenRow]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def _upsert(engine: AsyncEngine, rows: Sequence[CitizenRow], report: ImportReport) -> None:
    """Upsert ``rows`` in one transaction; counts are only added once it commits."""
    inserted = updated = unchanged = 0
    async with session_factory(engine)() as session, session.begin():
        numbers = [row.national_number for row in rows]
        result = await session.exec(
            select(Citizen).where(col(Citizen.national_number).in_(numbers))
        )
        existing = {citizen.national_number: citizen for citizen in result.all()}
        for row in rows:
            citizen = existing.get(row.national_number)
            if citizen is None:
                fields = {name: getattr(row, name) for name in _DATA_FIELDS}
                session.add(Citizen(national_number=row.national_number, **fields))
                inserted += 1
                continue
            changed = False
            for name in _DATA_FIELDS:
                if getattr(citizen, name) != getattr(row, name):
                    setattr(citizen, name, getattr(row, name))
                    changed = True
            if changed:
                citizen.updated_at = utc_now()
                updated += 1
            else:
                unchanged += 1
    report.inserted += inserted
    report.updated += updated
    report.unchanged += unchanged


def _database_error(exc: SQLAlchemyError) -> str:
    """First line of the driver's message, masked: PostgreSQL echoes key values."""
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"refused by the database: {type(cause).__name__}: {mask_digits_in_text(first_line)}"


async def import_citizens(engine: AsyncEngine, path: Path | str) -> ImportReport:
    """Import the CSV at ``path`` into the citizen table (created beforehand by `init_db`)."""
    path = Path(path)
    rows, errors = await asyncio.to_thread(parse_citizens_csv, path)
    report = ImportReport()
    for batch in _batches(rows, BATCH_SIZE):
        try:
            await _upsert(engine, batch, report)
        except SQLAlchemyError:
            # One row the database refuses must not sink its batch: retry row by row.
            for row in batch:
                try:
                    await _upsert(engine, [row], report)
                except SQLAlchemyError as exc:
                    errors.append((row.line, _database_error(exc)))
    report.rejected = len(errors)
    report.errors = [f"{path}:{line}: {message}" for line, message in sorted(errors)]
    return report
