"""Build the prompt sounds: TTS for every catalogue text, human recordings kept and converted.

Rules, per `<lang>/<key>`:
- a `<key>.wav` we did not write (its sha256 is not in the manifest) is a human recording: it is
  never overwritten, only converted in place to 8 kHz mono s16 if it is not already;
- a recording dropped as `<key>.mp3/.ogg/.flac/.m4a` is converted into `<key>.wav` and also wins
  over TTS (but never over a human `<key>.wav`);
- otherwise the text is synthesised, and only when text, voice or format changed since the last
  build (or with `force`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from audio.convert import ASTERISK, RECORDING_EXTENSIONS, AudioFormat, convert, is_playable
from audio.coverage import audio_path
from audio.manifest import Entry, Manifest, sha256_bytes, sha256_file
from audio.tts import TTS_VERSION, synthesise, voice_for
from ivr.prompts import LANGUAGES, PromptCatalogue

Status = Literal["built", "unchanged", "recorded", "failed"]

_OTHER_EXTENSIONS = tuple(ext for ext in RECORDING_EXTENSIONS if ext != ".wav")


@dataclass(frozen=True, slots=True)
class PromptResult:
    key: str
    lang: str
    status: Status
    detail: str = ""


ProgressCallback = Callable[[int, int, PromptResult | None], None]
"""Called as (done, total, None) once before the work, then (done, total, result) per prompt."""


@dataclass
class BuildReport:
    """What a build did, prompt by prompt; a failure never stops the other prompts."""

    results: list[PromptResult] = field(default_factory=list)

    def of(self, status: Status) -> list[PromptResult]:
        return [r for r in self.results if r.status == status]

    @property
    def built(self) -> int:
        return len(self.of("built"))

    @property
    def unchanged(self) -> int:
        return len(self.of("unchanged"))

    @property
    def recorded(self) -> int:
        return len(self.of("recorded"))

    @property
    def failed(self) -> int:
        return len(self.of("failed"))

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        return (
            f"{self.built} built, {self.unchanged} unchanged, "
            f"{self.recorded} recorded, {self.failed} failed"
        )


def tts_input_hash(text: str, voice: str, fmt: AudioFormat) -> str:
    """Everything that shapes a TTS file; when it changes, the prompt is rebuilt."""
    doc = json.dumps([TTS_VERSION, voice, fmt.fingerprint(), text], ensure_ascii=False)
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Item:
    key: str
    lang: str
    text: str | None


@dataclass(frozen=True, slots=True)
class _Found:
    """What is on disk for one prompt."""

    wav: Path
    wav_sha: str | None
    other: Path | None  # newest recording with a non-WAV extension
    other_sha: str | None


def _other_recording(wav: Path) -> Path | None:
    candidates = [p for ext in _OTHER_EXTENSIONS if (p := wav.with_suffix(ext)).is_file()]
    # The latest drop wins; ties go to the first extension in RECORDING_EXTENSIONS order.
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def _scan(wav: Path) -> _Found:
    other = _other_recording(wav)
    return _Found(wav, sha256_file(wav), other, sha256_file(other) if other else None)


def _plan(catalogue: PromptCatalogue, sounds_dir: Path, languages: list[str]) -> list[_Item]:
    """Prompts to handle: those with text, and those with only a recording."""
    items: list[_Item] = []
    keys: list[str] = catalogue.keys()  # PromptCatalogue is not iterable
    for key in keys:
        for lang in languages:
            text = catalogue.text(key, lang)
            if text is None:
                try:
                    wav = audio_path(sounds_dir, lang, key)
                except ValueError:
                    continue
                if not wav.is_file() and _other_recording(wav) is None:
                    continue
            items.append(_Item(key, lang, text))
    return items


class _Builder:
    def __init__(self, sounds_dir: Path, manifest: Manifest, fmt: AudioFormat, force: bool):
        self.sounds_dir = sounds_dir
        self.manifest = manifest
        self.fmt = fmt
        self.force = force

    async def run(self, item: _Item) -> PromptResult:
        try:
            status, detail = await self._build(item)
        except Exception as exc:  # one bad prompt must not abort the others
            return PromptResult(item.key, item.lang, "failed", str(exc) or type(exc).__name__)
        return PromptResult(item.key, item.lang, status, detail)

    async def _commit(self, name: str, entry: Entry, wav: Path, data: bytes) -> None:
        await asyncio.to_thread(self.manifest.commit, name, entry, wav, data)

    async def _build(self, item: _Item) -> tuple[Status, str]:
        name = f"{item.lang}/{item.key}"
        wav = audio_path(self.sounds_dir, item.lang, item.key)
        found = await asyncio.to_thread(_scan, wav)
        entry = self.manifest.get(name)
        ours = found.wav_sha is not None and entry is not None and found.wav_sha == entry["sha256"]
        source = entry.get("source") if entry and ours else None

        if found.wav_sha is not None and not ours:
            return await self._adopt_wav(name, wav)
        if source == "recorded" and entry and entry.get("original") == wav.name:
            return "recorded", f"kept {wav.name}"
        if found.other is not None and found.other_sha is not None:
            up_to_date = entry and entry.get("input") == found.other_sha
            if source == "recorded" and up_to_date and not self.force:
                return "recorded", f"from {found.other.name}"
            data = await convert(found.other, self.fmt)
            recorded = _entry("recorded", found.other_sha, data, original=found.other.name)
            await self._commit(name, recorded, wav, data)
            return "recorded", f"converted {found.other.name}"
        if source == "recorded":
            return "recorded", f"kept {wav.name}"
        if item.text is None:
            raise RuntimeError(f"{name}: no text and no recording")
        return await self._tts(name, wav, item.lang, item.text, entry if ours else None)

    async def _adopt_wav(self, name: str, wav: Path) -> tuple[Status, str]:
        """A WAV we did not write: keep it, converting it in place only if Asterisk needs it."""
        original = await asyncio.to_thread(wav.read_bytes)
        if is_playable(original, self.fmt):
            entry = _entry("recorded", sha256_bytes(original), original, original=wav.name)
            await asyncio.to_thread(self.manifest.commit, name, entry)
            return "recorded", f"kept {wav.name}"
        data = await convert(original, self.fmt)
        entry = _entry("recorded", sha256_bytes(original), data, original=wav.name)
        await self._commit(name, entry, wav, data)
        return "recorded", f"converted {wav.name} in place"

    async def _tts(
        self, name: str, wav: Path, lang: str, text: str, entry: Entry | None
    ) -> tuple[Status, str]:
        voice = await voice_for(lang)
        input_hash = tts_input_hash(text, voice, self.fmt)
        if entry and entry.get("input") == input_hash and not self.force:
            return "unchanged", ""
        data = await convert(await synthesise(text, voice), self.fmt)
        await self._commit(name, _entry("tts", input_hash, data, voice=voice), wav, data)
        return "built", voice


def _entry(source: str, input_hash: str, output: bytes, **extra: str) -> Entry:
    return {"source": source, "input": input_hash, "sha256": sha256_bytes(output), **extra}


async def build_audio(
    catalogue: PromptCatalogue,
    sounds_dir: Path,
    languages: Iterable[str] = LANGUAGES,
    force: bool = False,
    progress: ProgressCallback | None = None,
    *,
    fmt: AudioFormat = ASTERISK,
    concurrency: int = 4,
) -> BuildReport:
    """Write `sounds_dir/<lang>/<key>.wav` for every prompt, rebuilding only what changed.

    Raises ValueError for an unknown language and ManifestError for an unreadable manifest
    (without it, our files and human recordings cannot be told apart).
    """
    langs = list(dict.fromkeys(languages))
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown:
        raise ValueError(f"unknown language(s): {', '.join(unknown)}; known: {LANGUAGES}")
    manifest = await asyncio.to_thread(Manifest.load, sounds_dir)
    items = await asyncio.to_thread(_plan, catalogue, sounds_dir, langs)
    builder = _Builder(sounds_dir, manifest, fmt, force)
    limit = asyncio.Semaphore(concurrency)
    report = BuildReport()
    total = len(items)
    if progress:
        progress(0, total, None)

    async def one(item: _Item) -> None:
        async with limit:
            result = await builder.run(item)
        report.results.append(result)
        if progress:
            progress(len(report.results), total, result)

    async with asyncio.TaskGroup() as group:
        for item in items:
            group.create_task(one(item))
    order = {(i.key, i.lang): n for n, i in enumerate(items)}
    report.results.sort(key=lambda r: order[(r.key, r.lang)])
    return report
