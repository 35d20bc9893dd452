"""The agent desk in a real Chromium (Debian's, driven by Playwright; no browser download).

An agent signs in with the login form and works the desk the way they would: a screen-pop
pushed to them shows the case, the citizen and the suggested articles before they pick up,
and disappears when the call is withdrawn; choosing "lunch" pauses them in Asterisk
(QueuePause with ``Reason: lunch`` reaches the AMI peer); after the call is answered the
transfer form sends the very BlindTransfer of the blind-transfer recording.

The pushes here are published to the hub the way `console.screenpop.ScreenPop` does, with
data read from the real case store and knowledge base (`pop_for`). The end-to-end variant
replaces them with the recorded call flowing through the real screen-pop service: start
`ScreenPop` on ``desk.cti.bus`` (the bus the CTI bridge publishes to) with ``desk.hub``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from ami_peer import Action, AmiPeer
from console_fixtures import PASSWORDS
from test_agent_api import (
    NN_SOFIE,
    RECORDED_AGENT_LEG,
    RECORDED_CALL,
    RECORDED_CASE,
    RINGING,
    AgentDesk,
    agent_desk,
    answer_as_recorded,
    blind_transfer_script,
    gated,
    open_gate,
)

from crm_bridge.citizen_search import CitizenDirectory
from cti.events import CallAnswered

try:
    from playwright.async_api import ConsoleMessage, Page, async_playwright, expect
except ImportError as exc:  # a clear message rather than a bare collection error
    raise ImportError(
        "tests/test_agent_console_browser.py needs Playwright: .venv/bin/pip install "
        "playwright (it drives Debian's /usr/bin/chromium; never run `playwright install`)"
    ) from exc

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FOUND = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
LIMIT = 30.0  # seconds: only stops a broken test from hanging; never a timing assertion


@contextlib.asynccontextmanager
async def chromium_page(errors: list[str]) -> AsyncIterator[Page]:
    """A page in Debian's Chromium; script errors and CSP violations land in ``errors``."""
    if not CHROMIUM_FOUND:
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install chromium (this test drives the real "
            "browser and never downloads one)",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context(locale="fr-BE")
            page = await context.new_page()
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.on("console", lambda message: _console_error(message, errors))
            page.on(
                "response",
                lambda response: (
                    errors.append(f"HTTP {response.status} {response.url}")
                    if response.status >= 400
                    else None
                ),
            )
            yield page
        finally:
            await browser.close()


def _console_error(message: ConsoleMessage, errors: list[str]) -> None:
    """Console errors (script errors, CSP violations, failed loads) but the browser's own
    ``/favicon.ico`` request: base.html declares no icon."""
    if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
        errors.append(f"console: {message.text} {message.location}")


async def arrived(peer: AmiPeer, name: str, match: Callable[[Action], bool]) -> Action:
    """The first ``name`` action at the peer that ``match`` accepts, once it arrives."""
    deadline = asyncio.get_running_loop().time() + LIMIT
    while True:
        found = [action for action in peer.sent(name) if match(action)]
        if found:
            return found[0]
        if asyncio.get_running_loop().time() > deadline:
            seen = [(a.name, dict(a.headers)) for a in peer.actions]
            raise AssertionError(f"no matching {name} reached the AMI peer; it saw {seen}")
        await asyncio.sleep(0.05)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value.isoformat() if hasattr(value, "isoformat") else value


async def pop_for(desk: AgentDesk, call_id: str, reference: str) -> dict[str, Any]:
    """A ``screen_pop`` as the screen-pop service builds it, from the real store."""
    case = await desk.cases.get_case(reference)
    assert case is not None and case.citizen_id is not None
    record = await CitizenDirectory(desk.engine).record(case.citizen_id)
    assert record is not None
    citizen = {
        "id": record.id,
        "first_name": record.first_name,
        "last_name": record.last_name,
        "preferred_language": record.preferred_language,
        "address": record.address,
        "open_cases": [
            _jsonable(asdict(view)) for view in await desk.cases.open_cases_of_citizen(record.id)
        ],
        "last_interactions": [
            _jsonable(asdict(view))
            for view in await desk.cases.last_interactions_of_citizen(record.id, 5)
        ],
    }
    articles = await desk.knowledge.for_request_type(case.category or "", case.language or "fr")
    return {
        "call_id": call_id,
        "ringing_since": 1795370107.94,
        "case": {**_jsonable(asdict(case)), "wait_seconds": 2.0, "ivr_path": ["lang", "menu"]},
        "citizen": citizen,
        "ivr_path": ["lang", "menu", "nn"],
        "articles": [_jsonable(asdict(article)) for article in articles],
    }


async def sign_in(page: Page, desk: AgentDesk, username: str) -> None:
    """Through the login form, the way an agent does (French labels: alice's language)."""
    await page.goto(f"{desk.base_url}/agent")
    await expect(page).to_have_url(f"{desk.base_url}/login?next=%2Fagent")
    await page.get_by_label("Nom d'utilisateur").fill(username)
    await page.get_by_label("Mot de passe").fill(PASSWORDS[username])
    await page.get_by_role("button", name="Se connecter").click()
    await expect(page).to_have_url(f"{desk.base_url}/agent")
    await expect(page.locator("#agent")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "online")


async def test_the_agent_sees_the_pop_pauses_for_lunch_and_transfers_the_call(
    tmp_path: Path,
) -> None:
    errors: list[str] = []
    async with (
        agent_desk(
            tmp_path,
            # The recorded call rings at Agent One's phone and waits there for open_gate.
            script=gated(blind_transfer_script(), RINGING),
            hooks=[answer_as_recorded("QueuePause")],
        ) as desk,
        chromium_page(errors) as page,
    ):
        assert desk.peer is not None and desk.cti is not None
        alice = desk.people["alice"]
        sofie = await desk.add_citizen(
            NN_SOFIE,
            "Sofie",
            "Peeters",
            street="Bondgenotenlaan 1",
            postal_code="3000",
            city="Leuven",
        )
        reference = await desk.open_case(RECORDED_CALL, citizen_id=sofie, reference=RECORDED_CASE)
        await desk.knowledge.upsert(
            "population-move",
            "population",
            titles={"nl": "Verhuizen", "fr": "Déménagement"},
            bodies={"nl": "Geef uw verhuis binnen 8 dagen aan.", "fr": "Déclarez-le."},
        )
        await sign_in(page, desk, "alice")
        assert await page.evaluate("document.documentElement.lang") == "fr"
        # The page asks the CTI what rings at Alice's phone: the recorded call, its case.
        await expect(page.locator("#case-title")).to_have_text(f"{RECORDED_CASE} — Nouveau")
        await expect(page.get_by_role("heading", name="Présence")).to_be_visible()

        # The pop, before pickup: case, citizen, suggested article (in the caller's language).
        desk.hub.publish(alice.id, "screen_pop", await pop_for(desk, RECORDED_CALL, reference))
        pop = page.get_by_role("region", name="Appel entrant")
        await expect(pop).to_have_attribute("data-state", "ringing")
        await expect(pop).to_contain_text(reference)
        await expect(pop).to_contain_text("Sofie Peeters")
        await expect(pop).to_contain_text("Bondgenotenlaan 1, 3000 Leuven")
        await expect(pop).to_contain_text("Verhuizen")
        await expect(pop).to_contain_text("lang → menu → nn")
        await expect(page.locator("#announcer")).to_contain_text("Appel entrant")
        await expect(page.locator("#call-status")).to_have_text(
            "Appel entrant, votre téléphone sonne."
        )
        assert NN_SOFIE not in await page.content()

        # Nobody picked up: the pop goes, and says why.
        desk.hub.publish(
            alice.id, "pop_withdrawn", {"call_id": RECORDED_CALL, "reason": "no_answer"}
        )
        await expect(pop).to_have_attribute("data-state", "empty")
        await expect(page.locator("#pop-notice")).to_have_text(
            "L'appel ne vous est plus proposé : pas de réponse."
        )
        await expect(pop).not_to_contain_text("Sofie Peeters")

        # Lunch: QueuePause with the reason, on Agent One's queue member interface.
        await page.get_by_label("Changer d'état").select_option(label="Pause : repas")
        await page.get_by_role("button", name="Appliquer").click()
        pause = await arrived(desk.peer, "QueuePause", lambda a: a.get("Paused") == "true")
        assert (pause.get("Interface"), pause.get("Reason")) == ("Local/agent1@agents", "lunch")
        await expect(page.locator("#presence-state")).to_have_text("Pause : repas")
        # ...and the state Asterisk confirms arrives live (agent_state from the CTI).
        desk.hub.publish(
            alice.id, "agent_state", {"state": "ready", "pause_reason": None, "since": 1.0}
        )
        await expect(page.locator("#presence-state")).to_have_text("Disponible")

        # Asterisk rings Agent One again and the call is answered (the recording plays on):
        # transfer it to the French desk, by keyboard.
        await open_gate(desk)
        answered = await desk.cti.next(CallAnswered, call_id=RECORDED_CALL)
        desk.hub.publish(
            alice.id,
            "call_answered",
            {
                "call_id": RECORDED_CALL,
                "case_reference": reference,
                "agent_channel": answered.agent_channel,
            },
        )
        await expect(page.get_by_role("button", name="Raccrocher")).to_be_enabled()
        await expect(page.locator("#case-title")).to_contain_text(reference)  # the case screen
        await expect(page.locator("#case-status")).to_have_value("new")
        other_queue = page.get_by_label("Autre file (nom)")
        await other_queue.focus()
        await page.keyboard.type("population-fr")
        await page.keyboard.press("Enter")
        transfer = await arrived(desk.peer, "BlindTransfer", lambda a: True)
        assert (transfer.get("Channel"), transfer.get("Exten"), transfer.get("Context")) == (
            RECORDED_AGENT_LEG,
            "population-fr",
            "transfer-targets",
        )
        await expect(page.locator("#announcer")).to_have_text(
            "Transfert demandé vers population-fr."
        )
        await expect(page.locator("#agent-error")).to_be_hidden()

        # Every visible form control has a label (keyboard and screen-reader users).
        unlabelled = await page.evaluate(
            """[...document.querySelectorAll('#agent input, #agent select, #agent textarea')]
                 .filter(e => e.type !== 'radio' && e.type !== 'checkbox' && e.offsetParent)
                 .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                 .map(e => e.id)"""
        )
        assert unlabelled == []
    assert errors == []
