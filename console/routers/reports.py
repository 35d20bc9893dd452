"""Reports for supervisors: ``GET /reports`` (page with charts) and the KPI table as JSON,
CSV and XLSX (``/api/reports/kpi``, ``.csv``, ``.xlsx``), computed by `crm_bridge.kpi`.

Query parameters, shared by the four routes: ``period`` (day, week, month), ``by`` (queue,
lang, request_type, all), ``since`` and ``until`` (local dates in Brussels, both included;
default: the last 31 days / 13 weeks / 12 months up to today), ``threshold`` (seconds, the
service-level target, default 20) and, for the exports, ``lang`` (fr, nl, en: the header
row's language; default the user's). The range is widened to whole periods.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from console.deps import State, require_role
from console.i18n import Translator, page_texts
from console.routers.cases import problem
from crm_bridge.kpi import (
    BRUSSELS,
    COLUMNS,
    DEFAULT_THRESHOLD_S,
    DIMENSIONS,
    PERIODS,
    Dimension,
    KpiRangeError,
    KpiTable,
    Period,
    kpi_table,
)
from crm_bridge.kpi_export import CSV_MEDIA_TYPE, XLSX_MEDIA_TYPE, to_csv, to_xlsx
from crm_bridge.users import UserView

router = APIRouter(tags=["reports"])
Supervisor = Annotated[UserView, Depends(require_role("supervisor"))]
TEXT_PREFIX = "reports."
DEFAULT_SPAN = {
    "day": timedelta(days=30),
    "week": timedelta(weeks=12),
    "month": timedelta(days=334),
}


def crm_engine(request: Request) -> AsyncEngine:
    engine = getattr(request.app.state, "crm_engine", None)
    if not isinstance(engine, AsyncEngine):
        raise problem(
            status.HTTP_503_SERVICE_UNAVAILABLE, "unavailable", "the report store is not set up"
        )
    return engine


Engine = Annotated[AsyncEngine, Depends(crm_engine)]


def today() -> date:
    return datetime.now(BRUSSELS).date()


async def build_table(
    engine: AsyncEngine,
    period: Period,
    by: Dimension,
    since: date | None,
    until: date | None,
    threshold: float,
) -> KpiTable:
    """The KPI table for local dates ``since``..``until`` (both included)."""
    last = until or today()
    first = since or last - DEFAULT_SPAN[period]
    if first > last:
        raise problem(422, "bad_range", "since must not be after until")
    start = datetime.combine(first, datetime.min.time(), tzinfo=BRUSSELS)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=BRUSSELS)
    try:
        return await kpi_table(engine, start, end, period=period, by=by, threshold=threshold)
    except KpiRangeError as exc:
        raise problem(422, "bad_range", str(exc)) from exc


class KpiQuery:
    """The shared query parameters, as one dependency."""

    def __init__(
        self,
        period: Annotated[Period, Query()] = "day",
        by: Annotated[Dimension, Query()] = "queue",
        since: Annotated[date | None, Query()] = None,
        until: Annotated[date | None, Query()] = None,
        threshold: Annotated[float, Query(ge=0, le=3600)] = DEFAULT_THRESHOLD_S,
    ) -> None:
        self.period, self.by, self.since, self.until = period, by, since, until
        self.threshold = threshold

    async def table(self, engine: AsyncEngine) -> KpiTable:
        return await build_table(
            engine, self.period, self.by, self.since, self.until, self.threshold
        )


Params = Annotated[KpiQuery, Depends()]
ExportLang = Annotated[Literal["fr", "nl", "en"] | None, Query()]


def export_labels(translator: Translator, lang: str, by: str) -> tuple[dict[str, str], str]:
    """Column headers in ``lang`` (the key column named after ``by``) and the label of an
    empty dimension value: for the CSV/XLSX exports and the CLI."""
    labels = {c.name: translator.t(f"reports.column.{c.name}", lang) for c in COLUMNS}
    labels["key"] = translator.t(f"reports.by.{by}", lang)
    none_label = translator.t("reports.key_all" if by == "all" else "reports.key_none", lang)
    return labels, none_label


def _filename(table: KpiTable, suffix: str) -> str:
    first = table.buckets[0].day.isoformat()
    last = (table.buckets[-1].end.astimezone(BRUSSELS).date() - timedelta(days=1)).isoformat()
    return f"guichet-kpi-{table.period}-{table.by}-{first}-{last}.{suffix}"


def _attachment(body: str | bytes, media_type: str, filename: str) -> Response:
    return Response(
        body,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/reports", response_class=HTMLResponse, include_in_schema=False)
async def reports_page(request: Request, user: Supervisor, state: State) -> HTMLResponse:
    translator = state.translator
    lang = translator.language(user.ui_language)
    last = today()
    response = state.templates.TemplateResponse(
        request,
        "reports.html",
        {
            "user": user,
            "lang": lang,
            "texts": page_texts(translator, lang, TEXT_PREFIX),
            "periods": [(p, translator.t(f"reports.period_{p}", lang)) for p in PERIODS],
            "dimensions": [(d, translator.t(f"reports.by.{d}", lang)) for d in DIMENSIONS],
            "columns": [c.name for c in COLUMNS],
            "kinds": {c.name: c.kind for c in COLUMNS},
            "since": (last - DEFAULT_SPAN["day"]).isoformat(),
            "until": last.isoformat(),
            "threshold": DEFAULT_THRESHOLD_S,
        },
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/api/reports/kpi")
async def kpi_json(_user: Supervisor, engine: Engine, params: Params) -> JSONResponse:
    """The KPI table: ``rows`` keyed by column name (rates as fractions, None without calls)."""
    table = await params.table(engine)
    return JSONResponse(table.to_dict(), headers={"Cache-Control": "no-store"})


@router.get("/api/reports/kpi.csv", response_class=Response)
async def kpi_csv(
    user: Supervisor, engine: Engine, state: State, params: Params, lang: ExportLang = None
) -> Response:
    table = await params.table(engine)
    labels, none_label = export_labels(state.translator, lang or user.ui_language, table.by)
    body = to_csv(table, labels, none_label=none_label)
    return _attachment(body.encode("utf-8"), CSV_MEDIA_TYPE, _filename(table, "csv"))


@router.get("/api/reports/kpi.xlsx", response_class=Response)
async def kpi_xlsx(
    user: Supervisor, engine: Engine, state: State, params: Params, lang: ExportLang = None
) -> Response:
    table = await params.table(engine)
    language = lang or user.ui_language
    labels, none_label = export_labels(state.translator, language, table.by)
    title = state.translator.t("reports.sheet", language)
    # openpyxl is CPU work: off the event loop
    body = await asyncio.to_thread(to_xlsx, table, labels, none_label=none_label, title=title)
    return _attachment(body, XLSX_MEDIA_TYPE, _filename(table, "xlsx"))
