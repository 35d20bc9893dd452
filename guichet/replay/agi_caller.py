"""An Asterisk stand-in for FastAGI: the tests, the load benchmark and the demo PBX drive
Guichet's FastAGI server with it over real TCP.

* `read_log` / `Transcript.load` read the recorded wire logs of Asterisk 22.10 (format in
  the README of the recordings; `transcripts_dir` says where they are).
* `TranscriptPeer` replays a recording: the `agi_*` environment byte for byte, then each
  command our server sends is answered with the recorded answer for that command verb
  (in order), or Asterisk's documented answer where the recording has none left.
* `ScriptedPeer` plays a caller: keys typed when Asterisk next listens, silence, a hang-up
  at command N.

Both behave as Asterisk 22 does around a hang-up (all seen in the recordings): the media
command running answers `200 result=-1`; a bare `HANGUP` line follows, possibly after our
next command has arrived; on the dead channel `SET VARIABLE` still answers `200 result=1`
and media commands `511`; our own `HANGUP` gets `200 result=1` and then a `HANGUP` line.
A peer never closes the socket itself: it records whether and when the server did.

Package code, not test code: nothing here imports pytest (a missing recording is the
caller's to report).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "BUNDLED_RECORDINGS",
    "DEAD_ALLOWED",
    "DEAD_CHANNEL_ANSWER",
    "ENDPOS",
    "HANGUP",
    "MEDIA",
    "OWN_HANGUP_LINE_DELAY",
    "Action",
    "Answer",
    "AsteriskPeer",
    "DelayFn",
    "Exchange",
    "HangUp",
    "LogLine",
    "Press",
    "ReplyPeer",
    "ScriptedPeer",
    "Silence",
    "Transcript",
    "TranscriptPeer",
    "asterisk_env",
    "documented_answer",
    "parse_args",
    "read_log",
    "rewrite_env",
    "transcripts_dir",
    "verb_of",
]

DEAD_CHANNEL_ANSWER = b"511 Command Not Permitted on a dead channel or intercept routine\n"
HANGUP = b"HANGUP\n"
# `200 result=1` to our HANGUP command, then the `HANGUP` line 42 ms later (ivr-bad-input).
OWN_HANGUP_LINE_DELAY = 0.042
ENDPOS = 8000  # a second of 8 kHz audio: what a played prompt reports
# Commands Asterisk still runs on a dead channel (res_agi's `dead` flag).
DEAD_ALLOWED = {"SET VARIABLE", "GET VARIABLE", "GET FULL VARIABLE", "VERBOSE", "NOOP"}
MEDIA = {"STREAM FILE", "GET DATA", "WAIT FOR DIGIT", "GET OPTION", "CONTROL STREAM FILE"}
_VERBS = sorted(
    [
        *DEAD_ALLOWED,
        *MEDIA,
        "HANGUP",
        "ANSWER",
        "EXEC",
        "CHANNEL STATUS",
        "SAY DIGITS",
        "SAY NUMBER",
        "RECORD FILE",
        "SET MUSIC",
        "DATABASE GET",
        "DATABASE PUT",
    ],
    key=lambda v: -len(v.split()),
)


# --- recordings -------------------------------------------------------------------------

# The recordings the demo PBX plays, copied byte for byte from the Asterisk transcripts.
BUNDLED_RECORDINGS = Path(__file__).resolve().parent / "recordings"
# A clone's neighbour `shared/asterisk`: where CI and developers keep the full transcripts.
_NEXT_TO_REPO = Path(__file__).resolve().parents[2].parent / "shared" / "asterisk"


def transcripts_dir(path: Path | str | None = None) -> Path:
    """Where the recorded transcripts are: `path` if given, else `GUICHET_TRANSCRIPTS`, else
    `../shared/asterisk` next to the repository. The folder may not exist: callers decide
    whether that is an error (tests) or a reason to use `BUNDLED_RECORDINGS` (the demo)."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("GUICHET_TRANSCRIPTS") or _NEXT_TO_REPO)


class LogLine(NamedTuple):
    t: float
    conn: str
    direction: str  # `>>` from Asterisk, `<<` to Asterisk, `--` recorder note
    raw: bytes  # the wire line with its own terminator


def read_log(path: Path | str) -> Iterator[LogLine]:
    """Yield the lines of an `ami.log` / `agi.log` / `sim.log` recording."""
    with open(path, "rb") as f:
        for line in f:
            t, conn, direction, raw = line.split(b" ", 3)
            yield LogLine(float(t), conn.decode(), direction.decode(), raw)


@dataclass(frozen=True)
class Exchange:
    """One recorded command and the lines Asterisk answered it with."""

    command: str
    answer: tuple[bytes, ...]
    delay: float  # seconds from the command to its (last) answer line


@dataclass(frozen=True)
class Transcript:
    """A recorded FastAGI session, split where the channel died."""

    env: bytes
    exchanges: tuple[Exchange, ...]
    hangup_at: int | None  # exchange after which the channel is dead (`result=-1`, HANGUP)
    hangup_line_after: int  # commands the server sent before Asterisk's `HANGUP` line came
    hangup_line_delay: float  # seconds from the last event before it to the `HANGUP` line

    @classmethod
    def load(cls, path: Path | str, conn: str = "a1") -> Transcript:
        env: list[bytes] = []
        commands: list[tuple[str, float]] = []
        answers: list[list[tuple[bytes, float]]] = []
        in_env = True
        hangup_at: int | None = None
        line_after, line_delay, last_t = 1, 0.0, 0.0
        for t, c, direction, raw in read_log(path):
            if c != conn or direction == "--":
                continue
            if in_env:
                env.append(raw)
                in_env = raw != b"\n"
            elif direction == "<<":
                commands.append((raw.decode().rstrip("\n"), t))
                answers.append([])
                if hangup_at is None and verb_of(commands[-1][0]) == "HANGUP":
                    hangup_at = len(commands) - 1
            elif raw == HANGUP and hangup_at is not None:
                line_after = len(commands) - 1 - hangup_at
                line_delay = t - last_t
            else:
                answers[-1].append((raw, t))
                if hangup_at is None and raw.startswith(b"200 result=-1"):
                    hangup_at = len(commands) - 1
            last_t = t
        exchanges = tuple(
            Exchange(cmd, tuple(r for r, _ in ans), (ans[-1][1] - t0) if ans else 0.0)
            for (cmd, t0), ans in zip(commands, answers, strict=True)
        )
        return cls(b"".join(env), exchanges, hangup_at, line_after, line_delay)


def rewrite_env(
    env: bytes,
    *,
    script: str | None = None,
    uniqueid: str | None = None,
    callerid: str | None = None,
) -> bytes:
    """The recorded environment with another flow (`agi_network_script`, `agi_request`),
    uniqueid or caller id; every other byte stays as recorded."""
    out: list[bytes] = []
    for line in env.splitlines(keepends=True):
        key = line.split(b":", 1)[0].decode()
        if script is not None and key == "agi_network_script":
            line = f"agi_network_script: {script}\n".encode()
        elif script is not None and key == "agi_request":
            base = re.match(rb"agi_request: (agi://[^/]+/)", line)
            prefix = base.group(1) if base else b"agi://127.0.0.1:4573/"
            line = b"agi_request: " + prefix + script.encode() + b"\n"
        elif uniqueid is not None and key == "agi_uniqueid":
            line = f"agi_uniqueid: {uniqueid}\n".encode()
        elif callerid is not None and key in {"agi_callerid", "agi_calleridname"}:
            line = f"{key}: {callerid}\n".encode()
        out.append(line)
    return b"".join(out)


def asterisk_env(
    *,
    script: str = "commune",
    uniqueid: str = "1795370006.1",
    callerid: str = "0470123456",
    host: str = "127.0.0.1",
    port: int = 4573,
) -> bytes:
    """An `agi_*` environment shaped exactly like Asterisk 22.10's (see inbound-answered)."""
    fields = [
        ("agi_network", "yes"),
        ("agi_network_script", script),
        ("agi_request", f"agi://{host}:{port}/{script}"),
        ("agi_channel", "Local/022791111@from-citizen-00000000;2"),
        ("agi_language", "en"),
        ("agi_type", "Local"),
        ("agi_uniqueid", uniqueid),
        ("agi_version", "22.10.1"),
        ("agi_callerid", callerid),
        ("agi_calleridname", callerid),
        ("agi_callingpres", "0"),
        ("agi_callingani2", "0"),
        ("agi_callington", "0"),
        ("agi_callingtns", "0"),
        ("agi_dnid", "unknown"),
        ("agi_rdnis", "unknown"),
        ("agi_context", "from-citizen"),
        ("agi_extension", "022791111"),
        ("agi_priority", "4"),
        ("agi_enhanced", "0.0"),
        ("agi_accountcode", ""),
        ("agi_threadid", "140538858514112"),
    ]
    return "".join(f"{k}: {v}\n" for k, v in fields).encode() + b"\n"


# --- Asterisk's command-line rules ------------------------------------------------------


def parse_args(line: str) -> list[str]:
    """Split a command line the way res_agi.c `parse_args` does: `"` toggles quoting,
    `\\` escapes the next character, unquoted spaces and tabs separate arguments."""
    args: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    in_word = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            in_word = True
        elif ch in " \t" and not quoted and not escaped:
            if in_word:
                args.append("".join(cur))
                cur, in_word = [], False
        elif ch == "\\" and not escaped:
            escaped = True
            continue
        else:
            cur.append(ch)
            in_word = True
        escaped = False
    if in_word:
        args.append("".join(cur))
    return args


def verb_of(line: str) -> str:
    """`STREAM FILE x ""` -> `STREAM FILE` (known multi-word verbs, else the first word)."""
    words = line.upper().split()
    for verb in _VERBS:
        n = len(verb.split())
        if words[:n] == verb.split():
            return verb
    return words[0] if words else ""


@functools.lru_cache(maxsize=4096)
def _split(line: str) -> tuple[str, tuple[str, ...]]:
    """(verb, args) of a command line; cached: a load test sends the same lines again and again."""
    return verb_of(line), tuple(parse_args(line))


def documented_answer(verb: str, args: Sequence[str], *, dead: bool) -> list[bytes]:
    """What Asterisk answers when no caller action or recording says otherwise.

    Live: prompts play to the end, nobody types (GET DATA times out), variables are set.
    Dead: only the dead-allowed commands run, the rest get 511.
    """
    if dead and verb not in DEAD_ALLOWED:
        return [DEAD_CHANNEL_ANSWER]
    answers = {
        "SET VARIABLE": b"200 result=1\n",
        "GET VARIABLE": b"200 result=0\n",
        "GET FULL VARIABLE": b"200 result=0\n",
        "VERBOSE": b"200 result=1\n",
        "NOOP": b"200 result=0\n",
        "STREAM FILE": f"200 result=0 endpos={ENDPOS}\n".encode(),
        "GET OPTION": f"200 result=0 endpos={ENDPOS}\n".encode(),
        "GET DATA": b"200 result= (timeout)\n",
        "WAIT FOR DIGIT": b"200 result=0\n",
        "HANGUP": b"200 result=1\n",
        "ANSWER": b"200 result=0\n",
    }
    return [answers.get(verb, b"510 Invalid or unknown command\n")]


# --- the peer ---------------------------------------------------------------------------


@dataclass
class Answer:
    """Lines for one command, and whether the channel is dead once they are sent."""

    lines: list[bytes]
    hang_up: bool = False
    hangup_line_after: int = 1  # send the `HANGUP` line when this many more commands arrived...
    hangup_line_delay: float | None = None  # ...or this many seconds passed, if sooner
    delay: float | None = None  # seconds before answering (None: the peer's default)


@dataclass
class _PendingHangup:
    after_commands: int
    due: float | None


DelayFn = Callable[[int, str], float]


class AsteriskPeer:
    """The Asterisk side of one FastAGI session; subclasses decide the live answers."""

    def __init__(
        self, env: bytes, *, delay: DelayFn | None = None, watch_close: bool = True
    ) -> None:
        self.env = env
        self.delay = delay
        self.watch_close = watch_close  # notice the server's close while delaying an answer
        self.commands: list[str] = []
        self.answers: list[list[bytes]] = []
        self.wire: list[tuple[str, bytes]] = []  # (`<<` command | `>>` line), in wire order
        self.latencies: list[float] = []  # our answer written -> the server's next command
        self.variables: dict[str, str] = {}  # SET VARIABLE, as Asterisk would store them
        self.dead = False
        self.dead_since: float | None = None  # loop time the caller hung up
        self.hangup_lines = 0
        self.closed_by_server = False
        self.closed_at: float | None = None
        self.partial: bytes = b""  # an unterminated command line before EOF (a server bug)
        self.unanswered: list[bytes] = []  # commands sent before the previous answer (a bug)
        self.connected_at = 0.0
        self._pending: _PendingHangup | None = None
        self._last_write = 0.0

    def answer(self, index: int, verb: str, args: list[str]) -> Answer:
        raise NotImplementedError

    def answer_dead(self, index: int, verb: str, args: list[str]) -> list[bytes]:
        return documented_answer(verb, args, dead=True)

    @property
    def close_delay(self) -> float | None:
        """Seconds from the last thing we sent to the server's close."""
        return None if self.closed_at is None else self.closed_at - self._last_write

    async def run(self, host: str, port: int, *, deadline: float = 10.0) -> AsteriskPeer:
        """Connect, converse until the server closes, give up (socket aborted) at `deadline`."""
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(host, port)
        self.connected_at = loop.time()
        try:
            async with asyncio.timeout(deadline):
                await self._converse(reader, writer)
        except TimeoutError:
            pass
        finally:
            writer.transport.abort()
        return self

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        if not await self._write(writer, [self.env], record=False):
            return
        while True:
            raw = await self._next_command(reader, writer)
            if raw is None:
                return
            now = loop.time()
            self.latencies.append(now - self._last_write)
            self.wire.append(("<<", raw))
            line = raw.decode("utf-8", "replace").rstrip("\n")
            index = len(self.commands)
            self.commands.append(line)
            pending = self._pending
            if pending is not None:
                if pending.after_commands <= 1:
                    self._pending = None
                    if not await self._write(writer, [HANGUP]):
                        return
                else:
                    pending.after_commands -= 1
            verb, parsed = _split(line)
            args = list(parsed)
            if verb == "SET VARIABLE" and len(args) >= 4:
                self.variables[args[2]] = args[3]
            if self.dead:
                answer = Answer(self.answer_dead(index, verb, args))
            else:
                answer = self.answer(index, verb, args)
            wait = (
                answer.delay
                if answer.delay is not None
                else (self.delay(index, verb) if self.delay else 0.0)
            )
            if wait > 0 and not await self._pause(reader, wait):
                return
            self.answers.append(answer.lines)
            if not await self._write(writer, answer.lines):
                return
            if answer.hang_up and not self.dead:
                self.dead = True
                self.dead_since = loop.time()
                due = answer.hangup_line_delay
                self._pending = _PendingHangup(
                    answer.hangup_line_after, None if due is None else loop.time() + due
                )

    async def _pause(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Wait before answering (a prompt playing, a caller typing); False if the server
        closed meanwhile. Asterisk watches the socket during playback too."""
        if not self.watch_close:
            await asyncio.sleep(seconds)
            return True
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (left := until - loop.time()) > 0:
            try:
                self.unanswered.append(await asyncio.wait_for(reader.readuntil(b"\n"), left))
            except TimeoutError:
                break
            except asyncio.IncompleteReadError as exc:
                self.partial = exc.partial
                self._closed()
                return False
            except (ConnectionError, OSError):
                self._closed()
                return False
        return True

    async def _next_command(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """The next command line; sends a due `HANGUP` line meanwhile; None at EOF."""
        loop = asyncio.get_running_loop()
        while True:
            pending = self._pending
            timeout = None
            if pending is not None and pending.due is not None:
                timeout = max(0.0, pending.due - loop.time())
            try:
                return await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
            except TimeoutError:
                self._pending = None
                if not await self._write(writer, [HANGUP]):
                    return None
            except asyncio.IncompleteReadError as exc:
                self.partial = exc.partial
                self._closed()
                return None
            except (ConnectionError, OSError):
                self._closed()
                return None

    async def _write(
        self, writer: asyncio.StreamWriter, lines: list[bytes], *, record: bool = True
    ) -> bool:
        try:
            for line in lines:
                if line == HANGUP:
                    self.hangup_lines += 1
                writer.write(line)
                if record:
                    self.wire.append((">>", line))
            await writer.drain()
        except (ConnectionError, OSError):
            self._closed()
            return False
        self._last_write = asyncio.get_running_loop().time()
        return True

    def _closed(self) -> None:
        if not self.closed_by_server:
            self.closed_by_server = True
            self.closed_at = asyncio.get_running_loop().time()


class TranscriptPeer(AsteriskPeer):
    """Replays a recording: recorded answers by verb, in order, on each side of the hang-up.

    `time_scale` honours the recorded answer delays (1.0 = real time, 0 = at once).
    """

    def __init__(
        self,
        transcript: Transcript,
        *,
        script: str | None = None,
        uniqueid: str | None = None,
        time_scale: float = 0.0,
    ) -> None:
        super().__init__(rewrite_env(transcript.env, script=script, uniqueid=uniqueid))
        self.transcript = transcript
        self.time_scale = time_scale
        self._live: dict[str, deque[tuple[int, Exchange]]] = {}
        self._dead: dict[str, deque[tuple[int, Exchange]]] = {}
        for i, ex in enumerate(transcript.exchanges):
            alive = transcript.hangup_at is None or i <= transcript.hangup_at
            (self._live if alive else self._dead).setdefault(verb_of(ex.command), deque()).append(
                (i, ex)
            )

    def answer(self, index: int, verb: str, args: list[str]) -> Answer:
        recorded = self._live.get(verb)
        if not recorded:
            lines = documented_answer(verb, args, dead=False)
            if verb == "HANGUP":
                return Answer(lines, True, 0, OWN_HANGUP_LINE_DELAY)
            return Answer(lines)
        i, ex = recorded.popleft()
        t = self.transcript
        if i != t.hangup_at:
            return Answer(list(ex.answer), delay=ex.delay * self.time_scale)
        # the recorded hang-up: its `HANGUP` line comes where the recording had it
        line_delay = t.hangup_line_delay * self.time_scale if t.hangup_line_after == 0 else None
        return Answer(
            list(ex.answer), True, t.hangup_line_after, line_delay, delay=ex.delay * self.time_scale
        )

    def answer_dead(self, index: int, verb: str, args: list[str]) -> list[bytes]:
        recorded = self._dead.get(verb)
        if recorded:
            return list(recorded.popleft()[1].answer)
        return documented_answer(verb, args, dead=True)


# --- a scripted caller ------------------------------------------------------------------


@dataclass(frozen=True)
class Press:
    """Keys the caller types when Asterisk next listens (GET DATA, WAIT FOR DIGIT); with
    `barge`, the first key interrupts the next interruptible STREAM FILE instead."""

    keys: str
    barge: bool = False


@dataclass(frozen=True)
class Silence:
    """The caller types nothing at the next listen: it times out."""


@dataclass(frozen=True)
class HangUp:
    """The caller hangs up while command `at_command` (0-based) runs, or at the next listen."""

    at_command: int | None = None


Action = Press | Silence | HangUp


@dataclass
class _Caller:
    actions: deque[Action] = field(default_factory=deque)

    def head(self) -> Action | None:
        return self.actions[0] if self.actions else None

    def take_key(self) -> str:
        press = self.actions.popleft()
        assert isinstance(press, Press)
        if len(press.keys) > 1:
            self.actions.appendleft(Press(press.keys[1:], press.barge))
        return press.keys[0]


class ScriptedPeer(AsteriskPeer):
    """A caller following a script of `Press` / `Silence` / `HangUp` actions.

    Keys follow Asterisk's rules: GET DATA reads until `#` (dropped) or its maximum, a
    `#` alone gives `200 result=`, running out of keys is a timeout with the partial entry;
    keys left after a full GET DATA are dropped (Asterisk's idle loop discards DTMF).
    """

    def __init__(
        self,
        actions: Sequence[Action] = (),
        *,
        env: bytes | None = None,
        script: str = "commune",
        uniqueid: str = "1795370006.1",
        callerid: str = "0470123456",
        delay: DelayFn | None = None,
        hangup_line_delay: float | None = None,
        watch_close: bool = True,
    ) -> None:
        super().__init__(
            env
            if env is not None
            else asterisk_env(script=script, uniqueid=uniqueid, callerid=callerid),
            delay=delay,
            watch_close=watch_close,
        )
        self.hangup_at: int | None = None
        self.hangup_line_delay = hangup_line_delay
        sequence: deque[Action] = deque()
        for action in actions:
            if isinstance(action, HangUp) and action.at_command is not None:
                self.hangup_at = action.at_command
            else:
                sequence.append(action)
        self._caller = _Caller(sequence)

    def answer(self, index: int, verb: str, args: list[str]) -> Answer:
        if index == self.hangup_at:
            return self._hang_up(verb, args)
        head = self._caller.head()
        if verb == "STREAM FILE":
            escape = args[3] if len(args) > 3 else ""
            if isinstance(head, Press) and head.barge and head.keys[0] in escape:
                key = self._caller.take_key()
                return Answer([f"200 result={ord(key)} endpos={ENDPOS // 2}\n".encode()])
            return Answer(documented_answer(verb, args, dead=False))
        if verb in {"GET DATA", "WAIT FOR DIGIT"}:
            if isinstance(head, HangUp):
                self._caller.actions.popleft()
                return self._hang_up(verb, args)
            if isinstance(head, Silence) or head is None:
                if head is not None:
                    self._caller.actions.popleft()
                return Answer(documented_answer(verb, args, dead=False))
            if verb == "WAIT FOR DIGIT":
                return Answer([f"200 result={ord(self._caller.take_key())}\n".encode()])
            return Answer([self._get_data(int(args[4]) if len(args) > 4 else 1024)])
        if verb == "GET VARIABLE" and len(args) > 2 and args[2] in self.variables:
            return Answer([f"200 result=1 ({self.variables[args[2]]})\n".encode()])
        if verb == "HANGUP":
            return Answer([b"200 result=1\n"], True, 0, OWN_HANGUP_LINE_DELAY)
        return Answer(documented_answer(verb, args, dead=False))

    def _get_data(self, max_digits: int) -> bytes:
        press = self._caller.actions.popleft()
        assert isinstance(press, Press)
        digits = ""
        for key in press.keys:
            if key == "#":
                return f"200 result={digits}\n".encode()
            digits += key
            if len(digits) >= max_digits:
                return f"200 result={digits}\n".encode()
        return f"200 result={digits} (timeout)\n".encode()

    def _hang_up(self, verb: str, args: list[str]) -> Answer:
        """The caller is gone while this command runs: media commands end with -1; instant
        ones answer normally and the `HANGUP` line follows as soon as Asterisk idles."""
        if verb == "STREAM FILE":
            return Answer(
                [f"200 result=-1 endpos={ENDPOS // 2}\n".encode()], True, 1, self.hangup_line_delay
            )
        if verb in MEDIA:
            return Answer([b"200 result=-1\n"], True, 1, self.hangup_line_delay)
        return Answer(documented_answer(verb, args, dead=False), True, 0, 0.0)


class ReplyPeer(AsteriskPeer):
    """Answers command N with `replies[N]`, byte for byte (several lines, a `HANGUP` line
    before an answer...), then Asterisk's documented answers: for exact wire cases."""

    def __init__(
        self,
        replies: Sequence[bytes | Answer],
        *,
        env: bytes | None = None,
        delay: DelayFn | None = None,
    ) -> None:
        super().__init__(env if env is not None else asterisk_env(), delay=delay)
        self.replies = list(replies)

    def answer(self, index: int, verb: str, args: list[str]) -> Answer:
        if index >= len(self.replies):
            return Answer(documented_answer(verb, args, dead=False))
        reply = self.replies[index]
        return reply if isinstance(reply, Answer) else Answer([reply])
