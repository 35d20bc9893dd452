"""The opening-hours editor over a real console (uvicorn, SQLite, argon2 users) with a real flow
registry on a copy of flows/: a supervisor's edit reaches the file, the registry and the audit
trail; a refused edit is explained with the checker's messages and leaves the file as it was;
agents may not read or change hours."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from console_fixtures import FAST_HASHER, PASSWORDS, SECRET, create_people, serve_app

from console.deps import ConsoleConfig
from console.factory import create_console_app
from console.push import PushHub
from console.routers import flow_hours
from crm_bridge.audit import AuditLog, Subject
from crm_bridge.db import init_db, make_engine
from crm_bridge.users import UserService
from ivr.flow_model import HoursNode
from ivr.hours import open_state
from ivr.registry import FlowRegistry

REPO_FLOWS = Path(__file__).resolve().parent.parent / "flows"
HOURS = "/api/flows/commune/hours"
NODE = "opening_hours"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FOUND = CHROMIUM.exists()


@dataclass
class HoursDesk:
    base_url: str
    flow_file: Path
    registry: FlowRegistry
    audit: AuditLog


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[HoursDesk]:
    flows = tmp_path / "flows"
    shutil.copytree(REPO_FLOWS, flows)
    registry = FlowRegistry(flows, interval=0)
    await registry.start()
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'console.db'}")
    await init_db(engine)
    users = UserService(engine, hasher=FAST_HASHER)
    await create_people(users)
    app = create_console_app(
        engine=engine,
        users=users,
        hub=PushHub(),
        registry=registry,
        extra_routers=[flow_hours.router],
        config=ConsoleConfig(secret_key=SECRET, ws_revalidate_interval=3600),
    )
    audit = AuditLog(engine)
    app.state.audit = audit
    app.state.registry = registry
    try:
        async with serve_app(app) as base_url:
            yield HoursDesk(base_url, flows / "commune.yaml", registry, audit)
    finally:
        await registry.stop()
        await engine.dispose()


@contextlib.asynccontextmanager
async def signed_in(desk: HoursDesk, username: str) -> AsyncIterator[httpx.AsyncClient]:
    """An API client with ``username``'s bearer token."""
    async with httpx.AsyncClient(base_url=desk.base_url, trust_env=False) as client:
        response = await client.post(
            "/api/auth/token", json={"username": username, "password": PASSWORDS[username]}
        )
        assert response.status_code == 200, response.text
        client.headers["Authorization"] = f"Bearer {response.json()['token']}"
        yield client


def edit_of(state: dict[str, Any], **change: Any) -> dict[str, Any]:
    node = next(n for n in state["nodes"] if n["id"] == NODE)
    fields = {k: node[k] for k in ("schedule", "holidays", "closures")}
    return {**fields, **change, "base_hash": state["hash"]}


async def test_a_supervisor_adds_a_closure_the_file_registry_and_audit_follow(
    desk: HoursDesk,
) -> None:
    async with signed_in(desk, "sophie") as sophie:
        read = await sophie.get(HOURS)
        assert read.status_code == 200, read.text
        state = read.json()
        assert state["flow"] == "commune"
        assert state["hash"] == desk.registry.get("commune").content_hash  # type: ignore[union-attr]
        closures = [*edit_of(state)["closures"], {"date": "2027-01-05", "reason": "Staff day"}]

        saved = await sophie.put(f"{HOURS}/{NODE}", json=edit_of(state, closures=closures))

    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["changed"] is True
    assert body["nodes"][0]["closures"][-1] == {
        "date": "2027-01-05",
        "start": None,
        "end": None,
        "reason": "Staff day",
    }
    assert '- {date: "2027-01-05", reason: "Staff day"}' in desk.flow_file.read_text()
    assert "# Citizen affairs line of a bilingual Brussels commune." in desk.flow_file.read_text()

    served = desk.registry.get("commune")
    assert served is not None and served.content_hash == body["hash"]
    node = served.node(NODE)
    assert isinstance(node, HoursNode)
    tuesday = datetime(2027, 1, 5, 10, 0, tzinfo=ZoneInfo("Europe/Brussels"))
    assert open_state(node, tuesday).reason == "closure"

    rows = await desk.audit.entries(action=flow_hours.HOURS_CHANGED)
    assert len(rows) == 1
    assert rows[0].actor == "sophie"
    assert rows[0].subject == Subject("flow", "commune")
    assert rows[0].reason == f"{NODE}: closures 4→5"


@pytest.mark.parametrize(
    ("change", "explained"),
    [
        (
            {"schedule": {"mon": ["16:30-08:30"]}},
            "nodes.opening_hours.schedule.mon.0: Value error, '16:30-08:30': "
            "the range ends before it starts",
        ),
        (
            {"closures": [{"date": "2026-02-30", "reason": "typo"}]},
            "nodes.opening_hours.closures.0.date: Input should be a valid date",
        ),
    ],
)
async def test_a_bad_edit_is_explained_and_nothing_is_saved(
    desk: HoursDesk, change: dict[str, Any], explained: str
) -> None:
    before = desk.flow_file.read_bytes()
    async with signed_in(desk, "nora") as nora:  # an admin may do what a supervisor may
        state = (await nora.get(HOURS)).json()
        refused = await nora.put(f"{HOURS}/{NODE}", json=edit_of(state, **change))

    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert detail["code"] == "hours_rejected"
    assert "nothing was saved" in detail["message"]
    texts = [issue["text"] for issue in detail["issues"]]
    assert any(re.fullmatch(rf"commune\.yaml:\d+: {re.escape(explained)}.*", t) for t in texts)
    assert desk.flow_file.read_bytes() == before
    assert desk.registry.get("commune").content_hash == state["hash"]  # type: ignore[union-attr]
    assert await desk.audit.entries(action=flow_hours.HOURS_CHANGED) == []


async def test_a_stale_edit_is_a_conflict(desk: HoursDesk) -> None:
    async with signed_in(desk, "sophie") as sophie, signed_in(desk, "nora") as nora:
        seen_by_sophie = (await sophie.get(HOURS)).json()
        seen_by_nora = (await nora.get(HOURS)).json()
        first = await nora.put(f"{HOURS}/{NODE}", json=edit_of(seen_by_nora, closures=[]))
        assert first.status_code == 200, first.text
        after_nora = desk.flow_file.read_bytes()

        late = await sophie.put(
            f"{HOURS}/{NODE}", json=edit_of(seen_by_sophie, schedule={"mon": ["09:00-12:00"]})
        )

    assert late.status_code == 409, late.text
    assert late.json()["detail"]["code"] == "stale_flow"
    assert late.json()["detail"]["current_hash"] == first.json()["hash"]
    assert desk.flow_file.read_bytes() == after_nora
    assert len(await desk.audit.entries(action=flow_hours.HOURS_CHANGED)) == 1


async def test_unknown_flow_or_node_is_404(desk: HoursDesk) -> None:
    async with signed_in(desk, "sophie") as sophie:
        state = (await sophie.get(HOURS)).json()
        assert (await sophie.get("/api/flows/nowhere/hours")).status_code == 404
        for node_id in ("welcome", "nothing_here"):
            answer = await sophie.put(f"{HOURS}/{node_id}", json=edit_of(state))
            assert answer.status_code == 404, answer.text
            assert answer.json()["detail"]["code"] == "hours_node_not_found"


async def test_an_agent_may_neither_read_nor_change_hours(desk: HoursDesk) -> None:
    before = desk.flow_file.read_bytes()
    async with signed_in(desk, "sophie") as sophie:
        state = (await sophie.get(HOURS)).json()
    async with signed_in(desk, "alice") as alice:
        assert (await alice.get(HOURS)).status_code == 403
        changed = await alice.put(f"{HOURS}/{NODE}", json=edit_of(state, closures=[]))
        assert changed.status_code == 403
        assert (await alice.get("/supervisor/hours")).status_code == 403
    async with httpx.AsyncClient(base_url=desk.base_url, trust_env=False) as anonymous:
        assert (await anonymous.get(HOURS)).status_code == 401
    assert desk.flow_file.read_bytes() == before
    assert await desk.audit.entries(action=flow_hours.HOURS_CHANGED) == []


async def test_the_page_carries_its_strings_as_data_not_inline_script(desk: HoursDesk) -> None:
    async with signed_in(desk, "sophie") as sophie:  # Sophie reads the console in English
        page = await sophie.get("/supervisor/hours", headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text
    html = page.text
    assert "Opening hours, holidays and closures" in html
    assert '<script src="/static/hours.js" defer></script>' in html
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    for attributes, content in scripts:
        assert "src=" in attributes or 'type="application/json"' in attributes
        assert "src=" not in attributes or not content.strip()
    data = re.search(r'id="hours-data">(.*?)</script>', html, flags=re.S)
    assert data is not None and '"flow": "commune"' in data.group(1)
    assert "Whole day" in data.group(1)
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_a_browser_session_saves_with_its_origin(desk: HoursDesk) -> None:
    """The page's own way: session cookie, same-origin PUT (the origin check lets it pass)."""
    async with httpx.AsyncClient(base_url=desk.base_url, trust_env=False) as browser:
        login = await browser.post(
            "/login",
            data={"username": "sophie", "password": PASSWORDS["sophie"]},
            headers={"Origin": desk.base_url},
        )
        assert login.status_code == 303, login.text
        state = (await browser.get(HOURS)).json()
        edit = edit_of(state, holidays=None)
        foreign = await browser.put(
            f"{HOURS}/{NODE}", json=edit, headers={"Origin": "http://evil.example"}
        )
        assert foreign.status_code == 403
        saved = await browser.put(f"{HOURS}/{NODE}", json=edit, headers={"Origin": desk.base_url})
    assert saved.status_code == 200, saved.text
    assert saved.json()["nodes"][0]["holidays"] is None
    assert "holidays:  # no public holidays" in desk.flow_file.read_text()


async def test_in_a_browser_a_refusal_is_shown_then_a_closure_is_saved(desk: HoursDesk) -> None:
    """The page in Debian's Chromium (strict CSP on): closing before opening is refused with
    the checker's words and nothing saved; then a new closure is saved."""
    from playwright.async_api import async_playwright, expect

    assert CHROMIUM_FOUND, "apt-get install chromium (the test never downloads a browser)"
    before = desk.flow_file.read_bytes()
    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await (await browser.new_context(locale="en-GB")).new_page()
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.on(
                "console",
                lambda m: (
                    errors.append(m.text)
                    if m.type == "error"
                    and "favicon" not in m.location.get("url", "")
                    and "422" not in m.text
                    else None
                ),
            )
            await page.goto(f"{desk.base_url}/supervisor/hours")
            await page.get_by_label("Username").fill("sophie")
            await page.get_by_label("Password").fill(PASSWORDS["sophie"])
            await page.get_by_role("button", name="Sign in").click()
            await expect(page).to_have_url(f"{desk.base_url}/supervisor/hours")
            form = page.locator('form[data-node="opening_hours"]')
            monday = form.locator('.hours-day[data-day="mon"] [data-role="slot"]').first
            await monday.locator('[data-role="close"]').fill("08:00")
            await form.get_by_role("button", name="Save").click()

            await expect(page.locator("#hours-error")).to_contain_text(
                "The flow check refused this change; nothing was saved"
            )
            await expect(page.locator("#hours-issues")).to_contain_text(
                "'08:30-08:00': the range ends before it starts"
            )
            assert desk.flow_file.read_bytes() == before

            await monday.locator('[data-role="close"]').fill("12:30")
            await form.get_by_role("button", name="Add a closure").click()
            closure = form.locator('[data-role="closure"]').last
            await closure.locator('[data-role="date"]').fill("2027-01-05")
            await closure.locator('[data-role="reason"]').fill("Staff day")
            await form.get_by_role("button", name="Save").click()
            await expect(page.locator("#hours-status")).to_have_text(
                "Saved; new calls follow the new hours."
            )
            await expect(page.locator("#hours-error")).to_be_hidden()
        finally:
            await browser.close()
    assert errors == []
    after = desk.flow_file.read_text()
    assert '- {date: "2027-01-05", reason: "Staff day"}' in after
    assert 'mon: ["08:30-12:30", "13:00-16:30"]' in after  # as it was written
    rows = await desk.audit.entries(action=flow_hours.HOURS_CHANGED)
    assert [row.reason for row in rows] == [f"{NODE}: closures 4→5"]
