"""What routers depend on: the console's state, the signed-in user, and role checks.

``Depends(require_role("supervisor"))`` answers 401 when there is no valid session (none,
forged, expired, revoked) and 403 when the user's role is too low; roles nest (an admin
may do what a supervisor may). A session comes from ``Authorization: Bearer <token>`` if
that header is present (then only from it: a bad bearer token never falls back to the
cookie), else from the ``guichet_session`` cookie.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.templating import Jinja2Templates
from starlette.requests import HTTPConnection

from console.i18n import Translator
from console.login_throttle import LoginThrottle
from console.push import PushHub
from console.security import (
    DEFAULT_SESSION_TTL,
    SESSION_COOKIE,
    InvalidToken,
    Session,
    SessionManager,
    load_secret,
)
from crm_bridge.case_models import ROLES
from crm_bridge.users import UserService, UserView

DEFAULT_SECRET_FILE = Path(__file__).resolve().parent.parent / "var" / "secret.key"

Via = Literal["bearer", "cookie", "query"]


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The console's knobs. `from_settings` reads them from the server settings (fields
    that settings do not have yet fall back to ``GUICHET_*`` variables, then defaults)."""

    secret_key: bytes
    session_ttl: float = DEFAULT_SESSION_TTL
    cookie_secure: bool = False  # True behind HTTPS (production); False for http://127.0.0.1
    trusted_origins: tuple[str, ...] = ()  # extra origins allowed to POST (a reverse proxy's)
    connect_sources: tuple[str, ...] = ()  # extra origins pages may connect to (SIP WebSocket)
    ws_hello_timeout: float = 10.0
    ws_revalidate_interval: float = 60.0  # re-check an open websocket's session this often

    @classmethod
    def from_settings(
        cls, settings: object | None = None, *, secret_file: Path = DEFAULT_SECRET_FILE
    ) -> ConsoleConfig:
        def knob(name: str, default: Any) -> Any:
            value = getattr(settings, name, None)
            if value is None:
                value = os.environ.get(f"GUICHET_{name.upper()}")
            return default if value is None else value

        secret = knob("secret_key", None)
        if secret is not None and hasattr(secret, "get_secret_value"):
            secret = secret.get_secret_value()
        origins = knob("trusted_origins", ())
        if isinstance(origins, str):
            origins = [origin.strip() for origin in origins.split(",") if origin.strip()]
        return cls(
            secret_key=load_secret(secret, secret_file),
            session_ttl=float(knob("session_ttl", DEFAULT_SESSION_TTL)),
            cookie_secure=str(knob("cookie_secure", False)).lower() in {"1", "true", "yes"},
            trusted_origins=tuple(origins),
            connect_sources=websocket_origins(knob("sip_ws_url", None)),
        )


def websocket_origins(url: str | None) -> tuple[str, ...]:
    """``wss://pbx.example:8089/ws`` -> (``wss://pbx.example:8089``,): the CSP source a page
    needs to open that WebSocket; nothing for an unset or non-WebSocket URL."""
    parts = urlsplit(url or "")
    return (f"{parts.scheme}://{parts.netloc}",) if parts.scheme in ("ws", "wss") else ()


@dataclass(slots=True)
class ConsoleState:
    """Everything the routers share, kept on ``app.state.console``."""

    config: ConsoleConfig
    users: UserService
    sessions: SessionManager
    hub: PushHub
    translator: Translator
    templates: Jinja2Templates
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


def console_state(conn: HTTPConnection) -> ConsoleState:
    state: ConsoleState = conn.app.state.console
    return state


State = Annotated[ConsoleState, Depends(console_state)]


def credentials(conn: HTTPConnection, *, allow_query: bool = False) -> tuple[str, Via] | None:
    """The token a request presents and where it came from, or None.

    ``?token=`` is accepted only where ``allow_query`` (the websocket, for clients that can
    neither set headers nor keep cookies); query strings end up in logs.
    """
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return (value.strip() if scheme.lower() == "bearer" else ""), "bearer"
    cookie = conn.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, "cookie"
    if allow_query:
        token = conn.query_params.get("token")
        if token:
            return token, "query"
    return None


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user of a request and how they proved it."""

    session: Session
    via: Via

    @property
    def user(self) -> UserView:
        return self.session.user


def _unauthenticated(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def authenticate(conn: HTTPConnection, *, allow_query: bool = False) -> Principal:
    """Resolve the request's session; raises `InvalidToken` with the reason."""
    found = credentials(conn, allow_query=allow_query)
    if found is None:
        raise InvalidToken("not authenticated")
    token, via = found
    if not token:
        raise InvalidToken("malformed token")
    session = await console_state(conn).sessions.resolve(token)
    return Principal(session, via)


async def current_principal(request: Request) -> Principal:
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    try:
        principal = await authenticate(request)
    except InvalidToken as exc:
        raise _unauthenticated(str(exc)) from None
    request.state.principal = principal
    return principal


async def current_user(principal: Annotated[Principal, Depends(current_principal)]) -> UserView:
    return principal.user


CurrentUser = Annotated[UserView, Depends(current_user)]


def require_role(role: str) -> Callable[..., Awaitable[UserView]]:
    """A dependency giving the signed-in user, 403 unless their role reaches ``role``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")

    async def dependency(user: CurrentUser) -> UserView:
        if not user.can(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"{role} role required")
        return user

    dependency.__name__ = f"require_{role}"
    return dependency
