"""Console sessions: signed tokens, revocation, the session cookie and the origin check.

Tokens are ``g1.<payload>.<signature>``: base64url JSON claims (user id, username, role,
session version, issued/expiry, a nonce) signed with HMAC-SHA256 under a key derived from
the server secret. They are stateless to verify, yet revocable: each one carries the user's
*session version*, and logout or a password change bumps it. The version is the id of the
user's latest ``session.revoked`` audit entry, so revocation is persistent, seen by every
process (``guichet users passwd`` runs apart from the server), and traced like any other
access to the console (GDPR), without a schema change.

CSRF: the session cookie is ``SameSite=Strict`` and every state-changing request must prove
it comes from the console's own origin (`OriginCheckMiddleware`). Same-site is not same-
origin: an administration's other applications on sibling sub-domains are "same site" and
would pass SameSite alone, and a double-submit cookie can be overwritten from a sibling
sub-domain (cookie tossing). The Origin / Sec-Fetch-Site check closes both, covers the
login form (login CSRF, before any session exists) and JSON calls alike, and keeps no
per-form state. Requests carrying an ``Authorization`` header are exempt: a browser never
adds one on its own, so they carry no ambient authority.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from crm_bridge.audit import AuditLog, Identified, Subject
from crm_bridge.case_models import AuditEntry
from crm_bridge.db import session_factory
from crm_bridge.users import UserService, UserView

log = logging.getLogger("guichet.console.security")

SESSION_COOKIE = "guichet_session"
SECRET_ENV = "GUICHET_SECRET_KEY"
MIN_SECRET_LENGTH = 32
DEFAULT_SESSION_TTL = 12 * 3600.0  # one long shift; then sign in again
TOKEN_VERSION = "g1"
MAX_TOKEN_LENGTH = 2048
CLOCK_SKEW = 60  # seconds a token's issue time may lie in the future (several servers)

SESSION_OPENED = "session.opened"
SESSION_REVOKED = "session.revoked"

_B64 = re.compile(r"^[A-Za-z0-9_-]+$")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# --- the secret ----------------------------------------------------------------------------


def load_secret(configured: str | None, path: Path) -> bytes:
    """The signing secret: ``configured`` (settings), else ``GUICHET_SECRET_KEY``, else the
    key file at ``path``, created on first use (mode 0600) so sessions survive restarts."""
    value = configured or os.environ.get(SECRET_ENV)
    if value:
        if len(value) < MIN_SECRET_LENGTH:
            raise ValueError(f"the secret key needs at least {MIN_SECRET_LENGTH} characters")
        return value.encode()
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile
        return _read_secret(path)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(secret + b"\n")
    log.info("created the console secret key %s", path)
    return secret


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by others: chmod 600 it", path)
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"{path}: the secret key needs at least {MIN_SECRET_LENGTH} characters")
    return secret


def derive_key(secret: bytes, purpose: str) -> bytes:
    """One key per purpose, so a signature made for one use never validates another."""
    return hmac.new(secret, f"guichet/{purpose}".encode(), hashlib.sha256).digest()


# --- tokens --------------------------------------------------------------------------------


class InvalidToken(Exception):
    """A token that is malformed, forged, expired or revoked; the message says which."""


@dataclass(frozen=True, slots=True)
class SessionClaims:
    user_id: int
    username: str
    role: str
    version: int  # the user's session version when the token was issued
    issued_at: int
    expires_at: int
    nonce: str


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _B64.match(text):
        raise InvalidToken("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None


class TokenSigner:
    """Issues and verifies session tokens (HMAC-SHA256, constant-time comparison)."""

    def __init__(
        self,
        secret: bytes,
        *,
        ttl: float = DEFAULT_SESSION_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the secret key needs at least {MIN_SECRET_LENGTH} bytes")
        self._key = derive_key(secret, "session-token")
        self.ttl = ttl
        self._clock = clock

    def _signature(self, payload: str) -> str:
        mac = hmac.new(self._key, f"{TOKEN_VERSION}.{payload}".encode("ascii"), hashlib.sha256)
        return _b64encode(mac.digest())

    def issue(self, user: UserView, version: int) -> tuple[str, SessionClaims]:
        now = int(self._clock())
        claims = SessionClaims(
            user_id=user.id,
            username=user.username,
            role=user.role,
            version=version,
            issued_at=now,
            expires_at=now + int(self.ttl),
            nonce=secrets.token_urlsafe(12),
        )
        body = {
            "uid": claims.user_id,
            "sub": claims.username,
            "role": claims.role,
            "sv": claims.version,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "n": claims.nonce,
        }
        payload = _b64encode(json.dumps(body, separators=(",", ":")).encode())
        return f"{TOKEN_VERSION}.{payload}.{self._signature(payload)}", claims

    def verify(self, token: str) -> SessionClaims:
        """The claims of a genuine, unexpired token; raises `InvalidToken` otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("malformed token")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_VERSION:
            raise InvalidToken("malformed token")
        _, payload, signature = parts
        _b64decode(signature)
        if not hmac.compare_digest(signature.encode(), self._signature(payload).encode()):
            raise InvalidToken("bad signature")
        try:
            body = json.loads(_b64decode(payload))
            claims = SessionClaims(
                user_id=_int(body["uid"]),
                username=_str(body["sub"]),
                role=_str(body["role"]),
                version=_int(body["sv"]),
                issued_at=_int(body["iat"]),
                expires_at=_int(body["exp"]),
                nonce=_str(body["n"]),
            )
        except (ValueError, KeyError, TypeError):
            raise InvalidToken("malformed token") from None
        now = self._clock()
        if claims.expires_at <= now:
            raise InvalidToken("session expired")
        if claims.issued_at > now + CLOCK_SKEW:
            raise InvalidToken("token issued in the future")
        return claims


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


# --- revocation ----------------------------------------------------------------------------


def user_subject(user_id: int) -> Subject:
    return Subject("user", str(user_id))


class SessionVersions:
    """Per-user session versions kept in the audit trail (see the module docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._audit = AuditLog(engine)
        self._sessions = session_factory(engine)

    async def current(self, user_id: int) -> int:
        subject = user_subject(user_id)
        query = (
            select(func.max(AuditEntry.id))
            .where(AuditEntry.subject_type == subject.type)
            .where(AuditEntry.subject_id == subject.id)
            .where(AuditEntry.action == SESSION_REVOKED)
        )
        async with self._sessions() as session:
            result = await session.exec(query)
            value = result.one()
        return int(value or 0)

    async def revoke(self, user_id: int, *, actor: Identified, reason: str) -> int:
        """End every session of the user; returns the new version."""
        record = await self._audit.record(actor, SESSION_REVOKED, user_subject(user_id), reason)
        return record.id

    async def opened(self, user: UserView, via: str) -> None:
        await self._audit.record(user, SESSION_OPENED, user_subject(user.id), via)


# --- sessions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    user: UserView
    claims: SessionClaims
    token: str


class SessionManager:
    """Login, token resolution and revocation over `UserService` and `SessionVersions`."""

    def __init__(self, users: UserService, versions: SessionVersions, signer: TokenSigner) -> None:
        self.users = users
        self.versions = versions
        self.signer = signer

    async def login(self, username: str, password: str, *, via: str = "form") -> Session | None:
        """A new session when the password matches an active account, else None."""
        user = await self.users.authenticate(username, password)
        if user is None:
            return None
        version = await self.versions.current(user.id)
        token, claims = self.signer.issue(user, version)
        await self.versions.opened(user, via)
        return Session(user, claims, token)

    async def resolve(self, token: str) -> Session:
        """The live session behind a token: genuine, unexpired, not revoked, and the account
        still active with the same role (a demoted user signs in again)."""
        claims = self.signer.verify(token)
        user = await self.users.get(claims.username)
        if user is None or user.id != claims.user_id or not user.active:
            raise InvalidToken("account unknown or disabled")
        if user.role != claims.role:
            raise InvalidToken("role changed")
        if await self.versions.current(user.id) != claims.version:
            raise InvalidToken("session revoked")
        return Session(user, claims, token)

    async def revoke(self, user: UserView, *, reason: str, actor: Identified | None = None) -> int:
        return await self.versions.revoke(user.id, actor=actor or user, reason=reason)


# --- cookie --------------------------------------------------------------------------------


def set_session_cookie(response: Response, session: Session, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        max_age=max(0, session.claims.expires_at - int(time.time())),
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="strict"
    )


# --- origin check --------------------------------------------------------------------------


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def own_origin(scope: Scope) -> str:
    """``scheme://host`` as the browser sees us (``ws``/``wss`` count as ``http``/``https``)."""
    scheme = {"ws": "http", "wss": "https"}.get(scope["scheme"], scope["scheme"])
    host = Headers(scope=scope).get("host")
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    return f"{scheme}://{host}".lower()


def same_origin(scope: Scope, trusted_origins: Iterable[str] = ()) -> bool | None:
    """Whether the browser says the request comes from our origin (or a trusted one).

    None when the request carries no evidence at all (no Origin, Referer or Sec-Fetch-Site):
    not a browser, or a very old one.
    """
    headers = Headers(scope=scope)
    trusted = {origin.rstrip("/").lower() for origin in trusted_origins}
    origin = headers.get("origin")
    if origin is not None and origin.lower() in trusted:
        return True
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    if origin is None:
        referer = headers.get("referer")
        if referer is None:
            return None
        origin = _origin_of(referer) or "null"
    origin = origin.lower()
    return origin != "null" and (origin == own_origin(scope) or origin in trusted)


def _has_session_cookie(headers: Headers) -> bool:
    return any(
        part.strip().startswith(f"{SESSION_COOKIE}=")
        for value in headers.getlist("cookie")
        for part in value.split(";")
    )


class OriginCheckMiddleware:
    """Refuse state-changing requests (403) that a browser sent from another origin.

    Exempt: safe methods, and requests with an ``Authorization`` header (API clients). A
    request without any origin evidence passes only if it carries no session cookie
    (a script calling ``/api/auth/token``, never a browser riding on a session).
    """

    def __init__(self, app: ASGIApp, *, trusted_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted_origins = tuple(trusted_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            headers = Headers(scope=scope)
            if "authorization" not in headers:
                verdict = same_origin(scope, self.trusted_origins)
                if verdict is False or (verdict is None and _has_session_cookie(headers)):
                    log.warning(
                        "refused a cross-origin %s %s (origin %r)",
                        scope["method"],
                        scope["path"],
                        headers.get("origin"),
                    )
                    response = JSONResponse({"detail": "cross-origin request refused"}, 403)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


# --- response headers ----------------------------------------------------------------------

# Scripts only from our own files (console.js reads its settings from data attributes);
# inline styles stay allowed for the status page's <style>.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'"
)


class SecurityHeadersMiddleware:
    """Headers every console response carries: no framing, no MIME sniffing, no referrer to
    other sites, a strict CSP on every page (the API docs included), and
    ``no-store`` on the API, whose answers hold personal data."""

    def __init__(self, app: ASGIApp, *, connect_src: Iterable[str] = ()) -> None:
        self.app = app
        # Extra origins the pages may connect to (the SIP WebSocket of the softphone).
        extra = " ".join(connect_src)
        self.policy = (
            CONTENT_SECURITY_POLICY.replace("connect-src 'self'", f"connect-src 'self' {extra}")
            if extra
            else CONTENT_SECURITY_POLICY
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}

                def add(name: bytes, value: str) -> None:
                    if name not in present:
                        headers.append((name, value.encode("latin-1")))

                add(b"x-content-type-options", "nosniff")
                add(b"x-frame-options", "DENY")
                add(b"referrer-policy", "same-origin")
                add(b"content-security-policy", self.policy)
                if path.startswith("/api/"):
                    add(b"cache-control", "no-store")
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
