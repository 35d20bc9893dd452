"""The web console. For now: the IVR's status (flows in service, rejected reloads).
Agent console, supervisor wallboard and authentication come with the CTI and supervisor issues.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from ivr.registry import FlowRegistry

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

LABELS: dict[str, dict[str, str]] = {
    "fr": {
        "title": "Guichet — état du serveur vocal",
        "flows": "Flux en service",
        "name": "Nom",
        "version": "Version",
        "since": "Depuis",
        "rejected": "Modifications refusées",
        "none": "Aucun flux chargé",
    },
    "nl": {
        "title": "Guichet — status van de spraakserver",
        "flows": "Actieve flows",
        "name": "Naam",
        "version": "Versie",
        "since": "Sinds",
        "rejected": "Geweigerde wijzigingen",
        "none": "Geen flows geladen",
    },
    "en": {
        "title": "Guichet — voice server status",
        "flows": "Flows in service",
        "name": "Name",
        "version": "Version",
        "since": "Since",
        "rejected": "Rejected changes",
        "none": "No flow loaded",
    },
}


def create_app(registry: FlowRegistry) -> FastAPI:
    app = FastAPI(title="Guichet", version="0.1.0")

    def flows_state() -> dict[str, Any]:
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

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "flows": registry.names()}

    @app.get("/api/flows")
    async def api_flows() -> dict[str, Any]:
        return flows_state()

    @app.get("/", response_class=HTMLResponse)
    async def status(request: Request, lang: str = "fr") -> HTMLResponse:
        labels = LABELS.get(lang, LABELS["fr"])
        return TEMPLATES.TemplateResponse(
            request, "status.html", {"t": labels, "lang": lang, **flows_state()}
        )

    return app
