"""Where a prompt's audio lives, and which prompts have none: shared by the build and flow check.

Layout: `<sounds_dir>/<lang>/<key>.wav`, which Asterisk plays as `<prefix>/<lang>/<key>`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# Keys become file names: letters, digits, `_ - .`, optionally in `/` sub-folders, never `..`.
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
_LANG = re.compile(r"[a-z]{2}")


def audio_path(sounds_dir: Path, lang: str, key: str) -> Path:
    """The WAV file for `key` in `lang`; ValueError for a key or language unsafe as a path."""
    if not _LANG.fullmatch(lang):
        raise ValueError(f"invalid language code {lang!r}")
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"prompt key {key!r} cannot be used as a file name")
    return sounds_dir / lang / f"{key}.wav"


def missing_audio(
    keys: Iterable[str], languages: Iterable[str], sounds_dir: Path
) -> list[tuple[str, str]]:
    """(key, lang) pairs with no WAV file, in key then language order.

    A key unusable as a file name can have no audio, so it is reported missing, not raised.
    """
    langs = list(languages)
    missing: list[tuple[str, str]] = []
    for key in keys:
        for lang in langs:
            try:
                present = audio_path(sounds_dir, lang, key).is_file()
            except ValueError:
                present = False
            if not present:
                missing.append((key, lang))
    return missing
