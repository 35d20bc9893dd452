"""Alembic migrations of the CRM store, and `upgrade_db`, which the server runs at start.

`upgrade_db` also adopts a database made before migrations existed (``init_db`` used to
``create_all`` the citizen, journey and callback tables): it stamps the baseline revision,
which describes exactly those tables, and upgrades from there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("guichet.crm.migrations")

HERE = Path(__file__).resolve().parent
BASELINE = "0001"
BASELINE_TABLES = frozenset({"citizen", "call_journey", "callback_request"})
VERSION_TABLE = "alembic_version"
# One migrating process at a time (two servers starting together): an advisory lock on
# PostgreSQL; on SQLite, whose driver runs DDL outside any transaction, a write transaction.
_PG_LOCK_KEY = 0x67756963686574  # "guichet"
MIGRATION_BUSY_TIMEOUT_MS = 120_000


def target_metadata() -> MetaData:
    """Every table of the CRM store (importing the model modules registers them)."""
    from sqlmodel import SQLModel

    from crm_bridge import case_models, models, probe_models, supervision_models  # noqa: F401

    return SQLModel.metadata


def alembic_config(connection: Connection | None = None) -> Config:
    """A Config without an ini file; ``connection`` is the one the migrations run on."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # Another server may be migrating: wait for it (a whole migration can take longer
        # than the busy timeout ordinary writes use), then find nothing left to do.
        connection.exec_driver_sql(f"PRAGMA busy_timeout={MIGRATION_BUSY_TIMEOUT_MS}")
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        config = alembic_config(connection)
        tables = set(inspect(connection).get_table_names())
        if VERSION_TABLE not in tables and tables & BASELINE_TABLES:
            log.warning("database created before migrations: stamping revision %s", BASELINE)
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
        _create_missing_tables(connection)
    finally:
        if connection.dialect.name == "sqlite":  # the pooled connection serves calls next
            from crm_bridge.db import SQLITE_BUSY_TIMEOUT_MS

            connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def _create_missing_tables(connection: Connection) -> None:
    """Recreate tables dropped behind Alembic's back, from the models.

    Safe only at head, where the models equal the migrations (tests/test_migrations.py
    checks exactly that); a dropped table otherwise stays missing for good.
    """
    metadata = target_metadata()
    present = set(inspect(connection).get_table_names())
    missing = [table for table in metadata.sorted_tables if table.name not in present]
    if missing:
        log.warning(
            "tables missing at revision head, recreated: %s",
            ", ".join(table.name for table in missing),
        )
        metadata.create_all(connection, tables=missing)


async def upgrade_db(target: AsyncEngine | str | URL) -> None:
    """Bring the database at ``target`` (an engine or a URL) to the latest revision."""
    from crm_bridge.db import make_engine

    engine = target if isinstance(target, AsyncEngine) else make_engine(target)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
    finally:
        if engine is not target:
            await engine.dispose()


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, target_metadata()))


async def schema_drift(engine: AsyncEngine) -> list[Any]:
    """What autogenerate would put in a new migration (``alembic check``); [] when none."""
    async with engine.connect() as connection:
        return await connection.run_sync(_drift)
