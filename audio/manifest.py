"""The build manifest: which WAV files we wrote, from what, and with which content hash.

It is how the build tells its own output (safe to regenerate) from a human recording (never
overwritten): a file whose sha256 is not the one recorded here was not written by us. It is
therefore saved after every file written, so an interrupted build leaves no file unaccounted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

MANIFEST_NAME = ".manifest.json"
MANIFEST_VERSION = 1

Entry = dict[str, str]


class ManifestError(Exception):
    """The manifest exists but cannot be read: refusing to guess which files are recordings."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str | None:
    """Hash of a file's content, None if there is no such file."""
    try:
        return sha256_bytes(path.read_bytes())
    except FileNotFoundError:
        return None


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so Asterisk never plays a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; Asterisk runs as its own user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Manifest:
    """Entries keyed `<lang>/<key>`; thread-safe because commits run in worker threads."""

    def __init__(self, path: Path, entries: dict[str, Entry] | None = None) -> None:
        self.path = path
        self._entries: dict[str, Entry] = dict(entries or {})
        self._lock = threading.Lock()

    @classmethod
    def load(cls, sounds_dir: Path) -> Manifest:
        """Read `<sounds_dir>/.manifest.json`; an absent file is an empty manifest."""
        path = sounds_dir / MANIFEST_NAME
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path}: unreadable manifest: {exc}") from exc
        entries = raw.get("entries") if isinstance(raw, dict) else None
        valid = isinstance(entries, dict) and all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in entries.values()
        )
        if not valid or raw.get("version") != MANIFEST_VERSION:
            raise ManifestError(f"{path}: not a version {MANIFEST_VERSION} audio manifest")
        return cls(path, entries)

    def get(self, item: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(item)
            return dict(entry) if entry else None

    def entries(self) -> dict[str, Entry]:
        with self._lock:
            return {k: dict(v) for k, v in self._entries.items()}

    def commit(self, item: str, entry: Entry, wav: Path | None = None, data: bytes = b"") -> None:
        """Write `data` to `wav` (if given), then record `entry` and save, as one step."""
        with self._lock:
            if wav is not None:
                write_atomic(wav, data)
            self._entries[item] = entry
            doc = {"version": MANIFEST_VERSION, "entries": self._entries}
            text = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
            write_atomic(self.path, text.encode("utf-8"))
