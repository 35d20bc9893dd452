"""The mystery caller: places a real SIP call, follows a probe script, measures the line.

Times are seconds from the probe's INVITE (``answered_s``, ``agent_s``) or spent in the menus
(``ivr_s``), see `crm_bridge.probe_models.ProbeRun`. What the line said is recorded to WAV
and every ``expect`` step is compared with its prompt file (`guichet.probe.greeting`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import wave
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from guichet.probe.greeting import GreetingCheck, compare, from_pcm16, load_prompt
from guichet.probe.records import await_records
from guichet.probe.script import DtmfStep, ExpectStep, HangupStep, ProbeScript, WaitStep
from guichet.probe.sip import RATE, OutboundCall, SipAccount, SipCaller

log = logging.getLogger(__name__)

PASSED, FAILED, NO_ANSWER, ERROR = "passed", "failed", "no_answer", "error"
POLL = 0.05


@dataclass
class ProbeReport:
    """One probe call: the figures stored in ``probe_run`` and the evidence behind them."""

    script: str
    target: str
    caller: str
    started_at: datetime  # when the INVITE left (UTC)
    outcome: str = ERROR
    answered_s: float | None = None
    ivr_s: float | None = None
    agent_s: float | None = None
    greeting_ok: bool | None = None
    greeting_score: float | None = None
    digits: str = ""
    recording: str | None = None
    ivr_source: str | None = None  # call_journey, queue_call or call (the probe's own view)
    greetings: list[GreetingCheck] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        return data


def _wall(at: float) -> datetime:
    """A monotonic instant as a UTC datetime (the DB's records are wall-clock)."""
    return datetime.now(UTC) - timedelta(seconds=time.monotonic() - at)


class _Run:
    def __init__(self, script: ProbeScript, call: OutboundCall, report: ProbeReport) -> None:
        self.script = script
        self.call = call
        self.report = report
        self.deadline = call.invited_at + script.timeout
        self.listen_from = 0.0  # seconds after the answer where the next expect starts

    def _now_s(self) -> float:
        assert self.call.answered_at is not None
        return time.monotonic() - self.call.answered_at

    def _left(self) -> float:
        return self.deadline - time.monotonic()

    async def steps(self) -> bool:
        """Run every step; False when one failed (the reason is in the report)."""
        ok = True
        for number, step in enumerate(self.script.steps, start=1):
            if self._left() <= 0:
                self.report.detail.append(f"step {number}: the script's timeout was reached")
                return False
            if isinstance(step, HangupStep):
                break
            ended = self.call.ended_at is not None
            if isinstance(step, WaitStep):
                if not ended:
                    await self._wait(step)
            elif ended:
                self.report.detail.append(f"step {number}: the call had already ended")
                return False
            elif isinstance(step, DtmfStep):
                await self.call.send_dtmf(step.dtmf, step.gap)
                self.report.digits += step.dtmf
            elif isinstance(step, ExpectStep):
                check = await self._expect(step)
                self.report.greetings.append(check)
                names = ", ".join(p.name for p in step.expect)
                self.report.detail.append(f"step {number}: {names}: {check.describe()}")
                ok = ok and check.ok
            self.listen_from = self._now_s()
        return ok

    async def _wait(self, step: WaitStep) -> None:
        if step.wait != "silence":
            await self.call.wait_ended(min(float(step.wait), self._left()))
            return
        # until ``silence`` s without sound (from the step's start when nothing is heard)
        recorder, start = self.call.recorder, time.monotonic()
        limit = start + min(step.max, self._left())
        while time.monotonic() < limit and self.call.ended_at is None:
            if time.monotonic() - max(recorder.last_sound or start, start) >= step.silence:
                return
            await asyncio.sleep(POLL)

    async def _expect(self, step: ExpectStep) -> GreetingCheck:
        # The prompt may have begun before this step did (a greeting starts on answer):
        # listen from the end of the previous step, sound counted from there too.
        assert self.call.answered_at is not None
        limit = time.monotonic() + min(step.timeout, self._left())
        recorder, began = self.call.recorder, self.call.answered_at + self.listen_from
        while time.monotonic() < limit and self.call.ended_at is None:
            last = recorder.last_sound
            if last is not None and last >= began and time.monotonic() - last >= step.silence:
                break
            await asyncio.sleep(POLL)
        heard = from_pcm16(recorder.pcm16(self.listen_from, self._now_s()))
        prompts = [await asyncio.to_thread(load_prompt, p) for p in step.expect]
        return await asyncio.to_thread(
            compare,
            heard,
            prompts,
            min_score=step.min_score,
            min_ratio=step.min_ratio,
            max_ratio=step.max_ratio,
        )


def _save_wav(path: Path, pcm16: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm16)


async def run_probe(
    script: ProbeScript,
    account: SipAccount,
    *,
    engine: AsyncEngine | None = None,
    recordings: Path | None = None,
) -> ProbeReport:
    """Place one probe call and return its report (never raises for a failed call)."""
    report = ProbeReport(script.name, script.target, script.caller, datetime.now(UTC))
    phone = SipCaller(account)
    call: OutboundCall | None = None
    try:
        await phone.start(timeout=min(10.0, script.answer_timeout))
        call = await phone.call(script.target)
        report.started_at = _wall(call.invited_at)
        if not await call.wait_answered(script.answer_timeout):
            report.outcome = NO_ANSWER
            report.detail.append(
                f"not answered: {call.failure or f'no answer within {script.answer_timeout:g} s'}"
            )
            return report
        assert call.answered_at is not None
        report.answered_s = round(call.answered_at - call.invited_at, 3)
        steps_ok = await _Run(script, call, report).steps()
        await call.hangup()
        if report.greetings:
            report.greeting_ok = all(g.ok for g in report.greetings)
            report.greeting_score = min(g.score for g in report.greetings)
        report.outcome = PASSED if steps_ok else FAILED
    except Exception as exc:  # a probe reports what went wrong, it does not crash the server
        log.warning("probe %s failed: %s", script.name, exc, exc_info=True)
        report.outcome = ERROR
        report.detail.append(f"error: {type(exc).__name__}: {exc}")
    finally:
        if call is not None:
            await call.hangup()
            if recordings is not None and call.answered_at is not None:
                stamp = report.started_at.strftime("%Y%m%dT%H%M%SZ")
                path = recordings / f"{script.name}-{stamp}.wav"
                await asyncio.to_thread(_save_wav, path, call.recorder.pcm16())
                report.recording = str(path)
        await phone.stop()
    if call is not None and call.answered_at is not None:
        await _correlate(report, script, call, engine)
    return report


async def _correlate(
    report: ProbeReport, script: ProbeScript, call: OutboundCall, engine: AsyncEngine | None
) -> None:
    """Time in the menus and until an agent, from Guichet's own records when it has them."""
    assert call.answered_at is not None
    ended = call.ended_at or time.monotonic()
    answered_wall = _wall(call.answered_at)
    records = None
    if engine is not None:
        records = await await_records(
            engine, script.caller, report.started_at, _wall(ended), wait=script.correlate
        )
    if records is not None and records.queue_call is not None:
        queue_call = records.queue_call
        if queue_call.answered_at is not None:
            report.agent_s = round((queue_call.answered_at - report.started_at).total_seconds(), 3)
        report.detail.append(
            f"queue call {queue_call.call_id} in {queue_call.queue}: {queue_call.outcome}"
        )
    if records is not None and records.journey is not None:
        report.ivr_s, report.ivr_source = round(records.journey.duration_s, 3), "call_journey"
    elif records is not None and records.queue_call is not None:
        waited = (records.queue_call.queued_at - answered_wall).total_seconds()
        report.ivr_s, report.ivr_source = round(max(waited, 0.0), 3), "queue_call"
    else:
        report.ivr_s, report.ivr_source = round(ended - call.answered_at, 3), "call"
        if engine is not None:
            report.detail.append(f"no Guichet record of a call from {script.caller}")


__all__ = ["ERROR", "FAILED", "NO_ANSWER", "PASSED", "ProbeReport", "run_probe"]
