"""SQL table of the mystery caller (`guichet probe`): one row per test call it placed.

Times are seconds from the probe's INVITE: ``answered_s`` until the line answered (200 OK),
``ivr_s`` spent in the voice menu (until Guichet handed the call to a queue, or the call
ended), ``agent_s`` until an agent answered (from Guichet's own queue-call record matched
by the probe's caller number). ``greeting_score`` is the normalised cross-correlation of
what was heard against the expected prompt (0..1); ``greeting_ok`` the verdict.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import CheckConstraint, Text
from sqlmodel import Field, SQLModel

from crm_bridge.utc import UtcDateTime, utc_now

PROBE_OUTCOMES: tuple[str, ...] = ("passed", "failed", "no_answer", "error")


class ProbeRun(SQLModel, table=True):
    __tablename__: ClassVar[Any] = "probe_run"
    __table_args__ = (
        CheckConstraint(
            f"outcome IN ({', '.join(repr(v) for v in PROBE_OUTCOMES)})",
            name="ck_probe_run_outcome",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    script: str = Field(max_length=128, index=True)  # the probe script's name
    target: str = Field(max_length=255)  # the number or SIP URI called
    caller: str = Field(max_length=64)  # the probe's own number (how Guichet's records match)
    started_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime, index=True)
    outcome: str = Field(max_length=16, index=True)
    answered_s: float | None = None
    ivr_s: float | None = None
    agent_s: float | None = None
    greeting_ok: bool | None = None
    greeting_score: float | None = None
    digits: str | None = Field(default=None, max_length=64)  # DTMF sent
    recording: str | None = Field(default=None, max_length=512)  # WAV of what it heard
    detail: str | None = Field(default=None, sa_type=Text)  # why it failed, step by step
