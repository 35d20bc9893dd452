"""Shared fixtures: a real SQL store per test, the sample flow, simulated clocks.

The suite never touches the developer's own database: DATABASE_URL points at a temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

pytest_plugins = ["agi_fixtures"]

_TMP = tempfile.mkdtemp(prefix="guichet-tests-")
os.environ["DATABASE_URL"] = f"sqlite+aiosqlite:///{_TMP}/default.db"
os.environ.pop("GUICHET_DATABASE_URL", None)
os.environ["GUICHET_DEMO"] = "0"  # a test that wants the demo PBX starts it itself

from crm_bridge.cases import CaseService  # noqa: E402
from crm_bridge.db import session_factory  # noqa: E402
from crm_bridge.models import Citizen  # noqa: E402
from crm_bridge.outbox import CaseOutbox  # noqa: E402
from crm_bridge.ports import CitizenSummary  # noqa: E402
from crm_bridge.store import SqlCrm  # noqa: E402
from ivr.loader import LoadedFlow, load_flow  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FLOW = ROOT / "flows" / "commune.yaml"
OPEN = datetime.fromisoformat("2026-11-23T10:00:00+01:00")  # a Monday morning
CLOSED = datetime.fromisoformat("2026-11-23T18:00:00+01:00")  # the same evening
NN_1985 = "85073003328"


@pytest.fixture
async def crm(tmp_path: Path) -> AsyncIterator[SqlCrm]:
    store = await SqlCrm.connect(f"sqlite+aiosqlite:///{tmp_path}/crm.db")
    try:
        yield store
    finally:
        await store.close()


async def add_citizen(crm: SqlCrm, national_number: str = NN_1985, **fields: str) -> CitizenSummary:
    values = {
        "first_name": "Sofie",
        "last_name": "Peeters",
        "preferred_language": "nl",
        "street": "Rue de la Loi 16",
        "postal_code": "1000",
        "city": "Bruxelles",
        **fields,
    }
    async with session_factory(crm.engine)() as session:
        session.add(Citizen.model_validate({"national_number": national_number, **values}))
        await session.commit()
    found = await crm.find_citizen_by_national_number(national_number)
    assert found is not None
    return found


@pytest.fixture
async def outbox(crm: SqlCrm, tmp_path: Path) -> AsyncIterator[tuple[CaseOutbox, CaseService]]:
    """The IVR's case outbox over `crm`'s database, spooling in ``tmp_path``."""
    service = CaseService(crm.engine)
    box = CaseOutbox(service.open_case_for_call, tmp_path / "cases.spool")
    await box.start()
    try:
        yield box, service
    finally:
        await box.stop()


@pytest.fixture
async def citizen(crm: SqlCrm) -> CitizenSummary:
    return await add_citizen(crm)


@pytest.fixture
def sample() -> LoadedFlow:
    return load_flow(SAMPLE_FLOW)
