"""Live coaching: supervisors listen to, whisper to or barge into agents' calls; agents raise
a hand; supervisors send agents private messages.

A spy session rings the supervisor's own phone, which then runs ChanSpy on the agent's leg
(`cti.pbx.Pbx.spy` with option `d`, so `change_mode` can switch it with a keypress). Its
life is told by the CTI, not assumed: ``starting`` while the phone rings, ``live`` from
`SpyStarted`, ``ended`` on `SpyStopped`, the call's `CallEnded`, a phone that never
answers, or the supervisor's stop. Every start (with its reason: GDPR wants a purpose),
mode change and end is an audit row, and every change is pushed as ``spy_session`` to the
``role:supervisor`` topic so every wallboard agrees.

Raised hands live in memory only (they matter while the call lasts): pushed as ``hand`` to
the supervisors and to the agent's own tabs, lowered by the agent, by the end of the call,
or when a supervisor joins that call. Private messages are stored, audited and pushed to
the recipient's stream only (``private_message``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import status

from console.push import PushHub
from console.routers.calls import calls_of, find_call
from crm_bridge.audit import CALL_SPIED, Actor, AuditLog, Identified, Subject
from crm_bridge.coaching_store import CoachingStore, MessageRecord, SpyRecord
from crm_bridge.users import UserService, UserView
from cti.ami import AmiError
from cti.bus import EventBus, Subscription, consume
from cti.events import CallEnded, Event, SpyEvent, SpyStarted, SpyStopped, agent_id
from cti.pbx import ActionFailed, Pbx, SpyMode
from cti.snapshot import interface_of
from cti.state import CtiState

log = logging.getLogger("guichet.console.coaching")

SpyState = Literal["starting", "live", "ended"]
SPY_MODE_CHANGED = "call.spy_mode"
SPY_ENDED = "call.spy_ended"
MESSAGE_SENT = "message.sent"
DEFAULT_REASON = "coaching"
SUPERVISORS = "supervisor"  # the push topic role:supervisor (admins read it too)


class CoachingRefused(Exception):
    """A request the service turns down; the router makes it an HTTP problem."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code, self.code, self.message = status_code, code, message


@dataclass
class LiveSpy:
    """A session not ended yet, as this node follows it."""

    record: SpyRecord
    supervisor: UserView
    phone: str  # the supervisor's interface, PJSIP/sup1
    mode: SpyMode
    state: SpyState = "starting"
    spy_channel: str | None = None
    stopping: bool = False  # stopped while the phone still rang: hang up when it answers
    stopped_by: UserView | None = None  # who asked to stop (ChanSpyStop may come first)
    end_reason: str | None = None
    ended_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def call_id(self) -> str:
        return self.record.call_id

    def view(self) -> dict[str, Any]:
        """The ``spy_session`` push and the API's session JSON."""
        return {
            "id": self.id,
            "call_id": self.call_id,
            "agent": self.record.agent,
            "case_reference": self.record.case_reference,
            "supervisor": self.supervisor.username,
            "supervisor_name": self.supervisor.display_name,
            "mode": self.mode,
            "state": self.state,
            "reason": self.record.reason,
            "started_at": _iso(self.record.started_at),
            "ended_at": _iso(self.ended_at) if self.ended_at else None,
            "end_reason": self.end_reason,
        }


@dataclass(frozen=True, slots=True)
class Hand:
    agent: str
    user_id: int
    display_name: str
    call_id: str | None
    raised: bool
    at: str


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


class Coaching:
    """The service behind ``/api/supervision`` (``app.state.coaching``). `pbx` and `cti` may
    be set after construction (None: no Asterisk, spying answers 503)."""

    def __init__(
        self,
        *,
        hub: PushHub,
        store: CoachingStore,
        audit: AuditLog,
        users: UserService,
        pbx: Pbx | None = None,
        cti: CtiState | None = None,
        ring_timeout: float = 10.0,
    ) -> None:
        self.hub, self.store, self.audit, self.users = hub, store, audit, users
        self.pbx, self.cti = pbx, cti
        self.ring_timeout = ring_timeout
        self._spies: dict[int, LiveSpy] = {}  # session id -> not ended
        self._reserved: set[int] = set()  # supervisors whose start is being written
        self._hands: dict[int, Hand] = {}  # user id -> raised hand
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[None]] = set()

    # --- life cycle ---

    async def start(self, bus: EventBus) -> None:
        self._sub = bus.subscribe()
        self._task = asyncio.create_task(
            consume(self._sub, self.handle, "coaching"), name="coaching"
        )

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._work):
            task.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)

    async def handle(self, event: Event) -> None:
        if isinstance(event, SpyStarted):
            live = self._match(event)
            if live is not None and live.state == "starting":
                live.state = "live"
                if live.spy_channel != event.spy_channel:
                    live.spy_channel = event.spy_channel
                    await self.store.set_channel(live.id, event.spy_channel)
                self._push(live)
        elif isinstance(event, SpyStopped):
            live = self._match(event)
            if live is not None:
                stopped = live.stopped_by is not None
                await self._end(live, "stopped" if stopped else "spy_stopped", live.stopped_by)
        elif isinstance(event, CallEnded):
            for live in [s for s in self._spies.values() if s.call_id == event.call_id]:
                await self._end(live, "call_ended")
            for hand in [h for h in self._hands.values() if h.call_id == event.call_id]:
                self._lower(hand.user_id)

    def _match(self, event: SpyEvent) -> LiveSpy | None:
        """Ours by the spy channel, else (it may beat the OriginateResponse) by the phone of
        a supervisor whose session is starting: one session per supervisor."""
        for live in self._spies.values():
            if live.spy_channel == event.spy_channel:
                return live
        phone = interface_of(event.spy_channel)
        for live in self._spies.values():
            if live.spy_channel is None and live.phone == phone:
                return live
        return None

    # --- spying ---

    def sessions(self) -> list[dict[str, Any]]:
        """The sessions not ended, oldest first."""
        return [live.view() for live in sorted(self._spies.values(), key=lambda s: s.id)]

    def session_of(self, supervisor_id: int) -> LiveSpy | None:
        return next((s for s in self._spies.values() if s.supervisor.id == supervisor_id), None)

    def _ready(self) -> tuple[Pbx, CtiState]:
        if self.pbx is None or self.cti is None:
            raise CoachingRefused(
                status.HTTP_503_SERVICE_UNAVAILABLE, "no_pbx", "no Asterisk connected"
            )
        return self.pbx, self.cti

    async def start_spy(
        self, user: UserView, call_id: str, mode: SpyMode, reason: str | None = None
    ) -> dict[str, Any]:
        """Ring the supervisor's phone to spy on a connected call; the answer is the session
        (``starting``); its progress comes as ``spy_session`` pushes."""
        if not user.interface:
            raise CoachingRefused(
                status.HTTP_409_CONFLICT, "no_phone", "no phone is linked to your account"
            )
        pbx, cti = self._ready()
        current = self.session_of(user.id)
        if current is not None or user.id in self._reserved:
            raise CoachingRefused(
                status.HTTP_409_CONFLICT, "already_spying", "stop your current session first"
            )
        call = find_call(cti, call_id)
        if call is None:
            raise CoachingRefused(status.HTTP_404_NOT_FOUND, "call_not_found", f"no call {call_id}")
        if not call.connected or not call.agent_channel:
            raise CoachingRefused(
                status.HTTP_409_CONFLICT, "not_connected", "the call is not answered"
            )
        purpose = (reason or "").strip() or DEFAULT_REASON
        self._reserved.add(user.id)
        try:
            record = await self.store.start(
                user,
                call_id=call.call_id,
                mode=mode,
                agent=call.connected_agent,
                case_reference=call.case_reference,
                reason=purpose,
            )
            await self.audit.record(user, CALL_SPIED, Subject.call(call.call_id), purpose)
        finally:
            self._reserved.discard(user.id)
        live = LiveSpy(record=record, supervisor=user, phone=user.interface, mode=mode)
        self._spies[record.id] = live
        for hand in [h for h in self._hands.values() if h.call_id == call.call_id]:
            self._lower(hand.user_id)  # a supervisor is on the way
        self._push(live)
        spied = interface_of(call.agent_channel)  # the recorded recipe: Local/agent1@agents
        live.task = self._spawn(self._originate(pbx, live, spied, call.connected_agent))
        return live.view()

    async def _originate(self, pbx: Pbx, live: LiveSpy, spied: str, agent: str | None) -> None:
        try:
            result = await pbx.spy(
                live.phone,
                spied,
                live.mode,
                caller_id=f'"Guichet" <{agent or "spy"}>',  # the phone shows whom it spies on
                timeout=self.ring_timeout,
                key=f"spy-{live.id}",
                switchable=True,
            )
        except AmiError as exc:
            log.warning("spy session %d: originate failed: %s", live.id, exc)
            await self._end(live, "failed")
            return
        if not result.success:
            await self._end(live, "no_answer")
            return
        if live.spy_channel is None:
            live.spy_channel = result.channel
            await self.store.set_channel(live.id, result.channel)
        if live.stopping:  # stopped, or the call ended, while the phone rang
            with contextlib.suppress(AmiError):
                await pbx.hangup(result.channel)

    def _owned(self, user: UserView, session_id: int) -> LiveSpy:
        live = self._spies.get(session_id)
        if live is None:
            raise CoachingRefused(
                status.HTTP_404_NOT_FOUND, "spy_not_found", f"no running session {session_id}"
            )
        if live.supervisor.id != user.id and not user.can("admin"):
            raise CoachingRefused(
                status.HTTP_403_FORBIDDEN, "not_your_session", "another supervisor's session"
            )
        return live

    async def change_mode(self, user: UserView, session_id: int, mode: SpyMode) -> dict[str, Any]:
        """Switch listen/whisper/barge: a DTMF 4/5/6 received on the supervisor's channel.
        AmiError propagates (the router says 502/503)."""
        live = self._owned(user, session_id)
        if live.state != "live" or live.spy_channel is None:
            raise CoachingRefused(
                status.HTTP_409_CONFLICT, "not_live", "the supervisor's phone is not spying yet"
            )
        if mode == live.mode:
            return live.view()
        pbx, _ = self._ready()
        await pbx.spy_mode(live.spy_channel, mode)
        previous, live.mode = live.mode, mode
        await self.store.change_mode(live.id, mode)
        await self.audit.record(
            user, SPY_MODE_CHANGED, Subject.call(live.call_id), f"{previous}->{mode}"
        )
        self._push(live)
        return live.view()

    async def stop_spy(self, user: UserView, session_id: int) -> None:
        """Hang up the supervisor's spy leg and end the session."""
        live = self._owned(user, session_id)
        live.stopping, live.stopped_by = True, live.stopped_by or user
        if live.spy_channel is not None:
            pbx, _ = self._ready()
            try:
                await pbx.hangup(live.spy_channel)
            except ActionFailed as exc:  # already gone (No such channel): nothing to stop
                log.info("spy session %d: %s", live.id, exc)
        await self._end(live, "stopped", user)

    async def _end(self, live: LiveSpy, why: str, actor: Identified | None = None) -> None:
        if live.state == "ended":
            return
        live.state, live.end_reason, live.stopping = "ended", why, True
        self._spies.pop(live.id, None)
        record = await self.store.end(live.id)
        live.ended_at = record.ended_at if record is not None else _now()
        who = actor or Actor(live.supervisor.id, live.supervisor.username)
        await self.audit.record(who, SPY_ENDED, Subject.call(live.call_id), why)
        self._push(live)

    def _push(self, live: LiveSpy) -> None:
        self.hub.publish_role(SUPERVISORS, "spy_session", live.view())

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return task

    # --- raised hands ---

    def hands(self) -> list[Hand]:
        return sorted(self._hands.values(), key=lambda hand: hand.at)

    def raise_hand(self, user: UserView, raised: bool) -> Hand:
        """Raise a hand about the agent's connected call (409 without one), or lower it."""
        mine = agent_id(user.interface) if user.interface else None
        if not raised:
            lowered = self._lower(user.id)
            return lowered or Hand(
                agent=mine or user.username,
                user_id=user.id,
                display_name=user.display_name,
                call_id=None,
                raised=False,
                at=_iso(_now()),
            )
        on_call = [c for c in calls_of(self.cti, mine) if c.connected] if self.cti and mine else []
        if not on_call:
            raise CoachingRefused(status.HTTP_409_CONFLICT, "not_on_call", "you are not on a call")
        hand = Hand(
            agent=mine or user.username,
            user_id=user.id,
            display_name=user.display_name,
            call_id=on_call[0].call_id,
            raised=True,
            at=_iso(_now()),
        )
        self._hands[user.id] = hand
        self._push_hand(hand)
        return hand

    def _lower(self, user_id: int) -> Hand | None:
        hand = self._hands.pop(user_id, None)
        if hand is None:
            return None
        lowered = Hand(
            agent=hand.agent,
            user_id=hand.user_id,
            display_name=hand.display_name,
            call_id=hand.call_id,
            raised=False,
            at=_iso(_now()),
        )
        self._push_hand(lowered)
        return lowered

    def _push_hand(self, hand: Hand) -> None:
        data = asdict(hand)
        self.hub.publish_role(SUPERVISORS, "hand", data)
        self.hub.publish(hand.user_id, "hand", data)  # the agent's other tabs follow

    # --- private messages ---

    async def recipient(self, *, user_id: int | None = None, agent: str | None = None) -> UserView:
        """An active user by id, or by agent id (``agent1``: the phone's endpoint)."""
        for candidate in await self.users.list_users():
            if not candidate.active:
                continue
            if user_id is not None and candidate.id == user_id:
                return candidate
            if agent is not None and candidate.interface and agent_id(candidate.interface) == agent:
                return candidate
        raise CoachingRefused(
            status.HTTP_404_NOT_FOUND, "recipient_not_found", "no such active user"
        )

    async def send_message(
        self, sender: UserView, recipient: UserView, text: str, call_id: str | None = None
    ) -> MessageRecord:
        """Store, audit (the first 60 characters, digits masked), push to the recipient."""
        body = text.strip()
        if not body:
            raise CoachingRefused(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "empty_message", "the message is empty"
            )
        record = await self.store.add_message(sender, recipient.id, body, call_id)
        await self.audit.record(sender, MESSAGE_SENT, Subject("user", str(recipient.id)), body[:60])
        self.hub.publish(
            recipient.id,
            "private_message",
            {
                "id": record.id,
                "from": sender.display_name,
                "text": record.text,
                "call_id": record.call_id,
                "at": _iso(record.sent_at),
            },
        )
        return record


__all__ = [
    "DEFAULT_REASON",
    "MESSAGE_SENT",
    "SPY_ENDED",
    "SPY_MODE_CHANGED",
    "Coaching",
    "CoachingRefused",
    "Hand",
    "LiveSpy",
]
