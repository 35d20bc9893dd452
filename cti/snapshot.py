"""What Asterisk says exists right now, from the list actions Guichet sends after each login:
`CoreShowChannels` (channels, their channelvars, application and bridge), `QueueStatus`
(members and waiting callers) and `QueueSummary`.

Header names differ between these lists and the live events (agent-pause notes):
QueueStatus' `QueueMember` says `Name`/`Location`, events say `MemberName`/`Interface`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_SUFFIX = re.compile(r"-[0-9a-f]{8}(?:;\d+)?$")


def interface_of(channel: str) -> str:
    """`Local/agent1@agents-00000001;1` -> `Local/agent1@agents`, `PJSIP/agent1-0000002a` ->
    `PJSIP/agent1`: the device (queue member interface) a channel belongs to."""
    return _SUFFIX.sub("", channel)


def text(headers: Mapping[str, Any], key: str, default: str = "") -> str:
    value = headers.get(key, default)
    return value if isinstance(value, str) else default


def number(headers: Mapping[str, Any], key: str) -> int | None:
    try:
        return int(text(headers, key))
    except ValueError:
        return None


def chanvars(headers: Mapping[str, Any], family: str = "ChanVariable") -> dict[str, str]:
    value = headers.get(family)
    return dict(value) if isinstance(value, dict) else {}


def flag(headers: Mapping[str, Any], key: str) -> bool:
    return text(headers, key).lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class SnapChannel:
    uniqueid: str
    name: str
    linkedid: str
    state: str
    vars: dict[str, str]
    application: str
    app_data: str
    bridge_id: str
    caller_number: str
    caller_name: str


@dataclass(frozen=True)
class SnapMember:
    queue: str
    interface: str
    name: str
    state_interface: str | None
    paused: bool
    paused_reason: str
    in_call: bool
    status: int | None
    wrapuptime: int | None
    penalty: int = 0


@dataclass(frozen=True)
class SnapEntry:
    queue: str
    uniqueid: str
    channel: str
    position: int | None
    wait: int  # seconds already waited


@dataclass(frozen=True)
class Snapshot:
    channels: tuple[SnapChannel, ...] = ()
    members: tuple[SnapMember, ...] = ()
    entries: tuple[SnapEntry, ...] = ()
    queues: tuple[str, ...] = ()
    summary: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_lists(
        cls,
        channels: Iterable[Mapping[str, Any]],
        queue_status: Iterable[Mapping[str, Any]],
        queue_summary: Iterable[Mapping[str, Any]] = (),
    ) -> Snapshot:
        """Build from the messages of the three lists (the Response and `...Complete`
        messages may be included: they are skipped)."""
        chans = tuple(
            SnapChannel(
                uniqueid=text(h, "Uniqueid"),
                name=text(h, "Channel"),
                linkedid=text(h, "Linkedid"),
                state=text(h, "ChannelStateDesc"),
                vars=chanvars(h),
                application=text(h, "Application"),
                app_data=text(h, "ApplicationData"),
                bridge_id=text(h, "BridgeId"),
                caller_number=text(h, "CallerIDNum"),
                caller_name=text(h, "CallerIDName"),
            )
            for h in channels
            if text(h, "Event") == "CoreShowChannel"
        )
        members: list[SnapMember] = []
        entries: list[SnapEntry] = []
        queues: list[str] = []
        for h in queue_status:
            kind = text(h, "Event")
            if kind == "QueueParams":
                queues.append(text(h, "Queue"))
            elif kind == "QueueMember":
                members.append(
                    SnapMember(
                        queue=text(h, "Queue"),
                        interface=text(h, "Location"),
                        name=text(h, "Name"),
                        state_interface=text(h, "StateInterface") or None,
                        paused=flag(h, "Paused"),
                        paused_reason=text(h, "PausedReason"),
                        in_call=flag(h, "InCall"),
                        status=number(h, "Status"),
                        wrapuptime=number(h, "Wrapuptime"),
                        penalty=number(h, "Penalty") or 0,
                    )
                )
            elif kind == "QueueEntry":
                entries.append(
                    SnapEntry(
                        queue=text(h, "Queue"),
                        uniqueid=text(h, "Uniqueid"),
                        channel=text(h, "Channel"),
                        position=number(h, "Position"),
                        wait=number(h, "Wait") or 0,
                    )
                )
        summary = {
            text(h, "Queue"): {k: v for k, v in h.items() if isinstance(v, str)}
            for h in queue_summary
            if text(h, "Event") == "QueueSummary"
        }
        return cls(chans, tuple(members), tuple(entries), tuple(queues), summary)
