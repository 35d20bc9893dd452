"""The mystery caller over real SIP and RTP: Kamailio (Debian's) is the registrar and proxy,
a pjsua2 peer registered through it answers after a known delay, plays a known prompt and
logs the RFC 4733 digits it receives; the probe (pyVoIP behind our adapter) calls it.

Checked: time to answer within tolerance of the peer's delay, the digits arrive in order, the
right prompt passes the greeting check and a wrong prompt (another sentence, a tone) fails
it, agent and menu times come from Guichet's own records matched by the caller number (and
not from another caller's), results are stored and shown as the wallboard's sentence in
French, Dutch and English, scripts' errors read FILE:LINE, the CLI and the schedule work.
Prompts are made here with espeak-ng and ffmpeg (the repo's audio/sounds are built at install).
"""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kamailio import Kamailio, kamailio_proxy
from pydub import AudioSegment
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from console.i18n import Translator
from crm_bridge.db import init_db, make_engine, session_factory
from crm_bridge.models import CallJourneyRecord
from crm_bridge.probe_models import ProbeRun
from crm_bridge.supervision_models import QueueCallRecord
from guichet.cli import app
from guichet.probe.caller import run_probe
from guichet.probe.config import ProbeSettings
from guichet.probe.display import latest_results, run_view
from guichet.probe.greeting import compare, from_pcm16, load_prompt
from guichet.probe.schedule import ProbeSchedule
from guichet.probe.script import ProbeScript, ScriptError, load_script
from guichet.probe.sip import SipAccount
from guichet.probe.store import ProbeStore
from ivr.sip_wire import normalise_message

ANSWER_DELAY = 1.0
CALLER = "0470123456"
PEER_USER = "ivr"
EVENT_WAIT = 20.0

PEER = r'''
"""pjsua2 SIP peer: registers as USER, rings then answers each call after DELAY s, plays WAV
from the answer on, prints JSON lines (registered, incoming, answered, dtmf, disconnected)."""
import json, os, sys, threading, time
import pjsua2 as pj

host, port, user, delay, wav = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]

def say(**event):
    print(json.dumps(event), flush=True)

class Call(pj.Call):
    def __init__(self, acc, call_id):
        super().__init__(acc, call_id)
        self.player = None
        self.media_index = None
        self.gone = False
    def onCallState(self, prm):
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.gone = True
            say(event="disconnected", reason=ci.lastReason)
        elif ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
            say(event="confirmed")
    def onCallMediaState(self, prm):
        ci = self.getInfo()  # keep it: .media of a temporary CallInfo is freed under SWIG
        for i, mi in enumerate(ci.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.media_index = i
    def onDtmfDigit(self, prm):
        say(event="dtmf", digit=prm.digit)

class Account(pj.Account):
    def __init__(self):
        super().__init__()
        self.pending = []
        self.calls = []
    def onRegState(self, prm):
        say(event="registered", code=prm.code)
    def onIncomingCall(self, prm):
        call = Call(self, prm.callId)
        self.calls.append(call)
        op = pj.CallOpParam()
        op.statusCode = 180
        call.answer(op)
        say(event="incoming", remote=call.getInfo().remoteUri)
        self.pending.append((time.monotonic() + delay, call))

ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.uaConfig.threadCnt = 0
cfg.uaConfig.mainThreadOnly = False
cfg.logConfig.level = 1
cfg.logConfig.consoleLevel = 1
cfg.medConfig.noVad = True
cfg.medConfig.clockRate = 8000
ep.libInit(cfg)
ep.audDevManager().setNullDev()
tcfg = pj.TransportConfig()
tcfg.port = 0
tcfg.boundAddress = "127.0.0.1"
ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
ep.libStart()
for codec in ep.codecEnum2():
    ep.codecSetPriority(codec.codecId, 255 if codec.codecId.startswith("PCMU/") else 0)
acfg = pj.AccountConfig()
acfg.idUri = f"sip:{user}@{host}:{port}"
acfg.regConfig.registrarUri = f"sip:{host}:{port}"
acfg.sipConfig.proxies.append(f"sip:{host}:{port};lr")
acc = Account()
acc.create(acfg)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    ep.libHandleEvents(20)
    now = time.monotonic()
    for due, call in list(acc.pending):
        if due <= now:
            acc.pending.remove((due, call))
            if call.gone:  # cancelled by the caller meanwhile
                continue
            op = pj.CallOpParam()
            op.statusCode = 200
            call.answer(op)
            say(event="answered")
            if call.media_index is not None:
                call.player = pj.AudioMediaPlayer()
                call.player.createPlayer(wav, pj.PJMEDIA_FILE_NO_LOOP)
                call.player.startTransmit(call.getAudioMedia(call.media_index))
ep.hangupAllCalls()
for _ in range(10):
    ep.libHandleEvents(20)
say(event="stopped")
os._exit(0)  # pjsua2's Python objects assert when destroyed after the library
'''


@dataclass
class Peer:
    """The pjsua2 process and the events it printed, in order."""

    process: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    _queue: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self._queue.put(json.loads(line))

    def wait_for(self, name: str, timeout: float = EVENT_WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the peer never said {name!r}: {self.events}") from None
            self.events.append(event)
            if event["event"] == name:
                return event

    def drain(self) -> list[dict[str, Any]]:
        """Every event so far (waiting a moment for stragglers)."""
        time.sleep(0.3)
        while not self._queue.empty():
            self.events.append(self._queue.get_nowait())
        return self.events


def _tts(text: str, voice: str, out: Path) -> Path:
    """espeak-ng -> 8 kHz mono 16-bit WAV, like `guichet audio build` makes prompts."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, timeout=60)
    AudioSegment.from_wav(raw).set_channels(1).set_frame_rate(8000).set_sample_width(2).export(
        out, format="wav"
    )
    return out


@dataclass(frozen=True)
class Prompts:
    welcome: Path
    other: Path
    french: Path
    tone: Path


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Prompts:
    folder = tmp_path_factory.mktemp("prompts")
    tone = folder / "tone.wav"
    samples = (np.sin(2 * np.pi * 440 * np.arange(16000) / 8000) * 8000).astype("<i2")
    with wave.open(str(tone), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())
    return Prompts(
        welcome=_tts("Welkom bij de gemeente. Kies een taal.", "nl", folder / "welcome.wav"),
        other=_tts("Het gemeentehuis is vandaag gesloten.", "nl", folder / "closed.wav"),
        french=_tts("Bienvenue à la commune. Choisissez votre langue.", "fr", folder / "fr.wav"),
        tone=tone,
    )


@pytest.fixture(scope="module")
def line(
    prompts: Prompts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Kamailio, Peer]]:
    """Kamailio, and the pjsua2 peer registered through it as ``ivr``."""
    script = tmp_path_factory.mktemp("peer") / "peer.py"
    script.write_text(PEER)
    with kamailio_proxy() as proxy:
        process = subprocess.Popen(
            [
                sys.executable,
                str(script),
                proxy.host,
                str(proxy.sip_port),
                PEER_USER,
                str(ANSWER_DELAY),
                str(prompts.welcome),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        peer = Peer(process)
        threading.Thread(target=peer.read, daemon=True).start()
        try:
            assert peer.wait_for("registered")["code"] == 200, proxy.log_tail()
            yield proxy, peer
        finally:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/probe.db")
    await init_db(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def _script(tmp_path: Path, body: str, name: str = "commune") -> ProbeScript:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return load_script(path)


def _account(proxy: Kamailio, user: str = CALLER) -> SipAccount:
    return SipAccount(proxy.host, proxy.sip_port, user, local_ip=proxy.host)


async def _insert(engine: AsyncEngine, *rows: Any) -> None:
    async with session_factory(engine)() as session:
        session.add_all(rows)
        await session.commit()


def _queue_call(call_id: str, caller: str, queued: datetime, answered: datetime) -> QueueCallRecord:
    return QueueCallRecord(
        call_id=call_id,
        queue="population-nl",
        caller=caller,
        queued_at=queued,
        answered_at=answered,
        ended_at=answered + timedelta(seconds=60),
        outcome="completed",
    )


async def test_the_probe_measures_a_real_call_and_recognises_the_greeting(
    line: tuple[Kamailio, Peer], prompts: Prompts, engine: AsyncEngine, tmp_path: Path
) -> None:
    proxy, peer = line
    mark = len(peer.drain())
    t0 = datetime.now(UTC)
    # Guichet's own records: the probe's (caller ID as Asterisk shows it, other spellings)...
    agent_answered = t0 + timedelta(seconds=130)
    await _insert(
        engine,
        _queue_call("probe.1", "32470123456", t0 + timedelta(seconds=3), agent_answered),
        CallJourneyRecord(
            call_id="probe.1",
            flow="commune",
            flow_hash="x",
            leg="agi",
            caller="+32 470 12 34 56",
            started_at=t0 + timedelta(seconds=1),
            ended_at=t0 + timedelta(seconds=39),
            duration_s=38.0,
            outcome="queued",
        ),
        # ...and a citizen calling at the same moment, who must not be taken for the probe.
        _queue_call(
            "citizen.1", "0470999999", t0 + timedelta(seconds=2), t0 + timedelta(seconds=9)
        ),
    )
    script = _script(
        tmp_path,
        f"""
target: {PEER_USER}
caller: "{CALLER}"
correlate: 5
steps:
  - expect: {prompts.welcome}
    min_score: 0.7
  - dtmf: "21#"
  - wait: 0.5
  - wait: silence
""",
    )
    report = await run_probe(script, _account(proxy), engine=engine, recordings=tmp_path / "rec")
    assert report.outcome == "passed", report.detail

    # time to answer: the peer rings, then answers ANSWER_DELAY s later
    assert report.answered_s is not None
    assert abs(report.answered_s - ANSWER_DELAY) <= 0.5, report.answered_s

    # the digits arrive at the peer, in order, as RFC 4733 events
    events = peer.drain()[mark:]
    assert [e["digit"] for e in events if e["event"] == "dtmf"] == ["2", "1", "#"]
    assert any(e["event"] == "incoming" and CALLER in e["remote"] for e in events)
    assert report.digits == "21#"

    # the greeting heard is the prompt
    assert report.greeting_ok is True
    assert report.greeting_score is not None and report.greeting_score >= 0.9
    assert 0.8 <= report.greetings[0].duration_ratio <= 1.25

    # agent and menu times from Guichet's records of this caller (not the other citizen's)
    expected_agent = (agent_answered - report.started_at).total_seconds()
    assert report.agent_s is not None
    assert report.agent_s == pytest.approx(expected_agent, abs=0.01)
    assert abs(report.agent_s - 130) <= 5
    assert (report.ivr_s, report.ivr_source) == (38.0, "call_journey")

    # what was heard is on disk, 8 kHz mono, long enough to hold the greeting
    assert report.recording is not None
    with wave.open(report.recording) as heard:
        assert (heard.getframerate(), heard.getnchannels(), heard.getsampwidth()) == (8000, 1, 2)
        assert heard.getnframes() / 8000 >= 2.0
        recorded = from_pcm16(heard.readframes(heard.getnframes()))

    # the same recording, compared honestly with other audio, does not match
    for wrong in (prompts.other, prompts.tone):
        check = compare(recorded, load_prompt(wrong), min_score=0.6, min_ratio=0.8, max_ratio=1.25)
        assert not check.ok and check.score < 0.5, (wrong.name, check)

    # stored, and shown as the wallboard's sentence
    store = ProbeStore(engine)
    saved = await store.save(report)
    [latest] = await store.latest()
    assert latest.id == saved.id and latest.greeting_ok is True and latest.digits == "21#"
    shown = await latest_results(engine, Translator.load(), "en")
    assert shown["probes"][0]["outcome"] == "passed"
    assert "agent after 2 min" in shown["probes"][0]["text"], shown
    assert shown["probes"][0]["text"].endswith("Greeting correct.")
    json.dumps(shown)


async def test_a_wrong_greeting_is_caught(
    line: tuple[Kamailio, Peer], prompts: Prompts, engine: AsyncEngine, tmp_path: Path
) -> None:
    proxy, _peer = line
    script = _script(
        tmp_path,
        f"""
target: "sip:{PEER_USER}@{proxy.domain}"   # a SIP URI works as well as a number
caller: "0470123457"
correlate: 0
steps:
  - expect: {prompts.other}
  - hangup
""",
    )
    report = await run_probe(script, _account(proxy, "0470123457"), engine=engine)
    assert report.outcome == "failed", report.detail
    assert report.answered_s is not None and abs(report.answered_s - ANSWER_DELAY) <= 0.5
    assert report.greeting_ok is False
    assert report.greeting_score is not None and report.greeting_score < 0.5
    assert "does not match" in "\n".join(report.detail)
    assert report.agent_s is None and report.ivr_source == "call"
    view = run_view(await ProbeStore(engine).save(report), Translator.load(), "fr")
    assert "Mauvais message d'accueil" in view["text"] and view["outcome_label"] == "Échoué"


async def test_an_unknown_number_is_reported_as_not_answered(
    line: tuple[Kamailio, Peer], engine: AsyncEngine, tmp_path: Path
) -> None:
    proxy, _peer = line
    script = _script(tmp_path, 'target: nobody\ncaller: "0470123458"\nanswer_timeout: 10\n')
    report = await run_probe(script, _account(proxy, "0470123458"), engine=engine)
    assert report.outcome == "no_answer"
    assert "404" in report.detail[0]
    assert report.answered_s is None and report.recording is None


async def test_a_call_not_answered_in_time_is_cancelled(
    line: tuple[Kamailio, Peer], engine: AsyncEngine, tmp_path: Path
) -> None:
    proxy, peer = line
    mark = len(peer.drain())
    script = _script(tmp_path, f'target: {PEER_USER}\ncaller: "0470123462"\nanswer_timeout: 0.3\n')
    report = await run_probe(script, _account(proxy, "0470123462"), engine=engine)
    assert report.outcome == "no_answer"
    assert report.detail == ["not answered: no answer within 0.3 s"]
    peer.wait_for("disconnected")  # the CANCEL reached it: it stops ringing
    await asyncio.sleep(ANSWER_DELAY)
    assert "answered" not in [e["event"] for e in peer.drain()[mark:]]
    assert peer.process.poll() is None


async def test_an_unreachable_registrar_is_an_error_not_a_crash(tmp_path: Path) -> None:
    script = _script(tmp_path, 'target: ivr\ncaller: "0470123459"\nanswer_timeout: 2\n')
    account = SipAccount("127.0.0.1", 9, "0470123459", local_ip="127.0.0.1")
    report = await run_probe(script, account)
    assert report.outcome == "error" and report.detail


def test_the_cli_runs_a_script_and_shows_the_history(
    line: tuple[Kamailio, Peer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, _peer = line
    path = tmp_path / "nobody.yaml"
    path.write_text('target: nobody\ncaller: "0470123460"\n')
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    runner = CliRunner()
    args = ["probe", "run", str(path), "--json", "--database-url", url]
    ran = runner.invoke(app, [*args, "--server", proxy.host, "--port", str(proxy.sip_port)])
    assert ran.exit_code == 1, ran.output  # not passed
    assert json.loads(ran.stdout)["outcome"] == "no_answer"
    history = runner.invoke(
        app, ["probe", "history", "--json", "--lang", "nl", "--database-url", url]
    )
    assert history.exit_code == 0, history.output
    [run] = json.loads(history.stdout)
    assert run["script"] == "nobody" and run["outcome_label"] == "Geen antwoord"
    assert "de lijn nam niet op" in run["text"]


async def test_the_schedule_runs_scripts_and_stores_each_result(
    line: tuple[Kamailio, Peer], engine: AsyncEngine, tmp_path: Path
) -> None:
    proxy, _peer = line
    good = tmp_path / "nobody.yaml"
    good.write_text(f'target: nobody\ncaller: "0470123461"\nsip: {{port: {proxy.sip_port}}}\n')
    broken = tmp_path / "broken.yaml"
    broken.write_text("target: [\n")
    settings = ProbeSettings(
        sip_server=proxy.host, local_ip=proxy.host, recordings_dir=tmp_path / "rec"
    )
    schedule = ProbeSchedule(engine, settings, scripts=[good, broken], interval=0.2)
    schedule.start()
    try:
        deadline = time.monotonic() + 30
        while schedule.rounds < 2 and time.monotonic() < deadline:  # noqa: ASYNC110  (a counter)
            await asyncio.sleep(0.1)
        assert schedule.rounds >= 2
    finally:
        await schedule.stop()
    assert not schedule.running
    runs = await ProbeStore(engine).history(limit=10)
    assert {r.script for r in runs} == {"nobody", "broken"}
    assert {r.outcome for r in runs if r.script == "nobody"} == {"no_answer"}
    assert all("broken.yaml:" in (r.detail or "") for r in runs if r.script == "broken")


def test_the_sentence_reads_like_the_issue_in_three_languages() -> None:
    translator = Translator.load()
    run = ProbeRun(
        id=1,
        script="commune",
        target="021234567",
        caller=CALLER,
        started_at=datetime(2026, 11, 23, 9, 3, tzinfo=UTC),  # 10:03 in Brussels
        outcome="passed",
        answered_s=0.4,
        ivr_s=38.2,
        agent_s=130.4,
        greeting_ok=True,
        greeting_score=0.97,
    )
    texts = {lang: run_view(run, translator, lang)["text"] for lang in ("en", "fr", "nl")}
    assert texts["en"] == (
        "Last check 10:03: answered 0.4 s, menus 38 s, agent after 2 min 10 s. Greeting correct."
    )
    assert texts["fr"].startswith(
        "Dernier test 10:03 : décroché en 0,4 s, menus 38 s, agent après 2 min 10 s."
    )
    assert texts["nl"].startswith(
        "Laatste test 10:03: opgenomen na 0,4 s, menu's 38 s, agent na 2 min 10 s."
    )
    view = run_view(run)
    assert view["key"] == "probe.summary"
    assert view["params"] == {"time": "10:03", "answered": 0.4, "menus": 38.2, "agent": 130.4}


def test_a_bilingual_greeting_is_checked_prompt_by_prompt_and_in_order(prompts: Prompts) -> None:
    """French then Dutch with the PBX's own gap between them, as a bilingual line plays."""
    french, dutch = load_prompt(prompts.french), load_prompt(prompts.welcome)
    heard = np.concatenate([np.zeros(2400), french, np.zeros(2000), dutch, np.zeros(8000)])
    limits = {"min_score": 0.6, "min_ratio": 0.8, "max_ratio": 1.25}
    both = compare(heard, [french, dutch], **limits)
    assert both.ok and both.score > 0.95, both
    swapped = compare(heard, [dutch, french], **limits)
    assert not swapped.ok and swapped.score > 0.95  # both there, but not in that order
    assert not compare(heard, [french], **limits).ok  # the Dutch half makes it too long
    assert not compare(heard, [french, load_prompt(prompts.other)], **limits).ok


def test_script_errors_point_at_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "target: ivr\n"
        "caller: '0470'\n"
        "steps:\n"
        "  - expect: no/such/prompt.wav\n"
        "  - dtmf: '2x'\n"
        "  - jump: 3\n"
        "  - wait: soon\n"
    )
    with pytest.raises(ScriptError) as raised:
        load_script(path)
    messages = [str(i) for i in raised.value.issues]
    assert messages == [
        f"{path}:5: steps.1.dtmf: not DTMF digits: X (use 0-9, *, #, A-D)",
        f"{path}:6: steps.2: a step is one of wait, dtmf, expect or hangup",
        f"{path}:7: steps.3.wait: wait is a number of seconds or 'silence'",
    ]
    path.write_text("target: ivr\ncaller: '0470'\nsteps:\n  - dtmf: 1\n  - expect: nope.wav\n")
    with pytest.raises(ScriptError) as raised:
        load_script(path)
    assert [str(i) for i in raised.value.issues] == [f"{path}:5: prompt audio not found: nope.wav"]


def test_empty_headers_no_longer_make_pyvoip_drop_the_message() -> None:
    """pyVoIP's own parser on an INVITE with ``Supported:`` empty, before and after cleaning."""
    from pyVoIP import SIP

    invite = (
        b"INVITE sip:0470123456@127.0.0.1 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport\r\n"
        b"From: <sip:ivr@127.0.0.1>;tag=a\r\n"
        b"To: <sip:0470123456@127.0.0.1>\r\n"
        b"Call-Id: 1@127.0.0.1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Supported:\r\n"
        b"Content-Length:0\r\n\r\n"
    )
    with pytest.raises(IndexError):
        SIP.SIPMessage(invite)
    parsed = SIP.SIPMessage(normalise_message(invite))
    assert parsed.method == "INVITE"
    assert parsed.headers["Call-ID"] == "1@127.0.0.1"
    assert parsed.headers["Via"][0]["branch"] == "z9hG4bK1"
