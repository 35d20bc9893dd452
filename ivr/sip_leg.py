"""`SipLeg`: the engine's `CallLeg` over a SIP call answered by Guichet itself (no Asterisk).

Prompts are the files `guichet audio build` writes (`<sounds>/<lang>/<key>.wav`), sent as RTP
in real time; keys are RFC 2833 events. Digit entry follows the AGI leg (`GET DATA` /
`WAIT FOR DIGIT`): a key barges into the prompts and counts as the first digit, `timeout`
is the wait for the first digit after the prompts and between digits, the entry ends on
the terminator (excluded), on `max_digits`, or on a timeout. Keys pressed during a prompt
that cannot be interrupted are dropped, as Asterisk drops them; keys typed ahead between
two questions are kept (Asterisk loses them between two AGI commands; a caller does not
expect that).

Hand-off (the flow ended in a queue or a transfer): with a PBX configured the call is
transferred by SIP REFER to `transfer_uri` (`sip:{target}@pbx:5060`, target = the queue or
transfer extension), the GUICHET_* variables riding along as `X-Guichet-*` headers of the
new INVITE. REFER, not a re-INVITE: a re-INVITE only renegotiates this call's media and
cannot move the caller to another party (and pyVoIP 1.6.8 can send neither: `ivr.sip_phone`
builds the REFER). Without a PBX, or when the transfer fails, the hand-off prompt plays
and the call ends; the engine has already opened the case and records the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ivr.leg import DTMF_DIGITS, CallerHungUp, Collected, gather_keys
from ivr.prompts import Prompt
from ivr.sip_audio import PromptAudio
from ivr.sip_phone import SipCall, SipCallEnded

if TYPE_CHECKING:
    from ivr.engine import CallResult

log = logging.getLogger("guichet.sip")

_NO_CALLER_ID = {"", "unknown", "anonymous", "restricted", "private"}
_HAND_OFF_OUTCOMES = {"queued": "GUICHET_QUEUE", "transferred": "GUICHET_TRANSFER"}


@dataclass(frozen=True, slots=True)
class HandOff:
    """What a SIP leg does once the flow hands the call on."""

    transfer_uri: str | None = None  # `sip:{target}@pbx.example:5060`; None: no PBX
    prompt: str | None = "goodbye"  # played when the call cannot be handed to a PBX
    languages: tuple[str, ...] = ("fr", "nl")  # for that prompt when no language was chosen
    transfer_timeout: float = 15.0


def header_name(variable: str) -> str:
    """`GUICHET_CASE_ID` → `X-Guichet-Case-Id`."""
    return "X-" + "-".join(part.capitalize() for part in variable.split("_"))


class SipLeg:
    """A citizen's SIP call, answered, as the flow engine drives it."""

    kind = "sip"

    def __init__(self, call: SipCall, audio: PromptAudio, *, hand_off: HandOff | None = None):
        self._call = call
        self._audio = audio
        self._hand_off = hand_off or HandOff()
        self.variables: dict[str, str] = {}
        self.language: str | None = None
        self.transfer_status: int | None = None  # the REFER's outcome, when one was sent

    @property
    def call_id(self) -> str:
        return self._call.call_id

    @property
    def caller(self) -> str:
        number = self._call.remote_number.strip()
        return "" if number.lower() in _NO_CALLER_ID else number

    async def play(self, prompts: Sequence[Prompt], *, interruptible: bool = True) -> str | None:
        try:
            for prompt in prompts:
                key = self._pending_key() if interruptible else None
                if key:
                    return key
                data = await self._audio.get(prompt.lang, prompt.key)
                if data is None:
                    continue  # logged once by PromptAudio; the call goes on without it
                done = await self._call.play(data, stop_on_dtmf=interruptible)
                if not done and (key := self._pending_key()):
                    return key
            if interruptible:
                return self._pending_key()
            self._call.clear_digits()  # keys during a prompt without escape digits are lost
            return None
        except SipCallEnded as exc:
            raise CallerHungUp from exc

    async def collect(
        self,
        prompts: Sequence[Prompt],
        *,
        max_digits: int,
        timeout: float,
        terminator: str | None = "#",
    ) -> Collected:
        if max_digits < 1:
            raise ValueError("max_digits must be at least 1")
        first = await self.play(prompts, interruptible=True) or ""
        return await gather_keys(
            first,
            lambda: self._next_key(timeout),
            max_digits=max_digits,
            terminator=terminator,
        )

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value

    async def set_language(self, lang: str) -> None:
        self.language = lang

    async def hand_off(self, result: CallResult) -> None:
        """Transfer to the PBX, or play the hand-off prompt; the call ends here either way."""
        if self._call.ended:
            return
        try:
            variable = _HAND_OFF_OUTCOMES.get(result.outcome)
            target = result.variables.get(variable, "") if variable else ""
            if target and self._hand_off.transfer_uri and await self._transfer(target, result):
                return
            if variable and self._hand_off.prompt:
                await self.play(self._hand_off_prompts(result.journey.lang), interruptible=False)
        except CallerHungUp:
            return
        finally:
            await self._call.hangup()

    async def hangup(self) -> None:
        await self._call.hangup()

    async def _transfer(self, target: str, result: CallResult) -> bool:
        assert self._hand_off.transfer_uri is not None
        uri = self._hand_off.transfer_uri.format(target=target)
        headers = {header_name(k): v for k, v in result.variables.items() if v}
        try:
            status = await self._call.transfer(
                uri, headers=headers, timeout=self._hand_off.transfer_timeout
            )
        except SipCallEnded:
            # the caller left, or its phone dropped this call itself once it took the REFER
            log.info("call %s: ended during the transfer to %s", self.call_id, uri)
            return True
        self.transfer_status = status
        if 200 <= status < 300:
            log.info("call %s: transferred to %s", self.call_id, uri)
            return True
        log.warning(
            "call %s: transfer to %s failed (%d); ending the call", self.call_id, uri, status
        )
        return False

    def _hand_off_prompts(self, lang: str | None) -> list[Prompt]:
        key = self._hand_off.prompt or ""
        languages = (lang,) if lang else self._hand_off.languages
        return [Prompt(key=key, lang=code, text="") for code in languages]

    def _pending_key(self) -> str | None:
        """The first typed-ahead key, if any (A-D are not telephone keys: skipped)."""
        while not self._call.digits.empty():
            key = self._call.digits.get_nowait()
            if key in DTMF_DIGITS:
                return key
        return None

    async def _next_key(self, timeout: float) -> str | None:
        try:
            while True:
                key = await self._call.next_digit(timeout)
                if key is None or key in DTMF_DIGITS:
                    return key
        except SipCallEnded as exc:
            raise CallerHungUp from exc
