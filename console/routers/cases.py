"""``/api/cases``: the case screen of the agent console (read, edit, notes, wrap-up, history).

Cases are the contact centre's shared work: any agent may read and edit any case (a citizen
calling back reaches whoever is free). The citizen behind a case is *not* in these answers,
only their id: reading a citizen's record goes through ``/api/citizens/{id}?case=``, which
writes the audit row.

This module also holds what the agent console's routers share: how an error reaches the
page (`problem`: a stable ``code`` the page translates, and an English ``message``) and the
services the app keeps on ``app.state``.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal, NoReturn, TypeVar, get_args

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from console.deps import require_role
from crm_bridge.audit import AuditLog
from crm_bridge.case_facts import CaseView, InteractionView, NoteView
from crm_bridge.case_models import CASE_STATUSES, IN_PROGRESS
from crm_bridge.cases import (
    CaseConflict,
    CaseError,
    CaseNotFound,
    CaseService,
    InvalidTransition,
)
from crm_bridge.citizen_search import CitizenDirectory
from crm_bridge.knowledge import KnowledgeBase
from crm_bridge.users import UserService, UserView

T = TypeVar("T")

# How a call ends for the case, chosen in the wrap-up form (labels: agent.disposition.*).
Disposition = Literal[
    "information_given",
    "resolved",
    "follow_up",
    "callback_planned",
    "transferred",
    "wrong_number",
]
DISPOSITIONS: tuple[str, ...] = get_args(Disposition)
CaseStatus = Literal["new", "in_progress", "wrap_up", "closed", "reopened"]
assert set(get_args(CaseStatus)) == set(CASE_STATUSES), "CaseStatus lags the case store"
CATEGORY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # request types: identity_card, population
MAX_NOTE_LENGTH = 10_000

Agent = Annotated[UserView, Depends(require_role("agent"))]


# --- shared by the agent console's routers ------------------------------------------------


def problem(status_code: int, code: str, message: str, **extra: Any) -> HTTPException:
    """An error the page can translate: ``{"detail": {"code", "message", ...}}``."""
    return HTTPException(status_code, detail={"code": code, "message": message, **extra})


def _service(request: Request, name: str, kind: type[T]) -> T:
    value = getattr(request.app.state, name, None)
    if not isinstance(value, kind):
        raise problem(
            status.HTTP_503_SERVICE_UNAVAILABLE, "unavailable", f"the {name} service is not set up"
        )
    return value


def case_service(request: Request) -> CaseService:
    return _service(request, "cases", CaseService)


def audit_log(request: Request) -> AuditLog:
    return _service(request, "audit", AuditLog)


def knowledge_base(request: Request) -> KnowledgeBase:
    return _service(request, "knowledge", KnowledgeBase)


def user_service(request: Request) -> UserService:
    return _service(request, "users", UserService)


def citizen_directory(request: Request) -> CitizenDirectory:
    """One `CitizenDirectory` per app, over ``app.state.crm_engine``."""
    directory = getattr(request.app.state, "citizen_directory", None)
    if isinstance(directory, CitizenDirectory):
        return directory
    engine = _service(request, "crm_engine", AsyncEngine)
    directory = request.app.state.citizen_directory = CitizenDirectory(engine)
    return directory


Cases = Annotated[CaseService, Depends(case_service)]
Audit = Annotated[AuditLog, Depends(audit_log)]
Knowledge = Annotated[KnowledgeBase, Depends(knowledge_base)]
Users = Annotated[UserService, Depends(user_service)]
Directory = Annotated[CitizenDirectory, Depends(citizen_directory)]


async def existing_case(cases: CaseService, reference: str) -> CaseView:
    """The case behind ``reference`` (an alias works too), or 404."""
    case = await cases.get_case(reference)
    if case is None:
        raise problem(status.HTTP_404_NOT_FOUND, "case_not_found", f"no case {reference}")
    return case


def case_error(exc: CaseError) -> NoReturn:
    """Map the case store's refusals to answers the page can act on."""
    if isinstance(exc, CaseNotFound):
        raise problem(status.HTTP_404_NOT_FOUND, "case_not_found", str(exc)) from exc
    if isinstance(exc, InvalidTransition):
        raise problem(status.HTTP_409_CONFLICT, "invalid_transition", str(exc)) from exc
    if isinstance(exc, CaseConflict):
        raise problem(
            status.HTTP_409_CONFLICT,
            "open_case_exists",
            str(exc),
            other_reference=exc.other_reference,
        ) from exc
    raise problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "case_refused", str(exc)) from exc


# --- models -------------------------------------------------------------------------------


class CaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    reference: str
    status: str
    category: str | None
    language: str | None
    priority: int
    queue: str | None
    citizen_id: int | None
    caller: str | None
    channel: str
    assigned_agent_id: int | None
    disposition: str | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None

    @classmethod
    def of(cls, view: CaseView) -> CaseOut:
        return cls.model_validate(asdict(view))


class NoteOut(BaseModel):
    id: int
    case_reference: str
    author_id: int | None
    author: str | None  # the author's display name; None for Guichet itself
    text: str
    created_at: datetime

    @classmethod
    def of(cls, note: NoteView, names: dict[int, str]) -> NoteOut:
        author = names.get(note.author_id) if note.author_id is not None else None
        return cls(**asdict(note), author=author)


class InteractionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    case_reference: str
    kind: str
    call_id: str | None
    direction: str
    contact: str | None
    queue: str | None
    started_at: datetime
    ended_at: datetime | None
    summary: str | None

    @classmethod
    def of(cls, view: InteractionView) -> InteractionOut:
        return cls.model_validate(asdict(view))


class ReplyTemplate(BaseModel):
    """A knowledge article offered as a reply, in the case's language where translated."""

    slug: str
    lang: str
    title: str
    body: str


class CaseDetail(BaseModel):
    case: CaseOut
    notes: list[NoteOut]
    reply_templates: list[ReplyTemplate]


class CaseHistory(BaseModel):
    reference: str
    interactions: list[InteractionOut]


class CasePatch(BaseModel):
    """Only the fields given change; ``"category": null`` clears the category."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(default=None, pattern=CATEGORY_PATTERN)
    status: CaseStatus | None = None


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_NOTE_LENGTH)


class WrapUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disposition: Disposition
    close: bool = False  # the request is settled: close the case after the wrap-up
    note: str | None = Field(default=None, max_length=MAX_NOTE_LENGTH)


class CitizenLinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    citizen_id: int | None = Field(ge=1)  # None detaches the case


# --- routes -------------------------------------------------------------------------------

router = APIRouter(prefix="/api/cases", tags=["cases"])


async def _names(users: UserService) -> dict[int, str]:
    return {user.id: user.display_name for user in await users.list_users()}


async def _detail(
    case: CaseView, cases: CaseService, knowledge: KnowledgeBase, users: UserService
) -> CaseDetail:
    names = await _names(users)
    notes = await cases.notes(case.reference)
    articles = (
        await knowledge.for_request_type(case.category, case.language or "fr")
        if case.category
        else []
    )
    return CaseDetail(
        case=CaseOut.of(case),
        notes=[NoteOut.of(note, names) for note in notes],
        reply_templates=[
            ReplyTemplate(slug=a.slug, lang=a.lang, title=a.title, body=a.body) for a in articles
        ],
    )


@router.get("/{reference}", response_model=CaseDetail, summary="A case, its notes and replies")
async def get_case(
    reference: str, _user: Agent, cases: Cases, knowledge: Knowledge, users: Users
) -> CaseDetail:
    case = await existing_case(cases, reference)
    return await _detail(case, cases, knowledge, users)


@router.patch("/{reference}", response_model=CaseOut, summary="Change category and/or status")
async def patch_case(reference: str, body: CasePatch, user: Agent, cases: Cases) -> CaseOut:
    """Setting ``in_progress`` assigns the case to the agent who does it (they took it)."""
    case = await existing_case(cases, reference)
    try:
        if "category" in body.model_fields_set:
            case = await cases.set_category(case.reference, body.category)
        if body.status == IN_PROGRESS:
            case = await cases.assign(case.reference, user.id)
        elif body.status is not None:
            case = await cases.set_status(case.reference, body.status)
    except CaseError as exc:
        case_error(exc)
    return CaseOut.of(case)


@router.post(
    "/{reference}/notes",
    response_model=NoteOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a note to a case",
)
async def add_note(reference: str, body: NoteIn, user: Agent, cases: Cases) -> NoteOut:
    case = await existing_case(cases, reference)
    try:
        note = await cases.add_note(case.reference, body.text, author_id=user.id)
    except CaseError as exc:
        case_error(exc)
    return NoteOut.of(note, {user.id: user.display_name})


@router.post("/{reference}/wrap-up", response_model=CaseOut, summary="Wrap up the call's case")
async def wrap_up(reference: str, body: WrapUpIn, user: Agent, cases: Cases) -> CaseOut:
    """Record the disposition (the case goes to ``wrap_up``), with an optional last note,
    and close the case when the request is settled."""
    case = await existing_case(cases, reference)
    try:
        if body.note and body.note.strip():
            await cases.add_note(case.reference, body.note, author_id=user.id)
        case = await cases.start_wrap_up(case.reference, body.disposition)
        if body.close:
            case = await cases.close(case.reference, body.disposition)
    except CaseError as exc:
        case_error(exc)
    return CaseOut.of(case)


@router.post("/{reference}/citizen", response_model=CaseOut, summary="Link the case to a citizen")
async def link_citizen(
    reference: str, body: CitizenLinkIn, _user: Agent, cases: Cases, directory: Directory
) -> CaseOut:
    """For calls the IVR could not identify: the agent found the citizen by search."""
    case = await existing_case(cases, reference)
    if body.citizen_id is not None and not await directory.exists(body.citizen_id):
        raise problem(
            status.HTTP_404_NOT_FOUND, "citizen_not_found", f"no citizen {body.citizen_id}"
        )
    try:
        case = await cases.link_citizen(case.reference, body.citizen_id)
    except CaseError as exc:
        case_error(exc)
    return CaseOut.of(case)


@router.get("/{reference}/history", response_model=CaseHistory, summary="A case's contacts")
async def history(reference: str, _user: Agent, cases: Cases) -> CaseHistory:
    case = await existing_case(cases, reference)
    interactions = await cases.interactions(case.reference)
    return CaseHistory(
        reference=case.reference, interactions=[InteractionOut.of(i) for i in interactions]
    )
