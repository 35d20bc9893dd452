"""A real console for the console tests: uvicorn on 127.0.0.1 (port 0) in the test's event
loop, a fresh SQLite file migrated to head, real users with (cheap) argon2 hashes.

Test modules use ``async with running_console(tmp_path) as console:`` or the ``console``
fixture (``from console_fixtures import *``), and talk to it with httpx and websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from fastapi import APIRouter, Depends
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from console.deps import ConsoleConfig, require_role
from console.factory import create_console_app
from console.push import PushHub
from crm_bridge.db import init_db, make_engine
from crm_bridge.users import UserService, UserView
from guichet.settings import Settings
from ivr.registry import FlowRegistry

__all__ = ["console"]

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # behaviour, not cost
SECRET = b"test-secret-" + b"k" * 40
PASSWORDS = {
    "alice": "alice-heeft-een-wachtwoord",
    "bob": "bob a un mot de passe",
    "sophie": "sophie-supervises-the-queue",
    "nora": "nora-beheert-alles-hier",
}


def supervisor_only_router() -> APIRouter:
    """A route only supervisors (and admins) may call, as a feature router would declare it."""
    router = APIRouter(prefix="/api/test")

    @router.get("/supervisor-only")
    async def supervisor_only(
        user: UserView = Depends(require_role("supervisor")),  # noqa: B008
    ) -> dict[str, str]:
        return {"hello": user.username}

    return router


@dataclass
class RunningConsole:
    base_url: str
    ws_url: str
    hub: PushHub
    users: UserService
    engine: AsyncEngine
    people: dict[str, UserView]
    app: Any = None

    @property
    def origin(self) -> str:
        return self.base_url

    @staticmethod
    def password(username: str) -> str:
        return PASSWORDS[username]

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, follow_redirects=False, trust_env=False, **kwargs
        )

    async def login(
        self, client: httpx.AsyncClient, username: str, password: str | None = None, **form: str
    ) -> httpx.Response:
        """Post the login form the way a browser does (same-origin ``Origin`` header)."""
        return await client.post(
            "/login",
            data={
                "username": username,
                "password": password or PASSWORDS[username.lower()],
                **form,
            },
            headers={"Origin": self.origin},
        )

    async def token(self, username: str, password: str | None = None) -> str:
        async with self.client() as client:
            response = await client.post(
                "/api/auth/token",
                json={"username": username, "password": password or PASSWORDS[username]},
            )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    def ws(
        self,
        token: str | None = None,
        *,
        cookie: str | None = None,
        origin: str | None = None,
        query_token: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """A websocket to /ws: bearer ``token``, or the session ``cookie`` (with ``origin``,
        our own unless given), or ``?token=``."""
        headers: dict[str, str] = {}
        url = self.ws_url
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            headers["Cookie"] = f"guichet_session={cookie}"
            headers["Origin"] = origin or self.origin
        elif origin is not None:
            headers["Origin"] = origin
        if query_token is not None:
            url += f"?token={query_token}"
        return connect(url, additional_headers=headers, proxy=None, **kwargs)


async def create_people(users: UserService) -> dict[str, UserView]:
    """Alice and Bob (agents on PJSIP/agent1 and agent2), Sophie (supervisor), Nora (admin)."""
    return {
        "alice": await users.create_user(
            "alice",
            PASSWORDS["alice"],
            role="agent",
            display_name="Alice Dupont",
            interface="PJSIP/agent1",
        ),
        "bob": await users.create_user(
            "bob",
            PASSWORDS["bob"],
            role="agent",
            display_name="Bob Janssens",
            interface="PJSIP/agent2",
            ui_language="nl",
        ),
        "sophie": await users.create_user(
            "sophie",
            PASSWORDS["sophie"],
            role="supervisor",
            display_name="Sophie Martin",
            ui_language="en",
        ),
        "nora": await users.create_user(
            "nora", PASSWORDS["nora"], role="admin", display_name="Nora Peeters", ui_language="nl"
        ),
    }


@contextlib.asynccontextmanager
async def running_console(
    tmp_path: Path,
    *,
    hub: PushHub | None = None,
    registry: FlowRegistry | None = None,
    extra_routers: Sequence[APIRouter] = (),
    config: ConsoleConfig | None = None,
) -> AsyncIterator[RunningConsole]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'console.db'}")
    await init_db(engine)
    users = UserService(engine, hasher=FAST_HASHER)
    people = await create_people(users)
    hub = hub or PushHub()
    app = create_console_app(
        engine=engine,
        users=users,
        hub=hub,
        registry=registry,
        extra_routers=[supervisor_only_router(), *extra_routers],
        config=config or ConsoleConfig(secret_key=SECRET, ws_revalidate_interval=3600),
    )
    try:
        async with serve_app(app) as base_url:
            yield RunningConsole(
                base_url=base_url,
                ws_url=base_url.replace("http://", "ws://") + "/ws",
                hub=hub,
                users=users,
                engine=engine,
                people=people,
                app=app,
            )
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, in this event loop."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", log_config=None
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # the server failed to start: raise why
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[RunningConsole]:
    async with running_console(tmp_path) as running:
        yield running


# --- websocket helpers --------------------------------------------------------------------


async def hello(ws: ClientConnection, last_seq: int | None = None, **fields: Any) -> None:
    await ws.send(json.dumps({"type": "hello", "last_seq": last_seq, **fields}))


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(await ws.recv())
    assert isinstance(message, dict)
    return message


async def until_ready(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every frame up to and including ``ready``."""
    frames = []
    while True:
        frame = await receive(ws)
        frames.append(frame)
        if frame["type"] == "ready":
            return frames


async def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes the socket; its close code."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.recv()
    await ws.wait_closed()
    return ws.close_code


def cookie_of(response: httpx.Response) -> str:
    cookie = response.cookies.get("guichet_session")
    assert cookie, response.headers
    return cookie


# --- a real browser -----------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, flat sessions)."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())
        self.session: str | None = None

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self._ws:
                message = json.loads(raw)
                future = self._pending.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(message)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        await self._ws.send(json.dumps(message))
        answer = await asyncio.wait_for(future, 60)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def open(self, url: str) -> None:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        self.session = attached["sessionId"]
        await self.send("Page.enable")
        await self.send("Page.navigate", {"url": url})

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, *, limit: float = 60.0) -> Any:
        """Poll ``expression`` in the page until it is truthy (pages may navigate meanwhile);
        ``limit`` only stops a broken test from hanging."""
        deadline = asyncio.get_running_loop().time() + limit
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError:
                value = None  # the page is between two documents
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never true in the page: {expression}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Browser]:
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = process.stderr
    try:
        while True:
            line = (await asyncio.wait_for(stderr.readline(), 60)).decode(errors="replace")
            if not line:
                raise RuntimeError("chromium exited before opening its DevTools port")
            if "DevTools listening on " in line:
                url = line.split("DevTools listening on ", 1)[1].strip()
                break
        drain = asyncio.create_task(stderr.read())  # keep Chromium's logging from blocking it
        async with connect(url, max_size=None, proxy=None) as ws:
            browser = Browser(ws)
            try:
                yield browser
            finally:
                await browser.close()
        drain.cancel()
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


@contextlib.asynccontextmanager
async def signed_in(base_url: str, username: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in through the login form: the session cookie, and the
    same-origin ``Origin`` header a browser sends with every POST."""
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Origin": base_url}, follow_redirects=False, trust_env=False
    ) as client:
        response = await client.post(
            "/login", data={"username": username, "password": PASSWORDS[username]}
        )
        assert response.status_code == 303, response.text
        yield client


def guichet_settings(tmp_path: Path, ami_port: int | None, **overrides: Any) -> Settings:
    """A whole Guichet's settings for a test: its own SQLite and case spool in ``tmp_path``,
    FastAGI on a free port, the AMI peer on ``ami_port`` (None: no Asterisk), no demo."""
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/g.db",
        "case_spool": tmp_path / "cases.spool",
        "agi_port": 0,
        "ami_host": "127.0.0.1" if ami_port is not None else None,
        "ami_port": ami_port or 5038,
        "ami_secret": "guichet-secret",
        "secret_key": "test-runtime-secret-key-0123456789abcdef",
        "reload_interval": 0,
        "demo": False,
        **overrides,
    }
    return Settings(**values)
