"""``/api/supervision/agents`` and ``/api/supervision/calls``: a supervisor steers the floor.

Pause / unpause / log out an agent with a reason, put them in or out of a queue and change
their skill penalty (AMI QueuePause, QueueAdd, QueueRemove, QueuePenalty), and reassign a
waiting call to a chosen agent (AMI Redirect of the citizen's channel to that agent's phone,
and the case assigned to them). Asterisk stays the truth: each answer only says Asterisk
accepted the action; the change itself comes back as CTI events and shows on the
wallboard (``wallboard.agent`` / ``wallboard.queue`` pushes).

Every action is an audit row (who, which agent or call, the reason).
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field

from console.deps import require_role
from console.routers.calls import (
    Config,
    PbxDep,
    StateDep,
    find_call,
    member_interfaces,
    pbx_error,
)
from console.routers.cases import Audit, Cases, Users, problem
from crm_bridge.audit import Subject
from crm_bridge.users import UserView
from cti.ami import AmiError
from cti.events import agent_id
from cti.state import CtiState

log = logging.getLogger("guichet.console.management")
router = APIRouter(prefix="/api/supervision", tags=["supervision"])
Supervisor = Annotated[UserView, Depends(require_role("supervisor"))]

AGENT_PAUSED, AGENT_UNPAUSED, AGENT_LOGGED_OUT = (
    "agent.paused",
    "agent.unpaused",
    "agent.logged_out",
)
QUEUE_MEMBER_CHANGED, CALL_REASSIGNED = "queue.member_changed", "call.reassigned"
_REASON = re.compile(r"^[\w .,'()/-]{1,64}$")  # what Asterisk's PausedReason and queue_log keep
_AGENT = r"^[A-Za-z0-9_.+-]{1,64}$"


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=64)


class PresenceChange(Reason):
    state: Literal["ready", "paused", "logged_out"]


class Membership(BaseModel):
    model_config = ConfigDict(extra="forbid")
    penalty: int = Field(default=0, ge=0, le=100)
    reason: str | None = Field(default=None, max_length=64)


class Reassign(Reason):
    agent: str = Field(pattern=_AGENT)


class Accepted(BaseModel):
    accepted: bool = True
    agent: str | None = None
    call_id: str | None = None
    interfaces: list[str] = []


def _clean_reason(text: str) -> str:
    text = " ".join(text.split())
    if not _REASON.match(text):
        raise problem(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            "bad_reason",
            "a reason is 1-64 letters, digits, spaces or . , ' ( ) / -",
        )
    return text


async def _agent_user(users: Users, agent: str) -> UserView:
    """The console user whose phone is agent ``agent`` (``agent1`` <- ``PJSIP/agent1``)."""
    for user in await users.list_users():
        if user.interface and user.active and agent_id(user.interface) == agent:
            return user
    raise problem(status.HTTP_404_NOT_FOUND, "agent_not_found", f"no agent {agent}")


def _member_interfaces(state: CtiState, user: UserView, config: Config) -> list[str]:
    return member_interfaces(state, user, config)


@router.post(
    "/agents/{agent}/presence",
    response_model=Accepted,
    summary="Pause, unpause or log out an agent (with a reason)",
)
async def change_presence(
    agent: str,
    body: PresenceChange,
    supervisor: Supervisor,
    users: Users,
    audit: Audit,
    pbx: PbxDep,
    state: StateDep,
    config: Config,
) -> Accepted:
    reason = _clean_reason(body.reason)
    user = await _agent_user(users, agent)
    interfaces = _member_interfaces(state, user, config)
    try:
        if body.state == "ready":
            for interface in interfaces:
                await pbx.unpause(interface)
            action = AGENT_UNPAUSED
        elif body.state == "paused":
            for interface in interfaces:
                await pbx.pause(interface, reason)
            action = AGENT_PAUSED
        else:
            for interface in interfaces:
                member = state.agents.get(interface)
                for queue in sorted(member.queues) if member else []:
                    await pbx.queue_remove(queue, interface)
            action = AGENT_LOGGED_OUT
    except AmiError as exc:
        pbx_error(exc)
    await audit.record(supervisor, action, Subject("agent", agent), reason)
    return Accepted(agent=agent, interfaces=interfaces)


@router.put(
    "/agents/{agent}/queues/{queue}",
    response_model=Accepted,
    summary="Put an agent in a queue, or change their skill penalty there",
)
async def set_membership(
    agent: str,
    queue: str,
    body: Membership,
    supervisor: Supervisor,
    users: Users,
    audit: Audit,
    pbx: PbxDep,
    state: StateDep,
    config: Config,
) -> Accepted:
    user = await _agent_user(users, agent)
    interfaces = _member_interfaces(state, user, config)
    try:
        for interface in interfaces:
            member = state.agents.get(interface)
            if member is not None and queue in member.queues:
                await pbx.queue_penalty(interface, body.penalty, queue=queue)
            else:
                await pbx.queue_add(
                    queue,
                    interface,
                    member_name=user.display_name,
                    state_interface=user.interface,
                    penalty=body.penalty,
                )
    except AmiError as exc:
        pbx_error(exc)
    note = f"{queue} penalty {body.penalty}" + (f": {body.reason}" if body.reason else "")
    await audit.record(supervisor, QUEUE_MEMBER_CHANGED, Subject("agent", agent), note[:255])
    return Accepted(agent=agent, interfaces=interfaces)


@router.delete(
    "/agents/{agent}/queues/{queue}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Take an agent out of a queue",
)
async def remove_membership(
    agent: str,
    queue: str,
    supervisor: Supervisor,
    users: Users,
    audit: Audit,
    pbx: PbxDep,
    state: StateDep,
    config: Config,
) -> Response:
    user = await _agent_user(users, agent)
    try:
        for interface in _member_interfaces(state, user, config):
            await pbx.queue_remove(queue, interface)
    except AmiError as exc:
        pbx_error(exc)
    await audit.record(
        supervisor, QUEUE_MEMBER_CHANGED, Subject("agent", agent), f"{queue} removed"
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/calls/{call_id}/reassign",
    response_model=Accepted,
    summary="Send a waiting call (and its case) to a chosen agent",
)
async def reassign(
    call_id: str,
    body: Reassign,
    supervisor: Supervisor,
    users: Users,
    cases: Cases,
    audit: Audit,
    pbx: PbxDep,
    state: StateDep,
    config: Config,
) -> Accepted:
    reason = _clean_reason(body.reason)
    call = state.call_by_id(call_id)
    view = find_call(state, call_id)
    if call is None or view is None:
        raise problem(status.HTTP_404_NOT_FOUND, "call_not_found", f"no call {call_id}")
    if not call.in_queue:
        raise problem(status.HTTP_409_CONFLICT, "not_waiting", "the call is no longer waiting")
    user = await _agent_user(users, body.agent)
    try:
        await pbx.redirect(call.channel, body.agent, config.colleague_context)
    except AmiError as exc:
        pbx_error(exc)
    if view.case_reference:
        try:
            await cases.assign(view.case_reference, user.id)
        except Exception as exc:  # not written yet: answering the call assigns it anyway
            log.warning("call %s: case not reassigned (%s)", call.call_id, type(exc).__name__)
    await audit.record(
        supervisor, CALL_REASSIGNED, Subject.call(call.call_id), f"to {body.agent}: {reason}"
    )
    return Accepted(agent=body.agent, call_id=call.call_id)
