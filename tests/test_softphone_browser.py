"""The agent's browser softphone: JsSIP in a real Chromium registers over SIP-over-WebSocket,
a citizen's call rings in the page, the agent answers, the call ends — with real peers only.

- Kamailio (Debian's, `tests/kamailio.py`) is the registrar on loopback, as Asterisk's
  ``transport-wss`` would be (it asks no password: the credentials are checked separately,
  against the rendered pjsip.conf).
- The console is the real one (uvicorn, SQLite store, argon2 users) with the agent routers,
  ``/api/me/softphone`` and the console's CSP widened by ``ConsoleConfig.connect_sources`` (it must let the page reach the
  SIP WebSocket), ``GUICHET_SIP_WS_URL`` = Kamailio's WebSocket.
- Debian's Chromium through Playwright, with fake media devices (a fake microphone, and
  permission granted without a prompt): ``getUserMedia`` works headless.
- ``sipp`` (Debian's sip-tester) plays the citizen (``tests/sipp/softphone_uac.xml``): a WebRTC
  offer (DTLS-SRTP fingerprint, ICE credentials and a candidate, rtcp-mux), through Kamailio to
  agent1.

What was verified in JsSIP 3.13's source (node_modules/jssip/lib/RTCSession.js): ``answer()``
takes the microphone, sets the remote offer, creates the answer and waits for ICE gathering to
finish (``_createLocalDescription``), then sends 200 OK — it never waits for ICE connectivity
or DTLS. So the call is established in SIP although sipp speaks neither ICE nor DTLS; the
200 OK's SDP, read from sipp's message log, is checked to be Chromium's DTLS-SRTP answer.
JsSIP sends 180 Ringing by itself when the INVITE arrives, and 'confirmed' follows the ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from console_fixtures import FAST_HASHER, PASSWORDS, SECRET, create_people, serve_app
from fastapi import FastAPI
from kamailio import Kamailio, kamailio
from typer.testing import CliRunner

from console.cli import users_app
from console.deps import ConsoleConfig, websocket_origins
from console.factory import STATIC_DIR, create_console_app
from console.push import PushHub
from console.routers.agent import agent_routers
from console.routers.softphone import SIP_WS_URL_ENV, sip_password
from crm_bridge.audit import AuditLog
from crm_bridge.cases import CaseService
from crm_bridge.db import init_db, make_engine
from crm_bridge.knowledge import KnowledgeBase
from crm_bridge.users import UserService, UserView
from guichet.asterisk_render import render_texts, softphone_passwords
from guichet.settings import ROOT, Settings

try:
    from playwright.async_api import BrowserContext, Locator, Page, async_playwright, expect
except ImportError as exc:  # a clear message rather than a bare collection error
    raise ImportError(
        "tests/test_softphone_browser.py needs Playwright (it drives Debian's /usr/bin/chromium;"
        " never run `playwright install`)"
    ) from exc

__all__ = ["kamailio"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # A fake microphone and camera, and no permission prompt: getUserMedia answers at once.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    # The ring sound may start before any click on the page (a headless browser never clicks).
    "--autoplay-policy=no-user-gesture-required",
]
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
SCENARIO = Path(__file__).parent / "sipp" / "softphone_uac.xml"
HOLD_SCENARIO = Path(__file__).parent / "sipp" / "softphone_uac_hold.xml"
JSSIP = STATIC_DIR / "vendor" / "jssip.min.js"
LIMIT = 60.0  # seconds: only stops a broken test from hanging; never a timing assertion
UI_LIMIT = 30_000  # milliseconds, for Playwright's expectations


@dataclass
class Desk:
    base_url: str
    app: FastAPI
    users: UserService
    people: dict[str, UserView]
    database_url: str

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, follow_redirects=False, trust_env=False)

    async def signed_in(self, client: httpx.AsyncClient, username: str) -> None:
        response = await client.post(
            "/login",
            data={"username": username, "password": PASSWORDS[username]},
            headers={"Origin": self.base_url},
        )
        assert response.status_code == 303, response.text


@contextlib.asynccontextmanager
async def softphone_desk(tmp_path: Path, ws_url: str) -> AsyncIterator[Desk]:
    """The agent desk with the softphone router and CSP, no PBX (the SIP side is Kamailio's):
    Alice (PJSIP/agent1) answers in the browser, Bob (PJSIP/agent2) on a desk phone."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'softphone.db'}"
    engine = make_engine(database_url)
    await init_db(engine)
    users = UserService(engine, hasher=FAST_HASHER)
    app = create_console_app(
        engine=engine,
        users=users,
        hub=PushHub(),
        extra_routers=agent_routers(),
        config=ConsoleConfig(
            secret_key=SECRET,
            ws_revalidate_interval=3600,
            connect_sources=websocket_origins(ws_url),
        ),
    )
    app.state.sip_ws_url = ws_url
    state = app.state
    state.cases, state.knowledge, state.audit = (
        CaseService(engine),
        KnowledgeBase(engine),
        AuditLog(engine),
    )
    state.crm_engine, state.users = engine, users
    state.pbx, state.cti_state = None, None
    try:
        people = await create_people(users)
        people["alice"] = await users.update("alice", softphone=True)
        async with serve_app(app) as base_url:
            yield Desk(base_url, app, users, people, database_url)
    finally:
        await engine.dispose()


# --- the credentials ------------------------------------------------------------------------


async def test_only_the_agent_gets_their_softphone_credentials_and_asterisk_has_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws_url = "wss://pbx.commune.example:8089/ws"
    monkeypatch.setenv(SIP_WS_URL_ENV, ws_url)
    async with softphone_desk(tmp_path, ws_url) as desk:
        async with desk.client() as anonymous:
            assert (await anonymous.get("/api/me/softphone")).status_code == 401

        async with desk.client() as alice:
            await desk.signed_in(alice, "alice")
            response = await alice.get("/api/me/softphone")
            assert response.status_code == 200, response.text
            assert response.headers["cache-control"] == "no-store"
            answer = response.json()
            assert answer == {
                "enabled": True,
                "ws_url": ws_url,
                "uri": "sip:agent1@pbx.commune.example",
                "authorization_user": "agent1",
                "password": sip_password(SECRET, "agent1"),
                "display_name": "Alice Dupont",
            }
            assert re.fullmatch(r"[a-z2-7]{32}", answer["password"])
            page = await alice.get("/agent")
            assert 'id="softphone"' in page.text and "/static/vendor/jssip.min.js" in page.text
            policy = page.headers["content-security-policy"]
            assert "connect-src 'self' wss://pbx.commune.example:8089;" in policy

        for other, status in (("bob", 404), ("sophie", 404)):  # desk phone; no phone at all
            async with desk.client() as client:
                await desk.signed_in(client, other)
                response = await client.get("/api/me/softphone")
                assert response.status_code == status, (other, response.text)
                assert "password" not in response.text
        async with desk.client() as bob:
            await desk.signed_in(bob, "bob")
            page = await bob.get("/agent")
            assert page.status_code == 200 and 'id="softphone"' not in page.text
            assert "jssip" not in page.text

        # Alice's softphone, but her phone is no PJSIP endpoint: 409, nothing to register.
        await desk.users.update("alice", interface="SIP/1001")
        async with desk.client() as alice:
            await desk.signed_in(alice, "alice")
            response = await alice.get("/api/me/softphone")
            assert response.status_code == 409 and response.json()["detail"]["code"] == "no_phone"
        await desk.users.update("alice", interface="PJSIP/agent1")

        # `guichet asterisk render` writes the password the console serves, from the same store.
        softphones = await softphone_passwords(desk.database_url, SECRET)
        assert softphones == {"agent1": answer["password"]}
        texts = render_texts(
            settings=Settings(_env_file=None),
            flows_dir=ROOT / "flows",
            site_file=ROOT / "asterisk-config" / "site.yaml",
            warn=lambda _message: None,
            softphones=softphones,
        )
        pjsip = texts["pjsip.conf"][0]
        auth = re.search(r"\[agent1\]\ntype = auth\n(?:.+\n)*?password = (\S+)\n", pjsip)
        assert auth is not None and auth.group(1) == answer["password"]
        endpoint = pjsip.split("[agent1]\ntype = endpoint\n", 1)[1].split("\n\n", 1)[0]
        assert "webrtc = yes" in endpoint and "transport = transport-wss" in endpoint
        agent2 = pjsip.split("[agent2]\ntype = endpoint\n", 1)[1].split("\n\n", 1)[0]
        assert "webrtc" not in agent2


# --- the call in the browser ----------------------------------------------------------------


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sign_in(page: Page, base_url: str, username: str) -> None:
    """Through the login form, the way an agent does (French labels: Alice's language)."""
    await page.goto(f"{base_url}/agent")
    await page.get_by_label("Nom d'utilisateur").fill(username)
    await page.get_by_label("Mot de passe").fill(PASSWORDS[username])
    await page.get_by_role("button", name="Se connecter").click()
    await expect(page).to_have_url(f"{base_url}/agent")
    await expect(page.locator("#agent")).to_have_attribute("data-ready", "true")


# Every state the softphone section goes through, recorded in the page as it happens (the
# test reads the list afterwards: no race with a state that lasts only a moment).
RECORD_STATES = """() => {
  window.softphoneStates = [];
  const section = document.getElementById("softphone");
  const note = () => {
    const state = section.dataset.call;
    const list = window.softphoneStates;
    if (list[list.length - 1] !== state) list.push(state);
  };
  note();
  new MutationObserver(note).observe(section, { attributes: true, attributeFilter: ["data-call"] });
}"""


@dataclass
class Agent:
    """Alice's desk in Chromium, her softphone registered through Kamailio."""

    desk: Desk
    context: BrowserContext
    page: Page
    errors: list[str]

    @property
    def softphone(self) -> Locator:
        return self.page.get_by_role("region", name="Softphone")

    async def states(self) -> list[str]:
        states = await self.page.evaluate("window.softphoneStates")
        return [str(state) for state in states]


def _watch(page: Page, errors: list[str]) -> None:
    """Script errors and CSP refusals (the SIP WebSocket is on another origin) fail the test."""
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}")
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )


@contextlib.asynccontextmanager
async def alice_in_the_browser(
    tmp_path: Path, kamailio: Kamailio, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Agent]:
    for needed, hint in (
        (CHROMIUM, "apt-get install chromium"),
        (Path(SIPP), "apt-get install sip-tester"),
        (JSSIP, "run scripts/build_static.sh (JsSIP from npm into console/static/vendor)"),
    ):
        if not needed.exists():
            pytest.fail(f"{needed} is missing: {hint}", pytrace=False)
    monkeypatch.setenv(SIP_WS_URL_ENV, kamailio.ws_url)
    errors: list[str] = []
    async with softphone_desk(tmp_path, kamailio.ws_url) as desk, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(locale="fr-BE")
            page = await context.new_page()
            _watch(page, errors)
            await sign_in(page, desk.base_url, "alice")
            agent = Agent(desk, context, page, errors)
            await expect(agent.softphone).to_have_attribute(
                "data-registration", "registered", timeout=UI_LIMIT
            )
            await expect(page.locator("#softphone-registration")).to_have_text(
                "Softphone enregistré, prêt à recevoir des appels."
            )
            await expect(page.locator("#softphone-answer")).to_be_disabled()
            await page.evaluate(RECORD_STATES)
            yield agent
            assert errors == [], errors
        finally:
            await browser.close()


@dataclass
class Citizen:
    process: asyncio.subprocess.Process
    log: Path
    output: str = ""

    @property
    def trace(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.asynccontextmanager
async def citizen_calls(
    tmp_path: Path, kamailio: Kamailio, scenario: Path
) -> AsyncIterator[Citizen]:
    """sipp plays ``scenario`` once: a call to agent1 through the registrar. Leaving the block
    waits (bounded) for sipp to finish; the test then reads its exit code and message log."""
    log = tmp_path / f"{scenario.stem}-messages.log"
    process = await asyncio.create_subprocess_exec(
        SIPP,
        f"127.0.0.1:{kamailio.sip_port}",
        "-sf", str(scenario),
        "-s", "agent1",
        "-i", "127.0.0.1",
        "-p", str(_free_udp_port()),
        "-mi", "127.0.0.1",
        "-mp", str(_free_udp_port()),
        "-t", "u1",
        "-m", "1",
        "-nostdin",
        "-timeout", f"{int(LIMIT) + 60}s",
        "-timeout_error",
        "-trace_msg", "-message_file", str(log),
        "-trace_err", "-error_file", str(tmp_path / f"{scenario.stem}-errors.log"),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    citizen = Citizen(process, log)
    try:
        yield citizen
        output, _ = await asyncio.wait_for(process.communicate(), LIMIT)
        citizen.output = output.decode(errors="replace")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, (
        f"sipp failed ({process.returncode}):\n{citizen.output[-3000:]}\n"
        f"{citizen.trace[-6000:]}\n{kamailio.log_tail()}"
    )


async def ring_and_answer(agent: Agent) -> None:
    """The page rings with the caller shown; the agent clicks answer."""
    page = agent.page
    await expect(agent.softphone).to_have_attribute("data-call", "ringing", timeout=UI_LIMIT)
    await expect(agent.softphone).to_have_attribute("data-ringing", "true")
    await expect(page.locator("#softphone-caller")).to_have_text("Sofie Peeters <+32470123456>")
    await expect(page.locator("#softphone-call")).to_have_text("Appel entrant, ça sonne.")
    await agent.softphone.get_by_role("button", name="Répondre").click()


def sdps(trace: str, start: str, header: str = "") -> list[str]:
    """The SDP bodies of the messages in sipp's log that start with ``start`` (and carry
    ``header``), in order."""
    found = []
    for message in trace.split("-----------------------------------------------"):
        text = message.split("\n\n", 1)[-1].lstrip("\n")
        if text.startswith(start) and header in text and "v=0" in text:
            found.append(text[text.index("v=0") :])
    assert found, f"no {start!r} with an SDP in sipp's log:\n{trace[-4000:]}"
    return found


async def test_the_agent_answers_a_call_in_the_browser_softphone(
    tmp_path: Path, kamailio: Kamailio, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with alice_in_the_browser(tmp_path, kamailio, monkeypatch) as agent:
        async with citizen_calls(tmp_path, kamailio, SCENARIO) as citizen:
            await ring_and_answer(agent)
            # sipp: 200 OK, ACK, a moment on the call, BYE, 200 — then it exits 0.
        section, page = agent.softphone, agent.page
        await expect(section).to_have_attribute("data-call", "ended", timeout=UI_LIMIT)
        await expect(page.locator("#softphone-call")).to_have_text("Appel terminé.")
        await expect(section).to_have_attribute("data-ringing", "false")
        await expect(page.locator("#softphone-hangup")).to_be_disabled()
        assert await agent.states() == ["idle", "ringing", "connecting", "in_call", "ended"]

        # A second tab of the same browser waits: the endpoint keeps one contact.
        second = await agent.context.new_page()
        _watch(second, agent.errors)
        await second.goto(f"{agent.desk.base_url}/agent")
        await expect(second.locator("#softphone")).to_have_attribute(
            "data-registration", "other_tab", timeout=UI_LIMIT
        )
        await page.close()  # the first tab goes: the second one registers
        await expect(second.locator("#softphone")).to_have_attribute(
            "data-registration", "registered", timeout=UI_LIMIT
        )

    # What sipp received: 180 from JsSIP itself, then the 200 OK carrying Chromium's answer,
    # DTLS-SRTP as the offer asked (JsSIP answered before any ICE check or DTLS handshake).
    trace = citizen.trace
    assert "SIP/2.0 180 Ringing" in trace
    answer = sdps(trace, "SIP/2.0 200 OK", "CSeq: 1 INVITE")[0]
    assert re.search(r"m=audio \d+ UDP/TLS/RTP/SAVPF", answer), answer
    assert re.search(r"a=fingerprint:sha-256 ([0-9A-F]{2}:){31}[0-9A-F]{2}", answer), answer
    assert "a=setup:active" in answer or "a=setup:passive" in answer
    assert "a=ice-ufrag:" in answer and "a=rtcp-mux" in answer


async def test_the_agent_mutes_sends_keys_holds_resumes_and_hangs_up(
    tmp_path: Path, kamailio: Kamailio, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with alice_in_the_browser(tmp_path, kamailio, monkeypatch) as agent:
        section, page = agent.softphone, agent.page
        async with citizen_calls(tmp_path, kamailio, HOLD_SCENARIO) as citizen:
            await ring_and_answer(agent)
            await expect(section).to_have_attribute("data-call", "in_call", timeout=UI_LIMIT)
            await expect(page.locator("#softphone-transfer")).to_be_enabled()

            mute = page.locator("#softphone-mute")
            await mute.click()  # JsSIP disables the microphone track, then says "muted"
            await expect(mute).to_have_attribute("aria-pressed", "true")
            await expect(mute).to_have_text("Rétablir le micro")
            await mute.click()
            await expect(mute).to_have_attribute("aria-pressed", "false")

            await page.get_by_role("button", name="Clavier").click()
            await page.get_by_role("button", name="Touche 1").click()
            await page.get_by_role("button", name="Touche #").click()
            await expect(page.locator("#softphone-dialled")).to_have_text("1#")

            hold = page.locator("#softphone-hold")
            await hold.click()  # re-INVITE sendonly; sipp agrees
            await expect(section).to_have_attribute("data-call", "held")
            await expect(hold).to_have_text("Reprendre")
            await expect(hold).to_be_enabled(timeout=UI_LIMIT)  # the 200 OK came back
            await hold.click()  # re-INVITE sendrecv
            await expect(section).to_have_attribute("data-call", "in_call")
            await expect(hold).to_be_enabled(timeout=UI_LIMIT)

            await section.get_by_role("button", name="Raccrocher").click()  # BYE to the citizen
            await expect(section).to_have_attribute("data-call", "ended", timeout=UI_LIMIT)
        assert await agent.states() == [
            "idle",
            "ringing",
            "connecting",
            "in_call",
            "held",
            "in_call",
            "ended",
        ]

    trace = citizen.trace
    # The keys: SIP INFO, since RFC 4733 needs media that never flows here (sipp has no DTLS).
    signals = re.findall(r"^Signal=(\S+)$", trace, re.MULTILINE)
    assert signals == ["1", "#"], signals
    held, resumed = sdps(trace, "INVITE sip:+32470123456@")  # from the page to the citizen
    assert "a=sendonly" in held and "a=sendrecv" in resumed
    assert re.search(r"^BYE sip:", trace, re.MULTILINE)


# --- the per-agent switch -------------------------------------------------------------------


def test_the_softphone_is_switched_per_agent_from_the_command_line(tmp_path: Path) -> None:
    """``guichet users add/update --softphone | --desk-phone``; the store keeps it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'users.db'}"

    def run(*args: str, stdin: str | None = None) -> str:
        result = CliRunner().invoke(users_app, [*args, "--database-url", url], input=stdin)
        assert result.exit_code == 0, result.output
        return result.output

    created = run("add", "anne", "--interface", "PJSIP/agent3", "--softphone", stdin="a" * 14)
    assert "browser softphone" in created
    row = next(line for line in run("list").splitlines() if "anne" in line)
    assert re.search(r"PJSIP/agent3\W+yes\W+fr", row), row  # the Softphone column
    assert "browser softphone" not in run("update", "anne", "--desk-phone")
    assert "browser softphone" in run("update", "anne", "--softphone", "--lang", "nl")

    async def stored() -> UserView | None:
        engine = make_engine(url)
        try:
            return await UserService(engine).get("anne")
        finally:
            await engine.dispose()

    anne = asyncio.run(stored())
    assert anne is not None and anne.softphone and anne.ui_language == "nl"
    assert anne.interface == "PJSIP/agent3"
