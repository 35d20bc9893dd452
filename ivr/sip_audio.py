"""Prompt audio in pyVoIP's format: 8 kHz mono 8-bit *unsigned* PCM, converted once per file.

`guichet audio build` writes 8 kHz mono 16-bit signed WAV under `<sounds>/<lang>/<key>.wav`
(recorded files of other formats too, through ffmpeg). pyVoIP's RTP sender takes 8-bit
unsigned samples (it subtracts 128 before mu-law/A-law encoding); pydub keeps 8-bit samples
signed, so they are biased by 128 here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from pathlib import Path

from audio.convert import AudioConvertError, load, resample
from audio.coverage import audio_path

log = logging.getLogger("guichet.sip")

RATE = 8000
CACHE_FILES = 1024  # every prompt of a few flows in a few languages
_BIAS = bytes((i + 128) & 0xFF for i in range(256))  # signed 8-bit → unsigned 8-bit


def to_pyvoip(path: Path) -> bytes:
    """Blocking: decode any audio file and return its samples as 8 kHz mono u8."""
    seg = load(path)
    seg = resample(seg.set_channels(1), RATE).set_sample_width(1)
    return bytes(seg.raw_data).translate(_BIAS)


class PromptAudio:
    """Converted prompt audio by (language, key), cached per file version (path, mtime, size),
    so a re-recorded prompt is picked up without a restart."""

    def __init__(self, sounds_dir: Path, *, max_files: int = CACHE_FILES) -> None:
        self.sounds_dir = sounds_dir
        self._max = max_files
        self._cache: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._missing_logged: set[Path] = set()

    def path(self, lang: str, key: str) -> Path:
        return audio_path(self.sounds_dir, lang, key)

    async def get(self, lang: str, key: str) -> bytes | None:
        """The prompt's audio, or None (logged once) when it has no readable file."""
        try:
            path = self.path(lang, key)
            stat = path.stat()
        except (OSError, ValueError):
            self._log_missing(self.sounds_dir / lang / f"{key}.wav", "no such file")
            return None
        version = (str(path), stat.st_mtime_ns, stat.st_size)
        data = self._cache.get(version)
        if data is not None:
            self._cache.move_to_end(version)
            return data
        try:
            data = await asyncio.to_thread(to_pyvoip, path)
        except AudioConvertError as exc:
            self._log_missing(path, str(exc))
            return None
        self._cache[version] = data
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return data

    def _log_missing(self, path: Path, why: str) -> None:
        if path not in self._missing_logged:
            self._missing_logged.add(path)
            log.error("prompt audio unusable, skipped: %s (%s)", path, why)
