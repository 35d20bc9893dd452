"""The IVR as a SIP user agent: registered to a registrar, it answers every call and runs a
flow over a `SipLeg` — an information line served by Guichet alone, or end-to-end tests
with real SIP and RTP.

It takes the collaborators `FastAgiServer` takes (flow registry, CRM, case sink, clock), so
a call served here records the same journey and opens the same case as one over FastAGI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from crm_bridge.ports import CaseSink, CrmPort
from ivr.engine import run_call
from ivr.fastagi import STOP_GRACE, FlowSource
from ivr.sip_audio import PromptAudio
from ivr.sip_leg import HandOff, SipLeg
from ivr.sip_phone import SipAccount, SipCall, SipCallEnded, SipPhone

log = logging.getLogger("guichet.sip")

MAX_CALLS = 30  # each call holds 3 pyVoIP threads and a real-time sender


class SipIvrServer:
    """Answers calls to `account` with the flow `flow` of `registry`.

    Beyond `max_calls` simultaneous calls a new call is refused with 486 Busy Here (the
    registrar or PBX can hunt elsewhere) rather than answered and left silent.
    """

    def __init__(
        self,
        registry: FlowSource,
        crm: CrmPort,
        *,
        account: SipAccount,
        sounds_dir: Path,
        flow: str = "commune",
        cases: CaseSink | None = None,
        clock: Callable[[], datetime] | None = None,
        transfer_uri: str | None = None,
        hand_off_prompt: str | None = "goodbye",
        max_calls: int = MAX_CALLS,
    ) -> None:
        self._registry = registry
        self._crm = crm
        self._cases = cases
        self._clock = clock
        self._flow = flow
        self._transfer_uri = transfer_uri
        self._hand_off_prompt = hand_off_prompt
        self._max_calls = max_calls
        self._audio = PromptAudio(sounds_dir)
        self._phone = SipPhone(account, on_call=self._handle)
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    @property
    def phone(self) -> SipPhone:
        return self._phone

    @property
    def active_calls(self) -> int:
        return self._active

    async def start(self) -> None:
        """Register; SipError when the registrar cannot be reached or refuses."""
        await self._phone.start()
        log.info("SIP IVR: %s answers with flow %s", self._phone.aor, self._flow)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Refuse new calls, give running ones `grace` seconds, hang up the rest, unregister."""
        self._stopping = True
        if not await self.wait_idle(grace):
            log.warning("SIP IVR stop: %d call(s) cut after %.0f s", self._active, grace)
        await self._phone.stop()

    async def __aenter__(self) -> SipIvrServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, call: SipCall) -> None:
        loaded = self._registry.get(self._flow)
        if self._stopping or self._active >= self._max_calls or loaded is None:
            if loaded is None:
                log.error("call %s: no flow %r: refused", call.call_id, self._flow)
            else:
                log.warning(
                    "call %s: refused (%d calls, stopping=%s)",
                    call.call_id,
                    self._active,
                    self._stopping,
                )
            await call.reject()
            return
        self._active += 1
        self._idle.clear()
        try:
            await call.answer()
            flow = loaded.flow
            leg = SipLeg(
                call,
                self._audio,
                hand_off=HandOff(
                    transfer_uri=self._transfer_uri,
                    prompt=self._hand_off_prompt,
                    languages=tuple(flow.bilingual or flow.languages[:1]),
                ),
            )
            result = await run_call(loaded, leg, self._crm, clock=self._clock, cases=self._cases)
            log.info(
                "call %s: flow %s ended, outcome %s", call.call_id, loaded.name, result.outcome
            )
        except SipCallEnded:
            log.info("call %s: caller gone before the flow started", call.call_id)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
