"""Text-to-speech with espeak-ng, run as a subprocess so synthesis never blocks the event loop.

espeak-ng is a Debian package (`apt-get install espeak-ng`), not a Python one: it is found on
PATH at run time and reported with a clear TtsError when absent.
"""

from __future__ import annotations

import asyncio
import shutil
import struct

ESPEAK = "espeak-ng"
# Bump when the command line below changes the sound, so the build manifest rebuilds prompts.
TTS_VERSION = "espeak-ng/1"
# Words per minute: a little slower than espeak's 175, callers on phone lines need time.
SPEED_WPM = 160
TIMEOUT_S = 60.0

# Preferred voices per catalogue language, best first: Belgian French where it exists.
VOICES: dict[str, tuple[str, ...]] = {
    "fr": ("fr-be", "fr"),
    "nl": ("nl",),
    "en": ("en-gb", "en"),
    "de": ("de",),
}

_installed: frozenset[str] | None = None


class TtsError(Exception):
    """Synthesis failed: espeak-ng missing, unknown voice, or the process failed."""


def _espeak_path() -> str:
    path = shutil.which(ESPEAK)
    if path is None:
        raise TtsError(f"{ESPEAK} is not installed (Debian: apt-get install {ESPEAK})")
    return path


async def _run(args: list[str], stdin: bytes | None = None) -> bytes:
    """Run espeak-ng without a shell; text goes through stdin so it is never parsed as options."""
    try:
        proc = await asyncio.create_subprocess_exec(
            _espeak_path(),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise TtsError(f"cannot start {ESPEAK}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TtsError(f"{ESPEAK} timed out after {TIMEOUT_S:.0f}s") from None
    if proc.returncode != 0:
        detail = err.decode("utf-8", "replace").strip() or f"exit code {proc.returncode}"
        raise TtsError(f"{ESPEAK} failed: {detail}")
    return out


async def installed_voices() -> frozenset[str]:
    """Voice names espeak-ng accepts with -v (language codes and voice file names), cached."""
    global _installed
    if _installed is None:
        listing = (await _run(["--voices"])).decode("utf-8", "replace")
        names: set[str] = set()
        for line in listing.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 5:
                names.add(cols[1].lower())
                names.add(cols[4].rsplit("/", 1)[-1].lower())
        _installed = frozenset(names)
    return _installed


async def voice_for(lang: str) -> str:
    """The best installed voice for a catalogue language; TtsError if none is installed."""
    candidates = VOICES.get(lang)
    if candidates is None:
        raise TtsError(f"no espeak-ng voice configured for language {lang!r}")
    installed = await installed_voices()
    for voice in candidates:
        if voice in installed:
            return voice
    raise TtsError(f"no espeak-ng voice installed for {lang!r} (tried {', '.join(candidates)})")


def _fix_streamed_wav(data: bytes) -> bytes:
    """Patch RIFF/data sizes: with --stdout espeak-ng cannot seek back and leaves them bogus."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError(f"{ESPEAK} produced no WAV data")
    buf = bytearray(data)
    pos = 12
    while pos + 8 <= len(buf):
        chunk_id = bytes(buf[pos : pos + 4])
        if chunk_id == b"data":
            size = len(buf) - pos - 8
            struct.pack_into("<I", buf, pos + 4, size)
            struct.pack_into("<I", buf, 4, len(buf) - 8)
            if size == 0:
                raise TtsError(f"{ESPEAK} produced empty audio")
            return bytes(buf)
        (size,) = struct.unpack_from("<I", buf, pos + 4)
        pos += 8 + size + (size & 1)
    raise TtsError(f"{ESPEAK} produced a WAV without a data chunk")


async def synthesise(text: str, voice: str) -> bytes:
    """Speak `text` with an espeak-ng `voice` (see voice_for); returns WAV bytes (22 kHz mono)."""
    if not text.strip():
        raise TtsError("nothing to say: empty text")
    out = await _run(
        ["-v", voice, "-s", str(SPEED_WPM), "-b", "1", "--stdin", "--stdout"],
        stdin=text.encode("utf-8"),
    )
    return _fix_streamed_wav(out)
