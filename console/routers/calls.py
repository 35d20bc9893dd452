"""``/api/calls``: click-to-dial, transfer (blind or attended), hang-up and hold.

Everything goes through `cti.pbx.Pbx` (the one way Guichet acts on Asterisk). Which call is
whose comes from the CTI's live state (`cti.state.CtiState`), never from the browser: an
agent may act only on a call that rings or is connected at their own phone (their user's
``interface``, ``PJSIP/agent1``, is queue member ``Local/agent1@agents``: the same agent id),
else 403; supervisors and admins may act on any call. The browser only names the call id.

Asterisk's ``Success`` means the action was accepted, not done: the outcome reaches the page
as pushes (``call_ended``, ``call_held``...) from the CTI events.

Dial plan names differ per site, so they are `CallControlConfig` (``app.state.call_control``);
the defaults match ``asterisk-config`` (``[guichet-transfer]`` has every queue and the site's
transfer targets, ``[agents]`` rings a colleague's phone, ``[from-agents]`` is what an
agent's own phone may dial).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Literal, NoReturn

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, ConfigDict, Field

from console.routers.cases import Agent, Cases, Users, existing_case, problem
from crm_bridge.users import UserView
from cti.ami import AmiError
from cti.ami_wire import DuplicateAction
from cti.events import agent_id
from cti.pbx import ActionFailed, Pbx
from cti.snapshot import interface_of
from cti.state import CASE_ID, Call, CtiState

TransferKind = Literal["blind", "attended"]
TargetType = Literal["queue", "colleague", "experts"]
_DIAL_SEPARATORS = re.compile(r"[\s.\-/()]")
_DIAL_NUMBER = re.compile(r"^\+?[0-9]{2,20}$")
_EXTEN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"


@dataclass(frozen=True, slots=True)
class CallControlConfig:
    """The dial plan the console's call controls use (``app.state.call_control``)."""

    transfer_context: str = "guichet-transfer"  # queues and site transfer targets
    colleague_context: str = "agents"  # exten = agent id: rings the colleague's phone
    experts_exten: str = "experts"  # the line-3 experts: a transfer target of site.yaml
    dial_context: str = "from-agents"  # click-to-dial: what the agent's phone may dial
    dial_caller_id: str | None = None  # None: the phone's own caller id
    dial_timeout: float = 20.0  # seconds the agent's phone rings before giving up
    member_interface: str = "Local/{agent}@agents"  # queue member of a user (presence)


def call_control(request: Request) -> CallControlConfig:
    config = getattr(request.app.state, "call_control", None)
    return config if isinstance(config, CallControlConfig) else CallControlConfig()


def pbx_service(request: Request) -> Pbx:
    pbx = getattr(request.app.state, "pbx", None)
    if not isinstance(pbx, Pbx):
        raise problem(status.HTTP_503_SERVICE_UNAVAILABLE, "no_pbx", "no Asterisk connected")
    return pbx


def cti_state(request: Request) -> CtiState:
    state = getattr(request.app.state, "cti_state", None)
    if not isinstance(state, CtiState):
        raise problem(status.HTTP_503_SERVICE_UNAVAILABLE, "no_cti", "no call state (no CTI)")
    return state


Config = Annotated[CallControlConfig, Depends(call_control)]
PbxDep = Annotated[Pbx, Depends(pbx_service)]
StateDep = Annotated[CtiState, Depends(cti_state)]


def pbx_error(exc: AmiError) -> NoReturn:
    """Asterisk refused (502), the request was a repeat (409), or Asterisk is away (503)."""
    if isinstance(exc, ActionFailed):
        raise problem(status.HTTP_502_BAD_GATEWAY, "pbx_refused", exc.message) from exc
    if isinstance(exc, DuplicateAction):
        raise problem(status.HTTP_409_CONFLICT, "duplicate", str(exc)) from exc
    raise problem(status.HTTP_503_SERVICE_UNAVAILABLE, "pbx_unavailable", str(exc)) from exc


def own_agent_id(user: UserView) -> str | None:
    """The agent id behind the user's phone (``PJSIP/agent1`` -> ``agent1``)."""
    return agent_id(user.interface) if user.interface else None


def require_phone(user: UserView) -> str:
    if not user.interface:
        raise problem(status.HTTP_409_CONFLICT, "no_phone", "no phone is linked to your account")
    return user.interface


# --- the calls, as the CTI sees them ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallView:
    """A call and who is on it, from `CtiState`."""

    call_id: str
    connected: bool
    agents: frozenset[str]  # agent ids rung for it or connected to it
    connected_agent: str | None
    agent_channel: str | None  # the connected agent's leg: what transfers act on
    agent_phone: str | None  # the connected agent's phone: what hold acts on
    case_reference: str | None
    queue: str | None
    caller: str | None
    held: bool


def _queue_call(state: CtiState, call: Call) -> CallView:
    agents: set[str] = set()
    interfaces = ([call.agent] if call.agent else []) + [r.agent for r in call.rings.values()]
    for interface in interfaces:
        agents.add(agent_id(interface))
        member = state.agents.get(interface)
        if member is not None and member.state_interface:
            agents.add(agent_id(member.state_interface))
    phone: str | None = None
    if call.agent:
        member = state.agents.get(call.agent)
        phone = member.state_interface if member and member.state_interface else None
        phone = phone or agent_id(call.agent)  # the PJSIP endpoint name
    return CallView(
        call_id=call.call_id,
        connected=call.agent is not None,
        agents=frozenset(agents),
        connected_agent=agent_id(call.agent) if call.agent else None,
        agent_channel=call.agent_channel,
        agent_phone=phone,
        case_reference=call.vars.get(CASE_ID) or None,
        queue=call.queue,
        caller=call.caller_number,
        held=call.held,
    )


def find_call(state: CtiState, call_id: str) -> CallView | None:
    """A queue call by its call id, else an agent's own channel by its Uniqueid (a
    click-to-dial call: the OriginateResponse's Uniqueid)."""
    call = state.call_by_id(call_id)
    if call is not None:
        return _queue_call(state, call)
    channel = state.channels.get(call_id)
    if channel is None:
        return None
    device = interface_of(channel.name)
    agent = agent_id(device)
    connected = channel.state == "Up"
    return CallView(
        call_id=call_id,
        connected=connected,
        agents=frozenset({agent}),
        connected_agent=agent if connected else None,
        agent_channel=channel.name,
        agent_phone=device,
        case_reference=channel.vars.get(CASE_ID) or None,
        queue=None,
        caller=None,
        held=False,
    )


def calls_of(state: CtiState, agent: str) -> list[CallView]:
    """The queue calls ringing or connected at one agent, connected first."""
    views = [_queue_call(state, call) for call in state.calls.values()]
    mine = [view for view in views if agent in view.agents]
    return sorted(mine, key=lambda view: not view.connected)


def authorised_call(state: CtiState, call_id: str, user: UserView) -> CallView:
    """The call, if the user may act on it: 404 unknown, 403 someone else's (agents)."""
    call = find_call(state, call_id)
    if call is None:
        raise problem(status.HTTP_404_NOT_FOUND, "call_not_found", f"no call {call_id}")
    if user.can("supervisor"):
        return call
    mine = own_agent_id(user)
    if mine is None or mine not in call.agents:
        raise problem(status.HTTP_403_FORBIDDEN, "not_your_call", "this call is not at your phone")
    return call


def connected(call: CallView) -> str:
    if not call.connected or not call.agent_channel:
        raise problem(status.HTTP_409_CONFLICT, "not_connected", "the call is not answered")
    return call.agent_channel


# --- models -------------------------------------------------------------------------------


class CallOut(BaseModel):
    call_id: str
    state: Literal["ringing", "connected"]
    case_reference: str | None
    queue: str | None
    caller: str | None
    held: bool
    agent_channel: str | None


class CurrentCallOut(BaseModel):
    call: CallOut | None  # the call at the user's phone, connected before ringing


class Colleague(BaseModel):
    username: str
    display_name: str


class TargetsOut(BaseModel):
    queues: list[str]
    colleagues: list[Colleague]
    experts: bool


class DialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=2, max_length=40)
    case_reference: str | None = Field(default=None, max_length=64)
    # The page's id for this click: a repeat (double click, retry) never dials twice.
    request_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,64}$")


class DialOut(BaseModel):
    call_id: str  # GUICHET_CALL_ID on the agent's channel
    answered: bool  # the agent's phone picked up (then the number is dialled)
    reason: str
    channel: str
    uniqueid: str | None  # the agent's channel: the call id for hang-up and transfer


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: TransferKind = "blind"
    target: str = Field(pattern=_EXTEN)  # a queue name, a colleague's username, "experts"
    target_type: TargetType | None = None  # None: experts, a known username, else a queue


class TransferOut(BaseModel):
    call_id: str
    kind: TransferKind
    target_type: TargetType
    exten: str
    context: str


class HoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    held: bool


class ActionOut(BaseModel):
    call_id: str
    requested: str  # Asterisk accepted it; the outcome arrives as a push


def _call_out(view: CallView) -> CallOut:
    return CallOut(
        call_id=view.call_id,
        state="connected" if view.connected else "ringing",
        case_reference=view.case_reference,
        queue=view.queue,
        caller=view.caller,
        held=view.held,
        agent_channel=view.agent_channel,
    )


# --- routes -------------------------------------------------------------------------------

router = APIRouter(prefix="/api/calls", tags=["calls"])


@router.get("/current", response_model=CurrentCallOut, summary="The call at my phone")
async def current_call(user: Agent, request: Request) -> CurrentCallOut:
    """What the page shows after a reload or a push resync."""
    state = getattr(request.app.state, "cti_state", None)
    mine = own_agent_id(user)
    if not isinstance(state, CtiState) or mine is None:
        return CurrentCallOut(call=None)
    calls = calls_of(state, mine)
    return CurrentCallOut(call=_call_out(calls[0]) if calls else None)


@router.get("/targets", response_model=TargetsOut, summary="Where a call may be transferred")
async def targets(user: Agent, users: Users, request: Request, config: Config) -> TargetsOut:
    state = getattr(request.app.state, "cti_state", None)
    queues: set[str] = set()
    if isinstance(state, CtiState):
        for member in state.agents.values():
            queues.update(member.queues)
    mine = own_agent_id(user)
    colleagues = [
        Colleague(username=other.username, display_name=other.display_name)
        for other in await users.list_users()
        if other.active and other.interface and agent_id(other.interface) != mine
    ]
    return TargetsOut(
        queues=sorted(queues), colleagues=colleagues, experts=bool(config.experts_exten)
    )


@router.post("/dial", response_model=DialOut, summary="Click-to-dial from my phone")
async def dial(body: DialIn, user: Agent, pbx: PbxDep, cases: Cases, config: Config) -> DialOut:
    """Ring the agent's own phone; when it answers, Asterisk dials the number through
    ``dial_context``. Waits for the phone to answer (or not): the answer says which."""
    phone = require_phone(user)
    number = _DIAL_SEPARATORS.sub("", body.number)
    if not _DIAL_NUMBER.match(number):
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "bad_number", "a number is digits, maybe a +"
        )
    case_reference = None
    if body.case_reference:
        case_reference = (await existing_case(cases, body.case_reference)).reference
    call_id = f"c2d-{body.request_id or secrets.token_hex(8)}"
    try:
        result = await pbx.click_to_dial(
            phone,
            number,
            context=config.dial_context,
            call_id=call_id,
            case_id=case_reference,
            caller_id=config.dial_caller_id,
            timeout=config.dial_timeout,
        )
    except AmiError as exc:
        pbx_error(exc)
    return DialOut(
        call_id=call_id,
        answered=result.success,
        reason=result.reason_text,
        channel=result.channel,
        uniqueid=result.uniqueid,
    )


async def _target(
    body: TransferIn, user: UserView, users: Users, config: CallControlConfig
) -> tuple[TargetType, str, str]:
    """(target type, exten, context) of a transfer request."""
    kind = body.target_type
    if kind is None:
        if body.target == "experts":
            kind = "experts"
        else:
            named = await users.get(body.target)
            kind = "colleague" if named is not None and named.interface else "queue"
    if kind == "experts":
        if not config.experts_exten:
            raise problem(status.HTTP_409_CONFLICT, "no_experts", "no experts line is set up")
        return kind, config.experts_exten, config.transfer_context
    if kind == "colleague":
        colleague = await users.get(body.target)
        if colleague is None or not colleague.active or not colleague.interface:
            raise problem(
                status.HTTP_404_NOT_FOUND, "colleague_not_found", f"no colleague {body.target}"
            )
        target = agent_id(colleague.interface)
        if target == own_agent_id(user):
            raise problem(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "self_transfer", "that is your own phone"
            )
        return kind, target, config.colleague_context
    return "queue", body.target, config.transfer_context


@router.post("/{call_id}/transfer", response_model=TransferOut, summary="Transfer a call")
async def transfer(
    call_id: str,
    body: TransferIn,
    user: Agent,
    state: StateDep,
    pbx: PbxDep,
    users: Users,
    config: Config,
) -> TransferOut:
    """Blind: the citizen goes to the target at once. Attended: the agent consults the target
    first and completes by hanging up (needs Queue option ``t``)."""
    call = authorised_call(state, call_id, user)
    channel = connected(call)
    target_type, exten, context = await _target(body, user, users, config)
    try:
        if body.kind == "blind":
            await pbx.blind_transfer(channel, exten, context)
        else:
            await pbx.attended_transfer(channel, exten, context)
    except AmiError as exc:
        pbx_error(exc)
    return TransferOut(
        call_id=call.call_id,
        kind=body.kind,
        target_type=target_type,
        exten=exten,
        context=context,
    )


@router.post("/{call_id}/hangup", response_model=ActionOut, summary="Hang up a call")
async def hangup(call_id: str, user: Agent, state: StateDep, pbx: PbxDep) -> ActionOut:
    """Hangs up the agent's leg; the queue then ends the citizen's side."""
    call = authorised_call(state, call_id, user)
    channel = connected(call)
    try:
        await pbx.hangup(channel)
    except AmiError as exc:
        pbx_error(exc)
    return ActionOut(call_id=call.call_id, requested="hangup")


@router.post("/{call_id}/hold", response_model=ActionOut, summary="Hold or resume a call")
async def hold(call_id: str, body: HoldIn, user: Agent, state: StateDep, pbx: PbxDep) -> ActionOut:
    """Asks the connected agent's phone to hold (see `cti.pbx`: hold is phone-side)."""
    call = authorised_call(state, call_id, user)
    connected(call)
    phone = user.interface if call.connected_agent == own_agent_id(user) else call.agent_phone
    if not phone:
        raise problem(status.HTTP_409_CONFLICT, "no_phone", "no phone to hold the call on")
    try:
        if body.held:
            await pbx.hold(phone)
        else:
            await pbx.unhold(phone)
    except ValueError as exc:
        raise problem(status.HTTP_409_CONFLICT, "hold_unsupported", str(exc)) from exc
    except AmiError as exc:
        pbx_error(exc)
    return ActionOut(call_id=call.call_id, requested="hold" if body.held else "unhold")


def member_interfaces(
    state: CtiState | None, user: UserView, config: CallControlConfig
) -> list[str]:
    """The queue member interface(s) of the user's phone, as the CTI knows them, else by the
    site's convention (``Local/<agent>@agents``)."""
    mine = own_agent_id(user)
    if mine is None:
        return []
    found: list[str] = []
    if state is not None:
        for interface, member in state.agents.items():
            ids = {agent_id(interface)}
            if member.state_interface:
                ids.add(agent_id(member.state_interface))
            if mine in ids:
                found.append(interface)
    return found or [config.member_interface.format(agent=mine)]
