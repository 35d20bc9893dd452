"""The prompt catalogue: every prompt is a key with a text per language.

The catalogue is the one place prompt keys live: TTS (`guichet audio build`), `guichet flow
check` and the simulator all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ivr.yamlsrc import SourceMap, YamlError, load_yaml

LANGUAGES: tuple[str, ...] = ("fr", "nl", "en", "de")
REQUIRED_LANGUAGES: tuple[str, ...] = ("fr", "nl", "en")


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt in one language: what a leg plays (AGI file, SIP audio, simulator text)."""

    key: str
    lang: str
    text: str


class PromptText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fr: str | None = None
    nl: str | None = None
    en: str | None = None
    de: str | None = None

    def get(self, lang: str) -> str | None:
        value: str | None = getattr(self, lang, None)
        return value


class CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: dict[str, PromptText] = Field(default_factory=dict)


class CatalogueError(Exception):
    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


class PromptCatalogue:
    """Prompt texts by key and language, with the source lines kept for error messages."""

    def __init__(self, prompts: dict[str, PromptText], source: SourceMap) -> None:
        self._prompts = prompts
        self.source = source

    @property
    def path(self) -> Path:
        return self.source.path

    def keys(self) -> list[str]:
        return list(self._prompts)

    def __contains__(self, key: object) -> bool:
        return key in self._prompts

    def text(self, key: str, lang: str) -> str | None:
        entry = self._prompts.get(key)
        return entry.get(lang) if entry else None

    def prompt(self, key: str, lang: str) -> Prompt:
        """The prompt in `lang`; falls back to English text so a call never goes silent."""
        text = self.text(key, lang) or self.text(key, "en") or key
        return Prompt(key=key, lang=lang, text=text)

    def languages_of(self, key: str) -> list[str]:
        entry = self._prompts.get(key)
        return [lang for lang in LANGUAGES if entry and entry.get(lang)]

    def line_of(self, key: str) -> int:
        return self.source.line_of(("prompts", key))

    @classmethod
    def load(cls, path: Path, text: str | None = None) -> PromptCatalogue:
        """Load and validate a catalogue file; raises CatalogueError with FILE:LINE messages."""
        try:
            data, smap = load_yaml(path, text)
        except YamlError as exc:
            raise CatalogueError([str(exc)]) from exc
        try:
            parsed = CatalogueFile.model_validate(data or {})
        except ValidationError as exc:
            raise CatalogueError(
                [f"{smap.where(tuple(err['loc']))}: {err['msg']}" for err in exc.errors()]
            ) from exc
        return cls(parsed.prompts, smap)
