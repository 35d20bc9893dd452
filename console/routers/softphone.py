"""``GET /api/me/softphone``: what the agent's browser softphone (``static/softphone.js``,
JsSIP) needs to register as the agent's own PJSIP endpoint.

Nothing new is stored: the SIP password is derived from the console's secret key and the
agent id (`sip_password`), so ``guichet asterisk render`` writes the very same password into
Asterisk's ``pjsip.conf``. Changing the secret key changes every softphone password (render
and reload Asterisk then). Only the signed-in agent gets their own credentials, with
``Cache-Control: no-store``; a user without a softphone gets 404, one without a PJSIP phone
409.

The SIP WebSocket (``wss://pbx.example.be:8089/ws`` in production: Asterisk's http.conf) is
the setting ``GUICHET_SIP_WS_URL`` (``app.state.sip_ws_url``; the environment variable itself
for an app built without settings). The console's CSP lets pages connect to that origin
(``ConsoleConfig.connect_sources``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel

from console.deps import State
from console.routers.cases import Agent, problem
from crm_bridge.users import UserView

SIP_WS_URL_ENV = "GUICHET_SIP_WS_URL"
SIP_DOMAIN_ENV = "GUICHET_SIP_DOMAIN"  # the SIP URI's host; default: the WebSocket's host
PASSWORD_LENGTH = 32  # base32 characters: 160 bits of the HMAC

router = APIRouter(prefix="/api/me", tags=["me"])


def sip_password(secret_key: bytes, agent: str) -> str:
    """The agent's SIP password: HMAC-SHA256(secret, "sip:" + agent id), base32, lower case,
    truncated. Only letters and digits: safe in pjsip.conf and in a digest."""
    digest = hmac.new(secret_key, f"sip:{agent}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:PASSWORD_LENGTH]


def pjsip_endpoint(interface: str | None) -> str | None:
    """The PJSIP endpoint behind a phone interface (``PJSIP/agent1`` -> ``agent1``), else
    None: only a PJSIP endpoint can be a WebRTC softphone."""
    if not interface:
        return None
    tech, _, name = interface.partition("/")
    if tech.upper() != "PJSIP" or not name or "/" in name or "@" in name:
        return None
    return name


def sip_ws_url(app_state: Any) -> str | None:
    configured = getattr(app_state, "sip_ws_url", None)
    return str(configured) if configured else os.environ.get(SIP_WS_URL_ENV) or None


class SoftphoneOut(BaseModel):
    enabled: bool
    ws_url: str  # the SIP WebSocket JsSIP connects to
    uri: str  # sip:agent1@domain: the identity JsSIP registers
    authorization_user: str  # the PJSIP auth username (the endpoint name)
    password: str
    display_name: str


def _credentials(user: UserView, ws_url: str, secret_key: bytes) -> SoftphoneOut:
    if not user.softphone:
        raise problem(status.HTTP_404_NOT_FOUND, "no_softphone", "you answer on a desk phone")
    agent = pjsip_endpoint(user.interface)
    if agent is None:
        raise problem(
            status.HTTP_409_CONFLICT, "no_phone", "no PJSIP phone is linked to your account"
        )
    domain = os.environ.get(SIP_DOMAIN_ENV) or urlsplit(ws_url).hostname or "localhost"
    return SoftphoneOut(
        enabled=True,
        ws_url=ws_url,
        uri=f"sip:{agent}@{domain}",
        authorization_user=agent,
        password=sip_password(secret_key, agent),
        display_name=user.display_name,
    )


@router.get("/softphone", response_model=SoftphoneOut, summary="My browser softphone")
async def softphone(
    user: Agent, state: State, request: Request, response: Response
) -> SoftphoneOut:
    """The SIP credentials of the signed-in agent's own endpoint (never anyone else's)."""
    ws_url = sip_ws_url(request.app.state)
    if not ws_url:
        raise problem(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "no_sip_websocket",
            f"no SIP WebSocket is configured ({SIP_WS_URL_ENV})",
        )
    answer = _credentials(user, ws_url, state.config.secret_key)
    response.headers["Cache-Control"] = "no-store"
    return answer
