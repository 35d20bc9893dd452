"""The demo PBX's answer to live coaching: what Asterisk does when a supervisor listens in.

The demo has no phones, so it plays Asterisk's side as the `supervisor-spy` recording shows
it: the Originate of `ChanSpy` on the supervisor's phone is "successfully queued", the phone
"answers" (OriginateResponse, Reason 4) and `ChanSpyStart` ties the spy leg to the agent's
member leg of the call being spied on; `PlayDTMF` (mode switch) is acknowledged; `Hangup` of
the spy leg gives `ChanSpyStop` then the leg's `Hangup`. The agent legs are learnt from the
AgentConnect / AgentComplete events the demo itself sends. Labelled demo like the rest.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

Emit = Callable[[bytes], Awaitable[None]]
_HEADER = re.compile(rb"^([A-Za-z0-9-]+): ?(.*)$", re.M)
ANSWER_DELAY = 0.3  # seconds: the supervisor's phone "picks up"


def _headers(raw: bytes) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace").rstrip("\r") for k, v in _HEADER.findall(raw)}


def _block(*lines: tuple[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in lines).encode() + b"\r\n"


class DemoSpy:
    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._legs: dict[str, tuple[str, str]] = {}  # member interface -> (channel, uniqueid)
        self._spies: dict[str, tuple[str, str, str]] = {}  # spy channel -> (uid, spied ch, uid)
        self._serial = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def observe(self, raw: bytes) -> None:
        """Follow the member legs of the calls the demo plays."""
        if b"Event: AgentConnect" in raw:
            h = _headers(raw)
            self._legs[h.get("Interface", "")] = (
                h.get("DestChannel", ""),
                h.get("DestUniqueid", ""),
            )
        elif b"Event: AgentComplete" in raw:
            self._legs.pop(_headers(raw).get("Interface", ""), None)

    def hook(self, _session: Any, action: Any) -> bytes | None:
        """An AmiPeer hook: answers the coaching actions, lets every other action through."""
        name = action.name
        if name == "originate" and action.get("Application") == "ChanSpy":
            return self._originate(action)
        if name == "playdtmf" and action.get("Channel") in self._spies:
            return self._ack("DTMF successfully queued")
        if name == "hangup" and action.get("Channel") in self._spies:
            self._later(self._stopped(action.get("Channel")))
            return self._ack("Channel Hungup")
        return None

    @staticmethod
    def _ack(message: str) -> bytes:
        return _block(("Response", "Success"), ("ActionID", "{id}"), ("Message", message))

    def _originate(self, action: Any) -> bytes:
        target = action.get("Data").split(",", 1)[0]  # Local/agent1@agents: the member prefix
        leg = next((v for k, v in self._legs.items() if k.startswith(target)), None)
        n = next(self._serial)
        channel = f"{action.get('Channel')}-{n:08x}"
        uniqueid = f"{int(time.time())}.{900000 + n}"
        self._later(self._answered(action, channel, uniqueid, leg))
        return self._ack("Originate successfully queued")

    async def _answered(
        self, action: Any, channel: str, uniqueid: str, leg: tuple[str, str] | None
    ) -> None:
        await asyncio.sleep(ANSWER_DELAY)
        await self._emit(
            _block(
                ("Event", "OriginateResponse"),
                ("Privilege", "call,all"),
                ("ActionID", action.action_id),
                ("Response", "Success"),
                ("Channel", channel),
                ("Application", "ChanSpy"),
                ("Data", action.get("Data")),
                ("Reason", "4"),
                ("Uniqueid", uniqueid),
            )
        )
        if leg is None:  # nothing to spy on any more: ChanSpy ends, the leg hangs up
            await self._emit(self._hangup(channel, uniqueid))
            return
        self._spies[channel] = (uniqueid, *leg)
        await self._emit(self._chanspy("ChanSpyStart", channel, uniqueid, *leg))

    async def _stopped(self, channel: str) -> None:
        found = self._spies.pop(channel, None)
        if found is None:
            return
        uniqueid, spied, spied_uid = found
        await self._emit(self._chanspy("ChanSpyStop", channel, uniqueid, spied, spied_uid))
        await self._emit(self._hangup(channel, uniqueid))

    @staticmethod
    def _chanspy(event: str, channel: str, uniqueid: str, spied: str, spied_uid: str) -> bytes:
        return _block(
            ("Event", event),
            ("Privilege", "call,all"),
            ("SpyerChannel", channel),
            ("SpyerUniqueid", uniqueid),
            ("SpyeeChannel", spied),
            ("SpyeeUniqueid", spied_uid),
        )

    @staticmethod
    def _hangup(channel: str, uniqueid: str) -> bytes:
        return _block(
            ("Event", "Hangup"),
            ("Privilege", "call,all"),
            ("Channel", channel),
            ("Uniqueid", uniqueid),
            ("Linkedid", uniqueid),
            ("Cause", "16"),
            ("Cause-txt", "Normal Clearing"),
        )

    def _later(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
