"""The /ws protocol over real sockets: uvicorn on 127.0.0.1, the websockets client, SQLite.

Auth close codes (4401, 4403, 4400), hello/last_seq resume, resync, several tabs, a slow
consumer cut without holding up anyone, logout and password change ending open sockets.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from console_fixtures import *  # noqa: F403  (the console fixture)
from console_fixtures import (
    CHROMIUM,
    RunningConsole,
    chromium,
    close_code,
    cookie_of,
    hello,
    receive,
    running_console,
    until_ready,
)
from websockets.exceptions import ConnectionClosed

from console.deps import ConsoleConfig
from console.push import PushHub
from console.security import SessionVersions
from crm_bridge.audit import Actor


async def test_a_socket_without_a_session_is_closed_4401(console: RunningConsole) -> None:
    for kwargs in ({}, {"query_token": "g1.bm9wZQ.bm9wZQ"}, {"token": "not-a-token"}):
        async with console.ws(**kwargs) as ws:
            assert await close_code(ws) == 4401, kwargs


async def test_a_forged_token_is_closed_4401(console: RunningConsole) -> None:
    token = await console.token("alice")
    version, payload, signature = token.split(".")
    forged = f"{version}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    async with console.ws(forged) as ws:
        assert await close_code(ws) == 4401


async def test_bearer_cookie_and_query_token_all_authenticate(console: RunningConsole) -> None:
    token = await console.token("alice")
    async with console.client() as client:
        cookie = cookie_of(await console.login(client, "alice"))
    for kwargs in ({"token": token}, {"cookie": cookie}, {"query_token": token}):
        async with console.ws(**kwargs) as ws:
            await hello(ws)
            frames = await until_ready(ws)
            assert [f["type"] for f in frames] == ["resync", "ready"], kwargs
            assert frames[0]["data"]["reason"] == "fresh"


async def test_the_cookie_from_another_origin_is_refused_4403(console: RunningConsole) -> None:
    async with console.client() as client:
        cookie = cookie_of(await console.login(client, "alice"))
    # A page on a sibling sub-domain is "same site": the browser would send the cookie.
    async with console.ws(cookie=cookie, origin="http://intranet.example.be") as ws:
        assert await close_code(ws) == 4403


async def test_a_topic_above_the_users_role_is_refused_4403(console: RunningConsole) -> None:
    async with console.ws(await console.token("alice")) as ws:
        await hello(ws, topics={"role:supervisor": None})
        assert await close_code(ws) == 4403


async def test_a_missing_or_malformed_hello_is_closed_4400(console: RunningConsole) -> None:
    token = await console.token("alice")
    for first in (
        "not json",
        json.dumps({"type": "ping"}),
        json.dumps({"type": "hello", "last_seq": -3}),
    ):
        async with console.ws(token) as ws:
            await ws.send(first)
            assert await close_code(ws) == 4400, first


async def test_every_tab_of_an_agent_receives_and_other_agents_do_not(
    console: RunningConsole,
) -> None:
    alice, bob = console.people["alice"], console.people["bob"]
    async with console.client() as client:
        cookie = cookie_of(await console.login(client, "alice"))
    token = await console.token("alice")
    async with (
        console.ws(cookie=cookie) as tab1,
        console.ws(token) as tab2,
        console.ws(await console.token("bob")) as other,
    ):
        for ws in (tab1, tab2, other):
            await hello(ws)
            await until_ready(ws)
        console.hub.publish(
            alice.id, "call.offered", {"caller": "+32470123456", "queue": "population-fr"}
        )
        for tab in (tab1, tab2):
            frame = await receive(tab)
            assert (frame["type"], frame["stream"], frame["seq"]) == ("call.offered", "user", 1)
            assert frame["data"] == {"caller": "+32470123456", "queue": "population-fr"}
        console.hub.publish(bob.id, "queue.changed", {"waiting": 2})
        frame = await receive(other)  # bob's first message is his own: alice's never came
        assert (frame["type"], frame["seq"]) == ("queue.changed", 1)


async def test_a_console_that_reconnects_gets_exactly_what_it_missed(
    console: RunningConsole,
) -> None:
    alice = console.people["alice"]
    hub = console.hub
    token = await console.token("alice")
    async with console.ws(token) as ws:
        await hello(ws)
        ready = (await until_ready(ws))[-1]
        assert ready["data"]["epoch"] == hub.epoch
        hub.publish(alice.id, "call.offered", {"n": 1})
        hub.publish(alice.id, "call.answered", {"n": 2})
        assert [(await receive(ws))["seq"] for _ in range(2)] == [1, 2]
    for n in (3, 4, 5):  # published while the console is away
        hub.publish(alice.id, "queue.changed", {"n": n})
    async with console.ws(token) as ws:
        await hello(ws, last_seq=2, epoch=hub.epoch)
        frames = await until_ready(ws)
        assert [(f["type"], f.get("seq"), (f.get("data") or {}).get("n")) for f in frames[:-1]] == [
            ("queue.changed", 3, 3),
            ("queue.changed", 4, 4),
            ("queue.changed", 5, 5),
        ]
        assert frames[-1]["data"] == {"epoch": hub.epoch, "streams": {"user": 5}, "replayed": 3}
        hub.publish(alice.id, "call.offered", {"n": 6})
        assert (await receive(ws))["seq"] == 6


async def test_resync_when_the_gap_is_older_than_the_buffer(tmp_path: Path) -> None:
    async with running_console(tmp_path, hub=PushHub(replay_size=2)) as console:
        alice = console.people["alice"]
        token = await console.token("alice")
        for n in range(5):
            console.hub.publish(alice.id, "queue.changed", {"n": n})
        async with console.ws(token) as ws:
            await hello(ws, last_seq=1, epoch=console.hub.epoch)
            frames = await until_ready(ws)
            assert [f["type"] for f in frames] == ["resync", "ready"]
            assert frames[0]["data"] == {"epoch": console.hub.epoch, "seq": 5, "reason": "gap"}
            console.hub.publish(alice.id, "queue.changed", {"n": 5})
            assert (await receive(ws))["seq"] == 6  # live messages follow the resync
        async with console.ws(token) as ws:  # sequence numbers from a previous server life
            await hello(ws, last_seq=6, epoch="an-older-epoch")
            assert (await receive(ws))["data"]["reason"] == "restart"


async def test_a_slow_consumer_is_cut_without_holding_up_the_others(tmp_path: Path) -> None:
    async with running_console(tmp_path, hub=PushHub(queue_size=8)) as console:
        alice = console.people["alice"]
        hub = console.hub
        token = await console.token("alice")
        # The slow tab stops reading after "ready": its client queue holds one frame, then
        # TCP fills up, then the server's queue for it overflows.
        async with console.ws(token, max_queue=1) as slow, console.ws(token) as fast:
            for ws in (slow, fast):
                await hello(ws)
                await until_ready(ws)
            blob = secrets.token_hex(32 * 1024)  # 64 KiB that deflate cannot shrink much
            published = 0
            while hub.connections(alice.id) == 2:
                message = hub.publish(alice.id, "bulk", {"n": published, "blob": blob})
                published += 1
                assert (await receive(fast))["seq"] == message.seq  # never held up
                assert published < 2000, "the slow socket was never cut"
            assert hub.slow_consumers_cut == 1
            hub.publish(alice.id, "after.cut")
            assert (await receive(fast))["type"] == "after.cut"

            seen: list[int] = []
            try:  # the slow tab reads again: what reached the wire, in order, then 4429
                while True:
                    seen.append(json.loads(await slow.recv())["seq"])
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4429
            assert seen == list(range(1, len(seen) + 1))

            async with console.ws(token) as again:  # it reconnects and resumes
                await hello(again, last_seq=seen[-1], epoch=hub.epoch)
                frames = await until_ready(again)
                assert [f["seq"] for f in frames[:-1]] == list(range(seen[-1] + 1, published + 2))


async def test_a_supervisor_follows_the_role_topic(console: RunningConsole) -> None:
    async with console.ws(await console.token("sophie")) as ws:
        await hello(ws, topics={"role:supervisor": None})
        frames = await until_ready(ws)
        assert [(f["type"], f.get("stream")) for f in frames] == [
            ("resync", "user"),
            ("resync", "role:supervisor"),
            ("ready", None),
        ]
        console.hub.publish_role("supervisor", "queue.stats", {"waiting": 3})
        frame = await receive(ws)
        assert (frame["type"], frame["stream"], frame["seq"]) == (
            "queue.stats",
            "role:supervisor",
            1,
        )


async def test_ping_is_answered_and_unknown_messages_get_an_error(console: RunningConsole) -> None:
    async with console.ws(await console.token("alice")) as ws:
        await hello(ws)
        await until_ready(ws)
        await ws.send(json.dumps({"type": "ping", "data": 42}))
        assert (await receive(ws))["type"] == "pong"
        await ws.send(json.dumps({"type": "subscribe"}))
        error = await receive(ws)
        assert error["type"] == "error" and "subscribe" in error["data"]["reason"]


async def test_signing_out_closes_the_agents_sockets_4401(console: RunningConsole) -> None:
    async with console.client() as client:
        cookie = cookie_of(await console.login(client, "alice"))
        async with console.ws(cookie=cookie) as tab1, console.ws(cookie=cookie) as tab2:
            for ws in (tab1, tab2):
                await hello(ws)
                await until_ready(ws)
            response = await client.post("/logout", headers={"Origin": console.origin})
            assert response.status_code == 303
            assert await close_code(tab1) == 4401
            assert await close_code(tab2) == 4401
    async with console.ws(cookie=cookie) as ws:  # the old cookie opens nothing any more
        assert await close_code(ws) == 4401


async def test_a_password_changed_elsewhere_ends_open_sockets(tmp_path: Path) -> None:
    config = ConsoleConfig(secret_key=b"s" * 40, ws_revalidate_interval=0.05)
    async with running_console(tmp_path, config=config) as console:
        alice = console.people["alice"]
        async with console.ws(await console.token("alice")) as ws:
            await hello(ws)
            await until_ready(ws)
            # What `guichet users passwd` does, from another process, on the same database.
            await console.users.set_password("alice", "a-brand-new-password")
            await SessionVersions(console.engine).revoke(
                alice.id, actor=Actor(None, "cli:root"), reason="password changed"
            )
            assert await close_code(ws) == 4401


# --- console.js in a real browser ---------------------------------------------------------


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
async def test_console_js_in_chromium_signs_in_follows_resumes_and_reloads(
    console: RunningConsole, tmp_path: Path
) -> None:
    alice = console.people["alice"]
    hub = console.hub
    hook = (
        "window.received = []; window.guichetPush.on('*', (data, m) => {"
        " if (m && m.seq) window.received.push([m.type, m.seq]); }); true"
    )
    async with chromium(tmp_path / "profile") as page:
        await page.open(f"{console.base_url}/login?lang=fr")
        await page.wait_for("document.querySelector('#username') !== null")
        await page.evaluate(
            "document.querySelector('#username').value = 'alice';"
            f"document.querySelector('#password').value = {json.dumps(console.password('alice'))};"
            "document.querySelector('form.login').submit(); true"
        )
        # The form post passed the origin check, the SameSite=Strict cookie came back, and
        # the browser's own websocket handshake (cookie + Origin) was accepted.
        await page.wait_for(
            "location.pathname === '/' && document.querySelector('#connection')"
            " && document.querySelector('#connection').dataset.state === 'online'"
        )
        assert "Bonjour Alice Dupont" in await page.evaluate("document.body.innerText")
        assert await page.evaluate("document.querySelector('#connection').textContent") == (
            "Connecté en temps réel"
        )
        await page.evaluate(hook)
        hub.publish(alice.id, "call.offered", {"n": 1})
        await page.wait_for("window.received.length === 1")

        # Cut the socket (as a slow consumer would be) and publish while it is away.
        hub.close_user(alice.id, 4429, "test cut")
        hub.publish(alice.id, "call.answered", {"n": 2})
        hub.publish(alice.id, "call.ended", {"n": 3})
        await page.wait_for("window.received.length === 3")
        assert await page.evaluate("window.received") == [
            ["call.offered", 1],
            ["call.answered", 2],
            ["call.ended", 3],
        ]
        stored = await page.evaluate(f"sessionStorage.getItem('guichet.push.{alice.id}')")
        assert json.loads(stored) == {"epoch": hub.epoch, "streams": {"user": 3}}

        # A reload resumes from sessionStorage: nothing replayed twice, the next one arrives.
        await page.send("Page.reload")
        await page.wait_for(
            "window.guichetPush && window.guichetPush.status === 'online'"
            " && window.received === undefined"
        )
        assert await page.evaluate("window.guichetPush.lastSeq()") == 3
        await page.evaluate(hook)
        hub.publish(alice.id, "queue.changed", {"n": 4})
        await page.wait_for("window.received.length === 1")
        assert await page.evaluate("window.received") == [["queue.changed", 4]]

        # A 4401 (session over) sends the agent to the login page, in their language.
        hub.close_user(alice.id, 4401, "test")
        await page.wait_for("location.pathname === '/login'")
        await page.wait_for("document.body.innerText.includes('Votre session a expiré')")
