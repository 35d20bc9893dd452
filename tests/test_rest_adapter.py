"""The REST CRM adapter against a real HTTP server (uvicorn on a free port): the JSON its
templates render, the headers, the replies it understands and the errors it reports."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from test_cases_fixtures import T0, facts

from crm_bridge.adapters import CrmRejected, CrmTemplateError, CrmUnavailable, ExternalCrm
from crm_bridge.adapters.rest import RestCrmAdapter, RestCrmConfig, RestOperation
from crm_bridge.case_facts import InteractionFacts
from crm_bridge.outbox import CaseOutbox

NN = "85073003328"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeCrm:
    """A CRM with cases idempotent on the Idempotency-Key, and scripted failures."""

    seen: list[Seen] = field(default_factory=list)
    cases: dict[str, str] = field(default_factory=dict)  # idempotency key -> reference
    citizens: list[dict[str, Any]] = field(default_factory=list)
    fail_with: list[int] = field(default_factory=list)  # statuses for the next requests
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        async def record(request: Request) -> Seen:
            raw = await request.body()
            seen = Seen(
                request.method,
                request.url.path,
                dict(request.headers),
                json.loads(raw) if raw else None,
            )
            self.seen.append(seen)
            return seen

        @app.post("/cases")
        async def create_case(request: Request) -> Response:
            seen = await record(request)
            if self.fail_with:
                return Response(status_code=self.fail_with.pop(0))
            key = seen.headers["idempotency-key"]
            reference = self.cases.setdefault(key, f"EXT-{len(self.cases) + 1}")
            return JSONResponse({"data": {"case": reference}}, status_code=201)

        @app.post("/citizens/search")
        async def search(request: Request) -> Response:
            body = (await record(request)).body
            found = [
                c
                for c in self.citizens
                if body.get("national_number") in (c["nn"], None)
                and body.get("phone") in (c["tel"], None)
            ]
            return JSONResponse({"results": found})

        @app.post("/cases/{reference:path}/interactions")
        async def interaction(request: Request, reference: str) -> Response:
            await record(request)
            return Response(status_code=204 if reference in self.cases.values() else 404)

        @app.post("/slow")
        async def slow(request: Request) -> Response:
            await record(request)
            await self.release.wait()
            return JSONResponse({})

        @app.post("/not-json")
        async def not_json(request: Request) -> Response:
            await record(request)
            return Response("<html>proxy says hi</html>", media_type="text/html")

        return app


@pytest.fixture
async def fake_crm() -> AsyncIterator[FakeCrm]:
    fake = FakeCrm()
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # surfaces why the server did not start
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.should_exit = True
        await task


def config(fake: FakeCrm, **overrides: Any) -> RestCrmConfig:
    values: dict[str, Any] = {
        "base_url": fake.url,
        "timeout": 2.0,
        "headers": {"Authorization": "Bearer s3cret"},
        "create_case": RestOperation(path="/cases", body="create_case.json.j2", result="data.case"),
        "find_by_national_number": RestOperation(
            path="/citizens/search", body="find_by_national_number.json.j2", result="results"
        ),
        "find_by_phone": RestOperation(
            path="/citizens/search", body="find_by_phone.json.j2", result="results"
        ),
        "citizen_fields": {
            "id": "crm_id",
            "first_name": "firstName",
            "last_name": "lastName",
            "preferred_language": "lang",
        },
        **overrides,
    }
    return RestCrmConfig.model_validate(values)


async def test_create_case_sends_the_rendered_json_with_its_headers(fake_crm: FakeCrm) -> None:
    async with RestCrmAdapter(config(fake_crm)) as crm:
        reference = await crm.create_case(
            facts(
                "1700000000.1",
                citizen_id=42,
                reference="C-2026-000001-AA",
                priority=2,
                caller='"Robert" <0470>',
            )
        )
    assert reference == "EXT-1"
    [seen] = fake_crm.seen
    assert (seen.method, seen.path) == ("POST", "/cases")
    assert seen.headers["idempotency-key"] == "1700000000.1"
    assert seen.headers["authorization"] == "Bearer s3cret"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == {
        "reference": "C-2026-000001-AA",
        "call_id": "1700000000.1",
        "channel": "phone",
        "direction": "inbound",
        "caller": '"Robert" <0470>',  # quoted and escaped by tojson, not pasted
        "language": "nl",
        "request_type": "identity_card",
        "citizen_id": 42,
        "queue": "identity_card-nl",
        "priority": 2,
        "flow_hash": "sha256:abc",
        "journey_call_id": "1700000000.1",
        "started_at": T0.isoformat(),
    }


async def test_citizens_are_found_by_national_number_in_the_body_never_the_url(
    fake_crm: FakeCrm,
) -> None:
    fake_crm.citizens = [
        {
            "crm_id": "17",
            "firstName": "Sofie",
            "lastName": "Peeters",
            "lang": "nl",
            "nn": NN,
            "tel": "+32470123456",
        }
    ]
    async with RestCrmAdapter(config(fake_crm)) as crm:
        found = await crm.find_citizen_by_national_number("85.07.30-033.28")
        assert await crm.find_citizen_by_national_number("12345") is None  # not even asked
    assert found is not None
    assert (found.id, found.first_name, found.last_name, found.preferred_language) == (
        17,
        "Sofie",
        "Peeters",
        "nl",
    )
    [seen] = fake_crm.seen
    assert seen.body == {"national_number": NN}
    assert NN not in seen.path


async def test_a_phone_shared_by_several_citizens_identifies_nobody(fake_crm: FakeCrm) -> None:
    family = {"firstName": "Peeters", "lastName": "X", "nn": None, "tel": "+32470123456"}
    fake_crm.citizens = [{**family, "crm_id": 1}, {**family, "crm_id": 2}]
    async with RestCrmAdapter(config(fake_crm)) as crm:
        assert await crm.find_citizen_by_phone("0470 12 34 56") is None
        fake_crm.citizens.pop()
        only = await crm.find_citizen_by_phone("0470 12 34 56")
        assert only is not None and only.id == 1
        assert await crm.find_citizen_by_phone("+32 2 555 00 00") is None
        assert await crm.find_citizen_by_phone("anonymous") is None
    assert [s.body for s in fake_crm.seen] == [{"phone": "+32470123456"}] * 2 + [
        {"phone": "+3225550000"}
    ]


async def test_append_interaction_renders_the_path_and_body(fake_crm: FakeCrm) -> None:
    async with RestCrmAdapter(config(fake_crm)) as crm:
        reference = await crm.create_case(facts("c1"))
        await crm.append_interaction(
            reference,
            InteractionFacts(call_id="c1-x", direction="outbound", started_at=T0, summary="Rappel"),
        )
        with pytest.raises(CrmRejected, match="HTTP 404"):
            await crm.append_interaction("NO/SUCH", InteractionFacts(started_at=T0))
    assert [s.path for s in fake_crm.seen[1:]] == [
        "/cases/EXT-1/interactions",
        "/cases/NO/SUCH/interactions",
    ]
    assert fake_crm.seen[1].headers["idempotency-key"] == "c1-x"
    assert fake_crm.seen[1].body == {
        "kind": "call",
        "call_id": "c1-x",
        "direction": "outbound",
        "contact": None,
        "queue": None,
        "started_at": T0.isoformat(),
        "ended_at": None,
        "journey_call_id": None,
        "summary": "Rappel",
    }


async def test_errors_say_whether_to_retry(fake_crm: FakeCrm) -> None:
    async with RestCrmAdapter(config(fake_crm, timeout=0.2)) as crm:
        fake_crm.fail_with = [503]
        with pytest.raises(CrmUnavailable, match="HTTP 503"):
            await crm.create_case(facts("c1"))
        fake_crm.fail_with = [429]
        with pytest.raises(CrmUnavailable, match="HTTP 429"):
            await crm.create_case(facts("c1"))
        fake_crm.fail_with = [422]
        with pytest.raises(CrmRejected, match="HTTP 422"):
            await crm.create_case(facts("c1"))
    slow = config(
        fake_crm, timeout=0.2, create_case=RestOperation(path="/slow", body="create_case.json.j2")
    )
    async with RestCrmAdapter(slow) as crm:
        with pytest.raises(CrmUnavailable, match="timed out"):
            await crm.create_case(facts("c1"))
    garbled = config(
        fake_crm,
        create_case=RestOperation(path="/not-json", body="create_case.json.j2", result="reference"),
    )
    async with RestCrmAdapter(garbled) as crm:
        with pytest.raises(CrmRejected, match="not JSON"):
            await crm.create_case(facts("c1"))


async def test_an_unreachable_crm_is_unavailable_and_says_no_national_number(
    fake_crm: FakeCrm,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    unreachable = config(fake_crm, base_url=f"http://127.0.0.1:{closed_port}")
    async with RestCrmAdapter(unreachable) as crm:
        with pytest.raises(CrmUnavailable, match="unreachable") as error:
            await crm.find_citizen_by_national_number(NN)
    assert NN not in str(error.value)


async def test_templates_from_a_directory_replace_the_defaults(
    fake_crm: FakeCrm, tmp_path: Path
) -> None:
    (tmp_path / "create_case.json.j2").write_text(
        '{"subject": {{ (facts.request_type ~ " / " ~ facts.lang) | tojson }},'
        ' "contact": {"phone": {{ facts.caller | tojson }}}, "sent": {{ now | tojson }}}'
    )
    async with RestCrmAdapter(config(fake_crm, templates_dir=tmp_path)) as crm:
        await crm.create_case(facts("c1"))
    body = fake_crm.seen[0].body
    assert body["subject"] == "identity_card / nl"
    assert body["contact"] == {"phone": "+32470123456"}
    assert body["sent"].endswith("+00:00")


async def test_broken_templates_fail_clearly_and_send_nothing(
    fake_crm: FakeCrm, tmp_path: Path
) -> None:
    (tmp_path / "create_case.json.j2").write_text('{"x": {{ facts.call_id | tojson }')
    with pytest.raises(CrmTemplateError, match="create_case"):
        RestCrmAdapter(config(fake_crm, templates_dir=tmp_path))  # at start, not on a call

    (tmp_path / "create_case.json.j2").write_text('{"x": {{ facts.no_such_field | tojson }}}')
    async with RestCrmAdapter(config(fake_crm, templates_dir=tmp_path)) as crm:
        with pytest.raises(CrmTemplateError, match="no_such_field"):
            await crm.create_case(facts("c1"))

    (tmp_path / "create_case.json.j2").write_text('{"x": {{ facts.call_id }}}')  # forgot tojson
    async with RestCrmAdapter(config(fake_crm, templates_dir=tmp_path)) as crm:
        with pytest.raises(CrmTemplateError, match="invalid JSON"):
            await crm.create_case(facts("c1"))

    (tmp_path / "create_case.json.j2").write_text("{{ ''.__class__.__mro__ }}")
    async with RestCrmAdapter(config(fake_crm, templates_dir=tmp_path)) as crm:
        with pytest.raises(CrmTemplateError):  # the sandbox refuses
            await crm.create_case(facts("c1"))
    assert fake_crm.seen == []


async def test_the_outbox_retries_an_overloaded_crm_and_creates_the_case_once(
    fake_crm: FakeCrm, tmp_path: Path
) -> None:
    fake_crm.fail_with = [503, 502]
    async with RestCrmAdapter(config(fake_crm)) as crm:
        adapter: ExternalCrm = crm
        outbox = CaseOutbox(
            adapter.create_case, tmp_path / "spool.jsonl", retry_initial=0.01, retry_max=0.05
        )
        await outbox.start()
        try:
            await outbox.submit(facts("c1"))
            await asyncio.wait_for(outbox.flush(), 30)
        finally:
            await outbox.stop()
    assert outbox.rejected == []
    assert [s.headers["idempotency-key"] for s in fake_crm.seen] == ["c1"] * 3
    assert fake_crm.cases == {"c1": "EXT-1"}
