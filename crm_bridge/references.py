"""Case references agents read out (``C-2026-0K7Q2M-X9``), made without asking the database.

The IVR hands the reference to Asterisk (GUICHET_CASE_ID) at once, even while the store is
away, so it cannot come from a sequence. Six Crockford base-32 characters count tenths of a
second since New Year in Brussels, made strictly increasing within a process (so one Guichet
never repeats itself, bursts included); two random characters keep two Guichet servers apart.
Six random characters alone would collide within a year at a busy federal service (birthday
bound: ~40 000 cases give even odds).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from crm_bridge.utc import utc_now

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
TICK_DIGITS = 6
RANDOM_DIGITS = 2
BRUSSELS = ZoneInfo("Europe/Brussels")
REFERENCE_RE = re.compile(
    rf"^C-(\d{{4}})-([{ALPHABET}]{{{TICK_DIGITS}}})-([{ALPHABET}]{{{RANDOM_DIGITS}}})$"
)
# What people type for Crockford digits they misread.
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1", " ": "", "_": "-"})


def _encode(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, rest = divmod(value, len(ALPHABET))
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits))


class ReferenceGenerator:
    """Callable that returns a fresh reference; thread-safe, strictly increasing per process."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = utc_now,
        tz: ZoneInfo = BRUSSELS,
        random_part: Callable[[], str] | None = None,
    ) -> None:
        self._clock = clock
        self._tz = tz
        self._random = random_part or (
            lambda: "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_DIGITS))
        )
        self._lock = threading.Lock()
        self._last: tuple[int, int] = (0, -1)  # (year, tick)

    def __call__(self) -> str:
        now = self._clock().astimezone(self._tz)
        new_year = datetime(now.year, 1, 1, tzinfo=self._tz)
        tick = int((now - new_year).total_seconds() * 10)
        with self._lock:
            year, last = self._last
            if year == now.year and tick <= last:
                tick = last + 1  # same tenth of a second, or the clock stepped back
            self._last = (now.year, tick)
        return f"C-{now.year}-{_encode(tick, TICK_DIGITS)}-{self._random()}"


new_reference = ReferenceGenerator()


def normalise_reference(value: str) -> str:
    """Upper-case and repair what an agent types (``c-2026-0k7q2m-x9``, O for 0, I/L for 1).

    Anything that still is not a reference is returned stripped and upper-cased: the lookup
    simply finds nothing.
    """
    upper = value.strip().upper()
    if REFERENCE_RE.match(upper):
        return upper
    head, _, rest = upper.partition("-")
    repaired = f"{head}-{rest.translate(_CONFUSABLE)}" if rest else upper
    return repaired if REFERENCE_RE.match(repaired) else upper
