"""``GET /agent``: the agent's console page (pop, case screen, search, presence, call controls).

A server-rendered page with a little JavaScript (``static/agent.js``): the page carries its
strings in the user's language (a JSON data block, so the strict CSP holds), ``console.js``
carries the pushes, and every action is a call to the REST API of this package. Mount it all
with `agent_routers()`.
"""

from __future__ import annotations

from typing import get_args

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from console.deps import State
from console.i18n import Translator, page_texts
from console.routers import calls, cases, citizens, presence, softphone
from console.routers.cases import DISPOSITIONS, Agent, CaseStatus
from console.routers.presence import PAUSE_REASONS

router = APIRouter(tags=["agent"])
TEXT_PREFIX = "agent."


def agent_routers() -> list[APIRouter]:
    """The page and its API, for ``create_console_app(extra_routers=...)``."""
    return [
        router,
        cases.router,
        citizens.router,
        calls.router,
        presence.router,
        softphone.router,
    ]


def _labels(
    translator: Translator, lang: str, prefix: str, codes: tuple[str, ...]
) -> list[tuple[str, str]]:
    """(code, label) pairs: templates never build keys (tests/test_i18n.py checks keys)."""
    return [(code, translator.t(f"{prefix}{code}", lang)) for code in codes]


@router.get("/agent", response_class=HTMLResponse, include_in_schema=False)
async def agent_page(request: Request, user: Agent, state: State) -> HTMLResponse:
    translator = state.translator
    lang = translator.language(user.ui_language)
    response = state.templates.TemplateResponse(
        request,
        "agent.html",
        {
            "user": user,
            "lang": lang,
            "texts": page_texts(translator, lang, TEXT_PREFIX),
            "pause_reasons": _labels(translator, lang, "agent.pause_reason.", PAUSE_REASONS),
            "dispositions": _labels(translator, lang, "agent.disposition.", DISPOSITIONS),
            "statuses": _labels(translator, lang, "agent.case_status.", get_args(CaseStatus)),
        },
    )
    response.headers["Cache-Control"] = "no-store"  # it names the agent; nothing to cache
    return response
