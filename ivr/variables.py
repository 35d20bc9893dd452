"""The channel variables Guichet hands back to Asterisk: one list, used by the AGI leg,
the rendered `manager.conf` (`channelvars=`) and the CTI layer."""

from __future__ import annotations

from typing import Final

# Flow variable name -> Asterisk channel variable. Order is the `channelvars=` order.
EXPORTED: Final[dict[str, str]] = {
    "call_id": "GUICHET_CALL_ID",
    "case_id": "GUICHET_CASE_ID",
    "lang": "GUICHET_LANG",
    "request_type": "GUICHET_REQUEST_TYPE",
    "queue": "GUICHET_QUEUE",
    "outcome": "GUICHET_OUTCOME",
    "skills": "GUICHET_SKILLS",
    "priority": "GUICHET_PRIORITY",
    "transfer": "GUICHET_TRANSFER",
    "citizen_id": "GUICHET_CITIZEN_ID",
}

# Every channel variable Guichet may set, for `manager.conf` channelvars.
CHANNEL_VARIABLES: Final[tuple[str, ...]] = tuple(EXPORTED.values())

OUTCOMES: Final[tuple[str, ...]] = (
    "queued",
    "deflected",
    "closed",
    "callback",
    "transferred",
    "hangup",
)


def channel_variable(name: str) -> str:
    """`request_type` -> `GUICHET_REQUEST_TYPE`; custom flow variables get the same prefix."""
    return EXPORTED.get(name, f"GUICHET_{name.upper()}")
