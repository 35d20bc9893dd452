"""Builds the console: routers, templates, static files, security middleware, API docs.

Every route sits behind a role except ``/login``, ``/api/auth/token``, ``/healthz`` and
the static files. A browser asking for a page without a valid session is sent to the login
page; API clients get 401 (no or bad session) or 403 (role too low).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException

from console.app import TEMPLATES_DIR, status_router
from console.deps import (
    ConsoleConfig,
    ConsoleState,
    CurrentUser,
    State,
    credentials,
    require_role,
)
from console.i18n import Translator, install
from console.push import PushHub
from console.routers import auth, me, ws
from console.security import (
    OriginCheckMiddleware,
    SecurityHeadersMiddleware,
    SessionManager,
    SessionVersions,
    TokenSigner,
)
from crm_bridge.users import UserService
from ivr.registry import FlowRegistry

STATIC_DIR = Path(__file__).parent / "static"
DOCS_PATH = "/api/docs"
OPENAPI_PATH = "/api/openapi.json"
STATUS_PATH = "/status"


def create_console_app(
    *,
    engine: AsyncEngine,
    users: UserService,
    hub: PushHub,
    registry: FlowRegistry | None = None,
    extra_routers: Sequence[APIRouter] = (),
    config: ConsoleConfig | None = None,
    translator: Translator | None = None,
) -> FastAPI:
    """The console app. ``config`` defaults to `ConsoleConfig.from_settings` (secret from
    ``GUICHET_SECRET_KEY`` or ``var/secret.key``); ``engine`` holds the session versions
    (the audit trail) and should be the one ``users`` runs on."""
    config = config or ConsoleConfig.from_settings()
    translator = translator or Translator.load()
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    install(templates, translator)
    sessions = SessionManager(
        users, SessionVersions(engine), TokenSigner(config.secret_key, ttl=config.session_ttl)
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        hub.close_all()  # open sockets get 1001 and reconnect to the next server

    app = FastAPI(
        title="Guichet console API",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.console = ConsoleState(
        config=config,
        users=users,
        sessions=sessions,
        hub=hub,
        translator=translator,
        templates=templates,
    )
    app.add_middleware(OriginCheckMiddleware, trusted_origins=config.trusted_origins)
    app.add_middleware(SecurityHeadersMiddleware, connect_src=config.connect_sources)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    app.include_router(auth.router)
    app.include_router(me.router)
    app.include_router(ws.router)
    if registry is not None:
        app.include_router(
            status_router(
                registry,
                templates=templates,
                translator=translator,
                page_path=STATUS_PATH,
                guard=(Depends(require_role("supervisor")),),
            )
        )
    for router in extra_routers:
        app.include_router(router)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home(request: Request, user: CurrentUser, state: State) -> HTMLResponse:
        return state.templates.TemplateResponse(
            request,
            "base.html",
            {
                "user": user,
                "lang": user.ui_language,
                "status_url": STATUS_PATH if registry is not None else None,
            },
        )

    @app.get(OPENAPI_PATH, include_in_schema=False, dependencies=[Depends(require_role("agent"))])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(DOCS_PATH, include_in_schema=False, dependencies=[Depends(require_role("agent"))])
    async def docs(request: Request) -> HTMLResponse:
        # Swagger UI from our static files (npm, no CDN), started by a static script.
        return templates.TemplateResponse(request, "api_docs.html", {"openapi_url": OPENAPI_PATH})

    @app.exception_handler(StarletteHTTPException)
    async def to_login(request: Request, exc: StarletteHTTPException) -> Response:
        """A page (not the API) asked for without a valid session: go and sign in."""
        if exc.status_code == 401 and _wants_page(request):
            query: dict[str, Any] = {"next": request.url.path}
            if credentials(request) is not None:
                query["msg"] = "expired"
            return RedirectResponse(f"/login?{urlencode(query)}", status_code=303)
        return await http_exception_handler(request, exc)

    return app


def _wants_page(request: Request) -> bool:
    return (
        request.method == "GET"
        and (not request.url.path.startswith("/api/") or request.url.path == DOCS_PATH)
        and "text/html" in request.headers.get("accept", "")
    )
