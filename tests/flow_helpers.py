"""Writing small flows for tests: a flow file plus a catalogue with text in every language."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path

import yaml

from ivr.loader import LoadedFlow, load_flow


def write_catalogue(
    folder: Path, keys: Iterable[str], *, languages: Iterable[str] = ("fr", "nl", "en")
) -> Path:
    prompts = {key: {lang: f"{key} ({lang})" for lang in languages} for key in keys}
    path = folder / "prompts.yaml"
    path.write_text(yaml.safe_dump({"prompts": prompts}, allow_unicode=True), encoding="utf-8")
    return path


def write_flow(
    folder: Path,
    body: str,
    *,
    name: str = "test",
    keys: Iterable[str] = ("hello", "bye", "ask", "oops"),
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "prompts.yaml").exists():
        write_catalogue(folder, keys)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def flow(folder: Path, body: str, **kwargs: object) -> LoadedFlow:
    return load_flow(write_flow(folder, body, **kwargs))  # type: ignore[arg-type]
