"""``/api/citizens``: search the directory and open a citizen's record, for a case.

GDPR asks that every access to a person's data be traceable to a purpose. Opening a record
therefore needs the case it is for (``?case=``), an existing one, and the audit row
(``citizen.opened``: who, when, which citizen, the case as reason) is written *before* the
record is read: no trace, no data. Search results are summaries with the national number
masked; the full number never leaves the server.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel

from console.routers.cases import (
    Agent,
    Audit,
    CaseOut,
    Cases,
    Directory,
    InteractionOut,
    existing_case,
    problem,
)
from crm_bridge.citizen_search import MAX_QUERY_LENGTH, QueryKind, SearchError

router = APIRouter(prefix="/api/citizens", tags=["citizens"])
LAST_INTERACTIONS = 5


class CitizenSummaryOut(BaseModel):
    id: int
    first_name: str
    last_name: str
    national_number: str  # masked: *********28
    preferred_language: str | None
    address: str | None
    phone: str | None
    matched_on: str


class SearchOut(BaseModel):
    query_kind: QueryKind
    results: list[CitizenSummaryOut]
    truncated: bool  # more matched than shown: refine the search


class CitizenOut(BaseModel):
    id: int
    first_name: str
    last_name: str
    national_number: str  # masked
    preferred_language: str | None
    street: str | None
    postal_code: str | None
    city: str | None
    address: str | None
    phone: str | None
    email: str | None
    opened_for: str  # the case this access was recorded for
    open_cases: list[CaseOut]
    last_interactions: list[InteractionOut]


@router.get("", response_model=SearchOut, summary="Search citizens by name, phone or number")
async def search(
    _user: Agent,
    directory: Directory,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_LENGTH)],
) -> SearchOut:
    """11 digits search the national number (exactly, never partially) and the phone; a phone
    number its normalised form; letters the first and last names."""
    try:
        result = await directory.search(q)
    except SearchError as exc:
        raise problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "bad_query", str(exc)) from exc
    return SearchOut(
        query_kind=result.query_kind,
        results=[CitizenSummaryOut(**asdict(match)) for match in result.matches],
        truncated=result.truncated,
    )


@router.get(
    "/{citizen_id}",
    response_model=CitizenOut,
    summary="Open a citizen's record for a case (audited)",
    responses={404: {"description": "No such citizen or case"}},
)
async def open_record(
    citizen_id: int,
    user: Agent,
    directory: Directory,
    cases: Cases,
    audit: Audit,
    case: Annotated[str, Query(min_length=1, max_length=64, description="The case at hand")],
) -> CitizenOut:
    """Writes ``citizen.opened`` (the agent, the citizen, the case) before reading anything."""
    at_hand = await existing_case(cases, case)
    if not await directory.exists(citizen_id):
        raise problem(status.HTTP_404_NOT_FOUND, "citizen_not_found", f"no citizen {citizen_id}")
    await audit.citizen_opened(user, citizen_id, at_hand.reference)
    record = await directory.record(citizen_id)
    if record is None:  # erased between the two reads; the audit row stays (it was tried)
        raise problem(status.HTTP_404_NOT_FOUND, "citizen_not_found", f"no citizen {citizen_id}")
    open_cases = await cases.open_cases_of_citizen(citizen_id)
    last = await cases.last_interactions_of_citizen(citizen_id, LAST_INTERACTIONS)
    return CitizenOut(
        **asdict(record),
        opened_for=at_hand.reference,
        open_cases=[CaseOut.of(view) for view in open_cases],
        last_interactions=[InteractionOut.of(view) for view in last],
    )
