"""The flow file format: pydantic models parsed once at the edge; the engine never sees raw dicts.

`guichet flow schema` prints the JSON Schema of `Flow` for editor completion.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

Lang = Literal["fr", "nl", "en", "de"]
Outcome = Literal["queued", "deflected", "closed", "callback", "transferred", "hangup"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NODE_ID = r"^[A-Za-z][A-Za-z0-9_-]*$"
VAR_NAME = r"^[a-z][a-z0-9_]*$"


def _all_languages() -> list[Lang]:
    return ["fr", "nl", "en"]


def _brussels_order() -> list[Lang]:
    return ["fr", "nl"]


def _as_list(value: object) -> object:
    """A single prompt key may be written without brackets."""
    return [value] if isinstance(value, str) else value


PromptKeys = Annotated[list[str], BeforeValidator(_as_list)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeBase(_Model):
    """What every node kind shares."""

    description: str | None = None
    hangup_outcome: Outcome | None = Field(
        default=None,
        description="Outcome when the caller hangs up in this node (e.g. `deflected` on a FAQ).",
    )
    max_visits: int | None = Field(
        default=None, ge=1, le=50, description="Loop bound: visits allowed before `on_max_visits`."
    )
    on_max_visits: str | None = Field(
        default=None, description="Where to go once `max_visits` is used up (default: hang up)."
    )

    def edges(self) -> list[tuple[str, str]]:
        """(label, target node id) for every way out of this node."""
        return [("max visits", self.on_max_visits)] if self.on_max_visits else []


class Choice(_Model):
    next: str
    set: dict[str, str] = Field(default_factory=dict, description="Call variables to set.")


class MenuNode(NodeBase):
    """Play a prompt, read one key, branch on it."""

    kind: Literal["menu"]
    prompt: PromptKeys
    choices: dict[str, str | Choice]
    invalid_prompt: PromptKeys = Field(default_factory=list)
    timeout_prompt: PromptKeys = Field(default_factory=list)
    retries: int = Field(default=3, ge=1, le=10)
    timeout: float = Field(default=5.0, gt=0, le=60)
    fallback: str = Field(description="Where to go when every attempt was invalid or silent.")

    @field_validator("choices")
    @classmethod
    def _keys_are_dtmf(cls, value: dict[str, str | Choice]) -> dict[str, str | Choice]:
        for key in value:
            if not re.fullmatch(r"[0-9*#]", key):
                raise ValueError(f"menu choice {key!r} is not a single phone key (0-9, * or #)")
        if not value:
            raise ValueError("a menu needs at least one choice")
        return value

    def choice(self, digit: str) -> Choice | None:
        found = self.choices.get(digit)
        return Choice(next=found) if isinstance(found, str) else found

    def edges(self) -> list[tuple[str, str]]:
        out = [(digit, c.next) for digit in self.choices if (c := self.choice(digit))]
        return [*out, ("fallback", self.fallback), *super().edges()]


class InputNode(NodeBase):
    """Collect several digits (a national number, a phone number...) and validate them."""

    kind: Literal["input"]
    prompt: PromptKeys
    var: str = Field(pattern=VAR_NAME, description="Call variable that receives the digits.")
    min_length: int = Field(default=1, ge=1, le=32)
    max_length: int = Field(default=32, ge=1, le=32)
    terminator: Literal["#", "*"] | None = "#"
    timeout: float = Field(default=5.0, gt=0, le=60)
    validator: str | None = Field(
        default=None, description="Named validator, e.g. national_number."
    )
    invalid_prompt: PromptKeys = Field(default_factory=list)
    timeout_prompt: PromptKeys = Field(default_factory=list)
    retries: int = Field(default=3, ge=1, le=10)
    sensitive: bool | None = Field(
        default=None,
        description="Mask the digits in journeys and never hand them to Asterisk "
        "(default: yes for national-number validators).",
    )
    next: str
    skip: str | None = Field(default=None, description="Where `#` alone goes (no skip if unset).")
    fallback: str

    @model_validator(mode="after")
    def _lengths(self) -> InputNode:
        if self.min_length > self.max_length:
            raise ValueError("min_length is larger than max_length")
        return self

    def edges(self) -> list[tuple[str, str]]:
        out = [("valid", self.next), ("fallback", self.fallback)]
        if self.skip:
            out.append(("skip", self.skip))
        return [*out, *super().edges()]


class LookupNode(NodeBase):
    """Identify the citizen through crm_bridge: by a collected national number or the caller id."""

    kind: Literal["lookup"]
    by: Literal["national_number", "caller"]
    var: str | None = Field(default=None, pattern=VAR_NAME, description="Variable with the number.")
    found: str
    not_found: str

    @model_validator(mode="after")
    def _needs_var(self) -> LookupNode:
        if self.by == "national_number" and not self.var:
            raise ValueError("a national_number lookup needs `var` (the input node's variable)")
        return self

    def edges(self) -> list[tuple[str, str]]:
        return [("found", self.found), ("not found", self.not_found), *super().edges()]


class MessageNode(NodeBase):
    """Play one or more prompts (FAQ deflection, information), then go on."""

    kind: Literal["message"]
    prompt: PromptKeys
    interruptible: bool = True
    next: str

    def edges(self) -> list[tuple[str, str]]:
        return [("next", self.next), *super().edges()]


def _parse_range(value: str) -> tuple[dt.time, dt.time]:
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", value)
    if not match:
        raise ValueError(f"{value!r} is not an opening range like 08:30-12:30")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h2 == 24 and m2 == 0:
        h2, m2 = 23, 59
    try:
        start, end = dt.time(h1, m1), dt.time(h2, m2)
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from exc
    if start >= end:
        raise ValueError(f"{value!r}: the range ends before it starts")
    return start, end


class TimeRange(_Model):
    start: dt.time
    end: dt.time

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        if isinstance(value, str):
            start, end = _parse_range(value)
            return {"start": start, "end": end}
        return value


class Closure(_Model):
    """An exceptional closure: a whole day, or a span of time."""

    date: dt.date | None = None
    start: dt.datetime | None = Field(default=None, alias="from")
    end: dt.datetime | None = Field(default=None, alias="to")
    reason: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Closure:
        if (self.date is None) == (self.start is None and self.end is None):
            raise ValueError("a closure has either `date`, or `from` and `to`")
        if self.date is None and (self.start is None or self.end is None or self.start >= self.end):
            raise ValueError("a closure span needs `from` before `to`")
        return self


class HolidayCalendar(_Model):
    country: str = Field(default="BE", description="ISO country code (python-holidays).")
    subdivision: str | None = Field(default=None, description="Region, e.g. BRU (if supported).")


class HoursNode(NodeBase):
    """Branch on opening hours, public holidays and exceptional closures."""

    kind: Literal["hours"]
    timezone: str = "Europe/Brussels"
    schedule: dict[Weekday, list[TimeRange]]
    holidays: HolidayCalendar | None = Field(default_factory=HolidayCalendar)
    closures: list[Closure] = Field(default_factory=list)
    open: str
    closed: str
    holiday: str | None = Field(default=None, description="Where holidays go (default: `closed`).")

    def edges(self) -> list[tuple[str, str]]:
        out = [("open", self.open), ("closed", self.closed)]
        if self.holiday:
            out.append(("holiday", self.holiday))
        return [*out, *super().edges()]


class SetNode(NodeBase):
    """Set call variables (handed to Asterisk as GUICHET_<NAME>)."""

    kind: Literal["set"]
    vars: dict[str, str]
    next: str

    @field_validator("vars")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(VAR_NAME, name):
                raise ValueError(f"variable name {name!r} must be lower_snake_case")
            if name in {"call_id", "outcome"}:
                raise ValueError(f"variable {name!r} is set by Guichet itself")
        return value

    def edges(self) -> list[tuple[str, str]]:
        return [("next", self.next), *super().edges()]


class QueueNode(NodeBase):
    """Hand the call to an Asterisk queue: the flow ends with outcome `queued`."""

    kind: Literal["queue"]
    queue: str = Field(description="Queue name; `{lang}` and other variables are filled in.")
    skills: list[str] = Field(default_factory=list)
    priority: int = Field(default=0, ge=0, le=100)
    prompt: PromptKeys = Field(default_factory=list)


class TransferNode(NodeBase):
    """Send the call elsewhere (an extension of the `guichet-transfer` context)."""

    kind: Literal["transfer"]
    target: str = Field(pattern=r"^[A-Za-z0-9_+*#.-]+$")
    prompt: PromptKeys = Field(default_factory=list)


class CallbackNode(NodeBase):
    """Record a callback request with the caller's number; outcome `callback`."""

    kind: Literal["callback"]
    number_var: str | None = Field(
        default=None,
        pattern=VAR_NAME,
        description="Variable with a typed number (default: caller id).",
    )
    prompt: PromptKeys = Field(default_factory=list, description="Confirmation played.")
    next: str | None = None

    def edges(self) -> list[tuple[str, str]]:
        return ([("next", self.next)] if self.next else []) + super().edges()


class HangupNode(NodeBase):
    """Say goodbye and hang up."""

    kind: Literal["hangup"]
    prompt: PromptKeys = Field(default_factory=list)
    outcome: Outcome | None = Field(
        default=None,
        description="Outcome to record (default: the one already reached, else hangup).",
    )


Node = Annotated[
    MenuNode
    | InputNode
    | LookupNode
    | MessageNode
    | HoursNode
    | SetNode
    | QueueNode
    | TransferNode
    | CallbackNode
    | HangupNode,
    Field(discriminator="kind"),
]
NODE_KINDS: tuple[str, ...] = (
    "menu",
    "input",
    "lookup",
    "message",
    "hours",
    "set",
    "queue",
    "transfer",
    "callback",
    "hangup",
)


class Flow(_Model):
    """One IVR flow: nodes keyed by id, entered at `start`."""

    name: str | None = Field(default=None, description="Defaults to the file name.")
    description: str | None = None
    languages: list[Lang] = Field(default_factory=_all_languages, min_length=1)
    bilingual: list[Lang] = Field(
        default_factory=_brussels_order,
        min_length=1,
        description="Languages played, in order, before the caller chose one.",
    )
    prompts: str = Field(
        default="prompts.yaml", description="Prompt catalogue, relative to the flow."
    )
    start: str
    vars: dict[str, str] = Field(default_factory=dict, description="Initial call variables.")
    nodes: dict[str, Node]

    @field_validator("nodes")
    @classmethod
    def _ids(cls, value: dict[str, Node]) -> dict[str, Node]:
        for node_id in value:
            if not re.fullmatch(NODE_ID, node_id):
                raise ValueError(
                    f"node id {node_id!r} must start with a letter (letters, digits, _ -)"
                )
        return value
