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

import inspect
import logging
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field

from console.deps import require_role
from console.routers.calls import (
    CallControlConfig,
    Config,
    PbxDep,
    StateDep,
    find_call,
    member_interfaces,
    pbx_error,
)
from console.routers.cases import Audit, Cases, Users, problem
from crm_bridge.audit import AuditLog, Subject
from crm_bridge.users import UserService, UserView
from cti.ami import AmiError
from cti.events import agent_id
from cti.pbx import Pbx
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
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "bad_reason",
            "a reason is 1-64 letters, digits, spaces or . , ' ( ) / -",
        )
    return text


@dataclass(frozen=True)
class Floor:
    """What every management action needs: who acts, the users, the audit trail, Asterisk
    and the CTI's view of the queues."""

    supervisor: UserView
    users: UserService
    audit: AuditLog
    pbx: Pbx
    state: CtiState
    config: CallControlConfig

    async def agent(self, agent: str) -> tuple[UserView, list[str]]:
        """The console user whose phone is agent ``agent`` (``agent1`` <- ``PJSIP/agent1``)
        and their queue member interfaces; 404 for an unknown agent."""
        for user in await self.users.list_users():
            if user.interface and user.active and agent_id(user.interface) == agent:
                return user, member_interfaces(self.state, user, self.config)
        raise problem(status.HTTP_404_NOT_FOUND, "agent_not_found", f"no agent {agent}")

    def queues_of(self, interface: str) -> list[str]:
        member = self.state.agents.get(interface)
        return sorted(member.queues) if member else []

    async def send(self, *actions: Awaitable[None]) -> None:
        """Send the AMI actions in order; Asterisk's refusal or absence becomes 502/503."""
        try:
            for action in actions:
                await action
        except AmiError as exc:
            for pending in actions:  # never leave a coroutine un-awaited
                if inspect.iscoroutine(pending):
                    pending.close()
            pbx_error(exc)

    async def record(self, action: str, subject: Subject, reason: str) -> None:
        await self.audit.record(self.supervisor, action, subject, reason[:255])


def floor(
    supervisor: Supervisor,
    users: Users,
    audit: Audit,
    pbx: PbxDep,
    state: StateDep,
    config: Config,
) -> Floor:
    return Floor(supervisor, users, audit, pbx, state, config)


FloorDep = Annotated[Floor, Depends(floor)]


@router.post(
    "/agents/{agent}/presence",
    response_model=Accepted,
    summary="Pause, unpause or log out an agent (with a reason)",
)
async def change_presence(agent: str, body: PresenceChange, floor: FloorDep) -> Accepted:
    reason = _clean_reason(body.reason)
    _user, interfaces = await floor.agent(agent)
    pbx = floor.pbx
    if body.state == "ready":
        action = AGENT_UNPAUSED
        await floor.send(*(pbx.unpause(i) for i in interfaces))
    elif body.state == "paused":
        action = AGENT_PAUSED
        await floor.send(*(pbx.pause(i, reason) for i in interfaces))
    else:
        action = AGENT_LOGGED_OUT
        await floor.send(*(pbx.queue_remove(q, i) for i in interfaces for q in floor.queues_of(i)))
    await floor.record(action, Subject("agent", agent), reason)
    return Accepted(agent=agent, interfaces=interfaces)


@router.put(
    "/agents/{agent}/queues/{queue}",
    response_model=Accepted,
    summary="Put an agent in a queue, or change their skill penalty there",
)
async def set_membership(agent: str, queue: str, body: Membership, floor: FloorDep) -> Accepted:
    user, interfaces = await floor.agent(agent)
    pbx = floor.pbx
    await floor.send(
        *(
            pbx.queue_penalty(i, body.penalty, queue=queue)
            if queue in floor.queues_of(i)
            else pbx.queue_add(
                queue,
                i,
                member_name=user.display_name,
                state_interface=user.interface,
                penalty=body.penalty,
            )
            for i in interfaces
        )
    )
    note = f"{queue} penalty {body.penalty}" + (f": {body.reason}" if body.reason else "")
    await floor.record(QUEUE_MEMBER_CHANGED, Subject("agent", agent), note)
    return Accepted(agent=agent, interfaces=interfaces)


@router.delete(
    "/agents/{agent}/queues/{queue}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Take an agent out of a queue",
)
async def remove_membership(agent: str, queue: str, floor: FloorDep) -> Response:
    _user, interfaces = await floor.agent(agent)
    await floor.send(*(floor.pbx.queue_remove(queue, i) for i in interfaces))
    await floor.record(QUEUE_MEMBER_CHANGED, Subject("agent", agent), f"{queue} removed")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/calls/{call_id}/reassign",
    response_model=Accepted,
    summary="Send a waiting call (and its case) to a chosen agent",
)
async def reassign(call_id: str, body: Reassign, floor: FloorDep, cases: Cases) -> Accepted:
    reason = _clean_reason(body.reason)
    call = floor.state.call_by_id(call_id)
    view = find_call(floor.state, call_id)
    if call is None or view is None:
        raise problem(status.HTTP_404_NOT_FOUND, "call_not_found", f"no call {call_id}")
    if not call.in_queue:
        raise problem(status.HTTP_409_CONFLICT, "not_waiting", "the call is no longer waiting")
    user, _interfaces = await floor.agent(body.agent)
    await floor.send(floor.pbx.redirect(call.channel, body.agent, floor.config.colleague_context))
    if view.case_reference:
        try:
            await cases.assign(view.case_reference, user.id)
        except Exception as exc:  # not written yet: answering the call assigns it anyway
            log.warning("call %s: case not reassigned (%s)", call.call_id, type(exc).__name__)
    await floor.record(CALL_REASSIGNED, Subject.call(call.call_id), f"to {body.agent}: {reason}")
    return Accepted(agent=body.agent, call_id=call.call_id)
