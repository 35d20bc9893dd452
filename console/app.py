"""The IVR's status (flows in service, rejected reloads): page, JSON and health check.

`status_router` serves them inside the console (`console.factory.create_console_app`, where
they sit behind roles); `create_app` is the former stand-alone, unauthenticated app, kept
until `guichet serve` builds the full console.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from console.i18n import Translator
from ivr.registry import FlowRegistry

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATUS_LABELS = ("title", "flows", "name", "version", "since", "rejected", "none")


def flows_state(registry: FlowRegistry) -> dict[str, Any]:
    rejected = [e for e in registry.events if not e.accepted][-20:]
    return {
        "flows": [
            {
                "name": f.name,
                "hash": f.content_hash,
                "path": str(f.path),
                "loaded_at": f.loaded_at.isoformat(),
                "queues": f.queue_names(),
            }
            for f in registry.flows()
        ],
        "rejected": [
            {"name": e.name, "path": str(e.path), "issues": [str(i) for i in e.issues]}
            for e in rejected
        ],
    }


def status_router(
    registry: FlowRegistry,
    *,
    templates: Jinja2Templates,
    translator: Translator,
    page_path: str = "/",
    guard: Sequence[Depends] = (),
) -> APIRouter:
    """``/healthz`` (always open: load balancers), ``/api/flows`` and the status page, the
    last two behind ``guard`` (role dependencies)."""
    router = APIRouter()

    @router.get("/healthz", tags=["status"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "flows": registry.names()}

    @router.get("/api/flows", tags=["status"], dependencies=list(guard))
    async def api_flows() -> dict[str, Any]:
        return flows_state(registry)

    @router.get(page_path, response_class=HTMLResponse, dependencies=list(guard))
    async def status(request: Request, lang: str | None = None) -> HTMLResponse:
        principal = getattr(request.state, "principal", None)
        default = principal.user.ui_language if principal is not None else None
        chosen = translator.language(lang or default)
        labels = {key: translator.t(f"status.{key}", chosen) for key in STATUS_LABELS}
        return templates.TemplateResponse(
            request, "status.html", {"t": labels, "lang": chosen, **flows_state(registry)}
        )

    return router


def create_app(registry: FlowRegistry) -> FastAPI:
    """The status page alone, without sign-in (superseded by `create_console_app`)."""
    app = FastAPI(title="Guichet", version="0.1.0")
    app.include_router(
        status_router(
            registry,
            templates=Jinja2Templates(directory=str(TEMPLATES_DIR)),
            translator=Translator.load(),
        )
    )
    return app
