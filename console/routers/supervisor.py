"""``GET /supervisor``: the live wallboard page, and ``GET /api/wallboard``: its snapshot.

The page loads the snapshot once, then follows the ``wallboard.*`` pushes on the topic
``role:supervisor`` (console/wallboard.py); after a websocket resync it loads the snapshot
again. Calls waiting (for "reassign") come from the CTI's live state. Mount it all with
`supervisor_routers()`.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse

from console.deps import State, require_role
from console.i18n import page_texts
from console.routers import flow_hours, management, reports, supervision
from console.routers.cases import problem
from console.routers.presence import PAUSE_REASONS
from console.wallboard import Wallboard
from crm_bridge.users import UserView
from cti.pbx import SpyMode
from cti.state import CASE_ID, LANG, REQUEST_TYPE, CtiState

router = APIRouter(tags=["supervision"])
Supervisor = Annotated[UserView, Depends(require_role("supervisor"))]
TEXT_PREFIXES = ("wallboard.", "agent.pause_reason.", "agent.state.", "agent.errors.", "coaching.")


def supervisor_routers() -> list[APIRouter]:
    """The wallboard page and its snapshot, management, coaching (spy, hands, messages,
    audit) and the opening-hours editor, for ``extra_routers``."""
    return [
        router,
        management.router,
        supervision.router,
        supervision.me_router,
        flow_hours.router,
        reports.router,
    ]


def wallboard_service(request: Request) -> Wallboard:
    board = getattr(request.app.state, "wallboard", None)
    if not isinstance(board, Wallboard):
        raise problem(status.HTTP_503_SERVICE_UNAVAILABLE, "no_wallboard", "no wallboard (no CTI)")
    return board


Board = Annotated[Wallboard, Depends(wallboard_service)]


def waiting_calls(state: CtiState | None) -> list[dict[str, Any]]:
    """The calls waiting in a queue now, longest first."""
    if state is None:
        return []
    calls = [c for c in state.calls.values() if c.in_queue]
    calls.sort(key=lambda c: c.queued_at or 0.0)
    return [
        {
            "call_id": c.call_id,
            "queue": c.queue,
            "caller": c.caller_number,
            "since": c.queued_at,
            "case_reference": c.vars.get(CASE_ID) or None,
            "lang": c.vars.get(LANG) or None,
            "request_type": c.vars.get(REQUEST_TYPE) or None,
            "ringing": sorted({r.agent for r in c.rings.values()}),
        }
        for c in calls
    ]


def _cti(request: Request) -> CtiState | None:
    state = getattr(request.app.state, "cti_state", None)
    return state if isinstance(state, CtiState) else None


@router.get("/api/wallboard", summary="Everything on the wallboard now")
async def wallboard(request: Request, _user: Supervisor, board: Board) -> dict[str, Any]:
    data = board.snapshot()
    data["waiting_calls"] = waiting_calls(_cti(request))
    return data


@router.get("/api/wallboard/waiting", summary="Calls waiting in a queue now")
async def waiting(request: Request, _user: Supervisor) -> list[dict[str, Any]]:
    return waiting_calls(_cti(request))


@router.get("/api/wallboard/probes", summary="The mystery caller's latest test calls")
async def probes(request: Request, user: Supervisor) -> dict[str, Any]:
    """The newest result of every probe script, with its sentence in the user's language
    ("Last check 10:03: answered 0.4 s, menus 38 s, agent after 2 min 10 s")."""
    provider = getattr(request.app.state, "probe_results", None)
    if provider is None:
        return {"probes": [], "last_check": None}
    result: dict[str, Any] = await provider(user.ui_language)
    return result


@router.get("/supervisor", response_class=HTMLResponse, include_in_schema=False)
async def supervisor_page(request: Request, user: Supervisor, state: State) -> HTMLResponse:
    translator = state.translator
    lang = translator.language(user.ui_language)
    response = state.templates.TemplateResponse(
        request,
        "supervisor.html",
        {
            "user": user,
            "lang": lang,
            "texts": page_texts(translator, lang, *TEXT_PREFIXES),
            "config": {
                "pause_reasons": list(PAUSE_REASONS),
                "spy_modes": list(get_args(SpyMode)),
                "has_phone": bool(user.interface),
                "user_id": user.id,
                "username": user.username,
            },
        },
    )
    response.headers["Cache-Control"] = "no-store"
    return response
