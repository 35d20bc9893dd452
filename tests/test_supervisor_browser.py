"""The supervisor's wallboard in a real Chromium (Debian's, driven by Playwright).

A whole Guichet (`guichet.runtime.Guichet`) runs over Asterisk's recorded `supervisor-spy`
call, held at the moment Agent One's phone rings. The supervisor signs in with the login
form and, clicking as a supervisor would:

* sees Agent One ringing, then (once Asterisk answers, as recorded) on the call with the
  citizen's number, and the queue's answered count and waiting figure move;
* listens: the `Originate` running `ChanSpy(Local/agent1@agents,qbES…)` on the supervisor's
  own phone reaches the AMI peer, Asterisk's recorded ChanSpyStart makes the session live;
* switches to whisper then barge (`PlayDTMF` 5 / 6 with `Receive: true` on the spy leg), then
  stops (the recorded `Hangup` of the spy leg, ChanSpyStop);
* sees the hand Alice raises at her own desk (a second browser context) at once, sends her a
  private message that appears on her desk, and answers the hand with "Join (whisper)": the
  `Originate` with `ChanSpy(…,qbEw…)` reaches the peer and the hand goes down on both screens.

Every step is in the audit trail. The recording's Originates said `qbES` / `qbEw` and the
recorder's caller id; the script expects them as Guichet words them (`…d`: the mode can
be switched), so the call only goes on if exactly that reaches Asterisk.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from ami_peer import AmiPeer, Expect, Item, Script, recording
from console_fixtures import (
    FAST_HASHER,
    PASSWORDS,
    create_people,
    guichet_settings,
    serve_app,
)
from test_agent_api import GATE
from test_agent_console_browser import arrived, chromium_page
from test_coaching import SENT, answer_playdtmf

from console.coaching import MESSAGE_SENT, SPY_ENDED, SPY_MODE_CHANGED
from crm_bridge.audit import CALL_SPIED
from crm_bridge.db import session_factory
from crm_bridge.probe_models import ProbeRun
from guichet.replay.ami_server import Block
from guichet.runtime import Guichet

try:
    from playwright.async_api import Page, expect
except ImportError as exc:  # a clear message rather than a bare collection error
    raise ImportError(
        "tests/test_supervisor_browser.py needs Playwright: .venv/bin/pip install playwright"
    ) from exc

RINGING = 12.0  # supervisor-spy: AgentCalled at 11.94 s, AgentConnect at 13.94 s
CALL_ID = "1795370193.1"
# What Guichet sends for each recorded Originate (ActionID in the recording -> Data).
AS_SENT = {"spy-qbES": "Local/agent1@agents,qbESd", "spy-qbEw": "Local/agent1@agents,qbEwd"}


def held_call() -> Script:
    """supervisor-spy, held at ringing until the test opens the gate, its Originates as
    Guichet words them."""
    script = Script.load(recording("supervisor-spy"))
    items: list[Item] = []
    for item in script.items:
        if isinstance(item, Expect) and item.action_id in AS_SENT:
            wanted = {**SENT, "Data": AS_SENT[item.action_id]}
            item = replace(item, headers=tuple((k, wanted.get(k, v)) for k, v in item.headers))
        if item.t > RINGING and not any(
            isinstance(i, Expect) and i.action_id == "gate" for i in items
        ):
            items += [
                Expect(
                    RINGING, (("Action", "UserEvent"), ("ActionID", "gate"), ("UserEvent", GATE))
                ),
                Block(
                    RINGING, b"Response: Success\r\nActionID: gate\r\nMessage: Event Sent\r\n\r\n"
                ),
            ]
        items.append(item)
    return Script(script.banner, tuple(items))


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
    peer.hooks.append(answer_playdtmf)
    peer.gate = asyncio.Event()  # the call starts once Guichet has rebuilt its state
    await peer.start()
    settings = guichet_settings(tmp_path, peer.port)
    guichet = Guichet(settings)
    errors: list[str] = []
    await guichet.start()
    try:
        guichet.users.hasher = FAST_HASHER
        alice_id = (await create_people(guichet.users))["alice"].id
        await guichet.users.update("sophie", interface="PJSIP/sup1")  # the recorded phone
        await guichet.wallboard.refresh()
        async with session_factory(guichet.store.engine)() as session:  # a mystery call
            session.add(
                ProbeRun(
                    script="line-nl",
                    target="022791111",
                    caller="0470999999",
                    started_at=datetime(2026, 11, 23, 9, 3, tzinfo=UTC),  # 10:03 in Brussels
                    outcome="passed",
                    answered_s=0.4,
                    ivr_s=38.0,
                    agent_s=130.0,
                    greeting_ok=True,
                    greeting_score=0.97,
                )
            )
            await session.commit()
        assert guichet.ami is not None
        await asyncio.wait_for(guichet.ami.wait_ready(), 15)
        assert guichet.cti is not None
        await asyncio.wait_for(guichet.cti.resynced.wait(), 15)
        peer.gate.set()
        async with serve_app(guichet.app) as base_url, chromium_page(errors) as page:
            await sign_in(page, base_url, "sophie")
            await expect(page.locator("#probes")).to_contain_text(
                "Last check 10:03: answered 0.4 s, menus 38 s, agent after 2 min 10 s."
            )
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

            # Listen: Guichet rings the supervisor's phone, which runs ChanSpy on the agent.
            await row.get_by_role("button", name="Listen").click()
            listen = await arrived(peer, "originate", lambda a: a.get("Channel") == "PJSIP/sup1")
            assert listen.get("Application") == "ChanSpy"
            assert listen.get("Data").startswith("Local/agent1@agents,qbES")
            spy = page.locator("#spy-text")
            await expect(spy).to_contain_text("Live")  # the recorded ChanSpyStart
            await expect(row.locator(".coached")).to_contain_text("Sophie Martin: Listen")
            panel = page.locator("#spy-modes")
            await panel.get_by_role("button", name="Whisper").click()
            await arrived(peer, "playdtmf", lambda a: a.get("Digit") == "5")
            await expect(spy).to_contain_text("Whisper")
            await panel.get_by_role("button", name="Barge in").click()
            barge = await arrived(peer, "playdtmf", lambda a: a.get("Digit") == "6")
            assert (barge.get("Channel"), barge.get("Receive")) == ("PJSIP/sup1-00000000", "true")
            await panel.get_by_role("button", name="Stop").click()
            await arrived(peer, "hangup", lambda a: a.get("Channel") == "PJSIP/sup1-00000000")
            await expect(page.locator("#spy-none")).to_be_visible()

            # Alice, on the call at her own desk (another browser context), raises her hand:
            # it shows at once on the wallboard; the supervisor writes to her, then joins.
            assert page.context.browser is not None
            desk_context = await page.context.browser.new_context(locale="fr-BE")
            desk = await desk_context.new_page()
            desk.on("pageerror", lambda error: errors.append(f"desk: {error}"))
            await desk.goto(f"{base_url}/login?lang=fr&next=/agent")
            await desk.get_by_label("Nom d'utilisateur").fill("alice")
            await desk.get_by_label("Mot de passe").fill(PASSWORDS["alice"])
            await desk.get_by_role("button", name="Se connecter").click()
            await expect(desk.locator("#agent")).to_have_attribute("data-ready", "true")
            await desk.get_by_role("button", name="Lever la main").click()
            await expect(desk.locator("#coaching")).to_have_attribute("data-hand", "raised")
            hand = page.locator('#hands li[data-agent="agent1"]')
            await expect(hand).to_contain_text("Alice Dupont")
            await expect(row).to_have_attribute("data-hand", "true")
            await row.get_by_role("button", name="Message").click()
            await page.get_by_label("Message (only this agent sees it)").fill(
                "Propose le formulaire en ligne."
            )
            await page.locator("#dialog-ok").click()
            await expect(desk.locator("#private-messages")).to_contain_text(
                "Propose le formulaire en ligne."
            )
            await hand.get_by_role("button", name="Join (whisper)").click()
            whisper = await arrived(
                peer, "originate", lambda a: a.get("Data", "").endswith(",qbEwd")
            )
            assert whisper.get("Data").startswith("Local/agent1@agents,qbEw")
            await expect(spy).to_contain_text("Live")
            await expect(page.locator("#hands-none")).to_be_visible()  # the hand went down
            await expect(row).to_have_attribute("data-hand", "false")
            await expect(desk.locator("#coaching")).to_have_attribute("data-hand", "lowered")
            await desk_context.close()

            audit = guichet.app.state.audit
            spied = await audit.entries(action=CALL_SPIED)
            assert [(e.actor, e.subject.id) for e in spied] == [("sophie", CALL_ID)] * 2
            modes = await audit.entries(action=SPY_MODE_CHANGED)
            assert [e.reason for e in reversed(modes)] == ["listen->whisper", "whisper->barge"]
            assert len(await audit.entries(action=SPY_ENDED)) == 1
            (message,) = await audit.entries(action=MESSAGE_SENT)
            assert (message.actor, message.subject.id) == ("sophie", str(alice_id))
    finally:
        await guichet.stop()
        await peer.close()
    assert errors == []
