"""Shared fixtures of the crm_bridge tests: a private PostgreSQL cluster, per-backend engines,
and generated Belgian register numbers.

Test modules take the fixtures with ``from crm_fixtures import *`` (``__all__`` lists only
fixtures). The cluster is a module-level singleton, so several modules importing ``pg_url``
still start one PostgreSQL for the whole session.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from crm_bridge.db import init_db, make_engine
from crm_bridge.models import CallbackRecord, CallJourneyRecord, Citizen

__all__ = ["crm_engine", "pg_url", "sqlite_engine"]

PG_URL_ENV = "GUICHET_TEST_PG_URL"
CRM_TABLES = [
    SQLModel.metadata.tables[model.__tablename__]
    for model in (CallbackRecord, CallJourneyRecord, Citizen)
]


# --- Belgian register numbers -------------------------------------------------------------


def make_nn(yymmdd: str, serial: int, *, born_2000s: bool = False) -> str:
    """A valid national number: check = 97 - (base mod 97), base prefixed with 2 after 1999."""
    base = f"{yymmdd}{serial:03d}"
    check = 97 - int(("2" if born_2000s else "") + base) % 97
    return f"{base}{check:02d}"


def make_bis(yymmdd: str, serial: int, *, sex_known: bool = True, born_2000s: bool = False) -> str:
    """A valid BIS number: month + 40 when the sex is known, + 20 otherwise."""
    month = int(yymmdd[2:4]) + (40 if sex_known else 20)
    return make_nn(f"{yymmdd[:2]}{month:02d}{yymmdd[4:]}", serial, born_2000s=born_2000s)


def bad_checksum(number: str) -> str:
    """The same number with a wrong check (for both the 19xx and 20xx rule)."""
    base, check = number[:9], int(number[9:])
    for candidate in range(1, 98):
        wrong = (check + candidate) % 100
        if all(97 - int(p + base) % 97 != wrong for p in ("", "2")):
            return f"{base}{wrong:02d}"
    raise AssertionError("unreachable")


NN_1985 = "85073003328"  # the stdnum documentation example
NN_2017 = make_nn("170730", 33, born_2000s=True)  # "17073003384"
NN_1990 = make_nn("900214", 128)
BIS_1998 = make_bis("980728", 997)  # "98472899765"
BIS_UNKNOWN_SEX = make_bis("010907", 1, sex_known=False, born_2000s=True)


# --- a private PostgreSQL cluster ------------------------------------------------------------


@dataclass
class _Cluster:
    bin_dir: Path
    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/guichet_test"


_cluster: _Cluster | None = None


def _pg_bin_dir() -> Path:
    candidates = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not candidates:
        pytest.fail(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: install them "
            f"(apt-get install postgresql) or point {PG_URL_ENV} at a database.",
            pytrace=False,
        )
    return candidates[-1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(*command: str | Path) -> list[str]:
    """initdb refuses to run as root: drop to the postgres user when we are root."""
    argv = [str(part) for part in command]
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(cluster: _Cluster, *command: str | Path) -> None:
    result = subprocess.run(
        _as_postgres(*command), capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        log = cluster.root / "server.log"
        server_log = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail(
            f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}\n{server_log}",
            pytrace=False,
        )


def _start_cluster() -> _Cluster:
    bin_dir = _pg_bin_dir()
    # Not pytest's tmp_path: its parents are private to root, and postgres must reach it.
    root = Path(tempfile.mkdtemp(prefix="guichet-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
    cluster = _Cluster(bin_dir=bin_dir, root=root, port=_free_port())
    _run(
        cluster,
        bin_dir / "initdb",
        "-D", cluster.data_dir,
        "-U", "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    )  # fmt: skip
    options = (
        f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    _run(
        cluster,
        bin_dir / "pg_ctl",
        "-D", cluster.data_dir,
        "-o", options,
        "-l", root / "server.log",
        "-w", "-t", "60",
        "start",
    )  # fmt: skip
    _run(
        cluster,
        bin_dir / "createdb",
        "-h", "127.0.0.1",
        "-p", str(cluster.port),
        "-U", "postgres",
        "guichet_test",
    )  # fmt: skip
    return cluster


def _stop_cluster() -> None:
    global _cluster
    cluster, _cluster = _cluster, None
    if cluster is None:
        return
    try:
        subprocess.run(
            _as_postgres(cluster.bin_dir / "pg_ctl", "-D", cluster.data_dir, "-m", "fast", "stop"),
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of an empty-ish PostgreSQL database for this test session."""
    if url := os.environ.get(PG_URL_ENV):
        yield url
        return
    global _cluster
    if _cluster is None:
        _cluster = _start_cluster()
    try:
        yield _cluster.url
    finally:
        _stop_cluster()  # at session end; a second import of this fixture finds it stopped


# --- engines -----------------------------------------------------------------------------------


async def _fresh_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.drop_all, tables=CRM_TABLES)
    await init_db(engine)


@pytest.fixture(params=["sqlite", "postgresql"])
async def crm_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on empty CRM tables, once per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'var' / 'guichet.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    try:
        await _fresh_schema(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A SQLite-only engine, for tests about SQLite itself."""
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'guichet.db'}")
    try:
        await init_db(engine)
        yield engine
    finally:
        await engine.dispose()
