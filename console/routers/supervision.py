"""``/api/supervision``: live coaching (spy sessions, private messages, raised hands) and the
audit trail for admins (``/api/audit``, ``/api/supervision/spy-sessions``).

Only supervisors (and admins) spy or send messages; agents raise a hand about their own
call (``/api/me/hand``, in `me_router`); only admins read the trail. The work is done by
`console.coaching.Coaching` (``app.state.coaching``; 503 when it is not set up).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, NoReturn

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from console.coaching import Coaching, CoachingRefused, Hand
from console.deps import require_role
from console.routers.calls import pbx_error
from console.routers.cases import Agent, problem
from crm_bridge.audit import AuditLog, Subject
from crm_bridge.coaching_store import SpyRecord
from crm_bridge.users import UserView
from cti.ami import AmiError
from cti.pbx import SpyMode

_AGENT_ID = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"


def coaching_service(request: Request) -> Coaching:
    service = getattr(request.app.state, "coaching", None)
    if not isinstance(service, Coaching):
        raise problem(
            status.HTTP_503_SERVICE_UNAVAILABLE, "unavailable", "live coaching is not set up"
        )
    return service


def audit_trail(request: Request) -> AuditLog:
    """``app.state.audit``, else the coaching service's."""
    audit = getattr(request.app.state, "audit", None)
    if isinstance(audit, AuditLog):
        return audit
    return coaching_service(request).audit


CoachingDep = Annotated[Coaching, Depends(coaching_service)]
Trail = Annotated[AuditLog, Depends(audit_trail)]
Supervisor = Annotated[UserView, Depends(require_role("supervisor"))]
Admin = Annotated[UserView, Depends(require_role("admin"))]


def refused(exc: CoachingRefused) -> NoReturn:
    raise problem(exc.status_code, exc.code, exc.message) from exc


# --- models -------------------------------------------------------------------------------


class SpyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1, max_length=128)
    mode: SpyMode = "listen"
    reason: str | None = Field(default=None, max_length=255)  # default "coaching"


class SpyModeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: SpyMode


class SpySessionOut(BaseModel):
    id: int
    call_id: str
    agent: str | None
    case_reference: str | None
    supervisor: str
    supervisor_name: str
    mode: SpyMode
    state: str  # starting | live | ended
    reason: str | None
    started_at: str
    ended_at: str | None
    end_reason: str | None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int | None = None
    agent: str | None = Field(default=None, pattern=_AGENT_ID)  # "agent1"
    text: str = Field(min_length=1, max_length=500)
    call_id: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def one_recipient(self) -> MessageIn:
        if (self.user_id is None) == (self.agent is None):
            raise ValueError("name the recipient by user_id or by agent, not both")
        return self


class MessageOut(BaseModel):
    id: int
    recipient_id: int
    text: str
    call_id: str | None
    sent_at: datetime


class HandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raised: bool


class HandOut(BaseModel):
    agent: str
    user_id: int
    display_name: str
    call_id: str | None
    raised: bool
    at: str


class AuditOut(BaseModel):
    id: int
    actor_id: int | None
    actor: str
    action: str
    subject_type: str
    subject_id: str
    reason: str | None
    at: datetime


class SpyRecordOut(BaseModel):
    id: int
    supervisor_id: int | None
    supervisor: str
    call_id: str
    agent: str | None
    case_reference: str | None
    mode: str
    modes: list[str]
    spy_channel: str | None
    reason: str | None
    started_at: datetime
    ended_at: datetime | None


def _hand(hand: Hand) -> HandOut:
    return HandOut(
        agent=hand.agent,
        user_id=hand.user_id,
        display_name=hand.display_name,
        call_id=hand.call_id,
        raised=hand.raised,
        at=hand.at,
    )


def _spy_record(record: SpyRecord) -> SpyRecordOut:
    return SpyRecordOut(
        id=record.id,
        supervisor_id=record.supervisor_id,
        supervisor=record.supervisor,
        call_id=record.call_id,
        agent=record.agent,
        case_reference=record.case_reference,
        mode=record.mode,
        modes=list(record.modes),
        spy_channel=record.spy_channel,
        reason=record.reason,
        started_at=record.started_at,
        ended_at=record.ended_at,
    )


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "naive_datetime",
            f"{name} needs a time zone (e.g. 2026-11-22T10:00:00+01:00)",
        )
    return value


# --- routes -------------------------------------------------------------------------------

router = APIRouter(prefix="/api", tags=["supervision"])
me_router = APIRouter(prefix="/api/me", tags=["me"])


@router.post(
    "/supervision/spy",
    response_model=SpySessionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Listen to, whisper to or barge into a call",
)
async def start_spy(body: SpyIn, user: Supervisor, coaching: CoachingDep) -> SpySessionOut:
    """Rings the supervisor's phone, which then spies on the call's agent. The session
    answers ``starting``; ``spy_session`` pushes on ``role:supervisor`` say when it is
    ``live`` and ``ended``. The reason (default ``coaching``) goes to the audit trail."""
    try:
        view = await coaching.start_spy(user, body.call_id, body.mode, body.reason)
    except CoachingRefused as exc:
        refused(exc)
    return SpySessionOut.model_validate(view)


@router.get(
    "/supervision/spy", response_model=list[SpySessionOut], summary="Spy sessions running now"
)
async def running_sessions(_user: Supervisor, coaching: CoachingDep) -> list[SpySessionOut]:
    return [SpySessionOut.model_validate(view) for view in coaching.sessions()]


@router.patch(
    "/supervision/spy/{session_id}", response_model=SpySessionOut, summary="Switch spy mode"
)
async def change_mode(
    session_id: int, body: SpyModeIn, user: Supervisor, coaching: CoachingDep
) -> SpySessionOut:
    try:
        view = await coaching.change_mode(user, session_id, body.mode)
    except CoachingRefused as exc:
        refused(exc)
    except AmiError as exc:
        pbx_error(exc)
    return SpySessionOut.model_validate(view)


@router.delete(
    "/supervision/spy/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Stop spying",
)
async def stop_spy(session_id: int, user: Supervisor, coaching: CoachingDep) -> Response:
    try:
        await coaching.stop_spy(user, session_id)
    except CoachingRefused as exc:
        refused(exc)
    except AmiError as exc:
        pbx_error(exc)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/supervision/messages",
    response_model=MessageOut,
    status_code=status.HTTP_201_CREATED,
    summary="Send an agent a private message",
)
async def send_message(body: MessageIn, user: Supervisor, coaching: CoachingDep) -> MessageOut:
    """Shown only on the recipient's console (``private_message`` push); audited."""
    try:
        recipient = await coaching.recipient(user_id=body.user_id, agent=body.agent)
        record = await coaching.send_message(user, recipient, body.text, body.call_id)
    except CoachingRefused as exc:
        refused(exc)
    return MessageOut(
        id=record.id,
        recipient_id=record.recipient_id,
        text=record.text,
        call_id=record.call_id,
        sent_at=record.sent_at,
    )


@router.get("/supervision/hands", response_model=list[HandOut], summary="Raised hands")
async def hands(_user: Supervisor, coaching: CoachingDep) -> list[HandOut]:
    return [_hand(hand) for hand in coaching.hands()]


@me_router.post("/hand", response_model=HandOut, summary="Raise or lower my hand")
async def my_hand(body: HandIn, user: Agent, coaching: CoachingDep) -> HandOut:
    """About the agent's own connected call (409 ``not_on_call`` without one)."""
    try:
        return _hand(coaching.raise_hand(user, body.raised))
    except CoachingRefused as exc:
        refused(exc)


@router.get("/audit", response_model=list[AuditOut], summary="The audit trail (admins)")
async def audit(
    _user: Admin,
    trail: Trail,
    action: Annotated[str | None, Query(max_length=64)] = None,
    subject_type: Annotated[str | None, Query(max_length=32)] = None,
    subject_id: Annotated[str | None, Query(max_length=128)] = None,
    actor_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    """Newest first. ``subject_type`` and ``subject_id`` go together (``call`` +
    a call id, ``user`` + a user id, ``citizen`` + a record id)."""
    if (subject_type is None) != (subject_id is None):
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "subject_incomplete",
            "give subject_type and subject_id together",
        )
    subject = Subject(subject_type, subject_id) if subject_type and subject_id else None
    rows = await trail.entries(
        subject=subject,
        actor_id=actor_id,
        action=action,
        since=_aware(since, "since"),
        until=_aware(until, "until"),
        limit=limit,
    )
    return [
        AuditOut(
            id=row.id,
            actor_id=row.actor_id,
            actor=row.actor,
            action=row.action,
            subject_type=row.subject.type,
            subject_id=row.subject.id,
            reason=row.reason,
            at=row.at,
        )
        for row in rows
    ]


@router.get(
    "/supervision/spy-sessions",
    response_model=list[SpyRecordOut],
    summary="Every spy session (admins)",
)
async def spy_sessions(
    _user: Admin,
    coaching: CoachingDep,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[SpyRecordOut]:
    """Who spied on which call, in which modes, from when to when; newest first."""
    records = await coaching.store.spy_sessions(
        since=_aware(since, "since"), until=_aware(until, "until"), limit=limit
    )
    return [_spy_record(record) for record in records]
