"""Sign-in, sessions, roles and CSRF over HTTP against a real console (uvicorn + SQLite)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import httpx
import pytest
from console_fixtures import *  # noqa: F403  (the console fixture)
from console_fixtures import (
    PASSWORDS,
    SECRET,
    RunningConsole,
    cookie_of,
    running_console,
    serve_app,
)

from console.app import create_app
from console.login_throttle import LoginThrottle
from console.security import (
    SESSION_OPENED,
    SESSION_REVOKED,
    InvalidToken,
    TokenSigner,
    load_secret,
    user_subject,
)
from crm_bridge.audit import AuditLog
from ivr.registry import FlowRegistry

ROOT = Path(__file__).resolve().parent.parent


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def test_login_sets_a_strict_httponly_cookie_that_opens_api_me(
    console: RunningConsole,
) -> None:
    async with console.client() as client:
        response = await console.login(client, "Alice", next="/api/me")
        assert response.status_code == 303
        assert response.headers["location"] == "/api/me"
        set_cookie = response.headers["set-cookie"]
        assert set_cookie.startswith("guichet_session=")
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
            assert attribute.lower() in set_cookie.lower()
        assert "secure" not in set_cookie.lower()  # cookie_secure is off on plain http
        me = await client.get("/api/me")
    assert me.status_code == 200
    body = me.json()
    assert {
        k: body[k] for k in ("username", "display_name", "role", "interface", "ui_language")
    } == {
        "username": "alice",
        "display_name": "Alice Dupont",
        "role": "agent",
        "interface": "PJSIP/agent1",
        "ui_language": "fr",
    }
    assert body["push_epoch"] == console.hub.epoch and body["push_seq"] == 0
    assert me.headers["cache-control"] == "no-store"


async def test_a_wrong_password_gives_no_cookie(console: RunningConsole) -> None:
    async with console.client() as client:
        for username, password in (("alice", "not-her-password"), ("nobody", "whatever-it-is")):
            response = await console.login(client, username, password, lang="nl")
            assert response.status_code == 401
            assert "set-cookie" not in response.headers
            assert "Onjuiste gebruikersnaam of wachtwoord." in response.text
            assert not client.cookies
        assert (await client.get("/api/me")).status_code == 401


async def test_without_a_session_the_api_says_401_and_pages_go_to_login(
    console: RunningConsole,
) -> None:
    async with console.client() as client:
        api = await client.get("/api/me")
        assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer"
        page = await client.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2F"


async def test_roles_nest_agent_403_supervisor_and_admin_200(console: RunningConsole) -> None:
    route = "/api/test/supervisor-only"
    async with console.client() as client:
        await console.login(client, "alice")
        refused = await client.get(route)
        assert refused.status_code == 403
        assert refused.json() == {"detail": "supervisor role required"}
    for name in ("sophie", "nora"):
        token = await console.token(name)
        async with console.client(headers={"Authorization": f"Bearer {token}"}) as client:
            allowed = await client.get(route)
        assert (allowed.status_code, allowed.json()) == (200, {"hello": name})


async def test_an_api_token_works_as_bearer_and_a_bad_one_never_falls_back_to_the_cookie(
    console: RunningConsole,
) -> None:
    token = await console.token("bob")
    async with console.client(headers={"Authorization": f"Bearer {token}"}) as client:
        assert (await client.get("/api/me")).json()["username"] == "bob"
    async with console.client() as client:
        await console.login(client, "alice")
        response = await client.get("/api/me", headers={"Authorization": "Bearer nonsense"})
        assert response.status_code == 401
    async with console.client() as client:
        refused = await client.post(
            "/api/auth/token", json={"username": "bob", "password": "wrong password"}
        )
        assert refused.status_code == 401


async def test_a_tampered_token_is_rejected(console: RunningConsole) -> None:
    token = await console.token("alice")
    version, payload, signature = token.split(".")
    claims = _claims(token)
    promoted = _b64(json.dumps({**claims, "role": "admin"}, separators=(",", ":")).encode())
    other_user = _b64(
        json.dumps({**claims, "uid": console.people["nora"].id, "sub": "nora"}).encode()
    )
    foreign, _ = TokenSigner(b"another-secret-" + b"x" * 40).issue(console.people["alice"], 0)
    for forged in (
        f"{version}.{promoted}.{signature}",  # role changed, old signature
        f"{version}.{other_user}.{signature}",  # someone else, old signature
        f"{version}.{payload}.{signature[::-1]}",  # signature garbled
        foreign,  # signed with another server's secret
        f"{version}.{payload}",  # signature missing
        token + "x",
    ):
        async with console.client(headers={"Authorization": f"Bearer {forged}"}) as client:
            assert (await client.get("/api/me")).status_code == 401, forged
        async with console.client(cookies={"guichet_session": forged}) as client:
            assert (await client.get("/api/me")).status_code == 401, forged


def test_tokens_expire_and_signatures_are_checked_in_constant_time_code_paths() -> None:
    now = [1_800_000_000.0]
    signer = TokenSigner(SECRET, ttl=3600, clock=lambda: now[0])
    from crm_bridge.users import UserView

    user = UserView(7, "jan", "Jan", "agent", None, "nl", True)
    token, claims = signer.issue(user, 3)
    assert signer.verify(token) == claims
    assert (claims.user_id, claims.role, claims.version, claims.expires_at - claims.issued_at) == (
        7,
        "agent",
        3,
        3600,
    )
    now[0] += 3600
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify(token)


async def test_logout_revokes_every_session_of_the_user(console: RunningConsole) -> None:
    alice = console.people["alice"]
    api_token = await console.token("alice")  # a second session, elsewhere
    async with console.client() as client:
        cookie = cookie_of(await console.login(client, "alice"))
        response = await client.post("/logout", headers={"Origin": console.origin})
        assert response.status_code == 303
        assert response.headers["location"] == "/login?msg=logged_out&lang=fr"
        assert (
            'guichet_session=""' in response.headers["set-cookie"]
            or "Max-Age=0" in response.headers["set-cookie"]
        )
    for headers in (
        {"Cookie": f"guichet_session={cookie}"},
        {"Authorization": f"Bearer {api_token}"},
    ):
        async with console.client(headers=headers) as client:
            assert (await client.get("/api/me")).status_code == 401
    async with console.client() as client:  # signing in again works
        await console.login(client, "alice")
        assert (await client.get("/api/me")).status_code == 200
    trail = await AuditLog(console.engine).entries(subject=user_subject(alice.id))
    assert [e.action for e in trail] == [
        SESSION_OPENED,
        SESSION_REVOKED,
        SESSION_OPENED,
        SESSION_OPENED,
    ]
    assert trail[1].reason == "logout" and trail[1].actor == "alice"


async def test_the_api_logout_ends_a_bearer_session(console: RunningConsole) -> None:
    token = await console.token("bob")
    async with console.client(headers={"Authorization": f"Bearer {token}"}) as client:
        assert (await client.post("/api/auth/logout")).status_code == 204
        assert (await client.get("/api/me")).status_code == 401


async def test_a_changed_role_or_a_disabled_account_ends_the_session(
    console: RunningConsole,
) -> None:
    async with console.client() as client:
        await console.login(client, "sophie")
        assert (await client.get("/api/test/supervisor-only")).status_code == 200
        await console.users.update("sophie", role="agent")  # demoted: sign in again
        assert (await client.get("/api/test/supervisor-only")).status_code == 401
    async with console.client() as client:
        await console.login(client, "bob")
        await console.users.update("bob", active=False)
        assert (await client.get("/api/me")).status_code == 401


async def test_cross_origin_posts_are_refused(console: RunningConsole) -> None:
    async with console.client() as client:
        await console.login(client, "alice")
        for headers in (
            {"Origin": "https://evil.example"},
            {
                "Origin": "http://intranet.example.be",
                "Sec-Fetch-Site": "same-site",
            },  # a sibling sub-domain
            {"Referer": "https://evil.example/page"},
            {"Origin": "null"},
            {},  # a cookie and no evidence at all: not trusted either
        ):
            response = await client.post("/logout", headers=headers)
            assert response.status_code == 403, headers
        assert (await client.get("/api/me")).status_code == 200  # still signed in
        same = await client.post("/logout", headers={"Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 303
    async with console.client() as client:  # login CSRF: signing the victim into our account
        response = await client.post(
            "/login",
            data={"username": "alice", "password": "alice-heeft-een-wachtwoord"},
            headers={"Origin": "https://evil.example"},
        )
        assert response.status_code == 403 and "set-cookie" not in response.headers


async def test_a_trusted_origin_may_post(tmp_path: Path) -> None:
    from console.deps import ConsoleConfig

    config = ConsoleConfig(secret_key=SECRET, trusted_origins=("https://guichet.commune.example",))
    async with running_console(tmp_path, config=config) as console, console.client() as client:
        response = await client.post(
            "/login",
            data={"username": "alice", "password": "alice-heeft-een-wachtwoord"},
            headers={"Origin": "https://guichet.commune.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert response.status_code == 303


async def test_next_never_leads_to_another_site(console: RunningConsole) -> None:
    async with console.client() as client:
        for target in (
            "//evil.example/x",
            "https://evil.example",
            "/\\evil.example",
            "javascript:alert(1)",
        ):
            response = await console.login(client, "alice", next=target)
            assert response.headers["location"] == "/", target


@pytest.mark.parametrize(
    ("query", "accept", "expected_lang", "expected_text"),
    [
        ("", "", "fr", "Nom d'utilisateur"),
        ("?lang=nl", "fr-BE,fr", "nl", "Gebruikersnaam"),
        ("", "nl-BE,nl;q=0.9,fr;q=0.8", "nl", "Wachtwoord"),
        ("", "de-DE,en;q=0.5", "en", "Username"),
        ("?lang=xx", "", "fr", "Se connecter"),
    ],
)
async def test_the_login_page_speaks_the_visitors_language(
    console: RunningConsole, query: str, accept: str, expected_lang: str, expected_text: str
) -> None:
    async with console.client() as client:
        page = await client.get(
            f"/login{query}", headers={"Accept-Language": accept} if accept else {}
        )
    assert page.status_code == 200
    assert f'<html lang="{expected_lang}">' in page.text
    assert expected_text in page.text.replace("&#39;", "'")
    assert 'autocomplete="current-password"' in page.text and '<label for="password">' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, nothing external
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


async def test_a_signed_in_user_sees_pages_in_their_own_language(console: RunningConsole) -> None:
    async with console.client() as client:
        await console.login(client, "bob")  # ui_language nl
        home = await client.get("/")
    assert home.status_code == 200
    assert '<html lang="nl">' in home.text and "Goedendag Bob Janssens" in home.text
    assert 'data-ws-url="/ws"' in home.text and "/static/console.js" in home.text
    async with console.client() as client:
        script = await client.get("/static/console.js")
    assert script.status_code == 200 and "GuichetPush" in script.text


async def test_names_are_escaped_in_pages(console: RunningConsole) -> None:
    await console.users.create_user(
        "mallory", "a-long-enough-password", display_name="<img src=x onerror=alert(1)>"
    )
    async with console.client() as client:
        await console.login(client, "mallory", "a-long-enough-password")
        home = await client.get("/")
    assert "<img src=x" not in home.text and "&lt;img src=x onerror=alert(1)&gt;" in home.text


async def test_api_docs_need_a_session(console: RunningConsole) -> None:
    async with console.client() as client:
        assert (await client.get("/api/openapi.json")).status_code == 401
        await console.login(client, "alice")
        schema = (await client.get("/api/openapi.json")).json()
        assert "/api/me" in schema["paths"] and "/api/auth/token" in schema["paths"]
        assert (await client.get("/api/docs")).status_code == 200


async def test_the_status_page_and_flows_api_are_for_supervisors(tmp_path: Path) -> None:
    registry = FlowRegistry(ROOT / "flows", interval=0)
    await registry.start()
    try:
        async with running_console(tmp_path, registry=registry) as console:
            async with console.client() as client:
                health = await client.get("/healthz")
                assert health.status_code == 200 and "commune" in health.json()["flows"]
                assert (await client.get("/api/flows")).status_code == 401
                await console.login(client, "alice")
                assert (await client.get("/api/flows")).status_code == 403
                assert (await client.get("/status")).status_code == 403
            async with console.client() as client:
                await console.login(client, "nora")  # admin, Dutch
                flows = await client.get("/api/flows")
                assert [f["name"] for f in flows.json()["flows"]] == registry.names()
                page = await client.get("/status")
                assert page.status_code == 200 and "Actieve flows" in page.text
                assert "Flows in service" in (await client.get("/status?lang=en")).text
        async with (
            serve_app(create_app(registry)) as base_url,  # the former stand-alone app
            httpx.AsyncClient(base_url=base_url, trust_env=False) as client,
        ):
            assert (await client.get("/healthz")).status_code == 200
            assert "Actieve flows" in (await client.get("/?lang=nl")).text
    finally:
        await registry.stop()


def test_the_secret_is_created_once_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GUICHET_SECRET_KEY", raising=False)
    path = tmp_path / "var" / "secret.key"
    first = load_secret(None, path)
    assert len(first) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret(None, path) == first  # sessions survive a restart
    monkeypatch.setenv("GUICHET_SECRET_KEY", "e" * 40)
    assert load_secret(None, path) == b"e" * 40
    assert load_secret("c" * 40, path) == b"c" * 40  # the settings field wins
    with pytest.raises(ValueError, match="at least 32"):
        load_secret("short", path)


async def test_password_guessing_is_slowed_down_per_account_and_per_address(
    console: RunningConsole,
) -> None:
    """Five failures lock the account for the window (even the right password is refused,
    and the password is not even checked); other accounts are not affected until the address
    itself reaches its limit; after the window the account opens again."""
    now = [1000.0]
    console.app.state.console.throttle = LoginThrottle(
        account_limit=5, address_limit=8, window=60.0, clock=lambda: now[0]
    )
    async with httpx.AsyncClient(base_url=console.base_url) as http:

        async def token(username: str, password: str) -> httpx.Response:
            return await http.post(
                "/api/auth/token", json={"username": username, "password": password}
            )

        for _ in range(5):
            assert (await token("alice", "guess")).status_code == 401
        locked = await token("alice", PASSWORDS["alice"])
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) == 60
        form = await http.post(
            "/login",
            data={"username": "ALICE", "password": PASSWORDS["alice"]},
            headers={"Origin": console.base_url},
        )
        assert form.status_code == 429 and "Retry-After" in form.headers
        assert (await token("bob", PASSWORDS["bob"])).status_code == 200  # not Bob
        for _ in range(3):  # 5 + 3 failures from this address: the address limit
            assert (await token("bob", "guess")).status_code == 401
        assert (await token("sophie", PASSWORDS["sophie"])).status_code == 429
        now[0] += 61
        opened = await token("alice", PASSWORDS["alice"])
        assert opened.status_code == 200
