"""Find citizens for the agent console: by name, phone number or national number, in SQL.

What the agent types decides the search, so a national number is never matched partially
(that would let anyone enumerate the register) and a name is never looked up as a number:

* 11 digits, formatted or not (``85.07.30-033.28``): that national/BIS number exactly, and
  the phone number with those digits (``32470123456`` is how Asterisk presents a mobile);
* a phone number (a ``+``, or 8 digits and more): its normalised form exactly
  (`crm_bridge.phone`), as the IVR matches caller IDs;
* 4 to 7 digits: phone numbers containing them (the agent heard the end of a number);
* anything with letters: every word must start a first or last name, or start a part of one
  (``berg`` finds "Van den Berg"); case-insensitive.

Results are summaries whose national number is masked (``*********28``): the console never
receives a full register number. Opening a full record is `CitizenDirectory.record`, which the
console only calls after writing the audit row (who, when, for which case).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Table, and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from crm_bridge.models import NATIONAL_NUMBER_LENGTH, Citizen
from crm_bridge.phone import normalise_phone
from crm_bridge.privacy import mask_national_number

MatchedOn = Literal["national_number", "phone", "name"]
QueryKind = Literal["national_number", "phone", "name", "national_number_or_phone"]

MIN_QUERY_LENGTH = 2
MAX_QUERY_LENGTH = 100
MAX_WORDS = 5
DEFAULT_LIMIT = 20
MIN_PHONE_DIGITS = 8  # a Belgian landline without its trunk 0
MIN_PARTIAL_DIGITS = 4  # fewer would match half the directory
_NUMBER_PUNCTUATION = re.compile(r"[\s.\-/()]")
_WORD_SPLIT = re.compile(r"[\s,;]+")
_WORD_STARTS = (" ", "-", "'")  # "Van den Berg", "Dupont-Lambert", "D'Hondt"
_PHONE_START = re.compile(r"^\+|^00")

_ADDRESS = vars(Citizen)["address"].fget  # `Citizen.address` applied to a plain row


class SearchError(ValueError):
    """A query that cannot be searched (too short, too long); the message says why."""


@dataclass(frozen=True, slots=True)
class CitizenMatch:
    """One search result: enough to tell two namesakes apart, never the register number."""

    id: int
    first_name: str
    last_name: str
    national_number: str  # masked: ``*********28``
    preferred_language: str | None
    address: str | None
    phone: str | None
    matched_on: MatchedOn


@dataclass(frozen=True, slots=True)
class SearchResult:
    query_kind: QueryKind  # how the query was read
    matches: tuple[CitizenMatch, ...]
    truncated: bool  # more citizens matched than were returned: refine the query


@dataclass(frozen=True, slots=True)
class CitizenRecord:
    """A citizen's record as an agent opens it (after the audit row), number still masked."""

    id: int
    first_name: str
    last_name: str
    national_number: str  # masked
    preferred_language: str | None
    street: str | None
    postal_code: str | None
    city: str | None
    address: str | None
    phone: str | None
    email: str | None


def _table() -> Table:
    return SQLModel.metadata.tables[Citizen.__tablename__]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _word_condition(table: Table, word: str) -> ColumnElement[bool]:
    """``word`` starts the first or last name, or a part of it. ``lower()`` folds ASCII only
    on SQLite and under PostgreSQL's C locale, so the word is also tried as typed,
    capitalised and upper-cased against the raw column: "élise" finds "Élise"."""
    escaped = _escape_like(word)
    conditions: list[ColumnElement[bool]] = []
    for column in (table.c.first_name, table.c.last_name):
        for variant in dict.fromkeys((escaped.lower(), escaped.capitalize(), escaped.upper())):
            target = func.lower(column) if variant == escaped.lower() else column
            conditions.append(target.like(f"{variant}%", escape="\\"))
            conditions.extend(
                target.like(f"%{start}{variant}%", escape="\\") for start in _WORD_STARTS
            )
    return or_(*conditions)


class CitizenDirectory:
    """Searches and reads the ``citizen`` table for the console (read-only)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._table = _table()
        t = self._table
        self._columns = [
            t.c.id,
            t.c.first_name,
            t.c.last_name,
            t.c.national_number,
            t.c.preferred_language,
            t.c.street,
            t.c.postal_code,
            t.c.city,
            t.c.phone,
            t.c.email,
        ]

    async def search(self, query: str, *, limit: int = DEFAULT_LIMIT) -> SearchResult:
        """Citizens matching ``query`` (see the module docstring), by last then first name."""
        text = query.strip()
        if len(text) < MIN_QUERY_LENGTH:
            raise SearchError(f"type at least {MIN_QUERY_LENGTH} characters")
        if len(text) > MAX_QUERY_LENGTH:
            raise SearchError(f"a search is at most {MAX_QUERY_LENGTH} characters")
        t = self._table
        kind: QueryKind
        if any(ch.isalpha() for ch in text):
            words = [w for w in _WORD_SPLIT.split(text) if w][:MAX_WORDS]
            kind = "name"
            where: ColumnElement[bool] = and_(*(_word_condition(t, w) for w in words))
            matched_on: ColumnElement[Any] = literal("name")
        else:
            digits = _NUMBER_PUNCTUATION.sub("", text)
            if not re.fullmatch(r"\+?\d+", digits):
                raise SearchError("a number holds digits only (and an optional leading +)")
            kind, where, matched_on = self._number_search(text, digits.lstrip("+"))
        statement = (
            select(*self._columns, matched_on.label("matched_on"))
            .where(where)
            .order_by(t.c.last_name, t.c.first_name, t.c.id)
            .limit(limit + 1)
        )
        async with self.engine.connect() as db:
            rows = (await db.execute(statement)).all()
        matches = tuple(_match(row) for row in rows[:limit])
        return SearchResult(query_kind=kind, matches=matches, truncated=len(rows) > limit)

    def _number_search(
        self, text: str, digits: str
    ) -> tuple[QueryKind, ColumnElement[bool], ColumnElement[Any]]:
        t = self._table
        phone = normalise_phone(text)
        looks_like_phone = bool(_PHONE_START.match(text))
        if len(digits) == NATIONAL_NUMBER_LENGTH and not looks_like_phone:
            by_number = t.c.national_number == digits
            if phone is None:
                return "national_number", by_number, literal("national_number")
            by_phone = t.c.phone == phone
            return (
                "national_number_or_phone",
                or_(by_number, by_phone),
                case((by_number, literal("national_number")), else_=literal("phone")),
            )
        if len(digits) >= MIN_PHONE_DIGITS or looks_like_phone:
            if phone is None:
                raise SearchError("not a phone number")
            return "phone", t.c.phone == phone, literal("phone")
        if len(digits) >= MIN_PARTIAL_DIGITS:
            return (
                "phone",
                t.c.phone.like(f"%{_escape_like(digits)}%", escape="\\"),
                literal("phone"),
            )
        raise SearchError(f"type at least {MIN_PARTIAL_DIGITS} digits of a phone number")

    async def record(self, citizen_id: int) -> CitizenRecord | None:
        """The citizen's record, or None. Call it only once the access is audited."""
        statement = select(*self._columns).where(self._table.c.id == citizen_id)
        async with self.engine.connect() as db:
            row = (await db.execute(statement)).first()
        if row is None:
            return None
        return CitizenRecord(
            id=row.id,
            first_name=row.first_name,
            last_name=row.last_name,
            national_number=mask_national_number(row.national_number),
            preferred_language=row.preferred_language,
            street=row.street,
            postal_code=row.postal_code,
            city=row.city,
            address=_ADDRESS(row),
            phone=row.phone,
            email=row.email,
        )

    async def exists(self, citizen_id: int) -> bool:
        """Whether the citizen exists, reading nothing personal (nothing to audit)."""
        statement = select(self._table.c.id).where(self._table.c.id == citizen_id)
        async with self.engine.connect() as db:
            return (await db.execute(statement)).first() is not None


def _match(row: Any) -> CitizenMatch:
    return CitizenMatch(
        id=row.id,
        first_name=row.first_name,
        last_name=row.last_name,
        national_number=mask_national_number(row.national_number),
        preferred_language=row.preferred_language,
        address=_ADDRESS(row),
        phone=row.phone,
        matched_on=row.matched_on,
    )
