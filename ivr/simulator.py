"""Terminal call legs for `guichet flow simulate`: a scripted caller and an interactive one.

Both drive the production engine; only the medium differs (text on a screen, typed keys).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ivr.leg import CallerHungUp, Collected
from ivr.prompts import Prompt

if TYPE_CHECKING:
    from ivr.engine import CallResult

HANGUP_WORDS = {"h", "hangup", "q", "quit"}


def parse_keys(entry: str, *, max_digits: int, terminator: str | None) -> Collected:
    """One caller entry: `""` is silence, `#` alone a skip, `123#` digits ended by `#`."""
    entry = entry.strip()
    if entry.lower() in HANGUP_WORDS:
        raise CallerHungUp
    if not entry:
        return Collected("", timed_out=True)
    if terminator and terminator in entry:
        return Collected(entry.split(terminator, 1)[0][:max_digits], terminated=True)
    return Collected(entry[:max_digits], timed_out=len(entry) < max_digits and max_digits > 1)


@dataclass
class _SimLegBase:
    call_id: str
    caller: str
    kind: str = "simulator"
    variables: dict[str, str] = field(default_factory=dict)
    language: str | None = None
    hung_up: bool = False
    on_prompt: Callable[[Prompt], None] | None = None

    def _show(self, prompts: Sequence[Prompt]) -> None:
        if self.on_prompt:
            for prompt in prompts:
                self.on_prompt(prompt)

    async def play(self, prompts: Sequence[Prompt], *, interruptible: bool = True) -> str | None:
        self._show(prompts)
        return None

    async def collect(
        self,
        prompts: Sequence[Prompt],
        *,
        max_digits: int,
        timeout: float,
        terminator: str | None = "#",
    ) -> Collected:
        self._show(prompts)
        entry = await self._next_entry()
        return parse_keys(entry, max_digits=max_digits, terminator=terminator)

    async def _next_entry(self) -> str:
        """The caller's next entry (keys typed, or silence); CallerHungUp when they are gone."""
        raise NotImplementedError

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value

    async def set_language(self, lang: str) -> None:
        self.language = lang

    async def hand_off(self, result: CallResult) -> None:
        return None

    async def hangup(self) -> None:
        self.hung_up = True


@dataclass
class ScriptedLeg(_SimLegBase):
    """A caller who answers each question with the next entry of a script; when the script
    runs out the caller hangs up (as a real caller who has nothing left to say)."""

    script: list[str] = field(default_factory=list)

    async def _next_entry(self) -> str:
        if not self.script:
            raise CallerHungUp
        return self.script.pop(0)


@dataclass
class InteractiveLeg(_SimLegBase):
    """A person at the terminal: Enter alone is silence, `h` hangs up."""

    ask: Callable[[], str] = input

    async def _next_entry(self) -> str:
        try:
            return await asyncio.to_thread(self.ask)
        except EOFError as exc:
            raise CallerHungUp from exc
