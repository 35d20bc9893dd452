"""The IVR over a real SIP call: Kamailio as registrar, Guichet's SIP IVR registered as `ivr`,
a PJSIP phone (tests/sip_caller.py, its own process) dialling it and typing RFC 2833 keys.

Prompts are short tones written for the test (0.25 s each, every key of the catalogue in every
language) so a whole call lasts seconds while the IVR still plays them in real time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import struct
import sys
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import NN_1985, OPEN, ROOT, add_citizen
from kamailio import Kamailio, kamailio

from crm_bridge.cases import CaseService
from crm_bridge.outbox import CaseOutbox
from crm_bridge.store import SqlCrm
from ivr.prompts import PromptCatalogue
from ivr.registry import FlowRegistry
from ivr.sip_audio import PromptAudio, to_pyvoip
from ivr.sip_phone import SipAccount, SipCall, SipPhone
from ivr.sip_server import SipIvrServer
from ivr.sip_wire import normalise_message

__all__ = ["kamailio"]

CALLER = ROOT / "tests" / "sip_caller.py"
PROMPT_SECONDS = 0.25
TO_POPULATION_NL: list[list[Any]] = [
    ["wait", 2.0],
    ["dtmf", "2"],
    ["wait", 1.5],
    ["dtmf", "1"],
    ["wait", 1.5],
    ["dtmf", "1"],
    ["wait", 1.5],
]


def _tone(path: Path, freq: float, seconds: float = PROMPT_SECONDS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(8000 * seconds)
    samples = (int(8000 * math.sin(2 * math.pi * freq * n / 8000)) for n in range(frames))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", s) for s in samples))


@pytest.fixture(scope="module")
def short_sounds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sounds folder as `guichet audio build` lays it out, with a short tone per prompt."""
    sounds = tmp_path_factory.mktemp("sounds")
    catalogue = PromptCatalogue.load(ROOT / "flows" / "prompts.yaml")
    for i, key in enumerate(catalogue.keys()):
        for lang in ("fr", "nl", "en", "de"):
            _tone(sounds / lang / f"{key}.wav", 300 + 20 * i)
    return sounds


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Ivr = Callable[..., Awaitable[SipIvrServer]]


@pytest.fixture
async def ivr(
    kamailio: Kamailio, crm: SqlCrm, outbox: tuple[CaseOutbox, CaseService], short_sounds: Path
) -> AsyncIterator[Ivr]:
    """Start the SIP IVR (the real flow registry, CRM and case outbox) registered as `ivr`."""
    registry = FlowRegistry(ROOT / "flows", interval=0, sounds_dir=short_sounds)
    await registry.start()
    servers: list[SipIvrServer] = []

    async def start(**options: Any) -> SipIvrServer:
        low = random.randrange(30000, 60000, 2)
        server = SipIvrServer(
            registry,
            crm,
            account=SipAccount("127.0.0.1", kamailio.sip_port, "ivr", rtp_ports=(low, low + 999)),
            sounds_dir=options.pop("sounds_dir", short_sounds),
            cases=outbox[0],
            clock=lambda: OPEN,
            **options,
        )
        await server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(grace=5)
        await registry.stop()


async def call_ivr(
    proxy: Kamailio, script: list[list[Any]], *, timeout: float = 60, **options: Any
) -> list[dict[str, Any]]:
    """Dial `ivr` through Kamailio from a PJSIP phone; return what it reported."""
    args = {
        "proxy": proxy.domain,
        "dial": "ivr",
        "rtp_port": _free_udp_port(),
        "script": script,
        "timeout": timeout,
        **options,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CALLER),
        json.dumps(args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout + 20)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"the SIP caller did not finish\n{proxy.log_tail()}")
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert events and events[-1]["event"] == "done", (out.decode()[-3000:], err.decode()[-3000:])
    return events


def _main(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """State reports of the call to the IVR (not of a call a transfer made)."""
    return [e for e in events if e["event"] == "state" and e["call"] == "main"]


def _states(events: list[dict[str, Any]]) -> list[str]:
    return [e["state"] for e in _main(events)]


def _call_id(events: list[dict[str, Any]]) -> str:
    return str(next(e["call_id"] for e in _main(events) if e.get("call_id")))


async def test_a_sip_call_runs_the_sample_flow_to_a_case(
    kamailio: Kamailio, ivr: Ivr, crm: SqlCrm, outbox: tuple[CaseOutbox, CaseService]
) -> None:
    citizen = await add_citizen(crm)
    server = await ivr()
    events = await call_ivr(
        kamailio, [*TO_POPULATION_NL, ["dtmf", f"{NN_1985}#"], ["wait_end", 30]]
    )
    assert "CONFIRMED" in _states(events) and _states(events)[-1] == "DISCONNECTED"
    assert await server.wait_idle(10)
    journey = await crm.get_journey(_call_id(events))
    assert journey is not None
    assert (journey.leg, journey.outcome, journey.lang, journey.request_type) == (
        "sip",
        "queued",
        "nl",
        "population",
    )
    assert journey.citizen_id == citizen.id and journey.caller == "0470123456"
    assert [s.node for s in journey.steps] == [
        "welcome",
        "opening_hours",
        "language",
        "request_type",
        "faq_population",
        "identify",
        "lookup_citizen",
        "identified",
        "to_queue",
    ]
    assert NN_1985 not in str(journey.steps)  # masked in the journey
    box, service = outbox
    await box.flush()
    cases = await service.open_cases_of_citizen(citizen.id)
    assert len(cases) == 1
    case = cases[0]
    assert (case.language, case.category, case.queue, case.citizen_id, case.caller) == (
        "nl",
        "population",
        "population-nl",
        citizen.id,
        "0470123456",
    )
    assert server.phone.calls == [] and server.active_calls == 0


async def test_a_bad_national_number_is_asked_again(
    kamailio: Kamailio, ivr: Ivr, crm: SqlCrm, outbox: tuple[CaseOutbox, CaseService]
) -> None:
    citizen = await add_citizen(crm)
    server = await ivr()
    events = await call_ivr(
        kamailio,
        [
            *TO_POPULATION_NL,
            ["dtmf", "12345678901#"],
            ["wait", 4.0],
            ["dtmf", f"{NN_1985}#"],
            ["wait_end", 30],
        ],
    )
    assert await server.wait_idle(10)
    journey = await crm.get_journey(_call_id(events))
    assert journey is not None and journey.outcome == "queued"
    identify = [s for s in journey.steps if s.node == "identify"]
    assert len(identify) == 1
    assert identify[0].prompts.count("national_number_request") == 2
    assert "national_number_invalid" in identify[0].prompts
    assert journey.citizen_id == citizen.id
    await outbox[0].flush()
    assert len(await outbox[1].open_cases_of_citizen(citizen.id)) == 1


BARGE_IN: list[list[Any]] = [["wait", 1.5], ["dtmf", "2"], ["wait", 1.5], ["dtmf", "1"]]
BARGE_IN += [["wait", 1.5], ["dtmf", "1"], ["wait", 1.5], ["hangup"]]


async def test_a_key_barges_into_the_prompts(
    kamailio: Kamailio, ivr: Ivr, crm: SqlCrm, short_sounds: Path, tmp_path: Path
) -> None:
    """Language prompts of 10 s each: the caller presses 2, 1, 1 within 5 s and hangs up
    at 6 s: only keys that cut the 10 s prompts get the call to identification by then."""
    sounds = tmp_path / "sounds"
    shutil.copytree(short_sounds, sounds)
    for lang in ("fr", "nl", "en"):
        _tone(sounds / lang / f"language_{lang}.wav", 500, seconds=10)
    server = await ivr(sounds_dir=sounds)
    events = await call_ivr(
        kamailio,
        BARGE_IN,
    )
    assert await server.wait_idle(10)
    journey = await crm.get_journey(_call_id(events))
    assert journey is not None
    nodes = [s.node for s in journey.steps]
    assert nodes[-4:] == ["language", "request_type", "faq_population", "identify"]
    assert journey.outcome == "hangup"


async def test_a_caller_hanging_up_mid_menu_ends_the_leg_cleanly(
    kamailio: Kamailio, ivr: Ivr, crm: SqlCrm, outbox: tuple[CaseOutbox, CaseService]
) -> None:
    server = await ivr()
    events = await call_ivr(kamailio, [["wait", 2.0], ["dtmf", "2"], ["wait", 1.0], ["hangup"]])
    assert await server.wait_idle(10)
    journey = await crm.get_journey(_call_id(events))
    assert journey is not None
    assert journey.outcome == "hangup"
    assert journey.steps[-1].node == "request_type" and journey.steps[-1].result == "hangup"
    assert journey.lang == "nl"
    assert server.phone.calls == [] and server.active_calls == 0
    await outbox[0].flush()
    assert outbox[0].pending == 0


async def test_hand_off_transfers_the_call_by_refer_with_the_case_reference(
    kamailio: Kamailio, ivr: Ivr, crm: SqlCrm, outbox: tuple[CaseOutbox, CaseService]
) -> None:
    """With a PBX configured the caller's phone is sent (REFER) to the queue's extension,
    which receives the case reference and the call's variables as X-Guichet-* headers."""
    citizen = await add_citizen(crm)
    server = await ivr(transfer_uri=f"sip:{{target}}@{kamailio.domain}")
    events = await call_ivr(
        kamailio,
        [*TO_POPULATION_NL, ["dtmf", f"{NN_1985}#"], ["wait_end", 30]],
        answer_as="population-nl",
        linger=1.0,
    )
    assert await server.wait_idle(10)
    refer = next(e for e in events if e["event"] == "transfer_request")
    assert refer["target"].startswith(f"<sip:population-nl@{kamailio.domain}")
    incoming = next(e for e in events if e["event"] == "incoming")
    transferred = [e["state"] for e in events if e["event"] == "state" and e["call"] == "transfer"]
    assert "CONFIRMED" in transferred  # the caller now talks to the queue's extension
    await outbox[0].flush()
    (case,) = await outbox[1].open_cases_of_citizen(citizen.id)
    assert incoming["headers"]["X-Guichet-Case-Id"] == case.reference
    assert incoming["headers"]["X-Guichet-Queue"] == "population-nl"
    assert incoming["headers"]["X-Guichet-Lang"] == "nl"
    journey = await crm.get_journey(_call_id(events))
    assert journey is not None and journey.outcome == "queued"


def test_pyvoip_drops_an_invite_with_an_empty_header_and_ours_takes_it() -> None:
    from pyVoIP.SIP import SIPMessage  # after ivr.sip_phone: pyVoIP.SIP alone fails to import

    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    invite = (
        "INVITE sip:ivr@127.0.0.1:5060 SIP/2.0\r\n"
        "v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport, SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK0\r\n"
        "f: <sip:0470123456@127.0.0.1>;tag=a\r\n"
        "t: <sip:ivr@127.0.0.1>\r\n"
        "i: abc@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "m: <sip:0470123456@127.0.0.1:5070>\r\n"
        "Supported:\r\n"
        "Subject:x\r\n"
        "c: application/sdp\r\n"
        f"l: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()
    with pytest.raises(IndexError):
        SIPMessage(invite)
    message = SIPMessage(normalise_message(invite))
    assert message.method == "INVITE" and message.headers["Call-ID"] == "abc@127.0.0.1"
    assert [v["address"] for v in message.headers["Via"]] == [
        ("127.0.0.1", "5070"),
        ("10.0.0.1", "5060"),
    ]
    assert message.headers["From"]["number"] == "0470123456"
    assert message.body["m"][0]["port"] == 4000


def test_prompt_audio_becomes_unsigned_8_bit(tmp_path: Path) -> None:
    _tone(tmp_path / "tone.wav", 400, seconds=0.5)
    data = to_pyvoip(tmp_path / "tone.wav")
    assert len(data) == 4000  # 0.5 s at 8 kHz, one byte a sample
    assert data[0] == 128  # sin(0): silence is 0x80 in unsigned 8-bit
    assert max(data) > 128 + 20 and min(data) < 128 - 20


async def _until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_transfer_the_pbx_refuses_ends_with_the_hand_off_prompt(
    kamailio: Kamailio,
    ivr: Ivr,
    crm: SqlCrm,
    outbox: tuple[CaseOutbox, CaseService],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nobody behind the queue's extension (Kamailio: 404): the caller's phone reports the
    failure, the IVR plays its hand-off prompt and hangs up; the case stands."""
    citizen = await add_citizen(crm)
    server = await ivr(transfer_uri=f"sip:{{target}}@{kamailio.domain}")
    with caplog.at_level(logging.INFO, logger="guichet.sip"):
        events = await call_ivr(
            kamailio, [*TO_POPULATION_NL, ["dtmf", f"{NN_1985}#"], ["wait_end", 30]]
        )
        assert await server.wait_idle(10)
    assert any(e["event"] == "transfer_request" for e in events)
    assert "population-nl@" in caplog.text and "failed (404)" in caplog.text
    ended = _main(events)[-1]
    assert ended["state"] == "DISCONNECTED" and ended["code"] == 200  # our BYE, not theirs
    await outbox[0].flush()
    assert len(await outbox[1].open_cases_of_citizen(citizen.id)) == 1


async def test_a_call_cancelled_while_ringing_gets_487_and_leaves_nothing_behind(
    kamailio: Kamailio, ivr: Ivr, crm: SqlCrm
) -> None:
    server = await ivr()
    events = await call_ivr(kamailio, [], cancel_after=0.3, timeout=10)
    final = _main(events)[-1]
    assert final["state"] == "DISCONNECTED" and final["code"] == 487
    assert await _until(lambda: not server.phone.calls and server.active_calls == 0)
    assert await crm.get_journey(_call_id(events)) is None  # never answered: no journey


async def test_calls_beyond_the_limit_are_refused_busy(kamailio: Kamailio, ivr: Ivr) -> None:
    server = await ivr(max_calls=1)

    async def second() -> list[dict[str, Any]]:
        await _until(lambda: server.active_calls == 1)
        return await call_ivr(kamailio, [], timeout=10)

    first, refused = await asyncio.gather(
        call_ivr(kamailio, [["wait", 4.0], ["hangup"]], timeout=20), second()
    )
    assert "CONFIRMED" in _states(first)
    final = [e for e in refused if e["event"] == "state"][-1]
    assert final["state"] == "DISCONNECTED" and final["code"] == 486
    assert "CONFIRMED" not in _states(refused)


async def test_stopping_the_server_hangs_up_running_calls_and_keeps_their_journeys(
    kamailio: Kamailio, ivr: Ivr, crm: SqlCrm
) -> None:
    server = await ivr()
    caller = asyncio.create_task(call_ivr(kamailio, [["wait_end", 20]], timeout=25))
    assert await _until(lambda: server.active_calls == 1, timeout=15)
    await asyncio.sleep(1.0)
    await asyncio.wait_for(server.stop(grace=0.5), 15)
    events = await caller
    final = _main(events)[-1]
    assert final["state"] == "DISCONNECTED" and final["code"] == 200
    journey = await crm.get_journey(_call_id(events))
    assert journey is not None and journey.outcome == "hangup"
    assert server.phone.calls == [] and not server.phone.registered


async def test_prompts_play_in_real_time_and_the_caller_hears_them(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    """One second of a 700 Hz prompt, through the real conversion (16-bit WAV → unsigned
    8-bit → mu-law): sending takes a second (pyVoIP alone would queue it at once), and the
    caller's recording holds about a second of a 700 Hz tone (not a biased, wrapped one)."""
    _tone(tmp_path / "sounds" / "fr" / "tone.wav", 700, seconds=1.0)
    audio = PromptAudio(tmp_path / "sounds")
    elapsed: list[float] = []

    async def answer(call: SipCall) -> None:
        await call.answer()
        data = await audio.get("fr", "tone")
        assert data is not None
        await asyncio.sleep(0.5)  # the caller's recorder starts with its media
        started = asyncio.get_running_loop().time()
        assert await call.play(data)
        elapsed.append(asyncio.get_running_loop().time() - started)
        await asyncio.sleep(0.5)
        await call.hangup()

    low = random.randrange(30000, 60000, 2)
    phone = SipPhone(
        SipAccount("127.0.0.1", kamailio.sip_port, "ivr", rtp_ports=(low, low + 999)),
        on_call=answer,
    )
    await phone.start()
    try:
        record = tmp_path / "heard.wav"
        events = await call_ivr(kamailio, [["wait_end", 15]], timeout=20, record=str(record))
    finally:
        await phone.stop()
    assert _states(events)[-1] == "DISCONNECTED"
    assert elapsed and elapsed[0] >= 0.95  # never faster than real time
    rate, samples = _recorded_pcm16(record)
    loud = [i for i, s in enumerate(samples) if abs(s) > 1500]
    assert loud, "the caller heard nothing"
    tone = samples[loud[0] : loud[-1] + 1]
    seconds = len(tone) / rate
    assert 0.85 <= seconds <= 1.6, seconds  # late packets on a busy machine stretch it
    signs = [s > 0 for s in tone if abs(s) > 300]
    crossings = sum(1 for a, b in itertools.pairwise(signs) if a != b)
    assert 600 <= crossings / 2 / seconds <= 800, crossings / 2 / seconds


def _recorded_pcm16(path: Path) -> tuple[int, tuple[int, ...]]:
    """PJSIP's recording: a 44-byte PCM16 WAV header whose sizes PJSIP fills in only when its
    recorder is destroyed (the caller process exits without): read the samples after it."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and data[36:40] == b"data"
    assert struct.unpack_from("<HHIIHH", data, 20)[0:2] == (1, 1)  # PCM, mono
    rate = struct.unpack_from("<I", data, 24)[0]
    pcm = data[44 : 44 + (len(data) - 44) // 2 * 2]
    return rate, struct.unpack(f"<{len(pcm) // 2}h", pcm)


async def test_guichet_flow_serve_sip_answers_and_stops_cleanly(
    kamailio: Kamailio, short_sounds: Path, tmp_path: Path
) -> None:
    """The command an information line runs: registers, answers a call through Kamailio,
    records its journey, and stops on SIGTERM with exit status 0."""
    database = f"sqlite+aiosqlite:///{tmp_path}/guichet.db"
    low = random.randrange(30000, 60000, 2)
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "GUICHET_SOUNDS_DIR": str(short_sounds),
        "GUICHET_CASE_SPOOL": str(tmp_path / "cases.spool"),
        "PYTHONUNBUFFERED": "1",
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "guichet"),
        "flow",
        "serve-sip",
        "--registrar",
        kamailio.domain,
        "--user",
        "ivr",
        "--rtp-ports",
        f"{low}-{low + 999}",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        seen = b""
        while b"SIP IVR registered" not in seen:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, seen.decode()
            seen += line
        events = await call_ivr(kamailio, [["wait", 2.0], ["hangup"]], timeout=15)
        assert "CONFIRMED" in _states(events)
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stdout.read(), 30)
        assert await asyncio.wait_for(process.wait(), 10) == 0, (seen + rest).decode()[-3000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    store = await SqlCrm.connect(database)
    try:
        journey = await store.get_journey(_call_id(events))
    finally:
        await store.close()
    assert journey is not None and journey.leg == "sip" and journey.flow == "commune"
    assert journey.steps[0].node == "welcome"  # today's opening hours decide the rest


async def test_guichet_answers_sip_calls_when_a_registrar_is_set(
    kamailio: Kamailio, short_sounds: Path, tmp_path: Path
) -> None:
    """The whole server (`guichet serve`'s `Guichet`) with GUICHET_SIP_REGISTRAR: it registers
    as `ivr`, a call runs the sample flow, the case is made by the server's own outbox and the
    wallboard counts the call while it is in the menu."""
    from console_fixtures import guichet_settings

    from guichet.runtime import Guichet

    settings = guichet_settings(
        tmp_path,
        None,
        sounds_dir=short_sounds,
        sip_registrar=kamailio.domain,
        sip_local_port=_free_udp_port(),
    )
    guichet = Guichet(settings, clock=lambda: OPEN)
    await guichet.start()
    try:
        citizen = await add_citizen(guichet.store)
        assert guichet.sip is not None
        seen: list[int] = []
        watch = asyncio.create_task(_watch(lambda: seen.append(guichet.ivr_calls())))
        events = await call_ivr(
            kamailio, [*TO_POPULATION_NL, ["dtmf", f"{NN_1985}#"], ["wait_end", 30]]
        )
        watch.cancel()
        assert "CONFIRMED" in _states(events)
        assert max(seen) == 1  # in the menu: counted with the FastAGI calls
        assert await guichet.sip.wait_idle(10)
        await guichet.outbox.flush()
        (case,) = await guichet.cases.open_cases_of_citizen(citizen.id)
        assert (case.language, case.category, case.queue) == ("nl", "population", "population-nl")
    finally:
        await guichet.stop()


async def _watch(probe: Callable[[], None]) -> None:
    while True:
        probe()
        await asyncio.sleep(0.05)
