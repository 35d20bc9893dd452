"""Plain values crossing into the case store: what the IVR knows at hand-off, what an agent
sees of a case. Frozen, so a value queued in the outbox cannot change under the writer, and
JSON round-trippable, so the outbox can spool it to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from crm_bridge.ports import CallJourney
from crm_bridge.utc import ensure_utc, utc_now


@dataclass(frozen=True, slots=True)
class CallFacts:
    """A call handed to a queue: everything the case needs, nothing the IVR must wait for.

    ``reference`` is the one handed to Asterisk (GUICHET_CASE_ID); the outbox fills it in.
    ``journey`` is the `CallJourney` or just its call id: only the id is stored, the journey
    itself is written by `BufferedCrm`.
    """

    call_id: str
    caller: str | None = None
    lang: str | None = None
    request_type: str | None = None
    citizen_id: int | None = None
    journey: CallJourney | str | None = None
    queue: str | None = None
    priority: int = 0
    flow_hash: str | None = None
    channel: str = "phone"
    direction: str = "inbound"
    started_at: datetime | None = None
    reference: str | None = None

    @property
    def journey_call_id(self) -> str | None:
        return self.journey.call_id if isinstance(self.journey, CallJourney) else self.journey

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["journey"] = self.journey_call_id
        if (started := self.started_at) is not None:
            # A naive value stays naive (and is refused by the store, not by the spool).
            aware = started.tzinfo is not None and started.utcoffset() is not None
            data["started_at"] = (ensure_utc(started) if aware else started).isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallFacts:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("started_at"), str):
            values["started_at"] = datetime.fromisoformat(values["started_at"])
        return cls(**values)

    @classmethod
    def from_journey(
        cls, journey: CallJourney, *, priority: int = 0, reference: str | None = None
    ) -> CallFacts:
        """Facts of a finished journey (the IVR builds them from its context at hand-off)."""
        return cls(
            call_id=journey.call_id,
            caller=journey.caller or None,
            lang=journey.lang,
            request_type=journey.request_type,
            citizen_id=journey.citizen_id,
            journey=journey.call_id,
            queue=journey.queue,
            priority=priority,
            flow_hash=journey.flow_hash,
            started_at=journey.started_at,
            reference=reference,
        )


@dataclass(frozen=True, slots=True)
class InteractionFacts:
    """A contact to append to an existing case (a transferred call, an e-mail later)."""

    kind: str = "call"
    call_id: str | None = None
    direction: str = "inbound"
    contact: str | None = None
    queue: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    journey_call_id: str | None = None
    summary: str | None = None

    def started(self) -> datetime:
        return ensure_utc(self.started_at) if self.started_at is not None else utc_now()


@dataclass(frozen=True, slots=True)
class CaseView:
    id: int
    reference: str
    status: str
    category: str | None
    language: str | None
    priority: int
    queue: str | None
    citizen_id: int | None
    caller: str | None
    channel: str
    assigned_agent_id: int | None
    disposition: str | None
    flow_hash: str | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True, slots=True)
class InteractionView:
    id: int
    case_reference: str
    kind: str
    call_id: str | None
    direction: str
    contact: str | None
    queue: str | None
    started_at: datetime
    ended_at: datetime | None
    journey_call_id: str | None
    summary: str | None


@dataclass(frozen=True, slots=True)
class NoteView:
    id: int
    case_reference: str
    author_id: int | None
    text: str
    created_at: datetime
