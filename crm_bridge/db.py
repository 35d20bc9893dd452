"""Async engine and sessions for the CRM store (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

# Registers every table on SQLModel.metadata.
from crm_bridge import case_models, models, probe_models, supervision_models  # noqa: F401

SQLITE_BUSY_TIMEOUT_MS = 5000

# Drivers that block the event loop; the call path must only ever use async drivers.
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}


def normalise_url(url: str | URL) -> URL:
    """Map sync URLs (``postgresql://``, ``sqlite:///``) to their async driver.

    ``sslmode`` (libpq spelling, common in ``DATABASE_URL``) becomes asyncpg's ``ssl``.
    """
    parsed = make_url(url)
    parsed = parsed.set(drivername=_ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername))
    if parsed.drivername == "postgresql+asyncpg" and "sslmode" in parsed.query:
        query = dict(parsed.query)
        query["ssl"] = query.pop("sslmode")
        parsed = parsed.set(query=query)
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the console read while a call writes; the busy timeout absorbs short locks.
    synchronous=NORMAL is WAL's recommended mode: never corrupts, and does not fsync every
    commit (a full fsync per pop held agents' pops for seconds on a busy disk). What must
    survive a power cut (cases handed to Asterisk) is spooled by the case outbox first."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def make_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """Create the async engine for ``url`` (see `normalise_url`); extra kwargs go to SQLAlchemy.

    Bound parameters are hidden from SQLAlchemy's logs and error messages by default: they
    carry national numbers (GDPR).
    """
    kwargs.setdefault("hide_parameters", True)
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(parsed, **kwargs)


async def init_db(engine: AsyncEngine) -> None:
    """Bring the schema to the latest migration (the name predates Alembic; kept for callers).

    See `crm_bridge.migrations.upgrade_db`.
    """
    from crm_bridge.migrations import upgrade_db  # the migrations import this module

    await upgrade_db(engine)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit, so results can be read outside them."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
