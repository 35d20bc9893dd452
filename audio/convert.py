"""Turn any audio (espeak-ng WAV, a studio recording) into what Asterisk plays: 8 kHz mono s16 WAV.

pydub decodes WAV itself and everything else through ffmpeg (Debian: `apt-get install ffmpeg`).
Its work is CPU-bound and blocking, so async callers go through `convert`, which runs it in a
worker thread.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import shutil
import wave
from dataclasses import dataclass
from pathlib import Path

from pydub import AudioSegment

log = logging.getLogger(__name__)

# Bump when the processing below changes the sound, so the build manifest rebuilds prompts.
CONVERT_VERSION = 1
# Extensions of human recordings we accept; anything else in a sounds folder is ignored.
RECORDING_EXTENSIONS: tuple[str, ...] = (".wav", ".mp3", ".ogg", ".flac", ".m4a")


class AudioConvertError(Exception):
    """The input could not be decoded or converted (corrupt file, ffmpeg missing, silence...)."""


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """The output format and loudness policy; its fingerprint goes into the build manifest."""

    frame_rate: int = 8000
    channels: int = 1
    sample_width: int = 2
    target_dbfs: float = -18.0
    peak_ceiling_dbfs: float = -1.0

    def fingerprint(self) -> str:
        return (
            f"v{CONVERT_VERSION}:{self.frame_rate}Hz/{self.channels}ch/{self.sample_width * 8}bit"
            f":rms{self.target_dbfs:g}/peak{self.peak_ceiling_dbfs:g}"
        )


ASTERISK = AudioFormat()


def load(source: bytes | Path) -> AudioSegment:
    """Decode WAV bytes or an audio file of any format ffmpeg knows."""
    try:
        if isinstance(source, bytes):
            fmt = "wav" if source[:4] == b"RIFF" else None
            return AudioSegment.from_file(io.BytesIO(source), format=fmt)
        return AudioSegment.from_file(str(source))
    except FileNotFoundError as exc:
        if isinstance(source, Path) and not source.exists():
            raise AudioConvertError(f"{source}: no such file") from exc
        raise AudioConvertError("ffmpeg is not installed (Debian: apt-get install ffmpeg)") from exc
    except Exception as exc:  # pydub raises bare Exception subclasses and IndexError alike
        name = source if isinstance(source, Path) else "audio data"
        raise AudioConvertError(f"{name}: cannot decode audio: {exc}") from exc


def resample(seg: AudioSegment, frame_rate: int) -> AudioSegment:
    """Change the sample rate, through ffmpeg's band-limited resampler when it is installed.

    pydub's own `set_frame_rate` interpolates without an anti-alias filter: downsampling
    espeak's 22 kHz to 8 kHz would fold its 4-11 kHz hiss back into the voice band.
    """
    if seg.frame_rate == frame_rate:
        return seg
    if shutil.which(AudioSegment.converter) is None:
        log.warning("ffmpeg not found: resampling without anti-alias filter")
        return seg.set_frame_rate(frame_rate)
    buf = io.BytesIO()
    seg.export(buf, format="wav", parameters=["-ar", str(frame_rate), "-map_metadata", "-1"])
    buf.seek(0)
    return AudioSegment.from_file(buf, format="wav")


def normalise(seg: AudioSegment, target_dbfs: float, peak_ceiling_dbfs: float) -> AudioSegment:
    """Bring the RMS level to `target_dbfs`, but never push a peak above `peak_ceiling_dbfs`.

    A plain gain (no compression) keeps the recording's dynamics; when the crest factor is too
    high for both targets, the peak ceiling wins so nothing ever clips on the line.
    """
    if seg.rms == 0:
        raise AudioConvertError("audio is silent")
    gain = target_dbfs - seg.dBFS
    gain = min(gain, peak_ceiling_dbfs - seg.max_dBFS)
    return seg.apply_gain(gain)


def to_wav(source: bytes | Path, fmt: AudioFormat = ASTERISK) -> bytes:
    """Blocking conversion of `source` into a normalised WAV in `fmt`; see `convert`."""
    seg = load(source)
    if len(seg) == 0:
        raise AudioConvertError("audio is empty")
    try:
        seg = seg.set_sample_width(fmt.sample_width).set_channels(fmt.channels)
        seg = resample(seg, fmt.frame_rate)
        seg = normalise(seg, fmt.target_dbfs, fmt.peak_ceiling_dbfs)
        buf = io.BytesIO()
        seg.export(buf, format="wav")
    except AudioConvertError:
        raise
    except Exception as exc:
        raise AudioConvertError(f"cannot convert audio: {exc}") from exc
    return buf.getvalue()


async def convert(source: bytes | Path, fmt: AudioFormat = ASTERISK) -> bytes:
    """Convert off the event loop: pydub and ffmpeg calls block for up to seconds."""
    return await asyncio.to_thread(to_wav, source, fmt)


def is_playable(data: bytes, fmt: AudioFormat = ASTERISK) -> bool:
    """True if `data` is already a plain PCM WAV in `fmt` with consistent sizes: keep as is."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            ok: bool = (
                w.getframerate() == fmt.frame_rate
                and w.getnchannels() == fmt.channels
                and w.getsampwidth() == fmt.sample_width
                and w.getcomptype() == "NONE"
                and w.getnframes() > 0
            )
            expected = w.getnframes() * fmt.channels * fmt.sample_width
            return ok and len(w.readframes(w.getnframes())) == expected
    except (wave.Error, EOFError):
        return False


def level_dbfs(data: bytes) -> tuple[float, float]:
    """(RMS, peak) level of WAV bytes in dBFS: what the build report and tests check."""
    seg = load(data)
    rms = seg.dBFS if seg.rms else -math.inf
    return float(rms), float(seg.max_dBFS)
