"""SQL tables of the built-in CRM: the citizen directory, IVR call journeys, callback requests.

All datetimes are aware UTC (see `crm_bridge.utc`). The national number is the register
key: it is excluded from ``repr``/``str`` so a model logged by accident does not leak it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, CheckConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from crm_bridge.utc import UtcDateTime, utc_now

LANGUAGES: tuple[str, ...] = ("fr", "nl", "en", "de")
NATIONAL_NUMBER_LENGTH = 11
PHONE_MAX_LENGTH = 32
POSTAL_CODE_MAX_LENGTH = 16
DEFLECTED = "deflected"
SIMULATOR_LEG = "simulator"
CALLBACK_PENDING = "pending"

_JSON = JSON().with_variant(JSONB(), "postgresql")


class Citizen(SQLModel, table=True):
    """One person of the directory, keyed by national (or BIS) number."""

    __tablename__: ClassVar[Any] = "citizen"
    __table_args__ = (
        CheckConstraint(
            f"length(national_number) = {NATIONAL_NUMBER_LENGTH}", name="ck_citizen_nn_length"
        ),
        CheckConstraint(
            "preferred_language IN ({})".format(", ".join(f"'{lang}'" for lang in LANGUAGES)),
            name="ck_citizen_language",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    national_number: str = Field(
        max_length=NATIONAL_NUMBER_LENGTH, unique=True, index=True, repr=False
    )
    first_name: str
    last_name: str
    preferred_language: str | None = Field(default=None, max_length=2)
    street: str | None = None
    postal_code: str | None = Field(default=None, max_length=POSTAL_CODE_MAX_LENGTH)
    city: str | None = None
    phone: str | None = Field(default=None, max_length=PHONE_MAX_LENGTH, index=True)
    email: str | None = None
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    updated_at: datetime = Field(
        default_factory=utc_now, sa_type=UtcDateTime, sa_column_kwargs={"onupdate": utc_now}
    )

    def __repr_args__(self) -> Any:
        # Belt and braces next to repr=False: SQLModel table models build repr themselves.
        return [(k, v) for k, v in super().__repr_args__() if k != "national_number"]

    @property
    def address(self) -> str | None:
        """``Rue de la Loi 16, 1000 Bruxelles``; None when no part is known."""
        locality = " ".join(p for p in (self.postal_code, self.city) if p)
        parts = [p for p in (self.street, locality) if p]
        return ", ".join(parts) or None


class CallJourneyRecord(SQLModel, table=True):
    """A finished IVR call: what the deflection report and the CTI pop read."""

    __tablename__: ClassVar[Any] = "call_journey"

    id: int | None = Field(default=None, primary_key=True)
    call_id: str = Field(unique=True, index=True)
    flow: str
    flow_hash: str
    leg: str
    caller: str
    started_at: datetime = Field(sa_type=UtcDateTime, index=True)
    ended_at: datetime = Field(sa_type=UtcDateTime)
    duration_s: float
    outcome: str = Field(index=True)
    lang: str | None = None
    request_type: str | None = Field(default=None, index=True)
    queue: str | None = None
    # SET NULL: erasing a citizen (GDPR) keeps the anonymous call statistics.
    citizen_id: int | None = Field(
        default=None, foreign_key="citizen.id", ondelete="SET NULL", index=True
    )
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_type=_JSON)


class CallbackRecord(SQLModel, table=True):
    """A callback an agent still has to make (or has made: see ``status``).

    One per call: ``call_id`` is unique so a retried write cannot ring the citizen twice.
    """

    __tablename__: ClassVar[Any] = "callback_request"

    id: int | None = Field(default=None, primary_key=True)
    call_id: str = Field(unique=True, index=True)
    flow: str
    caller: str
    requested_at: datetime = Field(sa_type=UtcDateTime)
    lang: str | None = None
    request_type: str | None = None
    citizen_id: int | None = Field(
        default=None, foreign_key="citizen.id", ondelete="SET NULL", index=True
    )
    status: str = Field(default=CALLBACK_PENDING, index=True)
