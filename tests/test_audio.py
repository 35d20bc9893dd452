"""Prompt audio: real espeak-ng, pydub and ffmpeg, on small catalogues made in tmp_path."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import wave
from pathlib import Path

import pytest
from pydub import AudioSegment
from pydub.generators import Sine
from typer.testing import CliRunner

from audio.build import BuildReport, PromptResult, build_audio
from audio.cli import app
from audio.convert import ASTERISK, AudioConvertError, convert, is_playable, level_dbfs
from audio.coverage import audio_path, missing_audio
from audio.manifest import MANIFEST_NAME, ManifestError, sha256_file
from audio.tts import TtsError, synthesise, voice_for
from ivr.prompts import PromptCatalogue

WELCOME = {
    "fr": "Bienvenue à la commune.",
    "nl": "Welkom bij de gemeente.",
    "en": "Welcome to the municipality.",
}
CLOSED = {
    "fr": "Nos bureaux sont fermés.",
    "nl": "Onze kantoren zijn gesloten.",
    "en": "Our offices are closed.",
    "de": "Unsere Büros sind geschlossen.",
}


@pytest.fixture
def espeak() -> None:
    """The test command installs espeak-ng and ffmpeg: their absence is a failure, not a skip."""
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install {tool}", pytrace=False)


def write_catalogue(path: Path, prompts: dict[str, dict[str, str]]) -> PromptCatalogue:
    path.write_text(json.dumps({"prompts": prompts}, ensure_ascii=False), encoding="utf-8")
    return PromptCatalogue.load(path)


@pytest.fixture
def catalogue(tmp_path: Path, espeak: None) -> PromptCatalogue:
    return write_catalogue(tmp_path / "prompts.yaml", {"welcome": WELCOME, "closed": CLOSED})


@pytest.fixture
def sounds(tmp_path: Path) -> Path:
    return tmp_path / "sounds"


def wav_info(path: Path) -> tuple[int, int, int, float]:
    """(rate, channels, sample width, seconds) of a WAV file."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        return rate, w.getnchannels(), w.getsampwidth(), w.getnframes() / rate


def assert_asterisk_wav(path: Path) -> float:
    rate, channels, width, seconds = wav_info(path)
    assert (rate, channels, width) == (8000, 1, 2), path
    assert path.stat().st_mode & 0o044 == 0o044, "Asterisk runs as another user: must be readable"
    return seconds


def sine(seconds: float, rate: int = 44100, channels: int = 2) -> AudioSegment:
    tone = Sine(440, sample_rate=rate, bit_depth=16).to_audio_segment(
        duration=seconds * 1000, volume=-30
    )
    return tone.set_channels(channels)


def mtimes(sounds: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sounds.rglob("*.wav")}


def hashes(sounds: Path) -> dict[Path, str | None]:
    return {p: sha256_file(p) for p in sounds.rglob("*.wav")}


def statuses(report: BuildReport) -> dict[tuple[str, str], str]:
    return {(r.key, r.lang): r.status for r in report.results}


# --- TTS and conversion -------------------------------------------------------------------


async def test_voices(espeak: None) -> None:
    assert await voice_for("fr") in ("fr-be", "fr")
    assert await voice_for("nl") == "nl"
    assert await voice_for("en") in ("en-gb", "en")
    with pytest.raises(TtsError, match="no espeak-ng voice"):
        await voice_for("xx")


async def test_tts_output_is_asterisk_format_at_target_loudness(espeak: None) -> None:
    raw = await synthesise("Bonjour, vous êtes bien au guichet de la commune.", "fr-be")
    data = await convert(raw)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getcomptype() == "NONE"
        assert w.getnframes() / 8000 > 1.0
    assert is_playable(data) and not is_playable(raw)
    rms, peak = level_dbfs(data)
    # Plain gain to the RMS target, unless that would push a peak past the ceiling.
    assert peak <= ASTERISK.peak_ceiling_dbfs + 0.05
    assert rms <= ASTERISK.target_dbfs + 0.1
    at_target = abs(rms - ASTERISK.target_dbfs) < 0.2
    at_ceiling = abs(peak - ASTERISK.peak_ceiling_dbfs) < 0.1
    assert at_target or at_ceiling
    assert rms > ASTERISK.target_dbfs - 4, "speech should end up near the target level"


async def test_text_is_never_parsed_as_options(espeak: None) -> None:
    data = await synthesise("--version -w /tmp/x.wav", "en-gb")
    assert is_playable(await convert(data))


async def test_tts_rejects_empty_text(espeak: None) -> None:
    with pytest.raises(TtsError, match="empty"):
        await synthesise("  ", "nl")


async def test_convert_recording_to_target_level(espeak: None) -> None:
    buf = io.BytesIO()
    sine(1.0).export(buf, format="wav")
    data = await convert(buf.getvalue())
    rms, peak = level_dbfs(data)
    assert abs(rms - ASTERISK.target_dbfs) < 0.2  # a sine's 3 dB crest fits under the ceiling
    assert peak < ASTERISK.peak_ceiling_dbfs


async def test_convert_errors(espeak: None, tmp_path: Path) -> None:
    with pytest.raises(AudioConvertError, match="silent"):
        buf = io.BytesIO()
        AudioSegment.silent(500, frame_rate=8000).export(buf, format="wav")
        await convert(buf.getvalue())
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioConvertError, match=r"junk\.mp3"):
        await convert(junk)


# --- build ----------------------------------------------------------------------------------


async def test_build_every_prompt_and_language(catalogue: PromptCatalogue, sounds: Path) -> None:
    seen: list[tuple[int, int, PromptResult | None]] = []
    report = await build_audio(catalogue, sounds, progress=lambda *a: seen.append(a))
    assert report.ok, report.of("failed")
    assert (report.built, report.unchanged, report.recorded) == (7, 0, 0)
    assert set(statuses(report)) == {("welcome", lang) for lang in WELCOME} | {
        ("closed", lang) for lang in CLOSED
    }
    for key, lang in statuses(report):
        assert assert_asterisk_wav(audio_path(sounds, lang, key)) > 0.5
    assert not audio_path(sounds, "de", "welcome").exists()
    assert seen[0] == (0, 7, None) and seen[-1][:2] == (7, 7)
    manifest = json.loads((sounds / MANIFEST_NAME).read_text())
    assert manifest["entries"]["nl/closed"]["source"] == "tts"


async def test_second_build_rebuilds_nothing(catalogue: PromptCatalogue, sounds: Path) -> None:
    await build_audio(catalogue, sounds)
    before = mtimes(sounds)
    report = await build_audio(catalogue, sounds)
    assert (report.built, report.unchanged, report.failed) == (0, 7, 0)
    assert mtimes(sounds) == before
    forced = await build_audio(catalogue, sounds, languages=["nl"], force=True)
    assert (forced.built, forced.unchanged) == (2, 0)


async def test_changed_text_rebuilds_only_that_prompt(
    catalogue: PromptCatalogue, sounds: Path, tmp_path: Path
) -> None:
    await build_audio(catalogue, sounds)
    before = hashes(sounds)
    changed = write_catalogue(
        tmp_path / "prompts.yaml",
        {"welcome": {**WELCOME, "nl": "Goedendag, welkom bij het loket."}, "closed": CLOSED},
    )
    report = await build_audio(changed, sounds)
    assert [(r.key, r.lang) for r in report.of("built")] == [("welcome", "nl")]
    assert report.unchanged == 6
    for path, digest in before.items():
        assert (sha256_file(path) == digest) == (path != audio_path(sounds, "nl", "welcome"))


async def test_recorded_wav_is_converted_and_never_overwritten(
    catalogue: PromptCatalogue, sounds: Path, tmp_path: Path
) -> None:
    await build_audio(catalogue, sounds)
    wav = audio_path(sounds, "fr", "welcome")
    sine(3.0).export(wav, format="wav")  # a studio recording: 44.1 kHz stereo
    report = await build_audio(catalogue, sounds, force=True)
    assert statuses(report)[("welcome", "fr")] == "recorded"
    assert report.built == 6  # force rebuilt TTS, not the recording
    assert assert_asterisk_wav(wav) == pytest.approx(3.0, abs=0.01)
    converted = sha256_file(wav)

    changed = write_catalogue(
        tmp_path / "prompts.yaml", {"welcome": {**WELCOME, "fr": "Bonjour."}, "closed": CLOSED}
    )
    again = await build_audio(changed, sounds, force=True)
    assert statuses(again)[("welcome", "fr")] == "recorded"
    assert sha256_file(wav) == converted
    entry = json.loads((sounds / MANIFEST_NAME).read_text())["entries"]["fr/welcome"]
    assert entry["source"] == "recorded" and entry["original"] == "welcome.wav"


async def test_playable_recording_is_kept_byte_for_byte(
    catalogue: PromptCatalogue, sounds: Path
) -> None:
    wav = audio_path(sounds, "en", "closed")
    wav.parent.mkdir(parents=True)
    sine(1.0, rate=8000, channels=1).export(wav, format="wav")
    original = wav.read_bytes()
    report = await build_audio(catalogue, sounds)
    assert statuses(report)[("closed", "en")] == "recorded"
    assert wav.read_bytes() == original


@pytest.mark.parametrize("ext", ["mp3", "ogg", "flac", "m4a"])
async def test_dropped_recording_wins_over_tts(
    catalogue: PromptCatalogue, sounds: Path, ext: str
) -> None:
    await build_audio(catalogue, sounds)
    dropped = audio_path(sounds, "nl", "closed").with_suffix(f".{ext}")
    sine(2.0).export(dropped, format="ipod" if ext == "m4a" else ext)
    report = await build_audio(catalogue, sounds)
    assert statuses(report)[("closed", "nl")] == "recorded"
    wav = audio_path(sounds, "nl", "closed")
    assert assert_asterisk_wav(wav) == pytest.approx(2.0, abs=0.1)
    digest = sha256_file(wav)

    again = await build_audio(catalogue, sounds, force=True)
    assert statuses(again)[("closed", "nl")] == "recorded"
    assert sha256_file(wav) == digest
    assert dropped.exists()


async def test_recording_without_catalogue_text(catalogue: PromptCatalogue, sounds: Path) -> None:
    dropped = audio_path(sounds, "de", "welcome").with_suffix(".mp3")
    dropped.parent.mkdir(parents=True)
    sine(1.0).export(dropped, format="mp3")
    report = await build_audio(catalogue, sounds, languages=["de"])
    assert statuses(report) == {("welcome", "de"): "recorded", ("closed", "de"): "built"}


async def test_human_wav_beats_dropped_mp3(catalogue: PromptCatalogue, sounds: Path) -> None:
    wav = audio_path(sounds, "fr", "closed")
    wav.parent.mkdir(parents=True)
    sine(1.0, rate=8000, channels=1).export(wav, format="wav")
    original = wav.read_bytes()
    await build_audio(catalogue, sounds, languages=["fr"])
    sine(2.0).export(wav.with_suffix(".mp3"), format="mp3")
    report = await build_audio(catalogue, sounds, languages=["fr"])
    assert statuses(report)[("closed", "fr")] == "recorded"
    assert wav.read_bytes() == original


async def test_a_failed_prompt_does_not_stop_the_others(
    espeak: None, tmp_path: Path, sounds: Path
) -> None:
    cat = write_catalogue(tmp_path / "p.yaml", {"../evil": WELCOME, "ok": CLOSED})
    report = await build_audio(cat, sounds, languages=["fr", "en"])
    assert report.failed == 2 and report.built == 2
    assert "cannot be used as a file name" in report.of("failed")[0].detail
    assert not (tmp_path / "evil.wav").exists()


async def test_unreadable_manifest_is_an_error(catalogue: PromptCatalogue, sounds: Path) -> None:
    manifest = sounds / MANIFEST_NAME
    await asyncio.to_thread(manifest.parent.mkdir)
    await asyncio.to_thread(manifest.write_text, "{not json")
    with pytest.raises(ManifestError):
        await build_audio(catalogue, sounds)


# --- coverage -------------------------------------------------------------------------------


def test_missing_audio(tmp_path: Path) -> None:
    for lang, key in [("fr", "welcome"), ("nl", "welcome"), ("fr", "menu/main")]:
        path = audio_path(tmp_path, lang, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"RIFF")
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "welcome.mp3").write_bytes(b"")  # dropped but not built yet: missing
    missing = missing_audio(["welcome", "menu/main", "../x"], ["fr", "nl", "en"], tmp_path)
    assert missing == [
        ("welcome", "en"),
        ("menu/main", "nl"),
        ("menu/main", "en"),
        ("../x", "fr"),
        ("../x", "nl"),
        ("../x", "en"),
    ]


def test_audio_path(tmp_path: Path) -> None:
    assert audio_path(tmp_path, "nl", "closed") == tmp_path / "nl" / "closed.wav"
    for key in ("../etc/passwd", "/abs", "a//b", "", ".hidden", "a b"):
        with pytest.raises(ValueError):
            audio_path(tmp_path, "fr", key)
    with pytest.raises(ValueError):
        audio_path(tmp_path, "../fr", "ok")


# --- CLI ------------------------------------------------------------------------------------


def test_cli_build(catalogue: PromptCatalogue, sounds: Path) -> None:
    runner = CliRunner()
    args = ["build", "--catalogue", str(catalogue.path), "--out", str(sounds)]
    result = runner.invoke(app, [*args, "--lang", "fr", "--lang", "nl"])
    assert result.exit_code == 0, result.output
    assert "4 built, 0 unchanged, 0 recorded, 0 failed" in result.output
    assert_asterisk_wav(audio_path(sounds, "nl", "closed"))
    assert not audio_path(sounds, "en", "closed").exists()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "3 built, 4 unchanged" in again.output


def test_cli_build_failures(espeak: None, tmp_path: Path, sounds: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    write_catalogue(bad, {"a b": {"en": "Hello."}})
    result = runner.invoke(app, ["build", "--catalogue", str(bad), "--out", str(sounds)])
    assert result.exit_code == 1
    assert "1 failed" in result.output
    absent = runner.invoke(app, ["build", "--catalogue", str(tmp_path / "none.yaml")])
    assert absent.exit_code == 2
    wrong = runner.invoke(app, ["build", "--catalogue", str(bad), "--lang", "xx"])
    assert wrong.exit_code == 2 and "unknown language" in wrong.output
