"""FastAGI wire handling: the `agi_*` environment, response lines and a command channel.

Decision: our own small asyncio FastAGI layer instead of wrapping panoramisk's `fast_agi`.
Wrapping panoramisk 1.4 would take more code than the protocol itself, because its FastAGI
part gets the details a telephony server lives on wrong:

* the header loop `while b'\\n\\n' not in buffer: buffer += await reader.read(...)` spins
  forever at 100 % CPU when Asterisk (or a port scanner) closes before the blank line;
* routes match `agi_network_script` exactly, so `agi://host/commune?lang=fr` finds no route;
* `parse_agi_result` gives `result ('', '')` both for `200 result= (timeout)` (silence) and
  for `200 result=` (the citizen pressed `#` alone: "skip"), which a flow must tell apart;
* the asynchronous `HANGUP` line Asterisk sends once the caller is gone can arrive *after*
  our next command (recorded in `ivr-hangup-midflow`); panoramisk reads it as that
  command's answer and every later answer is then one line off;
* at EOF `readline()` returns `b''` and the parser ends in `int('')` (ValueError) instead
  of a clean "connection lost";
* `add_route` wraps plain functions with `asyncio.coroutine`, removed in Python 3.11.

Panoramisk stays our AMI library. This module knows the wire only; `ivr.agi_leg` maps it
to the engine's `CallLeg` and `ivr.fastagi` runs the server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from crm_bridge.privacy import mask_digits_in_text

# An Asterisk 22 environment is ~600 bytes; AGI() arguments (agi_arg_N) add a little.
MAX_ENV_BYTES = 16 * 1024
ENV_TIMEOUT = 10.0  # seconds for the whole environment: Asterisk sends it at once
MAX_USAGE_LINES = 200  # a `520-` usage block is a dozen lines; more is not Asterisk
HANGUP_LINE = "HANGUP"
DEAD_CHANNEL = 511  # "Command Not Permitted on a dead channel or intercept routine"

_ENCODING = "utf-8"
_STATUS = re.compile(r"(?P<code>\d{3})(?P<sep>[ -]?)(?P<rest>.*)")
# `result=<value>[ (<data>)][ key=value ...]`; data is greedy so a variable's value may hold ")".
_RESULT = re.compile(
    r"result=(?P<result>\S*)(?: \((?P<data>.*)\))?(?P<extra>(?: [A-Za-z_]+=\S*)*)\s*"
)
_EXTRA = re.compile(r"([A-Za-z_]+)=(\S*)")
_BARE_ARG = re.compile(r"[A-Za-z0-9_./:+@%,()-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AgiError(Exception):
    """Anything that ends a FastAGI conversation other than the flow finishing."""


class ConnectionLost(AgiError):
    """EOF or a reset: Asterisk (or the network between us) is gone."""


class AgiProtocolError(AgiError):
    """Bytes that are not FastAGI: a broken environment, an oversized or garbled line."""


class AgiCommandError(AgiError):
    """Asterisk refused a command (510 unknown, 520 usage): a bug on our side, not the caller."""

    def __init__(self, command: str, response: AgiResponse) -> None:
        super().__init__(f"{command.split(' ', 1)[0]}: {response.raw}")
        self.command = command
        self.response = response


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The `agi_*` variables Asterisk sends before the first command."""

    values: Mapping[str, str]

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def script(self) -> str:
        return self.get("agi_network_script")

    @property
    def uniqueid(self) -> str:
        return self.get("agi_uniqueid")

    @property
    def callerid(self) -> str:
        return self.get("agi_callerid")

    @property
    def channel(self) -> str:
        return self.get("agi_channel")

    @property
    def args(self) -> tuple[str, ...]:
        """`AGI(agi://host/flow,a,b)` arguments, in order (`agi_arg_1`...)."""
        out: list[str] = []
        while (value := self.values.get(f"agi_arg_{len(out) + 1}")) is not None:
            out.append(value)
        return tuple(out)


async def read_environment(
    reader: asyncio.StreamReader,
    *,
    max_bytes: int = MAX_ENV_BYTES,
    timeout: float = ENV_TIMEOUT,
) -> AgiEnvironment:
    """Read `agi_name: value` lines up to the blank line.

    Bounded in size and time so a silent or hostile client cannot hold a task; EOF before
    the blank line is `ConnectionLost`, never a busy loop.
    """
    values: dict[str, str] = {}
    total = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except _READ_ERRORS as exc:
                    raise _read_error(exc) from None
                total += len(raw)
                if total > max_bytes:
                    raise AgiProtocolError(f"agi_* environment larger than {max_bytes} bytes")
                line = raw.rstrip(b"\r\n")
                if not line:
                    return AgiEnvironment(values)
                key, sep, value = line.decode(_ENCODING, "replace").partition(":")
                if not sep or not key or " " in key:
                    raise AgiProtocolError(f"not an agi_* environment line: {excerpt(line)}")
                values[key] = value.removeprefix(" ")
    except TimeoutError:
        raise AgiProtocolError(f"no complete agi_* environment within {timeout:g} s") from None
    except ConnectionLost as exc:
        raise ConnectionLost(f"connection closed inside the agi_* environment ({exc})") from None


def parse_script(script: str) -> tuple[str, dict[str, str]]:
    """`commune?lang=fr` -> (`commune`, {`lang`: `fr`}): the flow name and its URL arguments."""
    path, _, query = script.partition("?")
    name = unquote(path.strip("/"))
    return name, dict(parse_qsl(query, keep_blank_values=True))


@dataclass(frozen=True, slots=True)
class AgiResponse:
    """One answer: `200 result=<result> (<data>) endpos=<n>`, or a 5xx refusal."""

    code: int
    result: str | None = None  # text after `result=`: "" for `200 result=` (`#` alone)
    data: str | None = None  # the parenthesised part: "timeout", a variable's value...
    endpos: int | None = None
    message: str = ""  # text of other lines, e.g. the 511 reason
    usage: str = ""  # the usage text of a multi-line `520-` answer
    raw: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def timeout(self) -> bool:
        """`200 result=... (timeout)`: the entry ended because the caller stopped typing."""
        return self.data == "timeout"

    @property
    def dead_channel(self) -> bool:
        return self.code == DEAD_CHANNEL

    def result_int(self) -> int | None:
        try:
            return int(self.result) if self.result is not None else None
        except ValueError:
            return None


def parse_response(line: str) -> AgiResponse:
    """Parse one response line (without its newline). A `520-` first line parses with
    `usage` empty; `AgiChannel` reads the usage lines that follow it."""
    if line.startswith(_COMMON):
        common = _parse_common(line)
        if common is not None:
            return common
    return _parse_general(line)


_COMMON = "200 result="
_ENDPOS = "endpos="


def _parse_common(line: str) -> AgiResponse | None:
    """The answers nearly every command gets, without regular expressions: `200 result=<v>`
    and `200 result=<v> endpos=<digits>` (a key, a prompt played, a variable set). The
    same response `_parse_general` gives; None for any other shape, which it then parses."""
    value, sep, tail = line[len(_COMMON) :].partition(" ")
    if not value.isprintable():  # no whitespace or control character left in the value
        return None
    if not sep:
        return AgiResponse(code=200, result=value, raw=line, extra={})
    digits = tail[len(_ENDPOS) :]
    if tail.startswith(_ENDPOS) and digits.isascii() and digits.isdigit():
        return AgiResponse(
            code=200, result=value, endpos=int(digits), raw=line, extra={"endpos": digits}
        )
    return None


def _parse_general(line: str) -> AgiResponse:
    status = _STATUS.fullmatch(line)
    if status is None:
        raise AgiProtocolError(f"not an AGI response: {excerpt(line)}")
    code, rest = int(status["code"]), status["rest"]
    if code != 200:
        return AgiResponse(code=code, message=rest, raw=line)
    found = _RESULT.fullmatch(rest)
    if found is None:  # e.g. `200 result=-1 Gosub label not found`: keep the value, text as message
        value, _, message = rest.removeprefix("result=").partition(" ")
        has_result = rest.startswith("result=")
        return AgiResponse(
            code=code,
            result=value if has_result else None,
            message=message if has_result else rest,
            raw=line,
        )
    extra = dict(_EXTRA.findall(found["extra"]))
    endpos = extra.get("endpos")
    return AgiResponse(
        code=code,
        result=found["result"],
        data=found["data"],
        endpos=int(endpos) if endpos and endpos.lstrip("-").isdigit() else None,
        raw=line,
        extra=extra,
    )


def excerpt(wire: str | bytes) -> str:
    """Wire text for an error message: short, national numbers masked (errors get logged)."""
    text = wire.decode(_ENCODING, "replace") if isinstance(wire, bytes) else wire
    return repr(mask_digits_in_text(text[:80]))


def quote(value: str) -> str:
    """A double-quoted argument as Asterisk's `parse_args` reads it back.

    Backslash and quote are escaped; control characters (CR, LF, NUL...) become spaces,
    so no value can end the command line and inject another command.
    """
    clean = _CONTROL.sub(" ", value)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def arg(value: str) -> str:
    """A plain token as-is (`guichet/nl/welcome`, `5000`), anything else quoted."""
    return value if _BARE_ARG.fullmatch(value) else quote(value)


class AgiChannel:
    """One FastAGI connection: strictly one command, then its answer.

    An unsolicited `HANGUP` line is skipped and remembered wherever it appears, `100 Trying`
    lines are skipped, a `520-` usage block is read to its end, and EOF or a reset becomes
    `ConnectionLost` for this and every later command.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._busy = False
        self._lost = False
        self.hangup_received = False

    @property
    def lost(self) -> bool:
        return self._lost

    async def command(self, line: str) -> AgiResponse:
        """Send one command line (arguments already quoted) and return its answer."""
        if "\n" in line or "\r" in line or "\x00" in line:
            raise ValueError("an AGI command is one line; quote() the arguments")
        if self._lost:
            raise ConnectionLost("FastAGI connection already lost")
        if self._busy:
            raise RuntimeError("one AGI command at a time: Asterisk answers in order")
        self._busy = True
        try:
            self._writer.write(line.encode(_ENCODING) + b"\n")
            await self._writer.drain()
            while True:  # the answer, past what Asterisk may send before it
                text = await self._read_text()
                if text == HANGUP_LINE:
                    self.hangup_received = True
                    continue
                response = parse_response(text)
                if 100 <= response.code < 200:  # `100 result=0 Trying...`: the answer follows
                    continue
                if response.code == 520 and text.startswith("520-"):
                    return await self._read_usage(response)
                return response
        except (ConnectionError, OSError) as exc:
            self._lost = True
            raise ConnectionLost(str(exc) or type(exc).__name__) from None
        except (ConnectionLost, AgiProtocolError):
            self._lost = True  # out of step with Asterisk: no later answer can be trusted
            raise
        finally:
            self._busy = False

    async def _read_usage(self, first: AgiResponse) -> AgiResponse:
        usage: list[str] = []
        for _ in range(MAX_USAGE_LINES):
            text = await self._read_text()
            if text.startswith("520 "):
                return AgiResponse(
                    code=520, message=first.message, usage="\n".join(usage), raw=first.raw
                )
            usage.append(text)
        raise AgiProtocolError("520 usage block without its `520 End of proper usage.` line")

    async def _read_text(self) -> str:
        try:
            raw = await self._reader.readuntil(b"\n")
        except _READ_ERRORS as exc:
            raise _read_error(exc) from None
        return raw.rstrip(b"\r\n").decode(_ENCODING, "replace")

    async def close(self, timeout: float = 1.0) -> None:
        """Close our end now: Asterisk never closes a FastAGI socket, the channel waits for us."""
        self._lost = True
        writer = self._writer
        if writer.is_closing():
            return
        writer.close()
        try:
            async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
                await writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            writer.transport.abort()


# What reading a line can raise; `_read_error` says what it means for the conversation.
# Callers catch these around `readuntil` themselves: one coroutine less per line.
_READ_ERRORS = (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError)


def _read_error(exc: BaseException) -> AgiError:
    if isinstance(exc, asyncio.IncompleteReadError):
        return ConnectionLost(f"EOF after {len(exc.partial)} bytes of a line")
    if isinstance(exc, asyncio.LimitOverrunError):
        return AgiProtocolError(f"line longer than {exc.consumed} bytes")
    return ConnectionLost(str(exc) or type(exc).__name__)
