"""Opening hours, public holidays and exceptional closures of a flow, edited by supervisors.

``GET /api/flows/{flow}/hours`` reads the flow file's hours nodes with the file's content hash;
``PUT /api/flows/{flow}/hours/{node_id}`` sends a node's new hours with that hash back. The edit
goes through `ivr.hours_edit`: the flow checker vouches for the new file before it is written
(a refusal is 422 with the checker's own ``FILE:LINE: message`` lines, nothing saved), a file
changed meanwhile is 409, and each saved change leaves a ``flow.hours_changed`` audit row.
``GET /supervisor/hours`` is the page (``static/hours.js`` on this API).

Needs ``app.state.registry`` (the `FlowRegistry` in service) and ``app.state.audit``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from console.deps import State, require_role
from console.i18n import page_texts
from console.routers.cases import audit_log, problem
from crm_bridge.audit import AuditLog, Subject
from crm_bridge.users import UserView
from ivr.flow_model import NODE_ID
from ivr.hours_edit import (
    FlowFileInvalid,
    FlowHours,
    FlowNotFound,
    HoursEditError,
    HoursEditRejected,
    HoursFields,
    NodeNotFound,
    StaleFlow,
    load_hours,
    save_hours,
)
from ivr.loader import Issue
from ivr.registry import FlowRegistry

router = APIRouter(tags=["flows"])
HOURS_CHANGED = "flow.hours_changed"
TEXT_PREFIX = "hours."
FLOW_NAME = r"^[A-Za-z0-9_.-]{1,100}$"

Supervisor = Annotated[UserView, Depends(require_role("supervisor"))]
Audit = Annotated[AuditLog, Depends(audit_log)]
FlowName = Annotated[str, Path(pattern=FLOW_NAME)]


def flow_registry(request: Request) -> FlowRegistry:
    registry = getattr(request.app.state, "registry", None)
    if not isinstance(registry, FlowRegistry):
        raise problem(
            status.HTTP_503_SERVICE_UNAVAILABLE, "unavailable", "the flow registry is not set up"
        )
    return registry


Registry = Annotated[FlowRegistry, Depends(flow_registry)]


class HoursEditIn(HoursFields):
    """A node's new hours and the content hash of the version they were edited from."""

    base_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class SavedHoursOut(FlowHours):
    changed: bool


class IssueOut(BaseModel):
    line: int
    message: str
    text: str  # as `guichet flow check` prints it (file name only)


def issues_out(issues: tuple[Issue, ...]) -> list[dict[str, Any]]:
    return [
        IssueOut(
            line=i.line, message=i.message, text=f"{i.path.name}:{i.line}: {i.message}"
        ).model_dump()
        for i in issues
    ]


def edit_error(exc: HoursEditError) -> Exception:
    """How each refusal of `ivr.hours_edit` reaches the page."""
    if isinstance(exc, FlowNotFound):
        return problem(status.HTTP_404_NOT_FOUND, "flow_not_found", str(exc))
    if isinstance(exc, NodeNotFound):
        return problem(status.HTTP_404_NOT_FOUND, "hours_node_not_found", str(exc))
    if isinstance(exc, StaleFlow):
        return problem(
            status.HTTP_409_CONFLICT, "stale_flow", str(exc), current_hash=exc.current_hash
        )
    if isinstance(exc, FlowFileInvalid):
        return problem(
            status.HTTP_409_CONFLICT,
            "flow_file_invalid",
            "the flow file on disk does not load; fix it first",
            issues=issues_out(exc.issues),
        )
    if isinstance(exc, HoursEditRejected):
        return problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "hours_rejected",
            "the flow check refused this change; nothing was saved",
            issues=issues_out(exc.issues),
        )
    return problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "hours_refused", str(exc))


@router.get("/api/flows/{flow}/hours", summary="A flow's opening hours, holidays, closures")
async def get_hours(flow: FlowName, _user: Supervisor, registry: Registry) -> FlowHours:
    try:
        return await load_hours(registry, flow)
    except HoursEditError as exc:
        raise edit_error(exc) from exc


@router.put(
    "/api/flows/{flow}/hours/{node_id}",
    summary="Change one hours node (checked like `guichet flow check`, audited)",
)
async def put_hours(
    flow: FlowName,
    node_id: Annotated[str, Path(pattern=NODE_ID, max_length=100)],
    body: HoursEditIn,
    user: Supervisor,
    registry: Registry,
    audit: Audit,
) -> SavedHoursOut:
    wanted = HoursFields.model_validate(body.model_dump(exclude={"base_hash"}))
    try:
        saved = await save_hours(registry, flow, node_id, wanted, body.base_hash)
    except HoursEditError as exc:
        raise edit_error(exc) from exc
    if saved.summary is not None:
        await audit.record(user, HOURS_CHANGED, Subject("flow", saved.state.flow), saved.summary)
    return SavedHoursOut(**saved.state.model_dump(), changed=saved.summary is not None)


@router.get("/supervisor/hours", response_class=HTMLResponse, include_in_schema=False)
async def hours_page(
    request: Request,
    user: Supervisor,
    state: State,
    registry: Registry,
    flow: Annotated[str | None, Query(pattern=FLOW_NAME)] = None,
) -> HTMLResponse:
    translator = state.translator
    lang = translator.language(user.ui_language)
    names = registry.names()
    chosen = flow if flow in names else (names[0] if names else None)
    response = state.templates.TemplateResponse(
        request,
        "hours.html",
        {
            "user": user,
            "lang": lang,
            "flows": names,
            "flow": chosen,
            "page": {"flow": chosen, "texts": page_texts(translator, lang, TEXT_PREFIX)},
        },
    )
    response.headers["Cache-Control"] = "no-store"
    return response
