"""The agent console's API over a real console (uvicorn, SQLite store, argon2 users) and a real
AMI client talking to the AMI peer, which plays Asterisk's recorded bytes.

What is checked is what leaves Guichet: the HTTP answers (roles, 401/403, masked national
numbers), the audit rows, and the exact AMI actions arriving at the peer (QueuePause with its
Reason, BlindTransfer matched header for header against the blind-transfer recording,
Originate...). `agent_desk` is the rig; the browser test and the end-to-end variant (the
recorded call through the real screen-pop service) build on it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ami_peer import AmiPeer, Block, Expect, Hook, Script, Session, recorded_answer, recording
from console_fixtures import FAST_HASHER, PASSWORDS, SECRET, create_people, serve_app
from crm_fixtures import *  # noqa: F403  (the crm_engine fixture: SQLite, then PostgreSQL)
from crm_fixtures import NN_1985, NN_1990, make_nn
from cti_harness import Cti, running
from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from console.deps import ConsoleConfig
from console.factory import create_console_app
from console.push import PushHub
from console.routers.agent import agent_routers
from console.routers.calls import CallControlConfig
from crm_bridge.audit import CITIZEN_OPENED, AuditLog, Subject
from crm_bridge.case_facts import CallFacts
from crm_bridge.cases import CaseService
from crm_bridge.citizen_search import CitizenDirectory, SearchError
from crm_bridge.db import init_db, make_engine, session_factory
from crm_bridge.knowledge import KnowledgeBase
from crm_bridge.models import Citizen
from crm_bridge.users import UserService, UserView
from cti.events import AgentRinging, CallAnswered, CallTransferred

# The dial plan of the recordings (shared/asterisk/README.md): transfers to
# `population-fr@transfer-targets`, click-to-dial through `click-to-dial`.
RECORDED_DIALPLAN = CallControlConfig(
    transfer_context="transfer-targets",
    dial_context="click-to-dial",
    dial_caller_id='"Guichet" <022791111>',
)
# The call of the blind-transfer recording: Agent One answers it in population-nl.
RECORDED_CALL = "1795370095.1"
RECORDED_AGENT_LEG = "Local/agent1@agents-00000001;1"
NN_SOFIE = NN_1985
NN_JAN = NN_1990
NN_ELISE = make_nn("920312", 41)


# --- the rig --------------------------------------------------------------------------------


def recorded(scenario: str, action_id: str) -> bytes:
    """Asterisk's recorded answer to one action, ready for a peer hook (``{id}``: the
    client's ActionID)."""
    blocks = recorded_answer(recording(scenario), action_id)
    assert blocks, f"{scenario}: nothing recorded for {action_id}"
    marker = f"ActionID: {action_id}\r\n".encode()
    return b"".join(blocks).replace(marker, b"ActionID: {id}\r\n")


# What Asterisk 22 answered to these actions in the recordings. PJSIPNotify is not recorded:
# its answer is res_pjsip_notify's `astman_send_ack(s, m, "NOTIFY sent")`.
ANSWERS: dict[tuple[str, str | None], bytes] = {
    ("queuepause", "true"): recorded("agent-pause", "pause-agent2"),
    ("queuepause", "false"): recorded("agent-pause", "unpause-agent2"),
    ("originate", None): recorded("originate-click-to-dial", "c2d-0001"),
    ("atxfer", None): recorded("attended-transfer", "xfer-att-1"),
    ("hangup", None): recorded("supervisor-spy", "spy-qbES-stop"),
    ("pjsipnotify", None): b"Response: Success\r\nActionID: {id}\r\nMessage: NOTIFY sent\r\n\r\n",
}


def answer_as_recorded(*names: str) -> Hook:
    """A peer hook answering the named actions as Asterisk did in the recordings."""
    wanted = {name.lower() for name in names}

    def hook(_session: Session, action: Any) -> bytes | None:
        if action.name not in wanted:
            return None
        return ANSWERS.get((action.name, action.get("Paused").lower())) or ANSWERS.get(
            (action.name, None)
        )

    return hook


@dataclass
class AgentDesk:
    """A running console with the agent routers, its services on ``app.state`` as
    `guichet.runtime` sets them, and (with a script) the CTI over the AMI peer."""

    base_url: str
    app: FastAPI
    hub: PushHub
    engine: AsyncEngine
    users: UserService
    people: dict[str, UserView]
    cases: CaseService
    knowledge: KnowledgeBase
    audit: AuditLog
    peer: AmiPeer | None
    cti: Cti | None

    @property
    def origin(self) -> str:
        return self.base_url

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, follow_redirects=False, trust_env=False, **kwargs
        )

    @contextlib.asynccontextmanager
    async def signed_in(self, username: str) -> AsyncIterator[httpx.AsyncClient]:
        """A browser-like client: session cookie from the login form, same-origin Origin."""
        async with self.client(headers={"Origin": self.origin}) as client:
            response = await client.post(
                "/login", data={"username": username, "password": PASSWORDS[username]}
            )
            assert response.status_code == 303, response.text
            yield client

    async def add_citizen(self, national_number: str, first: str, last: str, **fields: Any) -> int:
        values = {"preferred_language": "nl", "phone": None, **fields}
        async with session_factory(self.engine)() as session:
            citizen = Citizen(
                national_number=national_number, first_name=first, last_name=last, **values
            )
            session.add(citizen)
            await session.commit()
            assert citizen.id is not None
            return citizen.id

    async def open_case(self, call_id: str, **fields: Any) -> str:
        values: dict[str, Any] = {
            "caller": "+32470123456",
            "lang": "nl",
            "request_type": "population",
            "queue": "population-nl",
            **fields,
        }
        return await self.cases.open_case_for_call(CallFacts(call_id=call_id, **values))

    async def audit_rows(self, action: str = CITIZEN_OPENED) -> list[Any]:
        return await self.audit.entries(action=action)


async def _people(users: UserService) -> dict[str, UserView]:
    return await create_people(users)


@contextlib.asynccontextmanager
async def agent_desk(
    tmp_path: Path,
    *,
    script: Script | None = None,
    hooks: Iterable[Hook] = (),
    call_control: CallControlConfig = RECORDED_DIALPLAN,
    hub: PushHub | None = None,
    routers: Sequence[APIRouter] = (),
) -> AsyncIterator[AgentDesk]:
    """The console with the agent desk; with ``script``, an AMI peer playing it, and the real
    AMI client, CTI bridge and `Pbx` in front of it (``app.state.pbx``/``cti_state``)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}")
    await init_db(engine)
    users = UserService(engine, hasher=FAST_HASHER)
    hub = hub or PushHub()
    app = create_console_app(
        engine=engine,
        users=users,
        hub=hub,
        extra_routers=[*agent_routers(), *routers],
        config=ConsoleConfig(secret_key=SECRET, ws_revalidate_interval=3600),
    )
    cases, knowledge, audit = CaseService(engine), KnowledgeBase(engine), AuditLog(engine)
    state = app.state
    state.cases, state.knowledge, state.audit = cases, knowledge, audit
    state.crm_engine, state.users, state.hub = engine, users, hub
    state.pbx, state.cti_state, state.call_control = None, None, call_control
    try:
        async with contextlib.AsyncExitStack() as stack:
            people = await _people(users)
            peer: AmiPeer | None = None
            cti: Cti | None = None
            if script is not None:
                peer = await stack.enter_async_context(AmiPeer([script]))
                peer.hooks.extend(hooks)
                cti = await stack.enter_async_context(running(peer))
                state.pbx, state.cti_state = cti.pbx, cti.bridge.state
            base_url = await stack.enter_async_context(serve_app(app))
            yield AgentDesk(
                base_url=base_url,
                app=app,
                hub=hub,
                engine=engine,
                users=users,
                people=people,
                cases=cases,
                knowledge=knowledge,
                audit=audit,
                peer=peer,
                cti=cti,
            )
    finally:
        await engine.dispose()


def blind_transfer_script(*, until: float | None = None) -> Script:
    """The blind-transfer recording: Agent One answers, then Asterisk waits for Guichet's
    BlindTransfer of the agent leg to ``population-fr@transfer-targets``. ``until`` cuts it
    there (then the line stays open, quiet): the peer plays as fast as it can, and the
    citizen should not hang up before the test is done with the call."""
    script = Script.load(recording("blind-transfer"))
    return script if until is None else script.until(until)


# In the blind-transfer recording, Agent One's phone rings from 11.94 s (AgentCalled) and
# is answered at 13.94 s (AgentConnect); Agent One talks to the citizen again from 17.95 s
# (after the transfer back into population-fr) until the citizen hangs up at 21.22 s.
RINGING = 13.0
TALKING_AGAIN = 20.0
# GUICHET_CASE_ID of the recorded call is `case-1001` (the recording's AGI, not Guichet's
# references); the console reads references upper-cased, so the case is stored as this.
RECORDED_CASE = "CASE-1001"
GATE = "GuichetTestGate"


def gated(script: Script, at: float) -> Script:
    """``script`` paused at ``at`` until the test calls `open_gate`: a UserEvent action the
    peer waits for like any recorded action (then it answers it and plays on). So a test can
    act while the recorded call rings, then let Asterisk answer it."""
    gate = (
        Expect(at, (("Action", "UserEvent"), ("ActionID", "gate"), ("UserEvent", GATE))),
        Block(at, b"Response: Success\r\nActionID: gate\r\nMessage: Event Sent\r\n\r\n"),
    )
    split = next((i for i, item in enumerate(script.items) if item.t > at), len(script.items))
    return Script(script.banner, script.items[:split] + gate + script.items[split:])


async def open_gate(desk: AgentDesk) -> None:
    assert desk.cti is not None
    await desk.cti.client.send_action({"Action": "UserEvent", "UserEvent": GATE})


def detail(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert isinstance(body.get("detail"), dict), body
    return dict(body["detail"])


# --- sessions, roles, the page ------------------------------------------------------------

ROUTES: list[tuple[str, str, Mapping[str, Any] | None]] = [
    ("GET", "/api/cases/C-2026-000000-AA", None),
    ("PATCH", "/api/cases/C-2026-000000-AA", {"status": "in_progress"}),
    ("POST", "/api/cases/C-2026-000000-AA/notes", {"text": "hello"}),
    ("POST", "/api/cases/C-2026-000000-AA/wrap-up", {"disposition": "resolved"}),
    ("POST", "/api/cases/C-2026-000000-AA/citizen", {"citizen_id": 1}),
    ("GET", "/api/cases/C-2026-000000-AA/history", None),
    ("GET", "/api/citizens?q=peeters", None),
    ("GET", "/api/citizens/1?case=C-2026-000000-AA", None),
    ("POST", "/api/calls/dial", {"number": "0470123456"}),
    ("POST", "/api/calls/1795370095.1/transfer", {"kind": "blind", "target": "population-fr"}),
    ("POST", "/api/calls/1795370095.1/hangup", None),
    ("POST", "/api/calls/1795370095.1/hold", {"held": True}),
    ("GET", "/api/calls/current", None),
    ("GET", "/api/calls/targets", None),
    ("GET", "/api/presence", None),
    ("POST", "/api/presence", {"state": "paused", "reason": "lunch"}),
]


async def test_every_route_needs_a_session(tmp_path: Path) -> None:
    async with agent_desk(tmp_path) as desk, desk.client() as anonymous:
        for method, path, body in ROUTES:
            response = await anonymous.request(method, path, json=body)
            assert response.status_code == 401, (method, path, response.text)
        page = await anonymous.get("/agent", headers={"Accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fagent"
        # The routes are documented (OpenAPI), every one of them behind the agent role.
        async with desk.signed_in("alice") as alice:
            spec = (await alice.get("/api/openapi.json")).json()
        documented = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
        for method, path in [
            ("GET", "/api/cases/{reference}"),
            ("PATCH", "/api/cases/{reference}"),
            ("POST", "/api/cases/{reference}/wrap-up"),
            ("GET", "/api/citizens/{citizen_id}"),
            ("POST", "/api/calls/{call_id}/transfer"),
            ("POST", "/api/presence"),
        ]:
            assert (method, path) in documented


async def test_a_cross_origin_post_is_refused_before_reaching_asterisk(tmp_path: Path) -> None:
    async with (
        agent_desk(
            tmp_path, script=Script.login_only(), hooks=[answer_as_recorded("QueuePause")]
        ) as desk,
        desk.signed_in("alice") as alice,
    ):
        assert desk.peer is not None
        response = await alice.post(
            "/api/presence",
            json={"state": "paused", "reason": "lunch"},
            headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert response.status_code == 403
        assert desk.peer.sent("QueuePause") == []


@pytest.mark.parametrize(
    ("username", "lang", "heading", "pause"),
    [
        ("alice", "fr", "Poste agent — Guichet", "Pause : repas"),
        ("bob", "nl", "Agentenpost — Guichet", "Pauze: lunch"),
        ("sophie", "en", "Agent desk — Guichet", "Break: lunch"),
    ],
)
async def test_the_page_speaks_the_users_language(
    tmp_path: Path, username: str, lang: str, heading: str, pause: str
) -> None:
    async with agent_desk(tmp_path) as desk, desk.signed_in(username) as client:
        page = await client.get("/agent")
    assert page.status_code == 200
    html = page.text
    assert f'<html lang="{lang}">' in html
    assert f"<title>{heading}</title>" in html
    assert f'<option value="paused:lunch">{pause}</option>' in html
    assert "https://" not in html.replace(desk.base_url, "")  # no CDN: our own files only
    assert '<script src="/static/console.js" defer>' in html
    assert '<script src="/static/agent.js" defer>' in html
    texts_start = html.index('id="agent-texts">') + len('id="agent-texts">')
    texts = json.loads(html[texts_start : html.index("</script>", texts_start)])
    assert texts["pause_reason.lunch"] == pause
    # sophie, a supervisor, has no phone: told so, and the controls say it too
    assert ('id="no-phone"' in html) is (username == "sophie")


async def test_the_static_files_are_served_without_a_cdn(tmp_path: Path) -> None:
    async with agent_desk(tmp_path) as desk, desk.client() as client:
        script = await client.get("/static/agent.js")
        style = await client.get("/static/agent.css")
    assert script.status_code == style.status_code == 200
    assert "http" not in script.text.replace("http-equiv", "")
    assert "innerHTML" not in script.text  # server data is inserted as text only


# --- the case screen --------------------------------------------------------------------------


async def test_the_case_screen_reads_edits_notes_and_wraps_up(tmp_path: Path) -> None:
    async with agent_desk(tmp_path) as desk:
        reference = await desk.open_case("call-1")
        await desk.knowledge.upsert(
            "population-move",
            "population",
            titles={"fr": "Déménagement", "nl": "Verhuizen"},
            bodies={"fr": "Déclarez votre déménagement…", "nl": "Geef uw verhuis aan…"},
        )
        await desk.knowledge.upsert(
            "population-eid",
            "population",
            titles={"fr": "Carte d'identité"},
            bodies={"fr": "Prenez rendez-vous…"},
        )
        async with desk.signed_in("alice") as alice:
            found = (await alice.get(f"/api/cases/{reference.lower()}")).json()
            assert found["case"]["reference"] == reference  # typed in lower case: found
            assert found["case"]["status"] == "new"
            assert found["notes"] == []
            # Reply templates in the case's language (nl), falling back to French.
            assert [(t["slug"], t["lang"]) for t in found["reply_templates"]] == [
                ("population-eid", "fr"),
                ("population-move", "nl"),
            ]

            taken = await alice.patch(
                f"/api/cases/{reference}",
                json={"status": "in_progress", "category": "identity_card"},
            )
            assert taken.status_code == 200, taken.text
            assert taken.json()["status"] == "in_progress"
            assert taken.json()["category"] == "identity_card"
            assert taken.json()["assigned_agent_id"] == desk.people["alice"].id

            refused = await alice.patch(f"/api/cases/{reference}", json={"status": "new"})
            assert refused.status_code == 409
            assert detail(refused)["code"] == "invalid_transition"
            bad = await alice.patch(f"/api/cases/{reference}", json={"category": "a b"})
            assert bad.status_code == 422

            note = await alice.post(
                f"/api/cases/{reference}/notes", json={"text": "Rappel demandé pour mardi."}
            )
            assert note.status_code == 201
            assert note.json()["author"] == "Alice Dupont"
            empty = await alice.post(f"/api/cases/{reference}/notes", json={"text": ""})
            assert empty.status_code == 422

            history = (await alice.get(f"/api/cases/{reference}/history")).json()
            assert [(i["kind"], i["call_id"]) for i in history["interactions"]] == [
                ("call", "call-1")
            ]

            wrapped = await alice.post(
                f"/api/cases/{reference}/wrap-up",
                json={"disposition": "resolved", "close": True, "note": "Réglé."},
            )
            assert wrapped.status_code == 200, wrapped.text
            assert wrapped.json()["status"] == "closed"
            assert wrapped.json()["disposition"] == "resolved"
            unknown = await alice.post(
                f"/api/cases/{reference}/wrap-up", json={"disposition": "bored"}
            )
            assert unknown.status_code == 422

            again = (await alice.get(f"/api/cases/{reference}")).json()
            assert [n["text"] for n in again["notes"]] == ["Rappel demandé pour mardi.", "Réglé."]

            missing = await alice.get("/api/cases/C-2026-000000-ZZ")
            assert missing.status_code == 404
            assert detail(missing)["code"] == "case_not_found"


async def test_a_category_clash_names_the_citizens_other_open_case(tmp_path: Path) -> None:
    async with agent_desk(tmp_path) as desk:
        sofie = await desk.add_citizen(NN_SOFIE, "Sofie", "Peeters")
        first = await desk.open_case("call-1", citizen_id=sofie, request_type="population")
        second = await desk.open_case("call-2", citizen_id=sofie, request_type="taxes")
        async with desk.signed_in("bob") as bob:
            clash = await bob.patch(f"/api/cases/{second}", json={"category": "population"})
        assert clash.status_code == 409
        assert detail(clash)["code"] == "open_case_exists"
        assert detail(clash)["other_reference"] == first


# --- citizens: search, open (audited), link -------------------------------------------------


async def test_search_masks_national_numbers_and_opening_a_record_is_audited(
    tmp_path: Path,
) -> None:
    async with agent_desk(tmp_path) as desk:
        sofie = await desk.add_citizen(
            NN_SOFIE, "Sofie", "Peeters", phone="+32470123456", city="Leuven"
        )
        await desk.add_citizen(NN_JAN, "Jan", "Peeters-Van den Berg")
        reference = await desk.open_case("call-1")  # the IVR did not identify the caller
        async with desk.signed_in("alice") as alice:
            by_name = await alice.get("/api/citizens", params={"q": "peeters"})
            by_phone = await alice.get("/api/citizens", params={"q": "0470/12.34.56"})
            by_number = await alice.get("/api/citizens", params={"q": "85.07.30-033.28"})
            partial = await alice.get("/api/citizens", params={"q": "8507300"})
            for response in (by_name, by_phone, by_number):
                assert response.status_code == 200, response.text
                assert NN_SOFIE not in response.text and NN_JAN not in response.text
            assert [r["last_name"] for r in by_name.json()["results"]] == [
                "Peeters",
                "Peeters-Van den Berg",
            ]
            assert by_name.json()["results"][0]["national_number"] == "*********28"
            assert [(r["id"], r["matched_on"]) for r in by_phone.json()["results"]] == [
                (sofie, "phone")
            ]
            assert by_number.json()["query_kind"] == "national_number_or_phone"
            assert [(r["id"], r["matched_on"]) for r in by_number.json()["results"]] == [
                (sofie, "national_number")
            ]
            # 7 digits are read as part of a phone number: never a partial national number.
            assert partial.json() == {"query_kind": "phone", "results": [], "truncated": False}
            short = await alice.get("/api/citizens", params={"q": "1"})
            assert short.status_code == 422
            assert await desk.audit_rows() == []  # searching reads no record

            no_reason = await alice.get(f"/api/citizens/{sofie}")
            assert no_reason.status_code == 422
            bad_reason = await alice.get(
                f"/api/citizens/{sofie}", params={"case": "C-2026-000000-ZZ"}
            )
            assert bad_reason.status_code == 404
            assert detail(bad_reason)["code"] == "case_not_found"
            assert await desk.audit_rows() == []  # refused: nothing read, nothing to trace

            linked = await alice.post(f"/api/cases/{reference}/citizen", json={"citizen_id": sofie})
            assert linked.status_code == 200
            assert linked.json()["citizen_id"] == sofie
            nobody = await alice.post(f"/api/cases/{reference}/citizen", json={"citizen_id": 999})
            assert nobody.status_code == 404
            unlinked = await alice.post(
                f"/api/cases/{reference}/citizen", json={"citizen_id": None}
            )
            assert unlinked.json()["citizen_id"] is None
            relinked = await alice.post(
                f"/api/cases/{reference}/citizen", json={"citizen_id": sofie}
            )
            assert relinked.json()["citizen_id"] == sofie

            record = await alice.get(f"/api/citizens/{sofie}", params={"case": reference})
            assert record.status_code == 200, record.text
            body = record.json()
            assert body["national_number"] == "*********28"
            assert NN_SOFIE not in record.text
            assert body["address"] == "Leuven"
            assert body["opened_for"] == reference
            assert [c["reference"] for c in body["open_cases"]] == [reference]
            assert [i["call_id"] for i in body["last_interactions"]] == ["call-1"]

        rows = await desk.audit_rows()
        assert len(rows) == 1
        row = rows[0]
        assert (row.actor_id, row.actor, row.action) == (
            desk.people["alice"].id,
            "alice",
            CITIZEN_OPENED,
        )
        assert row.subject == Subject.citizen(sofie)
        assert row.reason == reference


# --- the CTI: presence, transfer, hold, hang-up, click-to-dial --------------------------------


async def test_presence_pauses_with_the_reason_and_unpauses(tmp_path: Path) -> None:
    async with agent_desk(
        tmp_path, script=Script.login_only(), hooks=[answer_as_recorded("QueuePause")]
    ) as desk:
        assert desk.peer is not None
        async with desk.signed_in("alice") as alice:
            lunch = await alice.post("/api/presence", json={"state": "paused", "reason": "lunch"})
            assert lunch.status_code == 200, lunch.text
            assert lunch.json() == {
                "state": "paused",
                "pause_reason": "lunch",
                "interfaces": ["Local/agent1@agents"],
            }
            wrap = await alice.post("/api/presence", json={"state": "wrap_up"})
            ready = await alice.post("/api/presence", json={"state": "ready"})
            assert wrap.status_code == ready.status_code == 200
            for refused in (
                {"state": "paused", "reason": "shopping"},
                {"state": "paused"},
                {"state": "ready", "reason": "lunch"},
            ):
                response = await alice.post("/api/presence", json=refused)
                assert response.status_code == 422, refused
        async with desk.signed_in("sophie") as sophie:  # no phone linked
            response = await sophie.post("/api/presence", json={"state": "ready"})
            assert response.status_code == 409
            assert detail(response)["code"] == "no_phone"
        sent = [
            (a.get("Interface"), a.get("Paused"), a.get("Reason"))
            for a in desk.peer.actions
            if a.name == "queuepause"
        ]
        assert sent == [
            ("Local/agent1@agents", "true", "lunch"),
            ("Local/agent1@agents", "true", "wrap-up"),
            ("Local/agent1@agents", "false", ""),
        ]


async def test_transfer_hold_and_hangup_act_only_on_the_agents_own_call(tmp_path: Path) -> None:
    async with agent_desk(
        tmp_path,
        script=blind_transfer_script(until=TALKING_AGAIN),
        hooks=[answer_as_recorded("Atxfer", "PJSIPNotify", "Hangup")],
    ) as desk:
        assert desk.peer is not None and desk.cti is not None
        answered = await desk.cti.next(CallAnswered, call_id=RECORDED_CALL)
        assert answered.agent_channel == RECORDED_AGENT_LEG
        path = f"/api/calls/{RECORDED_CALL}"

        async with desk.signed_in("bob") as bob:  # Agent Two: not his call
            assert (await bob.get("/api/calls/current")).json() == {"call": None}
            for action, body in [
                ("/transfer", {"kind": "blind", "target": "population-fr"}),
                ("/hold", {"held": True}),
                ("/hangup", None),
            ]:
                response = await bob.post(path + action, json=body)
                assert response.status_code == 403, action
                assert detail(response)["code"] == "not_your_call"
        assert desk.peer.sent("BlindTransfer") == desk.peer.sent("Hangup") == []

        async with desk.signed_in("sophie") as sophie:  # a supervisor may act on any call
            attended = await sophie.post(
                path + "/transfer", json={"kind": "attended", "target": "experts"}
            )
            assert attended.status_code == 200, attended.text
            assert attended.json()["target_type"] == "experts"
        (atxfer,) = desk.peer.sent("Atxfer")
        assert (atxfer.get("Channel"), atxfer.get("Exten"), atxfer.get("Context")) == (
            RECORDED_AGENT_LEG,
            "experts",
            "transfer-targets",
        )

        async with desk.signed_in("alice") as alice:
            current = (await alice.get("/api/calls/current")).json()["call"]
            assert current["call_id"] == RECORDED_CALL
            assert current["state"] == "connected"
            assert current["case_reference"] == "case-1001"  # GUICHET_CASE_ID of the call

            unknown = await alice.post("/api/calls/1795370095.99/hangup")
            assert unknown.status_code == 404

            held = await alice.post(path + "/hold", json={"held": True})
            resumed = await alice.post(path + "/hold", json={"held": False})
            assert held.status_code == resumed.status_code == 200
            assert [a.all("Variable") for a in desk.peer.sent("PJSIPNotify")] == [
                ["Event=hold"],
                ["Event=talk"],
            ]
            assert {a.get("Endpoint") for a in desk.peer.sent("PJSIPNotify")} == {"agent1"}

            self_transfer = await alice.post(
                path + "/transfer",
                json={"kind": "blind", "target": "alice", "target_type": "colleague"},
            )
            assert self_transfer.status_code == 422

            # Exactly the action of the recording, answered with Asterisk's own bytes.
            moved = await alice.post(
                path + "/transfer", json={"kind": "blind", "target": "population-fr"}
            )
            assert moved.status_code == 200, moved.text
            assert moved.json()["target_type"] == "queue"
            (blind,) = desk.peer.sent("BlindTransfer")
            assert (blind.get("Channel"), blind.get("Exten"), blind.get("Context")) == (
                RECORDED_AGENT_LEG,
                "population-fr",
                "transfer-targets",
            )
            transferred = await desk.cti.next(CallTransferred, call_id=RECORDED_CALL)
            assert transferred.kind == "blind" and transferred.success

            # The citizen rejoins population-fr and Agent One answers again, on a new leg.
            again = await desk.cti.next(CallAnswered, call_id=RECORDED_CALL, queue="population-fr")
            hung = await alice.post(path + "/hangup")
            assert hung.status_code == 200, hung.text
            (hangup,) = desk.peer.sent("Hangup")
            assert hangup.get("Channel") == again.agent_channel != RECORDED_AGENT_LEG


async def test_a_ringing_call_is_the_rung_agents_but_is_transferred_once_answered(
    tmp_path: Path,
) -> None:
    async with agent_desk(tmp_path, script=gated(blind_transfer_script(), RINGING)) as desk:
        assert desk.peer is not None and desk.cti is not None
        await desk.cti.next(AgentRinging, call_id=RECORDED_CALL)
        path = f"/api/calls/{RECORDED_CALL}"
        async with desk.signed_in("alice") as alice, desk.signed_in("bob") as bob:
            current = (await alice.get("/api/calls/current")).json()["call"]
            assert (current["call_id"], current["state"]) == (RECORDED_CALL, "ringing")
            assert (await alice.get("/api/presence")).json()["state"] == "ringing"
            early = await alice.post(path + "/transfer", json={"target": "population-fr"})
            assert early.status_code == 409
            assert detail(early)["code"] == "not_connected"
            assert (await bob.post(path + "/hangup")).status_code == 403
            assert desk.peer.sent("BlindTransfer") == desk.peer.sent("Hangup") == []

            await open_gate(desk)  # Agent One picks up
            await desk.cti.next(CallAnswered, call_id=RECORDED_CALL)
            current = (await alice.get("/api/calls/current")).json()["call"]
            assert (current["state"], current["agent_channel"]) == (
                "connected",
                RECORDED_AGENT_LEG,
            )
            moved = await alice.post(path + "/transfer", json={"target": "population-fr"})
            assert moved.status_code == 200, moved.text
        assert len(desk.peer.sent("BlindTransfer")) == 1


async def test_a_colleague_transfer_rings_their_phone(tmp_path: Path) -> None:
    async with agent_desk(
        tmp_path, script=blind_transfer_script(), hooks=[answer_as_recorded("Atxfer")]
    ) as desk:
        assert desk.peer is not None and desk.cti is not None
        await desk.cti.next(CallAnswered, call_id=RECORDED_CALL)
        async with desk.signed_in("alice") as alice:
            targets = (await alice.get("/api/calls/targets")).json()
            assert [c["username"] for c in targets["colleagues"]] == ["bob"]
            assert targets["experts"] is True
            response = await alice.post(
                f"/api/calls/{RECORDED_CALL}/transfer", json={"kind": "attended", "target": "bob"}
            )
            assert response.status_code == 200, response.text
            assert response.json()["target_type"] == "colleague"
        (atxfer,) = desk.peer.sent("Atxfer")
        assert (atxfer.get("Exten"), atxfer.get("Context")) == ("agent2", "agents")


async def test_click_to_dial_originates_from_the_agents_own_phone(tmp_path: Path) -> None:
    async with agent_desk(
        tmp_path, script=Script.login_only(), hooks=[answer_as_recorded("Originate")]
    ) as desk:
        assert desk.peer is not None
        reference = await desk.open_case("call-1")
        async with desk.signed_in("alice") as alice:
            dialled = await alice.post(
                "/api/calls/dial",
                json={"number": "0470 12 34 56", "case_reference": reference, "request_id": "r1"},
            )
            assert dialled.status_code == 200, dialled.text
            assert dialled.json()["answered"] is True
            assert dialled.json()["call_id"] == "c2d-r1"
            assert dialled.json()["uniqueid"] == "1795370253.0"  # as Asterisk answered
            twice = await alice.post(
                "/api/calls/dial", json={"number": "0470123456", "request_id": "r1"}
            )
            assert twice.status_code == 409  # a double click never dials twice
            assert detail(twice)["code"] == "duplicate"
            bad = await alice.post("/api/calls/dial", json={"number": "0470-ABC"})
            assert bad.status_code == 422
            assert detail(bad)["code"] == "bad_number"
        async with desk.signed_in("sophie") as sophie:
            response = await sophie.post("/api/calls/dial", json={"number": "0470123456"})
            assert response.status_code == 409
        (originate,) = desk.peer.sent("Originate")
        assert originate.get("Channel") == "PJSIP/agent1"
        assert (originate.get("Exten"), originate.get("Context")) == ("0470123456", "click-to-dial")
        assert originate.get("CallerID") == '"Guichet" <022791111>'
        assert sorted(originate.all("Variable")) == [
            "GUICHET_CALL_ID=c2d-r1",
            f"GUICHET_CASE_ID={reference}",
        ]
        assert originate.get("Async") == "true"


async def test_without_asterisk_call_controls_say_so(tmp_path: Path) -> None:
    async with agent_desk(tmp_path) as desk, desk.signed_in("alice") as alice:
        transfer = await alice.post(
            f"/api/calls/{RECORDED_CALL}/transfer", json={"kind": "blind", "target": "x"}
        )
        assert transfer.status_code == 503
        assert detail(transfer)["code"] in {"no_cti", "no_pbx"}
        presence = await alice.get("/api/presence")
        assert presence.json()["state"] == "unknown"
        assert (await alice.get("/api/calls/current")).json() == {"call": None}


# --- citizen search in SQL, on SQLite and PostgreSQL ----------------------------------------


async def _directory_with(
    engine: AsyncEngine, people: list[tuple[str, str, str, str | None]]
) -> CitizenDirectory:
    async with session_factory(engine)() as session:
        for number, first, last, phone in people:
            session.add(
                Citizen(national_number=number, first_name=first, last_name=last, phone=phone)
            )
        await session.commit()
    return CitizenDirectory(engine)


async def test_search_reads_names_numbers_and_phones_on_both_databases(
    crm_engine: AsyncEngine,
) -> None:
    directory = await _directory_with(
        crm_engine,
        [
            (NN_SOFIE, "Sofie", "Peeters", "+32470123456"),
            (NN_JAN, "Jan", "Van den Berg", "+3222791111"),
            (NN_ELISE, "Élise", "D'Hondt", None),
            (make_nn("800101", 1), "Anna", "100%_Sure", None),
        ],
    )

    async def names(query: str) -> list[str]:
        return [f"{m.first_name} {m.last_name}" for m in (await directory.search(query)).matches]

    assert await names("peeters") == ["Sofie Peeters"]
    assert await names("PEE sof") == ["Sofie Peeters"]  # every word starts a name part
    assert await names("berg") == ["Jan Van den Berg"]  # a part of a compound surname
    assert await names("hondt") == ["Élise D'Hondt"]
    assert await names("élise") == ["Élise D'Hondt"]  # accented, typed in lower case
    assert await names("eter") == []  # inside a word: not a match
    assert await names("100%_s") == ["Anna 100%_Sure"]
    assert await names("%ure") == []  # LIKE wildcards typed are literal characters

    by_number = await directory.search("85 07 30 033 28")
    assert [(m.first_name, m.national_number) for m in by_number.matches] == [
        ("Sofie", "*********28")
    ]
    assert [m.first_name for m in (await directory.search("02/279.11.11")).matches] == ["Jan"]
    assert [m.first_name for m in (await directory.search("+32 470 12 34 56")).matches] == ["Sofie"]
    assert [m.first_name for m in (await directory.search("3456")).matches] == ["Sofie"]
    assert (await directory.search(NN_SOFIE[:10])).matches == ()  # never a partial number
    for refused in ("x", "123", "12-ab" * 30):
        with pytest.raises(SearchError):
            await directory.search(refused)


async def test_a_broad_search_says_it_was_truncated(crm_engine: AsyncEngine) -> None:
    directory = await _directory_with(
        crm_engine,
        [(make_nn("700101", n), f"Person{n:02d}", "Janssens", None) for n in range(1, 26)],
    )
    result = await directory.search("janssens")
    assert len(result.matches) == 20
    assert result.truncated
    assert [m.first_name for m in result.matches][:2] == ["Person01", "Person02"]
