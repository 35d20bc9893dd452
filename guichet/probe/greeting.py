"""Does what the probe heard match the expected prompt? An audio comparison, not a guess.

Two measures, both on 8 kHz mono float samples (the prompt file resampled with pydub; the
heard audio is already 8 kHz from the G.711 line):

- **duration ratio**: the heard sound (first to last non-silent 20 ms frame) over the
  prompt's own sound (its leading/trailing silence trimmed the same way). A different
  prompt, a truncated one or two prompts run together fail it.
- **maximum normalised cross-correlation** of the prompt slid over the heard audio
  (``sum(h[k+i]·p[i]) / (‖p‖·‖h[k:k+m]‖)``, computed with FFTs, every lag tried): close to 1
  when the same waveform is there (G.711 and jitter cost a little), low for other speech.
  Polarity is ignored (an inverted line still carries the right prompt).

numpy does the arithmetic: a pure-Python sliding correlation over a few seconds of 8 kHz audio
is hundreds of millions of multiplications.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydub import AudioSegment

RATE = 8000
FRAME = 160  # 20 ms
SILENCE_RATIO = 0.05  # a frame is sound above 5 % of the loudest frame's RMS...
SILENCE_FLOOR = 100.0  # ...and above this RMS (16-bit units, about -50 dBFS)
MIN_WINDOW_ENERGY = 0.01  # lags where the heard window has < 1 % of the prompt's energy score 0

Samples = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GreetingCheck:
    """The verdict and its evidence (stored in ``probe_run.greeting_score``/``detail``)."""

    score: float  # max normalised cross-correlation, 0..1
    duration_ratio: float  # heard sound / prompt sound
    heard_s: float
    prompt_s: float
    offset_s: float  # where in the heard audio the best match starts
    ok: bool

    def describe(self) -> str:
        verdict = "matches" if self.ok else "does not match"
        return (
            f"greeting {verdict}: correlation {self.score:.3f}, duration ratio "
            f"{self.duration_ratio:.2f} (heard {self.heard_s:.2f} s, prompt {self.prompt_s:.2f} s)"
        )


def load_prompt(path: Path) -> Samples:
    """Any format ffmpeg reads, as 8 kHz mono float samples in 16-bit units."""
    segment = AudioSegment.from_file(path).set_channels(1).set_frame_rate(RATE)
    segment = segment.set_sample_width(2)
    return np.frombuffer(segment.raw_data, dtype="<i2").astype(np.float64)


def from_pcm16(data: bytes) -> Samples:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def sound_span(samples: Samples) -> tuple[int, int]:
    """First and last sample of the non-silent 20 ms frames ((0, 0) when all silent)."""
    frames = len(samples) // FRAME
    if frames == 0:
        return 0, 0
    rms = np.sqrt(np.mean(samples[: frames * FRAME].reshape(frames, FRAME) ** 2, axis=1))
    threshold = max(SILENCE_FLOOR, float(rms.max()) * SILENCE_RATIO)
    loud = np.flatnonzero(rms > threshold)
    if loud.size == 0:
        return 0, 0
    return int(loud[0]) * FRAME, (int(loud[-1]) + 1) * FRAME


def max_ncc(heard: Samples, prompt: Samples) -> tuple[float, int]:
    """The best normalised cross-correlation of ``prompt`` against ``heard``, and its lag."""
    p = prompt - prompt.mean()
    p_energy = float(np.dot(p, p))
    if p_energy == 0.0 or heard.size == 0:
        return 0.0, 0
    h = heard - heard.mean()
    if h.size < p.size:
        h = np.concatenate([h, np.zeros(p.size - h.size)])
    n = h.size + p.size
    size = 1 << (n - 1).bit_length()
    numerator = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(p, size)), size)
    lags = h.size - p.size + 1
    numerator = numerator[:lags]
    cumulative = np.concatenate([[0.0], np.cumsum(h * h)])
    window = cumulative[p.size : p.size + lags] - cumulative[:lags]
    valid = window > MIN_WINDOW_ENERGY * p_energy
    scores = np.zeros(lags)
    scores[valid] = np.abs(numerator[valid]) / np.sqrt(window[valid] * p_energy)
    best = int(np.argmax(scores))
    return float(min(scores[best], 1.0)), best


def compare(
    heard: Samples,
    prompt: Samples | Sequence[Samples],
    *,
    min_score: float,
    min_ratio: float,
    max_ratio: float,
) -> GreetingCheck:
    """Compare the heard audio of one expect step with its prompt (see module doc).

    Several prompts (a bilingual greeting: French, then Dutch) are each correlated on their
    own — the gap between them is the PBX's, not ours — must come in order, and the score is
    the weakest one's; the duration ratio is against their sounds added up.
    """
    prompts = [prompt] if isinstance(prompt, np.ndarray) else list(prompt)
    h_start, h_end = sound_span(heard)
    heard_s = (h_end - h_start) / RATE
    scores: list[float] = []
    lags: list[int] = []
    prompt_s = 0.0
    for one in prompts:
        p_start, p_end = sound_span(one)
        prompt_s += (p_end - p_start) / RATE
        found = max_ncc(heard, one[p_start:p_end]) if p_end > p_start and heard_s else (0.0, 0)
        scores.append(found[0])
        lags.append(found[1])
    score = min(scores, default=0.0)
    ratio = heard_s / prompt_s if prompt_s else 0.0
    in_order = all(a < b for a, b in pairwise(lags))
    ok = score >= min_score and min_ratio <= ratio <= max_ratio and in_order
    return GreetingCheck(
        score=round(score, 3),
        duration_ratio=round(ratio, 3),
        heard_s=round(heard_s, 3),
        prompt_s=round(prompt_s, 3),
        offset_s=round((lags[0] if lags else 0) / RATE, 3),
        ok=ok,
    )


__all__ = ["GreetingCheck", "compare", "from_pcm16", "load_prompt", "max_ncc", "sound_span"]
