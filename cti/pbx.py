"""The one way Guichet acts on Asterisk: originate, transfer, redirect, hang up, hold, queue
membership and pause, supervisor spying (and its mode switches). Every method sends AMI
actions through `AmiClient` and raises `ActionFailed` when Asterisk answers `Response: Error`.

A `Success` response means Asterisk accepted the action, not that the call did what was
asked; the outcome arrives as domain events (CallTransferred, CallEnded...). Notably:

* `attended_transfer` (AMI `Atxfer`) only injects the features.conf `atxfer` code (`*2`)
  and the digits as DTMF on the agent's channel. It works only when the citizen's `Queue()`
  has option `t` (the agent may transfer); without it Asterisk still answers `Success` and
  the digits just reach the citizen (attended-transfer-no-t-option). Guichet's dialplan
  passes `t`; watch for `CallTransferred(kind="attended")` before telling the agent it
  worked.
* `blind_transfer` (AMI `BlindTransfer`) works on the agent's member leg without option `t`.

**Hold is phone-side.** The agent's phone holds (its hold key, or `hold()` here, which asks
the phone through a SIP NOTIFY `Event: hold` / `Event: talk`, the remote-control events
Polycom, Yealink and Snom phones accept when enabled); Asterisk then plays the citizen's
music-on-hold class in the bridge, and the CTI sees `MusicOnHoldStart/Stop` on the
citizen's channel (`CallHoldChanged`). We do not `Redirect` the citizen to a hold context:
that takes it out of `Queue()`, so app_queue ends the call (AgentComplete, talk time cut,
the agent free for the next call while still talking), un-holding needs a `Bridge` action
that loses the queue's accounting, and the Local member leg would be hung up. Phones that
ignore the NOTIFY (baresip) hold with their own key only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cti.ami import ActionValue, AmiClient, AmiError, AmiMessage
from ivr.variables import EXPORTED

SpyMode = Literal["listen", "whisper", "barge"]
# ChanSpy options: q quiet (no beep), b only bridged channels, E end when the spied channel
# hangs up; then S (listen only), w (whisper to the spied channel) or B (barge: talk to both).
SPY_OPTIONS: dict[SpyMode, str] = {"listen": "qbES", "whisper": "qbEw", "barge": "qbEB"}
# Option `d` lets DTMF switch modes during the spy: 4 listen, 5 whisper, 6 barge. Guichet
# appends it after the recorded recipe (`qbEwd`) when the mode may change, and switches by
# emulating a keypress *received* on the supervisor's channel (`spy_mode`), so the
# supervisor can also switch from the phone's own keypad.
SPY_SWITCH_OPTION = "d"
SPY_DIGITS: dict[SpyMode, str] = {"listen": "4", "whisper": "5", "barge": "6"}
# OriginateResponse `Reason` (enum ast_control_frame_type of the outgoing channel).
ORIGINATE_REASONS = {
    0: "failed (no such endpoint or channel)",
    1: "hung up",
    3: "no answer",
    4: "answered",
    5: "busy",
    8: "congestion",
}


class ActionFailed(AmiError):
    """Asterisk answered `Response: Error`."""

    def __init__(self, action: str, message: str) -> None:
        self.action = action
        self.message = message
        super().__init__(f"Asterisk refused {action}: {message}")


@dataclass(frozen=True)
class OriginateResult:
    action_id: str
    success: bool  # the first channel answered
    reason: int | None
    channel: str  # the originated channel, e.g. PJSIP/agent1-00000000
    uniqueid: str | None

    @property
    def reason_text(self) -> str:
        return ORIGINATE_REASONS.get(self.reason if self.reason is not None else -1, "unknown")


class Pbx:
    def __init__(self, client: AmiClient) -> None:
        self.client = client

    async def _do(self, action: Mapping[str, ActionValue]) -> AmiMessage:
        result = await self.client.send_action(action)
        first = result[0] if isinstance(result, list) else result
        if first.text("Response") != "Success":
            raise ActionFailed(str(action["Action"]), first.text("Message") or "error")
        return first

    # --- calls ---

    async def originate(
        self,
        channel: str,
        *,
        exten: str | None = None,
        context: str | None = None,
        priority: int = 1,
        application: str | None = None,
        data: str | None = None,
        caller_id: str | None = None,
        timeout: float = 30.0,
        variables: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> OriginateResult:
        """Call `channel` (ring it for `timeout` s) and, once it answers, run `exten@context`
        or `application(data)`. Always `Async: true`; waits for the OriginateResponse.
        `key` (a request id) makes a retried request fail with DuplicateAction instead of
        dialling twice."""
        if (exten is None) == (application is None):
            raise ValueError("originate needs exten/context or application, not both")
        action: dict[str, ActionValue] = {
            "Action": "Originate",
            "ActionID": self.client.new_action_id(key),
            "Channel": channel,
        }
        if exten is not None:
            if context is None:
                raise ValueError("originate to an extension needs its context")
            action.update(Context=context, Exten=exten, Priority=str(priority))
        else:
            action["Application"] = str(application)
            if data is not None:
                action["Data"] = data
        if caller_id is not None:
            action["CallerID"] = caller_id
        action["Timeout"] = str(int(timeout * 1000))
        if variables:
            action["Variable"] = [f"{name}={value}" for name, value in variables.items()]
        action["Async"] = "true"
        result = await self.client.send_action(action)
        messages = result if isinstance(result, list) else [result]
        if messages[0].text("Response") != "Success":
            raise ActionFailed("Originate", messages[0].text("Message") or "error")
        final = messages[-1]
        reason = final.text("Reason")
        uniqueid = final.text("Uniqueid")
        return OriginateResult(
            action_id=str(action["ActionID"]),
            success=final.text("Response") == "Success",
            reason=int(reason) if reason.isdigit() else None,
            channel=final.text("Channel") or channel,
            uniqueid=uniqueid if uniqueid and uniqueid != "<unknown>" else None,
        )

    async def click_to_dial(
        self,
        phone: str,
        number: str,
        *,
        context: str,
        call_id: str,
        case_id: str | None = None,
        caller_id: str | None = None,
        timeout: float = 20.0,
    ) -> OriginateResult:
        """Ring the agent's phone (e.g. `PJSIP/agent1`, not its Local queue interface: the
        queue would not be involved anyway) and, when it answers, dial `number` through
        `context`. GUICHET_CALL_ID (and GUICHET_CASE_ID) ride on the agent's channel, so the
        CTI ties the call to the case; `call_id` is also the idempotency key."""
        variables = {EXPORTED["call_id"]: call_id}
        if case_id:
            variables = {EXPORTED["case_id"]: case_id, **variables}
        return await self.originate(
            phone,
            exten=number,
            context=context,
            caller_id=caller_id,
            timeout=timeout,
            variables=variables,
            key=call_id,
        )

    async def hangup(self, channel: str, *, cause: int | None = None) -> None:
        action: dict[str, ActionValue] = {"Action": "Hangup", "Channel": channel}
        if cause is not None:
            action["Cause"] = str(cause)
        await self._do(action)

    async def blind_transfer(self, channel: str, exten: str, context: str) -> None:
        """Send the party bridged with `channel` (the agent's member leg: `agent_channel` of
        CallAnswered) to `exten@context`; the agent's leg is hung up."""
        await self._do(
            {"Action": "BlindTransfer", "Channel": channel, "Exten": exten, "Context": context}
        )

    async def attended_transfer(self, channel: str, exten: str, context: str) -> None:
        """Start a consultation call from `channel` (the agent's member leg) to
        `exten@context`; the agent completes it by hanging up. Needs Queue option `t`, and
        `Success` is no proof (see the module docstring)."""
        await self._do({"Action": "Atxfer", "Channel": channel, "Exten": exten, "Context": context})

    async def hold(self, phone: str) -> None:
        """Ask the agent's phone (`PJSIP/agent1`, the member's state interface, or the
        endpoint name `agent1`) to hold its call."""
        await self._notify(phone, "hold")

    async def unhold(self, phone: str) -> None:
        await self._notify(phone, "talk")

    async def _notify(self, phone: str, event: str) -> None:
        tech, _, name = phone.partition("/")
        if name and tech.upper() != "PJSIP":
            raise ValueError(f"{phone}: phone-side hold needs a PJSIP endpoint")
        endpoint = name or phone
        await self._do(
            {"Action": "PJSIPNotify", "Endpoint": endpoint, "Variable": [f"Event={event}"]}
        )

    # --- queues ---

    async def pause(
        self, interface: str, reason: str | None = None, *, queue: str | None = None
    ) -> None:
        """Pause a member in `queue`, or in all its queues (one QueueMemberPause each)."""
        action: dict[str, ActionValue] = {
            "Action": "QueuePause",
            "Interface": interface,
            "Paused": "true",
        }
        if queue is not None:
            action["Queue"] = queue
        if reason:
            action["Reason"] = reason
        await self._do(action)

    async def unpause(self, interface: str, *, queue: str | None = None) -> None:
        action: dict[str, ActionValue] = {
            "Action": "QueuePause",
            "Interface": interface,
            "Paused": "false",
        }
        if queue is not None:
            action["Queue"] = queue
        await self._do(action)

    async def queue_add(
        self,
        queue: str,
        interface: str,
        *,
        member_name: str | None = None,
        state_interface: str | None = None,
        penalty: int = 0,
        paused: bool = False,
        reason: str | None = None,
    ) -> None:
        action: dict[str, ActionValue] = {
            "Action": "QueueAdd",
            "Queue": queue,
            "Interface": interface,
            "Penalty": str(penalty),
            "Paused": "true" if paused else "false",
        }
        if reason and paused:
            action["Reason"] = reason
        if member_name:
            action["MemberName"] = member_name
        if state_interface:
            action["StateInterface"] = state_interface
        await self._do(action)

    async def queue_remove(self, queue: str, interface: str) -> None:
        await self._do({"Action": "QueueRemove", "Queue": queue, "Interface": interface})

    async def queue_penalty(
        self, interface: str, penalty: int, *, queue: str | None = None
    ) -> None:
        action: dict[str, ActionValue] = {
            "Action": "QueuePenalty",
            "Interface": interface,
            "Penalty": str(penalty),
        }
        if queue is not None:
            action["Queue"] = queue
        await self._do(action)

    async def queue_status(
        self, queue: str | None = None, *, member: str | None = None
    ) -> list[AmiMessage]:
        """QueueStatus' list: QueueParams, QueueMember (Name/Location), QueueEntry."""
        action: dict[str, ActionValue] = {"Action": "QueueStatus"}
        if queue is not None:
            action["Queue"] = queue
        if member is not None:
            action["Member"] = member
        result = await self.client.send_action(action)
        if not isinstance(result, list):
            raise ActionFailed("QueueStatus", result.text("Message") or "error")
        return [
            m for m in result[1:] if m.text("Event") in ("QueueParams", "QueueMember", "QueueEntry")
        ]

    # --- supervision ---

    async def spy(
        self,
        supervisor: str,
        spied: str,
        mode: SpyMode = "listen",
        *,
        caller_id: str | None = None,
        timeout: float = 10.0,
        key: str | None = None,
        switchable: bool = False,
    ) -> OriginateResult:
        """Ring the supervisor's phone and, when answered, run ChanSpy on `spied`: a channel
        name prefix (`Local/agent1@agents` matches the agent's member leg; with `b` only a
        bridged one). Stop with `hangup(result.channel)`. ChanSpy needs media flowing on the
        spied channel to stop promptly (silent test channels block its audiohook detach).
        `switchable` adds option `d` (`Local/agent1@agents,qbEwd`): `spy_mode` then works."""
        options = SPY_OPTIONS[mode] + (SPY_SWITCH_OPTION if switchable else "")
        return await self.originate(
            supervisor,
            application="ChanSpy",
            data=f"{spied},{options}",
            caller_id=caller_id,
            timeout=timeout,
            key=key,
        )

    async def spy_mode(self, spy_channel: str, mode: SpyMode) -> None:
        """Switch a running `spy(..., switchable=True)` to `mode`: AMI `PlayDTMF` with
        `Receive: true` (Asterisk >= 16) makes the supervisor's channel *receive* the digit
        ChanSpy's `d` option reads (4 listen, 5 whisper, 6 barge), as if keyed on the phone.
        Without `d` the digit does nothing and Asterisk still answers Success."""
        await self._do(
            {
                "Action": "PlayDTMF",
                "Channel": spy_channel,
                "Digit": SPY_DIGITS[mode],
                "Receive": "true",
            }
        )

    async def redirect(self, channel: str, exten: str, context: str, *, priority: int = 1) -> None:
        """Send `channel` to `exten@context` (AMI `Redirect`), e.g. a citizen waiting in a
        queue to another queue's extension. On a connected call it takes the channel out of
        its bridge; see the module docstring for why hold does not use it."""
        await self._do(
            {
                "Action": "Redirect",
                "Channel": channel,
                "Exten": exten,
                "Context": context,
                "Priority": str(priority),
            }
        )
