"""`AgiLeg` against a scripted Asterisk over loopback TCP: the commands it sends and how it
reads Asterisk's answers back into the engine's terms."""

from __future__ import annotations

import asyncio
import socket

import pytest
from agi_fixtures import HOST, SOUNDS_PREFIX, run_leg
from agi_peer import (
    DEAD_CHANNEL_ANSWER,
    Answer,
    HangUp,
    Press,
    ReplyPeer,
    ScriptedPeer,
    Silence,
    asterisk_env,
)

from ivr.agi_leg import AgiLeg
from ivr.agi_protocol import AgiChannel, AgiCommandError, AgiProtocolError, read_environment
from ivr.leg import CallerHungUp, Collected
from ivr.prompts import Prompt

ESC = '"0123456789*#"'
WELCOME = [Prompt("welcome", "fr", ""), Prompt("welcome", "nl", "")]
NRN = [Prompt("national_number_invalid", "nl", ""), Prompt("national_number_request", "nl", "")]


# --- play --------------------------------------------------------------------------------


async def test_play_streams_each_prompt_with_escape_digits() -> None:
    run = await run_leg(ScriptedPeer(), lambda leg: leg.play(WELCOME))
    assert run.error is None and run.result is None
    assert run.peer.commands == [
        f"STREAM FILE guichet/fr/welcome {ESC}",
        f"STREAM FILE guichet/nl/welcome {ESC}",
    ]
    assert run.peer.closed_by_server


async def test_play_not_interruptible_has_no_escape_digits() -> None:
    run = await run_leg(ScriptedPeer(), lambda leg: leg.play(WELCOME, interruptible=False))
    assert run.peer.commands[0] == 'STREAM FILE guichet/fr/welcome ""'


async def test_a_key_barges_in_and_stops_the_remaining_prompts() -> None:
    run = await run_leg(ScriptedPeer([Press("5", barge=True)]), lambda leg: leg.play(WELCOME))
    assert run.result == "5"
    assert run.peer.commands == [f"STREAM FILE guichet/fr/welcome {ESC}"]


async def test_prompt_hangup_and_dead_channel() -> None:
    for reply in (b"200 result=-1 endpos=1200\n", DEAD_CHANNEL_ANSWER):
        run = await run_leg(ReplyPeer([reply]), lambda leg: leg.play(WELCOME))
        assert isinstance(run.error, CallerHungUp)
        assert len(run.peer.commands) == 1  # the second prompt was never sent


async def test_missing_prompt_file_is_not_a_hangup() -> None:
    """`200 result=-1 endpos=0` is also what a missing file gives; the probe tells them apart."""
    run = await run_leg(
        ReplyPeer([b"200 result=-1 endpos=0\n", b"200 result=0\n"]), lambda leg: leg.play(WELCOME)
    )
    assert run.error is None and run.result is None
    assert run.peer.commands == [
        f"STREAM FILE guichet/fr/welcome {ESC}",
        "WAIT FOR DIGIT 1",
        f"STREAM FILE guichet/nl/welcome {ESC}",
    ]


async def test_hangup_at_the_start_of_a_prompt_is_still_a_hangup() -> None:
    run = await run_leg(
        ReplyPeer([b"200 result=-1 endpos=0\n", DEAD_CHANNEL_ANSWER]), lambda leg: leg.play(WELCOME)
    )
    assert isinstance(run.error, CallerHungUp)
    assert run.peer.commands == [f"STREAM FILE guichet/fr/welcome {ESC}", "WAIT FOR DIGIT 1"]


async def test_missing_get_data_prompt_still_collects_digits() -> None:
    replies = [
        b"200 result=0 endpos=100\n",
        b"200 result=-1\n",
        b"200 result=50\n",
        b"200 result=35\n",
    ]
    run = await run_leg(ReplyPeer(replies), collect_nrn)
    assert run.result == Collected("2", terminated=True)
    assert run.peer.commands[1:] == [
        "GET DATA guichet/nl/national_number_request 7000 12",
        "WAIT FOR DIGIT 1",
        "WAIT FOR DIGIT 7000",
    ]


# --- collect -----------------------------------------------------------------------------


async def collect_nrn(leg: AgiLeg) -> Collected:
    return await leg.collect(NRN, max_digits=12, timeout=7, terminator="#")


async def test_collect_with_hash_uses_get_data_on_the_last_prompt() -> None:
    run = await run_leg(ScriptedPeer([Press("85073003328#")]), collect_nrn)
    assert run.result == Collected("85073003328", terminated=True)
    assert run.peer.commands == [
        f"STREAM FILE guichet/nl/national_number_invalid {ESC}",
        "GET DATA guichet/nl/national_number_request 7000 12",
    ]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"200 result=\n", Collected("", terminated=True)),  # `#` alone: skip
        (b"200 result= (timeout)\n", Collected("", timed_out=True)),  # silence
        (b"200 result=850730 (timeout)\n", Collected("850730", timed_out=True)),  # stopped typing
        (b"200 result=8507300332\n", Collected("8507300332", terminated=True)),  # 10 digits + #
        (b"200 result=850730033281\n", Collected("850730033281")),  # all 12: no terminator
    ],
)
async def test_get_data_answers(reply: bytes, expected: Collected) -> None:
    run = await run_leg(ReplyPeer([b"200 result=0 endpos=100\n", reply]), collect_nrn)
    assert run.result == expected


async def test_key_barged_into_an_earlier_prompt_continues_with_wait_for_digit() -> None:
    run = await run_leg(ScriptedPeer([Press("85073#", barge=True)]), collect_nrn)
    assert run.result == Collected("85073", terminated=True)
    assert (
        run.peer.commands
        == [f"STREAM FILE guichet/nl/national_number_invalid {ESC}"] + ["WAIT FOR DIGIT 7000"] * 5
    )


async def test_hash_barging_in_is_a_skip() -> None:
    run = await run_leg(ScriptedPeer([Press("#", barge=True)]), collect_nrn)
    assert run.result == Collected("", terminated=True)
    assert len(run.peer.commands) == 1


async def test_menu_key_without_terminator() -> None:
    async def menu(leg: AgiLeg) -> Collected:
        return await leg.collect(WELCOME, max_digits=1, timeout=5, terminator=None)

    run = await run_leg(ScriptedPeer([Press("2")]), menu)
    assert run.result == Collected("2")
    assert run.peer.commands == [
        f"STREAM FILE guichet/fr/welcome {ESC}",
        f"STREAM FILE guichet/nl/welcome {ESC}",
        "WAIT FOR DIGIT 5000",
    ]
    run = await run_leg(ScriptedPeer([Silence()]), menu)
    assert run.result == Collected("", timed_out=True)


async def test_star_terminator_and_partial_timeout() -> None:
    async def star(leg: AgiLeg) -> Collected:
        return await leg.collect(WELCOME[:1], max_digits=6, timeout=2.5, terminator="*")

    run = await run_leg(ScriptedPeer([Press("12*")]), star)
    assert run.result == Collected("12", terminated=True)
    assert run.peer.commands[1:] == ["WAIT FOR DIGIT 2500"] * 3
    run = await run_leg(ScriptedPeer([Press("12")]), star)  # then nothing: timeout
    assert run.result == Collected("12", timed_out=True)


async def test_hangup_while_typing_then_only_set_variable_goes_out() -> None:
    """ivr-hangup-midflow, on the leg: -1, then `HANGUP` after our next command."""

    async def body(leg: AgiLeg) -> list[str]:
        seen: list[str] = []
        try:
            await collect_nrn(leg)
        except CallerHungUp:
            seen.append("hung up")
        await leg.set_variable("GUICHET_OUTCOME", "hangup")
        for attempt in (leg.play(WELCOME), collect_nrn(leg)):
            try:
                await attempt
            except CallerHungUp:
                seen.append("refused")
        await leg.hangup()  # nothing to send on a dead channel
        return seen

    peer = ScriptedPeer([Press("850730", barge=False), HangUp(at_command=1)])
    run = await run_leg(peer, body)
    assert run.error is None, run.error
    assert run.result == ["hung up", "refused", "refused"]
    assert peer.commands == [
        f"STREAM FILE guichet/nl/national_number_invalid {ESC}",
        "GET DATA guichet/nl/national_number_request 7000 12",
        "WAIT FOR DIGIT 1",  # `result=-1` may be a missing file: the probe gets 511
        'SET VARIABLE GUICHET_OUTCOME "hangup"',
    ]
    assert peer.wire[-5:] == [
        ("<<", b"WAIT FOR DIGIT 1\n"),
        (">>", b"HANGUP\n"),  # the asynchronous line, before the probe's own answer
        (">>", DEAD_CHANNEL_ANSWER),
        ("<<", b'SET VARIABLE GUICHET_OUTCOME "hangup"\n'),
        (">>", b"200 result=1\n"),
    ]
    assert peer.variables["GUICHET_OUTCOME"] == "hangup"
    assert peer.closed_by_server


async def test_wait_for_digit_hangup() -> None:
    async def menu(leg: AgiLeg) -> Collected:
        return await leg.collect([], max_digits=1, timeout=5, terminator=None)

    run = await run_leg(ScriptedPeer([HangUp()]), menu)
    assert isinstance(run.error, CallerHungUp)
    assert run.peer.commands == ["WAIT FOR DIGIT 5000"]


# --- variables, language, hang-up ------------------------------------------------------------


async def test_set_variable_is_quoted_and_cannot_inject() -> None:
    async def body(leg: AgiLeg) -> None:
        await leg.set_variable("GUICHET_LANG", "nl")
        await leg.set_variable("GUICHET_NOTE", 'a "b"\nHANGUP')
        await leg.set_language("nl")

    run = await run_leg(ScriptedPeer(), body)
    assert run.error is None
    assert run.peer.commands == [
        'SET VARIABLE GUICHET_LANG "nl"',
        'SET VARIABLE GUICHET_NOTE "a \\"b\\" HANGUP"',
        "SET VARIABLE CHANNEL(language) nl",
    ]
    assert run.peer.variables == {
        "GUICHET_LANG": "nl",
        "GUICHET_NOTE": 'a "b" HANGUP',
        "CHANNEL(language)": "nl",
    }


@pytest.mark.parametrize(
    "call",
    [
        ("set_variable", "BAD NAME", "x"),
        ("set_variable", "A\nB", "x"),
        ("set_language", "nl extra"),
        ("set_language", "NL\n"),
    ],
)
async def test_bad_names_are_refused_before_the_wire(call: tuple[str, ...]) -> None:
    async def body(leg: AgiLeg) -> None:
        await getattr(leg, call[0])(*call[1:])

    run = await run_leg(ScriptedPeer(), body)
    assert isinstance(run.error, ValueError)
    assert run.peer.commands == []


async def test_our_hangup() -> None:
    async def body(leg: AgiLeg) -> bool:
        await leg.hangup()
        hung_up = leg.hung_up
        await leg.hangup()  # once is enough
        with pytest.raises(CallerHungUp):
            await leg.play(WELCOME)
        return hung_up

    run = await run_leg(ScriptedPeer(), body)
    assert run.result is True
    assert run.peer.commands == ["HANGUP"]


async def test_unknown_command_answer_is_an_error_not_a_hangup() -> None:
    run = await run_leg(
        ReplyPeer([b"510 Invalid or unknown command\n"]), lambda leg: leg.play(WELCOME)
    )
    assert isinstance(run.error, AgiCommandError)


async def test_hangup_line_before_a_prompt_answer() -> None:
    """The caller left while we idled: `HANGUP` then 511 for our STREAM FILE."""
    peer = ReplyPeer([Answer([b"HANGUP\n", DEAD_CHANNEL_ANSWER])])
    run = await run_leg(peer, lambda leg: leg.play(WELCOME))
    assert isinstance(run.error, CallerHungUp)
    assert len(peer.commands) == 1


@pytest.mark.parametrize(
    ("callerid", "expected"),
    [("0470123456", "0470123456"), ("unknown", ""), ("anonymous", ""), ("Anonymous", ""), ("", "")],
)
async def test_call_id_and_caller(callerid: str, expected: str) -> None:
    env = asterisk_env(uniqueid="1795370350.1", callerid=callerid)

    async def body(leg: AgiLeg) -> tuple[str, str, str]:
        return leg.kind, leg.call_id, leg.caller

    run = await run_leg(ScriptedPeer(env=env), body)
    assert run.result == ("agi", "1795370350.1", expected)


async def test_connection_lost_is_a_hangup_for_every_command() -> None:
    """Asterisk gone (EOF): media and SET VARIABLE both raise CallerHungUp, nothing hangs."""
    results: list[str] = []
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = AgiChannel(reader, writer)
        leg = AgiLeg(channel, await read_environment(reader), sounds_prefix=SOUNDS_PREFIX)
        for step in (leg.play(WELCOME), leg.set_variable("GUICHET_OUTCOME", "hangup")):
            try:
                await step
            except CallerHungUp:
                results.append("hung up")
        await channel.close()
        done.set()

    server = await asyncio.start_server(handle, HOST, 0)
    sock = socket.create_connection((HOST, server.sockets[0].getsockname()[1]))
    sock.sendall(asterisk_env())
    sock.shutdown(socket.SHUT_WR)
    await asyncio.wait_for(done.wait(), 5)
    sock.close()
    server.close()
    await server.wait_closed()
    assert results == ["hung up", "hung up"]


async def test_a_garbled_entry_is_an_error_that_does_not_show_the_number() -> None:
    async def body(leg: AgiLeg) -> Collected:
        return await leg.collect(NRN[-1:], max_digits=12, timeout=7)

    run = await run_leg(ReplyPeer([b"200 result=85073003328A\n"]), body)
    assert isinstance(run.error, AgiProtocolError)
    assert "85073003328" not in str(run.error)
