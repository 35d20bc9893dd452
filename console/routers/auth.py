"""Sign in and out: the login page (FR/NL/EN), the session cookie, API tokens.

Browsers post the login form and get the ``guichet_session`` cookie; scripts and other
non-browser clients post JSON to ``/api/auth/token`` and send the token back as
``Authorization: Bearer``. Signing out ends every session of the user (all tabs and
devices: the session version moves on) and closes their websockets with 4401.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from console.deps import Principal, State, current_principal
from console.i18n import negotiate
from console.push import CLOSE_UNAUTHENTICATED
from console.security import clear_session_cookie, set_session_cookie

log = logging.getLogger("guichet.console.auth")

router = APIRouter(tags=["auth"])

MAX_FORM_BYTES = 8192
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is an attack
LOGIN_MESSAGES = frozenset({"logged_out", "expired"})


def safe_next(value: str | None) -> str:
    """A local path to go to after login; anything else (another site) becomes ``/``."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(char) < 0x20 for char in value)
    ):
        return "/"
    return value


async def _read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the login form has no file: no multipart parser needed)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "expected a form")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "malformed form") from None
    return {name: values[0] for name, values in fields.items()}


def _login_page(
    request: Request,
    state: State,
    *,
    lang: str,
    next_path: str,
    message: str | None = None,
    error: str | None = None,
    username: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    response = state.templates.TemplateResponse(
        request,
        "login.html",
        {
            "lang": lang,
            "next": next_path,
            "message": message,
            "error": error,
            "username": username,
            "user": None,
        },
        status_code=status_code,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/login", response_class=HTMLResponse, summary="The login page")
async def login_page(
    request: Request,
    state: State,
    lang: str | None = None,
    next: str | None = None,
    msg: str | None = None,
) -> HTMLResponse:
    chosen = negotiate(lang, request.headers.get("accept-language"))
    return _login_page(
        request,
        state,
        lang=chosen,
        next_path=safe_next(next),
        message=msg if msg in LOGIN_MESSAGES else None,
    )


@router.post("/login", response_class=HTMLResponse, summary="Sign in with the login form")
async def login_submit(request: Request, state: State) -> Response:
    form = await _read_form(request)
    lang = negotiate(form.get("lang"), request.headers.get("accept-language"))
    next_path = safe_next(form.get("next"))
    username = form.get("username", "").strip()[:64]
    password = form.get("password", "")
    if not username or not password:
        return _login_page(
            request,
            state,
            lang=lang,
            next_path=next_path,
            error="login.missing",
            username=username,
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    address = request.client.host if request.client else None
    wait = state.throttle.retry_after(username, address)
    if wait > 0:
        log.warning("console login for %r refused: too many failures", username)
        page = _login_page(
            request,
            state,
            lang=lang,
            next_path=next_path,
            error="login.throttled",
            username=username,
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        )
        page.headers["Retry-After"] = str(math.ceil(wait))
        return page
    session = None
    if len(password) <= MAX_PASSWORD_LENGTH:
        session = await state.sessions.login(username, password, via="form")
    if session is None:
        log.info("failed console login for %r", username)
        state.throttle.failed(username, address)
        return _login_page(
            request,
            state,
            lang=lang,
            next_path=next_path,
            error="login.failed",
            username=username,
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    state.throttle.succeeded(username)
    response = RedirectResponse(next_path, status_code=status.HTTP_303_SEE_OTHER)
    set_session_cookie(response, session, secure=state.config.cookie_secure)
    return response


async def _sign_out(principal: Principal, state: State) -> None:
    user = principal.user
    await state.sessions.revoke(user, reason="logout")
    closed = state.hub.close_user(user.id, CLOSE_UNAUTHENTICATED, "signed out")
    log.info("%s signed out (%d websocket(s) closed)", user.username, closed)


@router.post("/logout", summary="Sign out (form); ends every session of the user")
async def logout_form(request: Request, state: State) -> RedirectResponse:
    lang = None
    try:
        principal = await current_principal(request)
    except HTTPException:
        principal = None  # already signed out: still clear the cookie
    if principal is not None:
        lang = principal.user.ui_language
        await _sign_out(principal, state)
    query = {"msg": "logged_out", **({"lang": lang} if lang else {})}
    response = RedirectResponse(f"/login?{urlencode(query)}", status.HTTP_303_SEE_OTHER)
    clear_session_cookie(response, secure=state.config.cookie_secure)
    return response


class TokenRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class TokenResponse(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_at: datetime


@router.post(
    "/api/auth/token",
    response_model=TokenResponse,
    summary="A bearer token for non-browser clients",
    responses={
        401: {"description": "Wrong username or password"},
        429: {"description": "Too many failed sign-ins for this account or address"},
    },
)
async def issue_token(body: TokenRequest, request: Request, state: State) -> TokenResponse:
    address = request.client.host if request.client else None
    wait = state.throttle.retry_after(body.username, address)
    if wait > 0:
        log.warning("API login for %r refused: too many failures", body.username)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed sign-ins: try again later",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    session = await state.sessions.login(body.username, body.password, via="token")
    if session is None:
        log.info("failed API login for %r", body.username)
        state.throttle.failed(body.username, address)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "wrong username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    state.throttle.succeeded(body.username)
    return TokenResponse(
        token=session.token,
        expires_at=datetime.fromtimestamp(session.claims.expires_at, UTC),
    )


@router.post(
    "/api/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Sign out; ends every session of the user",
)
async def logout_api(
    principal: Annotated[Principal, Depends(current_principal)], state: State
) -> Response:
    await _sign_out(principal, state)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if principal.via == "cookie":
        clear_session_cookie(response, secure=state.config.cookie_secure)
    return response
