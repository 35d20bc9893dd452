"""The reports API and page over a real console (uvicorn on loopback): supervisors get the KPI
table as JSON, CSV and XLSX (read back with openpyxl: headers in the asked language,
percentages as numbers formatted %); agents get 403, strangers 401."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from console_fixtures import FAST_HASHER, PASSWORDS, SECRET, create_people, serve_app
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncEngine
from test_kpi import load

from console.deps import ConsoleConfig
from console.factory import create_console_app
from console.push import PushHub
from console.routers import reports
from crm_bridge.db import init_db, make_engine
from crm_bridge.users import UserService

QUERY = "period=week&by=queue&since=2026-10-24&until=2026-11-01"


@pytest.fixture
async def reports_console(tmp_path: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'reports.db'}")
    await init_db(engine)
    users = UserService(engine, hasher=FAST_HASHER)
    await create_people(users)
    app = create_console_app(
        engine=engine,
        users=users,
        hub=PushHub(),
        extra_routers=[reports.router],
        config=ConsoleConfig(secret_key=SECRET, ws_revalidate_interval=3600),
    )
    app.state.crm_engine = engine
    await load(engine)
    try:
        async with serve_app(app) as base_url:
            yield base_url, engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def client_as(base_url: str, username: str | None) -> AsyncIterator[httpx.AsyncClient]:
    """A client with ``username``'s bearer token (None: no token)."""
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        if username is not None:
            response = await client.post(
                "/api/auth/token", json={"username": username, "password": PASSWORDS[username]}
            )
            assert response.status_code == 200, response.text
            client.headers["Authorization"] = f"Bearer {response.json()['token']}"
        yield client


async def test_a_supervisor_gets_the_kpis_as_json(reports_console: tuple[str, AsyncEngine]) -> None:
    base_url, _ = reports_console
    async with client_as(base_url, "sophie") as client:
        response = await client.get(f"/api/reports/kpi?{QUERY}")
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["period"], data["by"], data["threshold"]) == ("week", "queue", 20.0)
    assert [b["label"] for b in data["buckets"]] == ["2026-W43", "2026-W44"]
    rows = {(r["period"], r["key"]): r for r in data["rows"]}
    fr = rows[("2026-W44", "population-fr")]
    assert (fr["offered"], fr["answered"], fr["abandoned"], fr["lost"]) == (5, 2, 1, 2)
    assert fr["service_level"] == 0.2  # nov-1 (0 s) within 20 s; mon-1 waited 21 s
    assert rows[("2026-W43", "population-fr")]["service_level"] == 0.5


async def test_csv_and_xlsx_exports_round_trip(reports_console: tuple[str, AsyncEngine]) -> None:
    base_url, _ = reports_console
    async with client_as(base_url, "sophie") as client:
        as_csv = await client.get(f"/api/reports/kpi.csv?{QUERY}&lang=fr")
        as_xlsx = await client.get(f"/api/reports/kpi.xlsx?{QUERY}&lang=nl")
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.headers["content-disposition"] == (
        'attachment; filename="guichet-kpi-week-queue-2026-10-19-2026-11-01.csv"'
    )
    table = list(csv.reader(io.StringIO(as_csv.text)))
    header = table[0]
    assert header[:4] == ["Période", "File d'attente", "Présentés", "Décrochés"]
    rows = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in table[1:]}
    assert rows[("2026-W44", "population-fr")]["Niveau de service"] == "0.2"
    assert rows[("2026-W43", "(non renseigné)")]["Traités par le serveur vocal"] == "1"

    assert as_xlsx.status_code == 200
    assert as_xlsx.headers["content-disposition"].endswith('.xlsx"')
    book = load_workbook(io.BytesIO(as_xlsx.content))
    sheet = book.active
    assert sheet is not None and sheet.title == "KPI"
    values = list(sheet.iter_rows(values_only=True))
    assert values[0][:3] == ("Periode", "Wachtrij", "Aangeboden")
    names = list(values[0])
    sl = names.index("Serviceniveau")
    by_key = {(r[0], r[1]): r for r in values[1:]}
    assert by_key[("2026-W44", "population-fr")][sl] == 0.2  # a number, not "20 %"
    assert by_key[("2026-W44", "population-fr")][names.index("Aangeboden")] == 5
    fr_row = next(
        row
        for row in sheet.iter_rows(min_row=2)
        if (row[0].value, row[1].value) == ("2026-W44", "population-fr")
    )
    assert fr_row[sl].number_format == "0.0%"


async def test_only_supervisors_see_reports(reports_console: tuple[str, AsyncEngine]) -> None:
    base_url, _ = reports_console
    async with client_as(base_url, "alice") as agent:
        for path in (
            "/api/reports/kpi",
            "/api/reports/kpi.csv",
            "/api/reports/kpi.xlsx",
            "/reports",
        ):
            assert (await agent.get(path)).status_code == 403, path
    async with client_as(base_url, None) as stranger:
        assert (await stranger.get("/api/reports/kpi")).status_code == 401


async def test_the_page_carries_its_strings_and_the_vendored_chart(
    reports_console: tuple[str, AsyncEngine],
) -> None:
    base_url, _ = reports_console
    async with client_as(base_url, "sophie") as client:
        page = await client.get("/reports")
        bad = await client.get("/api/reports/kpi?since=2026-11-02&until=2026-11-01")
        too_long = await client.get("/api/reports/kpi?since=2020-01-01&until=2026-11-01")
    assert page.status_code == 200
    html = page.text
    assert '<script src="/static/vendor/uPlot.iife.min.js" defer></script>' in html
    assert '<script src="/static/reports.js" defer></script>' in html
    assert 'id="reports-texts"' in html and "Contact-centre reports" in html  # Sophie reads English
    assert "<script>" not in html  # nothing inline: the CSP forbids it
    assert (bad.status_code, bad.json()["detail"]["code"]) == (422, "bad_range")
    assert too_long.status_code == 422
