"""The supervisor's wallboard in a real Chromium (Debian's, driven by Playwright).

A whole Guichet (`guichet.runtime.Guichet`) runs over Asterisk's recorded `supervisor-spy`
call, held at the moment Agent One's phone rings. The supervisor signs in with the login
form, sees Agent One ringing on the wallboard, lets Asterisk answer (the call goes on as
recorded), sees Agent One on the call and the queue's answered count, clicks "Whisper"
and the `Originate` running `ChanSpy(Local/agent1@agents,qbEw…)` on the supervisor's own
phone reaches the AMI peer. The agent raises a hand; it shows on the supervisor's screen
and the supervisor joins in whisper from there. The spy session is in the audit trail.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ami_peer import AmiPeer, Script, recording
from console_fixtures import FAST_HASHER, PASSWORDS, create_people, serve_app, signed_in
from test_agent_api import GATE, recorded
from test_agent_console_browser import arrived, chromium_page

from crm_bridge.audit import CALL_SPIED
from guichet.replay.ami_server import Block, Expect
from guichet.runtime import Guichet
from guichet.settings import Settings

try:
    from playwright.async_api import Page, expect
except ImportError as exc:  # a clear message rather than a bare collection error
    raise ImportError(
        "tests/test_supervisor_browser.py needs Playwright: .venv/bin/pip install playwright"
    ) from exc

# supervisor-spy: AgentCalled (Agent One rings) at 11.94 s, AgentConnect at 13.94 s; the
# recorder's first spy Originate at 14.94 s. The script is held at 12.0 s (ringing) until
# the test opens the gate, and ends at 14.0 s: then the call stays connected, quiet.
RINGING, CONNECTED = 12.0, 14.0
CALL_ID = "1795370193.1"
SPY_ORIGINATE = recorded("supervisor-spy", "spy-qbEw")


def held_call() -> Script:
    script = Script.load(recording("supervisor-spy")).until(CONNECTED)
    gate = (
        Expect(RINGING, (("Action", "UserEvent"), ("ActionID", "gate"), ("UserEvent", GATE))),
        Block(RINGING, b"Response: Success\r\nActionID: gate\r\nMessage: Event Sent\r\n\r\n"),
    )
    split = next((i for i, item in enumerate(script.items) if item.t > RINGING))
    return Script(script.banner, script.items[:split] + gate + script.items[split:])


def answer_originate(_session: Any, action: Any) -> bytes | None:
    """Asterisk's recorded answer to the supervisor's Originate ("successfully queued")."""
    return SPY_ORIGINATE if action.name == "originate" else None


async def sign_in(page: Page, base_url: str, username: str) -> None:
    await page.goto(f"{base_url}/login?lang=en&next=/supervisor")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORDS[username])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{base_url}/supervisor")
    await expect(page.locator("#board")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "online")


async def test_the_supervisor_watches_a_call_whispers_and_answers_a_raised_hand(
    tmp_path: Path,
) -> None:
    peer = AmiPeer([held_call()])
    peer.hooks.append(answer_originate)
    peer.gate = asyncio.Event()  # the call starts once Guichet has rebuilt its state
    await peer.start()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/g.db",
        case_spool=tmp_path / "cases.spool",
        agi_port=0,
        ami_host="127.0.0.1",
        ami_port=peer.port,
        ami_secret="guichet-secret",
        secret_key="supervisor-browser-secret-0123456789abcdef",
        reload_interval=0,
        demo=False,
    )
    guichet = Guichet(settings)
    errors: list[str] = []
    await guichet.start()
    try:
        guichet.users.hasher = FAST_HASHER
        await create_people(guichet.users)
        await guichet.users.update("sophie", interface="PJSIP/sup1")  # the recorded phone
        await guichet.wallboard.refresh()
        assert guichet.ami is not None
        await asyncio.wait_for(guichet.ami.wait_ready(), 15)
        assert guichet.cti is not None
        await asyncio.wait_for(guichet.cti.resynced.wait(), 15)
        peer.gate.set()
        async with serve_app(guichet.app) as base_url, chromium_page(errors) as page:
            await sign_in(page, base_url, "sophie")
            row = page.locator('#agents tr[data-agent="agent1"]')
            await expect(row).to_have_attribute("data-state", "ringing")
            await expect(row.locator(".state")).to_have_text("Ringing")
            await expect(page.locator("#sum-waiting")).to_have_text("1")

            await guichet.ami.send_action({"Action": "UserEvent", "UserEvent": GATE})
            await expect(row).to_have_attribute("data-state", "on_call")
            await expect(row).to_contain_text("0470123456")
            queue = page.locator('#queues tr[data-queue="population-nl"]')
            await expect(queue.locator("td").nth(4)).to_have_text("1")  # answered
            await expect(page.locator("#sum-waiting")).to_have_text("0")

            # Whisper: Guichet rings the supervisor's phone, which runs ChanSpy on the agent.
            await row.get_by_role("button", name="Whisper").click()
            originate = await arrived(peer, "originate", lambda a: a.get("Channel") == "PJSIP/sup1")
            assert originate.get("Application") == "ChanSpy"
            assert originate.get("Data").startswith("Local/agent1@agents,qbEw")
            await expect(page.locator("#spy-session")).to_be_visible()
            spied = await guichet.app.state.audit.entries(action=CALL_SPIED)
            assert [(e.actor, e.subject.id) for e in spied] == [("sophie", CALL_ID)]

            # Alice raises her hand on the call: it shows at once on the wallboard.
            async with signed_in(base_url, "alice") as alice:
                answer = await alice.post("/api/me/hand", json={"raised": True})
                assert answer.status_code in (200, 201), answer.text
            hand = page.locator('#hands li[data-agent="agent1"]')
            await expect(hand).to_contain_text("Alice Dupont")
            await expect(row).to_have_attribute("data-hand", "true")
    finally:
        await guichet.stop()
        await peer.close()
    assert errors == []
