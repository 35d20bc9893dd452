"""External CRMs: what Guichet asks of one, and the built-in store as the default adapter.

An adapter only moves data; deciding to reopen a case or to ask again for a national
number stays in Guichet. ``create_case`` must be idempotent on the call id (the outbox may
replay it); `CrmUnavailable` tells the outbox to retry later, `CrmRejected` to keep the
case aside. The REST adapter lives in `crm_bridge.adapters.rest` (it needs httpx).
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.case_facts import CallFacts, InteractionFacts
from crm_bridge.cases import CaseService
from crm_bridge.ports import CitizenSummary
from crm_bridge.store import SqlCrm


class ExternalCrmError(Exception):
    """A CRM call failed; the message never carries the payload (national numbers)."""


class CrmUnavailable(ExternalCrmError):
    """Unreachable, timed out, overloaded (5xx, 429): worth retrying later."""


class CrmRejected(ExternalCrmError):
    """The CRM refused the request (4xx, an unusable reply): retrying will not help."""


class CrmTemplateError(CrmRejected):
    """A payload template is broken or rendered something that is not the declared format."""


class ExternalCrm(Protocol):
    """The operations Guichet needs from a CRM."""

    async def create_case(self, facts: CallFacts) -> str:
        """Create (or reopen) the call's case; return the reference agents will see."""
        ...

    async def find_citizen_by_national_number(self, number: str) -> CitizenSummary | None: ...

    async def find_citizen_by_phone(self, phone: str) -> CitizenSummary | None: ...

    async def append_interaction(self, reference: str, interaction: InteractionFacts) -> None: ...


class BuiltinCrm:
    """The default adapter: Guichet's own SQL store (`SqlCrm` and `CaseService`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.store = SqlCrm(engine)
        self.cases = CaseService(engine)

    async def create_case(self, facts: CallFacts) -> str:
        return await self.cases.open_case_for_call(facts)

    async def find_citizen_by_national_number(self, number: str) -> CitizenSummary | None:
        return await self.store.find_citizen_by_national_number(number)

    async def find_citizen_by_phone(self, phone: str) -> CitizenSummary | None:
        return await self.store.find_citizen_by_phone(phone)

    async def append_interaction(self, reference: str, interaction: InteractionFacts) -> None:
        await self.cases.append_interaction(reference, interaction)


__all__ = [
    "BuiltinCrm",
    "CrmRejected",
    "CrmTemplateError",
    "CrmUnavailable",
    "ExternalCrm",
    "ExternalCrmError",
]
