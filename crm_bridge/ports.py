"""What the call path needs from the CRM side, as plain values and one protocol.

The IVR engine only sees `CrmPort`; the built-in SQL store and external CRM adapters
implement it. Values are frozen so a journey handed over cannot change under the writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from crm_bridge.case_facts import CallFacts


@dataclass(frozen=True, slots=True)
class CitizenSummary:
    """What an agent and the IVR need of a citizen; never the national number itself."""

    id: int
    first_name: str
    last_name: str
    preferred_language: str | None = None
    address: str | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class JourneyStep:
    """One node visited: digits are already masked when sensitive."""

    node: str
    kind: str
    at: datetime
    result: str | None = None  # next node id, or the outcome on the last step
    digits: str | None = None
    prompts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallJourney:
    """A whole IVR call, as stored for reports (deflection KPI) and the CTI pop."""

    call_id: str
    flow: str
    flow_hash: str
    leg: str  # agi | sip | simulator
    caller: str
    started_at: datetime
    ended_at: datetime
    outcome: str
    lang: str | None = None
    request_type: str | None = None
    queue: str | None = None
    citizen_id: int | None = None
    steps: tuple[JourneyStep, ...] = field(default_factory=tuple)

    @property
    def duration(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """A caller asked to be called back (outside opening hours, or instead of waiting)."""

    call_id: str
    flow: str
    caller: str
    requested_at: datetime
    lang: str | None = None
    request_type: str | None = None
    citizen_id: int | None = None


class CrmPort(Protocol):
    """What the IVR asks of the CRM during a call; async: nothing blocks the call path."""

    async def find_citizen_by_national_number(self, number: str) -> CitizenSummary | None: ...

    async def find_citizen_by_phone(self, phone: str) -> CitizenSummary | None: ...

    async def record_callback(self, request: CallbackRequest) -> None: ...

    async def save_journey(self, journey: CallJourney) -> None: ...


class CaseSink(Protocol):
    """Where the IVR hands a queued call's case: returns the reference for GUICHET_CASE_ID at
    once (the outbox writes the case when the store answers; the call never waits)."""

    async def submit(self, facts: CallFacts) -> str: ...
