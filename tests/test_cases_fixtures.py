"""Fixtures and builders shared by the case-store tests (this module holds no test).

``case_engine`` is `crm_fixtures.crm_engine` (SQLite, then the session's PostgreSQL) with the
case store's tables emptied as well: crm_engine only rebuilds the IVR's tables. Test modules
take the fixtures with ``from test_cases_fixtures import *`` (``__all__`` lists only fixtures).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from crm_fixtures import crm_engine, make_nn, pg_url
from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, select

from crm_bridge.case_facts import CallFacts
from crm_bridge.db import session_factory
from crm_bridge.models import Citizen

__all__ = ["case_engine", "crm_engine", "pg_url"]

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CASE_TABLES = (
    "case_alias",
    "case_note",
    "interaction",
    "crm_case",
    "knowledge_article",
    "call_queue",
    "audit_entry",
    "app_user",
)
# Cheap argon2 parameters: the suite tests behaviour, not the cost.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
async def case_engine(crm_engine: AsyncEngine) -> AsyncEngine:
    if crm_engine.dialect.name == "postgresql":
        async with crm_engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(CASE_TABLES)} RESTART IDENTITY CASCADE"))
    return crm_engine


def facts(call_id: str, *, minutes: int = 0, **fields: object) -> CallFacts:
    """A queued call to the population service, ``minutes`` after T0."""
    values: dict[str, object] = {
        "caller": "+32470123456",
        "lang": "nl",
        "request_type": "identity_card",
        "queue": "identity_card-nl",
        "priority": 0,
        "flow_hash": "sha256:abc",
        "journey": call_id,
        "started_at": T0 + timedelta(minutes=minutes),
        **fields,
    }
    return CallFacts(call_id=call_id, **values)  # type: ignore[arg-type]


async def add_citizen(engine: AsyncEngine, serial: int = 1, **fields: str) -> int:
    citizen = Citizen(
        national_number=make_nn("850730", serial),
        first_name=fields.get("first_name", "Sofie"),
        last_name=fields.get("last_name", "Peeters"),
        phone=fields.get("phone"),
    )
    async with session_factory(engine)() as session, session.begin():
        session.add(citizen)
        await session.flush()
        assert citizen.id is not None
        return citizen.id


async def count(engine: AsyncEngine, model: type[SQLModel]) -> int:
    async with session_factory(engine)() as session:
        result = await session.exec(select(func.count()).select_from(model))
        return result.one()
