"""FastAGI wire handling over real loopback sockets, with Asterisk 22's recorded bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from agi_fixtures import HOST, TRANSCRIPTS, transcript
from agi_peer import parse_args, read_log

from ivr.agi_protocol import (
    AgiChannel,
    AgiProtocolError,
    AgiResponse,
    ConnectionLost,
    _parse_general,
    arg,
    parse_response,
    parse_script,
    quote,
    read_environment,
)


@dataclass
class Pipe:
    """Our side (`reader`/`writer`, as the server sees Asterisk) and the Asterisk side."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pbx_reader: asyncio.StreamReader
    pbx_writer: asyncio.StreamWriter

    async def pbx_send(self, data: bytes) -> None:
        self.pbx_writer.write(data)
        await self.pbx_writer.drain()

    async def pbx_line(self) -> bytes:
        return await asyncio.wait_for(self.pbx_reader.readuntil(b"\n"), 5)


@asynccontextmanager
async def loopback() -> AsyncIterator[Pipe]:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await asyncio.start_server(on_connect, HOST, 0)
    pbx_reader, pbx_writer = await asyncio.open_connection(HOST, server.sockets[0].getsockname()[1])
    reader, writer = await asyncio.wait_for(accepted.get(), 5)
    try:
        yield Pipe(reader, writer, pbx_reader, pbx_writer)
    finally:
        writer.close()
        pbx_writer.close()
        server.close()
        await server.wait_closed()


def recorded_answers() -> list[str]:
    """Every distinct line Asterisk sent after the environments of all recordings."""
    if not TRANSCRIPTS.is_dir():
        pytest.skip(f"Asterisk recordings not found at {TRANSCRIPTS}")
    lines: set[str] = set()
    for log in sorted(TRANSCRIPTS.glob("*/agi.log")):
        in_env = True
        for _, _, direction, raw in read_log(log):
            if direction != ">>":
                continue
            if in_env:
                in_env = raw != b"\n"
                continue
            lines.add(raw.decode().rstrip("\n"))
    return sorted(lines)


# --- responses ---------------------------------------------------------------------------


def test_every_recorded_answer_parses() -> None:
    answers = recorded_answers()
    assert "200 result= (timeout)" in answers and "HANGUP" in answers
    for line in answers:
        if line == "HANGUP":
            continue
        response = parse_response(line)
        assert response.raw == line
        assert response.code in {200, 511}


@pytest.mark.parametrize(
    ("line", "code", "result", "data", "endpos", "timeout"),
    [
        ("200 result=1 (1795370006.1)", 200, "1", "1795370006.1", None, False),  # GET VARIABLE
        ("200 result=0 endpos=6291", 200, "0", None, 6291, False),  # STREAM FILE played
        ("200 result=50 endpos=3120", 200, "50", None, 3120, False),  # `2` barged in
        ("200 result=85073003328", 200, "85073003328", None, None, False),  # GET DATA + `#`
        ("200 result=-1", 200, "-1", None, None, False),  # caller gone
        ("200 result= (timeout)", 200, "", "timeout", None, True),  # silence
        ("200 result=", 200, "", None, None, False),  # `#` alone: the caller's skip
        ("200 result=850730 (timeout)", 200, "850730", "timeout", None, True),  # partial
        ("200 result=1 (dtmf) endpos=1200", 200, "1", "dtmf", 1200, False),  # RECORD FILE
        ("200 result=1 (a (b) c)", 200, "1", "a (b) c", None, False),  # value with parens
        ("200 result=-1 endpos=0", 200, "-1", None, 0, False),
    ],
)
def test_parse_200(
    line: str, code: int, result: str, data: str | None, endpos: int | None, timeout: bool
) -> None:
    response = parse_response(line)
    assert (response.code, response.result, response.data, response.endpos) == (
        code, result, data, endpos,
    )
    assert response.timeout is timeout
    assert response.ok


def test_skip_and_silence_are_different() -> None:
    skip, silence = parse_response("200 result="), parse_response("200 result= (timeout)")
    assert skip.result == silence.result == ""
    assert not skip.timeout and silence.timeout


def test_parse_refusals() -> None:
    dead = parse_response("511 Command Not Permitted on a dead channel or intercept routine")
    assert dead.dead_channel and not dead.ok and dead.result is None
    assert dead.message == "Command Not Permitted on a dead channel or intercept routine"
    assert parse_response("510 Invalid or unknown command").code == 510
    assert parse_response("100 result=0 Trying...").code == 100
    odd = parse_response("200 result=-1 Gosub label not found")
    assert (odd.result, odd.message) == ("-1", "Gosub label not found")


# Shapes near the common ones, where a shortcut could part ways with the general parser.
EDGE_ANSWERS = [
    "200 result=0 endpos=8000", "200 result=1", "200 result=", "200 result=#", "200 result=*",
    "200 result=-1 endpos=0", "200 result=-1 endpos=-1", "200 result=0 endpos=", "200 result=0 endpos=²",
    "200 result=0 endpos=٣", "200 result=0 endpos=80 00", "200 result=0 endpos=8000 ",
    "200 result=0  endpos=8000", "200 result=0 endpos=8000 x=1", "200 result=0 (timeout)",
    "200 result=1\t", "200 result=1\x00", "200 result=1\u00a0", "200 result=é", "200 result=1 ",
    "200 result=1 x", "200 result=1 Endpos=3", "200 result=(x)", "200 result=1 (", "200 result=1\r",
    "200 result=1\nx", "200 result=1\u2028", "200 result=12345678901234567890",
]


@pytest.mark.parametrize("line", EDGE_ANSWERS)
def test_the_common_answer_shortcut_agrees_with_the_general_parser(line: str) -> None:
    try:
        expected: AgiResponse | type[Exception] = _parse_general(line)
    except (AgiProtocolError, ValueError) as exc:
        expected = type(exc)
    try:
        got: AgiResponse | type[Exception] = parse_response(line)
    except (AgiProtocolError, ValueError) as exc:
        got = type(exc)
    assert got == expected


def test_the_shortcut_agrees_on_every_recorded_answer() -> None:
    for line in recorded_answers():
        if line != "HANGUP":
            assert parse_response(line) == _parse_general(line)


@pytest.mark.parametrize("line", ["", "HANGUP", "hello", "20 result=1", "agi_network: yes"])
def test_garbage_is_a_protocol_error(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        parse_response(line)


# --- routing and quoting -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "name", "args"),
    [
        ("commune", "commune", {}),
        ("commune?lang=fr", "commune", {"lang": "fr"}),
        ("/commune/?lang=nl&request_type=population", "commune",
         {"lang": "nl", "request_type": "population"}),
        ("commune?flag=", "commune", {"flag": ""}),
        ("etat%20civil?x=a%20b", "etat civil", {"x": "a b"}),
        ("", "", {}),
    ],
)
def test_parse_script(script: str, name: str, args: dict[str, str]) -> None:
    assert parse_script(script) == (name, args)


@pytest.mark.parametrize(
    "value", ["nl", "", "population-nl", "a b", 'say "hi"', "back\\slash", "end\\", "é ü"]
)
def test_quote_round_trips_through_asterisk_parse_args(value: str) -> None:
    line = f"SET VARIABLE X {quote(value)}"
    assert parse_args(line) == ["SET", "VARIABLE", "X", value]


def test_quote_cannot_inject_a_command() -> None:
    evil = 'x"\nSTREAM FILE evil ""\r\x00'
    line = f"SET VARIABLE X {quote(evil)}"
    assert "\n" not in line and "\r" not in line and "\x00" not in line
    assert parse_args(line) == ["SET", "VARIABLE", "X", 'x" STREAM FILE evil ""  ']


def test_arg_keeps_plain_tokens_bare() -> None:
    assert arg("guichet/nl/welcome") == "guichet/nl/welcome"
    assert arg("7000") == "7000"
    assert arg("with space") == '"with space"'


# --- the environment -------------------------------------------------------------------------


async def test_reads_the_recorded_environment() -> None:
    env_bytes = transcript("inbound-answered").env
    async with loopback() as pipe:
        await pipe.pbx_send(env_bytes)
        env = await read_environment(pipe.reader)
    assert env.script == "commune"
    assert env.uniqueid == "1795370006.1"
    assert env.callerid == "0470123456"
    assert env.channel == "Local/022791111@from-citizen-00000000;2"
    assert env.get("agi_accountcode") == ""  # `agi_accountcode: ` with nothing after the space
    assert env.get("agi_request") == "agi://127.0.0.1:4573/commune"
    assert len(env.values) == 22
    assert env.args == ()


async def test_environment_arguments() -> None:
    async with loopback() as pipe:
        await pipe.pbx_send(b"agi_network_script: commune\nagi_arg_1: a b\nagi_arg_2: \n\n")
        env = await read_environment(pipe.reader)
    assert env.args == ("a b", "")


@pytest.mark.parametrize("cut", [0, 1, 40, -1])
async def test_eof_inside_the_environment_is_connection_lost(cut: int) -> None:
    env_bytes = transcript("inbound-answered").env
    async with loopback() as pipe:
        await pipe.pbx_send(env_bytes[:cut] if cut >= 0 else env_bytes[:-1])
        pipe.pbx_writer.write_eof()
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(read_environment(pipe.reader), 5)


async def test_silent_client_times_out() -> None:
    async with loopback() as pipe:
        await pipe.pbx_send(b"agi_network: yes\n")
        with pytest.raises(AgiProtocolError, match="within"):
            await read_environment(pipe.reader, timeout=0.05)


async def test_oversized_environment_is_refused() -> None:
    async with loopback() as pipe:
        await pipe.pbx_send(b"agi_x: " + b"y" * 100 + b"\n")
        await pipe.pbx_send(b"agi_z: 1\n" * 3000)
        with pytest.raises(AgiProtocolError, match="larger"):
            await read_environment(pipe.reader, max_bytes=16 * 1024)


async def test_http_request_is_not_an_environment() -> None:
    async with loopback() as pipe:
        await pipe.pbx_send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(AgiProtocolError):
            await read_environment(pipe.reader)


# --- the command channel ------------------------------------------------------------------


async def test_hangup_line_before_the_answer_is_skipped() -> None:
    """ivr-hangup-midflow: `HANGUP` arrived after our SET VARIABLE, before its answer."""
    async with loopback() as pipe:
        channel = AgiChannel(pipe.reader, pipe.writer)
        pending = asyncio.create_task(channel.command('SET VARIABLE GUICHET_IVR_ABORTED "nrn"'))
        assert await pipe.pbx_line() == b'SET VARIABLE GUICHET_IVR_ABORTED "nrn"\n'
        await pipe.pbx_send(b"HANGUP\n200 result=1\n")
        response = await pending
        assert (response.code, response.result) == (200, "1")
        assert channel.hangup_received
        # the next command gets its own answer: nothing is one line off
        pending = asyncio.create_task(channel.command('STREAM FILE vm-goodbye ""'))
        assert await pipe.pbx_line() == b'STREAM FILE vm-goodbye ""\n'
        await pipe.pbx_send(b"511 Command Not Permitted on a dead channel or intercept routine\n")
        assert (await pending).dead_channel


async def test_hangup_line_after_the_answer_is_skipped_at_the_next_command() -> None:
    """ivr-bad-input: `200 result=1` to our HANGUP, then the `HANGUP` line 42 ms later."""
    async with loopback() as pipe:
        channel = AgiChannel(pipe.reader, pipe.writer)
        pending = asyncio.create_task(channel.command("HANGUP"))
        await pipe.pbx_line()
        await pipe.pbx_send(b"200 result=1\nHANGUP\n")
        assert (await pending).result == "1"
        pending = asyncio.create_task(channel.command('SET VARIABLE A "1"'))
        await pipe.pbx_line()
        await pipe.pbx_send(b"200 result=1\n")
        assert (await pending).result == "1"
        assert channel.hangup_received


async def test_trying_and_usage_blocks() -> None:
    async with loopback() as pipe:
        channel = AgiChannel(pipe.reader, pipe.writer)
        pending = asyncio.create_task(channel.command("EXEC Wait 1"))
        await pipe.pbx_line()
        await pipe.pbx_send(b"100 result=0 Trying...\n200 result=0\n")
        assert (await pending).code == 200
        pending = asyncio.create_task(channel.command("GET DATA"))
        await pipe.pbx_line()
        await pipe.pbx_send(
            b"520-Invalid command syntax.  Proper usage follows:\n"
            b" Usage: GET DATA <file to be streamed> [timeout] [max digits]\n"
            b"  Stream the given file.\n"
            b"520 End of proper usage.\n"
        )
        usage = await pending
        assert usage.code == 520
        assert usage.usage.splitlines()[0].strip().startswith("Usage: GET DATA")
        pending = asyncio.create_task(channel.command("NOOP"))
        await pipe.pbx_line()
        await pipe.pbx_send(b"200 result=0\n")
        assert (await pending).result == "0"


async def test_eof_is_connection_lost_for_good() -> None:
    async with loopback() as pipe:
        channel = AgiChannel(pipe.reader, pipe.writer)
        pending = asyncio.create_task(channel.command('STREAM FILE hello ""'))
        await pipe.pbx_line()
        await pipe.pbx_send(b"200 result=0 end")  # cut in the middle of a line
        pipe.pbx_writer.close()
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(pending, 5)
        assert channel.lost
        with pytest.raises(ConnectionLost):
            await channel.command("NOOP")


async def test_command_must_be_one_line() -> None:
    async with loopback() as pipe:
        channel = AgiChannel(pipe.reader, pipe.writer)
        with pytest.raises(ValueError):
            await channel.command("SET VARIABLE A 1\nHANGUP")


async def test_close_closes_the_socket() -> None:
    async with loopback() as pipe:
        channel = AgiChannel(pipe.reader, pipe.writer)
        await channel.close()
        assert await asyncio.wait_for(pipe.pbx_reader.read(), 5) == b""
