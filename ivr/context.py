"""Per-call state the node handlers read and write, and the prompt plumbing they share."""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from crm_bridge.ports import CitizenSummary, CrmPort, JourneyStep
from crm_bridge.privacy import mask_national_number
from ivr.leg import CallLeg, Collected
from ivr.loader import LoadedFlow
from ivr.prompts import Prompt, PromptCatalogue

log = logging.getLogger("guichet.ivr")


@functools.lru_cache(maxsize=4096)
def _prompt(catalogue: PromptCatalogue, key: str, lang: str) -> Prompt:
    """`catalogue.prompt`, once per catalogue, key and language: every call plays the same
    prompts. A reloaded flow brings a new catalogue object, so a stale entry is never hit."""
    return catalogue.prompt(key, lang)


@dataclass
class _OpenStep:
    node: str
    kind: str
    at: datetime
    prompts: list[str] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)


@dataclass
class CallContext:
    """Everything one call carries through the flow; handlers never touch the leg directly
    except through these methods, so journeys and prompt traces stay complete."""

    loaded: LoadedFlow
    leg: CallLeg
    crm: CrmPort
    clock: Callable[[], datetime]
    started_at: datetime
    vars: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # sensitive digits: never exported
    outcome: str | None = None
    hangup_requested: bool = False
    citizen: CitizenSummary | None = None
    path: list[str] = field(default_factory=list)
    prompts_played: list[str] = field(default_factory=list)
    steps: list[JourneyStep] = field(default_factory=list)
    visits: Counter[str] = field(default_factory=Counter)
    _step: _OpenStep | None = None

    @property
    def lang(self) -> str | None:
        return self.vars.get("lang")

    def prompts(self, keys: Sequence[str]) -> list[Prompt]:
        """Resolve keys to prompts: `key@lang` is pinned; otherwise the caller's language, or
        every bilingual language in order while none is chosen (FR then NL in Brussels)."""
        catalogue = self.loaded.catalogue
        lang = self.lang
        out: list[Prompt] = []
        for ref in keys:
            key, _, pinned = ref.partition("@")
            languages = [pinned] if pinned else [lang] if lang else self.loaded.flow.bilingual
            out.extend(_prompt(catalogue, key, language) for language in languages)
        return out

    def _note_prompts(self, keys: Sequence[str]) -> None:
        for ref in keys:
            key = ref.partition("@")[0]
            self.prompts_played.append(key)
            if self._step is not None:
                self._step.prompts.append(key)

    async def play(self, keys: Sequence[str], *, interruptible: bool = True) -> str | None:
        if not keys:
            return None
        self._note_prompts(keys)
        return await self.leg.play(self.prompts(keys), interruptible=interruptible)

    async def collect(
        self, keys: Sequence[str], *, max_digits: int, timeout: float, terminator: str | None
    ) -> Collected:
        self._note_prompts(keys)
        return await self.leg.collect(
            self.prompts(keys), max_digits=max_digits, timeout=timeout, terminator=terminator
        )

    def note_digits(self, got: Collected, *, sensitive: bool) -> None:
        """Keep what was typed for the journey; sensitive entries are masked before storing."""
        if self._step is None:
            return
        if got.timed_out and not got.digits:
            self._step.digits.append("(timeout)")
            return
        digits = mask_national_number(got.digits) if sensitive else got.digits
        self._step.digits.append(digits + ("#" if got.terminated else ""))

    async def set_vars(self, values: dict[str, str]) -> None:
        """Set call variables; a new language reaches the PBX at once so its prompts follow."""
        for name, value in values.items():
            changed = self.vars.get(name) != value
            self.vars[name] = value
            if name == "lang" and changed:
                await self.leg.set_language(value)

    def begin_step(self, node_id: str, kind: str) -> None:
        self.path.append(node_id)
        self._step = _OpenStep(node=node_id, kind=kind, at=self.clock())

    def end_step(self, result: str | None) -> None:
        step = self._step
        if step is None:
            return
        self.steps.append(
            JourneyStep(
                node=step.node,
                kind=step.kind,
                at=step.at,
                result=result,
                digits=",".join(step.digits) or None,
                prompts=tuple(step.prompts),
            )
        )
        self._step = None
