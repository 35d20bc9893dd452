"""``/api/presence``: the agent's own availability, mirrored to Asterisk with QueuePause.

Asterisk is the truth about who gets rung, so presence is not stored here: ``POST`` sends
``QueuePause`` (with the reason, which Asterisk keeps as ``PausedReason`` and queue_log
records for the reports) or unpause to every queue of the user's member interface, and the
new state comes back live as an ``agent_state`` push once Asterisk confirms it
(QueueMemberPause → CTI → screen-pop). ``GET`` reads the CTI's current view, for a page that
(re)loads.

Reasons are a fixed list so reports can count them; ``wrap_up`` is a pause with reason
``wrap-up``: the agent takes more time after a call than the queue's automatic wrap-up.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, ConfigDict, model_validator

from console.routers.calls import (
    CallControlConfig,
    PbxDep,
    call_control,
    member_interfaces,
    pbx_error,
    require_phone,
)
from console.routers.cases import Agent, problem
from cti.ami import AmiError
from cti.state import CtiState

PauseReason = Literal["lunch", "training", "back-office", "meeting"]
PAUSE_REASONS: tuple[str, ...] = get_args(PauseReason)
WRAP_UP_REASON = "wrap-up"
PresenceChoice = Literal["ready", "paused", "wrap_up"]
PRESENCE_CHOICES: tuple[str, ...] = get_args(PresenceChoice)

router = APIRouter(prefix="/api/presence", tags=["presence"])
Config = Annotated[CallControlConfig, Depends(call_control)]


class PresenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: PresenceChoice
    reason: PauseReason | None = None  # required with "paused", refused otherwise

    @model_validator(mode="after")
    def _reason_goes_with_pause(self) -> PresenceIn:
        if self.state == "paused" and self.reason is None:
            raise ValueError("a pause needs a reason")
        if self.state != "paused" and self.reason is not None:
            raise ValueError("only a pause has a reason")
        return self


class PresenceOut(BaseModel):
    # ready, ringing, on_call, wrap_up, paused, unavailable, logged_out; unknown without CTI
    state: str
    pause_reason: str | None
    interfaces: list[str]  # the queue member interfaces this is about


@router.get("", response_model=PresenceOut, summary="My current state, as the CTI sees it")
async def get_presence(user: Agent, request: Request, config: Config) -> PresenceOut:
    state = getattr(request.app.state, "cti_state", None)
    cti = state if isinstance(state, CtiState) else None
    interfaces = member_interfaces(cti, user, config)
    members = [cti.agents[i] for i in interfaces if cti is not None and i in cti.agents]
    if cti is None or not members:
        return PresenceOut(state="unknown", pause_reason=None, interfaces=interfaces)
    shown, reason, _call = cti.agent_status(members[0], time.time())
    return PresenceOut(state=shown, pause_reason=reason, interfaces=interfaces)


@router.post("", response_model=PresenceOut, summary="Become ready, pause (with a reason)")
async def set_presence(
    body: PresenceIn, user: Agent, request: Request, pbx: PbxDep, config: Config
) -> PresenceOut:
    """Answers once Asterisk accepted the QueuePause; the ``agent_state`` push follows."""
    require_phone(user)
    state = getattr(request.app.state, "cti_state", None)
    interfaces = member_interfaces(state if isinstance(state, CtiState) else None, user, config)
    if not interfaces:
        raise problem(status.HTTP_409_CONFLICT, "no_phone", "no phone is linked to your account")
    reason = WRAP_UP_REASON if body.state == "wrap_up" else body.reason
    try:
        for interface in interfaces:
            if body.state == "ready":
                await pbx.unpause(interface)
            else:
                await pbx.pause(interface, reason)
    except AmiError as exc:
        pbx_error(exc)
    return PresenceOut(
        state="ready" if body.state == "ready" else "paused",
        pause_reason=reason,
        interfaces=interfaces,
    )
