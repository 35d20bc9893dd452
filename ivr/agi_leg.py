"""`AgiLeg`: the engine's `CallLeg` over one FastAGI connection.

Prompts are sound files `<prefix>/<lang>/<key>` (what `guichet audio build` installs under
Asterisk's sounds directory). Digit entry uses `GET DATA` when it can, because Asterisk then
handles barge-in, inter-digit timeout and `#` itself in one round trip; otherwise it
collects key by key with `WAIT FOR DIGIT`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ivr.agi_protocol import (
    AgiChannel,
    AgiCommandError,
    AgiEnvironment,
    AgiProtocolError,
    AgiResponse,
    ConnectionLost,
    arg,
    excerpt,
    quote,
)
from ivr.leg import DTMF_DIGITS, CallerHungUp, Collected, gather_keys
from ivr.prompts import Prompt

if TYPE_CHECKING:
    from ivr.engine import CallResult

log = logging.getLogger("guichet.agi")

_NO_CALLER_ID = {"", "unknown", "anonymous"}
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\([A-Za-z0-9_,]*\))?")
_LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Za-z]{2,4})?")


class _MissingAudio(Exception):
    """Asterisk could not open a prompt file: it answers `200 result=-1 endpos=0`, the very
    answer a hang-up gives. A `WAIT FOR DIGIT 1` probe tells them apart (a dead channel
    answers 511); the call goes on without that prompt instead of being dropped."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key  # a digit the caller pressed during the probe, or ""


class AgiLeg:
    """A citizen's call as Asterisk runs it in `AGI(agi://.../<flow>)`.

    Once the caller is gone (`200 result=-1`, a `HANGUP` line or a `511`) media commands
    raise `CallerHungUp` without being sent, while `SET VARIABLE` still goes out: Asterisk
    accepts it on a dead channel, so the outcome reaches the CDR and the dialplan.
    """

    kind = "agi"

    def __init__(self, channel: AgiChannel, env: AgiEnvironment, *, sounds_prefix: str) -> None:
        self._channel = channel
        self._env = env
        self._prefix = sounds_prefix.strip("/")
        self._dead = False

    @property
    def call_id(self) -> str:
        return self._env.uniqueid

    @property
    def caller(self) -> str:
        number = self._env.callerid.strip()
        return "" if number.lower() in _NO_CALLER_ID else number

    @property
    def hung_up(self) -> bool:
        """The channel is dead (caller gone, or our own HANGUP) or the connection is lost."""
        return self._dead or self._channel.hangup_received or self._channel.lost

    async def play(self, prompts: Sequence[Prompt], *, interruptible: bool = True) -> str | None:
        return await self._stream(prompts, DTMF_DIGITS if interruptible else "")

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
        ms = max(1, round(timeout * 1000))
        # GET DATA ends on `#` only, so it fits when `#` is the terminator.
        get_data = terminator == "#" and bool(prompts)
        head = prompts[:-1] if get_data else prompts
        barged = await self._stream(head, DTMF_DIGITS)
        if barged is None and get_data:
            try:
                response = await self._media(
                    f"GET DATA {self._file(prompts[-1])} {ms} {max_digits}", plays_file=True
                )
            except _MissingAudio as missing:
                barged = missing.key
            else:
                return _get_data_result(response, max_digits)
        return await self._wait_for_digits(barged or "", max_digits, ms, terminator)

    async def set_variable(self, name: str, value: str) -> None:
        if not _VARIABLE.fullmatch(name):
            raise ValueError(f"not a channel variable name: {name!r}")
        await self._set(name, quote(value))

    async def set_language(self, lang: str) -> None:
        if not _LANGUAGE.fullmatch(lang):
            raise ValueError(f"not a language code: {lang!r}")
        await self._set("CHANNEL(language)", lang)

    async def hand_off(self, result: CallResult) -> None:
        """Give the channel back to the dialplan (Queue...) now: closing the socket is all it
        takes, and the caller must not wait while the engine then stores the journey."""
        await self._channel.close()
        log.debug("call %s: handed back to the dialplan (%s)", self.call_id, result.outcome)

    async def hangup(self) -> None:
        if self.hung_up:
            return
        response = await self._send("HANGUP")
        self._dead = True  # Asterisk answers `200 result=1`, then sends a `HANGUP` line
        if not response.ok and not response.dead_channel:
            raise AgiCommandError("HANGUP", response)

    async def _stream(self, prompts: Sequence[Prompt], escape_digits: str) -> str | None:
        """STREAM FILE each prompt; the first key that barges in stops the rest."""
        for prompt in prompts:
            try:
                response = await self._media(
                    f"STREAM FILE {self._file(prompt)} {_quoted(escape_digits)}", plays_file=True
                )
            except _MissingAudio as missing:
                if missing.key and missing.key in escape_digits:
                    return missing.key
                continue
            key = response.result_int()
            if key is None:
                raise AgiProtocolError(f"STREAM FILE answered {excerpt(response.raw)}")
            if key > 0:
                return _key(key, response)
        return None

    async def _wait_for_digits(
        self, first: str, max_digits: int, ms: int, terminator: str | None
    ) -> Collected:
        async def next_key() -> str | None:
            response = await self._media(f"WAIT FOR DIGIT {ms}")
            code = response.result_int()
            if code is None:
                raise AgiProtocolError(f"WAIT FOR DIGIT answered {excerpt(response.raw)}")
            return None if code == 0 else _key(code, response)

        return await gather_keys(first, next_key, max_digits=max_digits, terminator=terminator)

    async def _media(self, line: str, *, plays_file: bool = False) -> AgiResponse:
        """A command that needs a live channel: refused locally once the caller is gone."""
        if self.hung_up:
            raise CallerHungUp
        response = await self._send(line)
        # A missing file answers `result=-1 endpos=0` (STREAM FILE) or `result=-1` (GET DATA);
        # a hang-up during playback has played something (endpos > 0) and is then plain.
        unopened = response.endpos in (None, 0)
        if plays_file and response.ok and response.result == "-1" and unopened and not self.hung_up:
            probe = await self._send("WAIT FOR DIGIT 1")
            if probe.ok and probe.result not in (None, "-1") and not self.hung_up:
                code = probe.result_int() or 0
                log.error(
                    "call %s: prompt audio missing or unreadable on the PBX: %s",
                    self.call_id,
                    line.split(" ", 3)[2],
                )
                raise _MissingAudio(chr(code) if 0 < code < 128 else "")
            response = probe
        if response.dead_channel or (response.ok and response.result == "-1"):
            self._dead = True
            log.info("call %s: caller hung up", self.call_id)
            raise CallerHungUp
        if not response.ok:
            raise AgiCommandError(line, response)
        return response

    async def _set(self, name: str, rendered_value: str) -> None:
        response = await self._send(f"SET VARIABLE {name} {rendered_value}")
        if not response.ok:
            log.warning("call %s: SET VARIABLE %s refused: %s", self.call_id, name, response.raw)

    async def _send(self, line: str) -> AgiResponse:
        try:
            return await self._channel.command(line)
        except ConnectionLost as exc:
            self._dead = True
            log.info("call %s: FastAGI connection lost (%s)", self.call_id, exc)
            raise CallerHungUp from exc

    def _file(self, prompt: Prompt) -> str:
        return _sound_file(self._prefix, prompt.lang, prompt.key)


# Both are pure functions of a few flow-defined values (no caller data): cached, as every call
# plays the same prompts with the same escape digits.
@functools.lru_cache(maxsize=4096)
def _sound_file(prefix: str, lang: str, key: str) -> str:
    path = f"{lang}/{key}"
    return arg(f"{prefix}/{path}" if prefix else path)


@functools.lru_cache(maxsize=64)
def _quoted(escape_digits: str) -> str:
    return quote(escape_digits)


def _key(code: int, response: AgiResponse) -> str:
    """The DTMF key of an answer's ASCII code (`200 result=50` is `2`)."""
    key = chr(code) if 0 < code < 128 else ""
    if not key or key not in DTMF_DIGITS:
        raise AgiProtocolError(f"not a DTMF key in {excerpt(response.raw)}")
    return key


def _get_data_result(response: AgiResponse, max_digits: int) -> Collected:
    """`result=` is `#` alone, `result= (timeout)` silence, `result=123 (timeout)` a partial
    entry; fewer digits than asked without a timeout means `#` ended the entry."""
    digits = response.result or ""
    if any(ch not in DTMF_DIGITS for ch in digits):
        raise AgiProtocolError(f"GET DATA answered {excerpt(response.raw)}")
    if response.timeout:
        return Collected(digits, timed_out=True)
    return Collected(digits, terminated=len(digits) < max_digits)
