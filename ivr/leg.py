"""The one interface the flow engine drives: a call leg.

FastAGI, a pyVoIP SIP call and the terminal simulator are three adapters of this interface,
so the simulator runs the production engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ivr.prompts import Prompt

if TYPE_CHECKING:
    from ivr.engine import CallResult

# Digits a caller may press to barge into a prompt.
DTMF_DIGITS = "0123456789*#"


class CallerHungUp(Exception):
    """The caller is gone; the engine ends the call quietly with outcome `hangup`."""


@dataclass(frozen=True, slots=True)
class Collected:
    """What a caller typed: the digits (terminator excluded) and how the entry ended."""

    digits: str
    terminated: bool = False  # the terminator key ended the entry (`#` alone: digits == "")
    timed_out: bool = False  # nothing more was typed within the timeout


async def gather_keys(
    first: str,
    next_key: Callable[[], Awaitable[str | None]],
    *,
    max_digits: int,
    terminator: str | None,
) -> Collected:
    """Keys into an entry, the same way on every leg: ``first`` (a key that cut the prompts,
    or ""), then each ``next_key()`` (None: the timeout passed) until the terminator, the
    maximum or a timeout ends it."""
    digits, key = "", first
    while True:
        if key:
            if key == terminator:
                return Collected(digits, terminated=True)
            digits += key
            if len(digits) >= max_digits:
                return Collected(digits)
        got = await next_key()
        if got is None:
            return Collected(digits, timed_out=True)
        key = got


class CallLeg(Protocol):
    """A live call the engine can speak to."""

    @property
    def kind(self) -> str:
        """`agi`, `sip` or `simulator`: stored with the journey."""
        ...

    @property
    def call_id(self) -> str:
        """The call's id (Asterisk Uniqueid of the citizen's channel on AGI)."""
        ...

    @property
    def caller(self) -> str:
        """The caller's number as presented (may be empty or `anonymous`)."""
        ...

    async def play(self, prompts: Sequence[Prompt], *, interruptible: bool = True) -> str | None:
        """Play prompts in order; return the digit that interrupted them, if any."""
        ...

    async def collect(
        self,
        prompts: Sequence[Prompt],
        *,
        max_digits: int,
        timeout: float,
        terminator: str | None = "#",
    ) -> Collected:
        """Play prompts (digits barge in), then collect up to `max_digits` digits.

        `timeout` (seconds) is the wait for the first digit after the prompts and between digits.
        """
        ...

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable (Asterisk name, e.g. GUICHET_LANG)."""
        ...

    async def set_language(self, lang: str) -> None:
        """Make the PBX's own prompts (queue position, voicemail) speak `lang`."""
        ...

    async def hand_off(self, result: CallResult) -> None:
        """Hand the call on once the flow is over (AGI: the dialplan continues to the queue)."""
        ...

    async def hangup(self) -> None:
        """Hang the call up from our side."""
        ...
