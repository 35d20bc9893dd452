"""UI strings in French, Dutch and English, by key, from ``console/locales/<lang>.yaml`` and
one file per console area, ``console/locales/<area>/<lang>.yaml`` (a key lives in one file).

A signed-in user sees the console in their ``ui_language``; the login page (no user yet)
follows ``?lang=``, then the browser's Accept-Language, then French. Templates call
``t("login.title")`` (a Jinja2 global reading ``lang`` from the template context) and
``t("nav.signed_in_as", name=...)`` for strings with placeholders.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context

from crm_bridge.case_models import UI_LANGUAGES

log = logging.getLogger("guichet.console.i18n")

LANGUAGES: tuple[str, ...] = UI_LANGUAGES  # fr, nl, en: one list for users and the UI
DEFAULT_LANGUAGE = "fr"
LOCALES_DIR = Path(__file__).resolve().parent / "locales"


class CatalogueError(ValueError):
    """A locale file that is not a mapping of keys to strings."""


def _flatten(node: Any, prefix: str, out: dict[str, str], source: Path) -> None:
    if not isinstance(node, Mapping):
        raise CatalogueError(f"{source}: {prefix or 'the file'} must be a mapping")
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            _flatten(value, f"{key}.", out, source)
        elif isinstance(value, str):
            out[key] = value
        else:
            raise CatalogueError(f"{source}: {key} must be a string or a mapping")


def placeholders(text: str) -> frozenset[str]:
    """The ``{name}`` fields of a string (a translation must keep the same ones)."""
    return frozenset(field for _, field, _, _ in string.Formatter().parse(text) if field)


class Translator:
    """Catalogues by language; a missing key shows the key itself (and is logged once)."""

    def __init__(
        self, catalogues: Mapping[str, Mapping[str, str]], *, default: str = DEFAULT_LANGUAGE
    ) -> None:
        if default not in catalogues:
            raise CatalogueError(f"no catalogue for the default language {default!r}")
        self.catalogues = {lang: dict(entries) for lang, entries in catalogues.items()}
        self.default = default
        self._reported: set[tuple[str, str]] = set()

    @classmethod
    def load(cls, directory: Path = LOCALES_DIR) -> Translator:
        catalogues: dict[str, dict[str, str]] = {}
        for lang in LANGUAGES:
            entries: dict[str, str] = {}
            # <lang>.yaml, then one file per console area: <area>/<lang>.yaml
            for path in (directory / f"{lang}.yaml", *sorted(directory.glob(f"*/{lang}.yaml"))):
                found: dict[str, str] = {}
                _flatten(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, "", found, path)
                clash = sorted(found.keys() & entries.keys())
                if clash:
                    raise CatalogueError(f"{path}: keys defined twice: {', '.join(clash[:5])}")
                entries.update(found)
            catalogues[lang] = entries
        return cls(catalogues)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.catalogues)

    def language(self, lang: str | None) -> str:
        """``lang`` when we have it, else the default."""
        return lang if lang in self.catalogues else self.default

    def t(self, key: str, lang: str | None = None, /, **params: Any) -> str:
        text = self.catalogues[self.language(lang)].get(key)
        if text is None:
            if (key, str(lang)) not in self._reported:
                self._reported.add((key, str(lang)))
                log.warning("UI string %r missing in %r", key, lang)
            return key
        if not params:
            return text
        try:
            return text.format_map(params)
        except (KeyError, IndexError, ValueError):
            log.warning("UI string %r in %r: placeholders do not match %s", key, lang, params)
            return text

    def missing(self) -> dict[str, set[str]]:
        """Per language, the keys some other language has and this one lacks."""
        every = set().union(*(set(entries) for entries in self.catalogues.values()))
        return {lang: every - set(entries) for lang, entries in self.catalogues.items()}


def page_texts(translator: Translator, lang: str, *prefixes: str) -> dict[str, str]:
    """The strings a page's script receives in its JSON data block: every key under the
    prefixes (``"agent."``) in ``lang``. With one prefix the keys lose it (``agent.title`` ->
    ``title``); with several they are kept whole."""
    catalogue = translator.catalogues[translator.language(lang)]
    cut = len(prefixes[0]) if len(prefixes) == 1 else 0
    return {k[cut:]: v for k, v in catalogue.items() if k.startswith(prefixes)}


def parse_accept_language(header: str) -> list[str]:
    """Primary language tags by preference (``nl-BE,nl;q=0.9,fr;q=0.8`` → nl, nl, fr)."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        tag = tag.strip().lower()
        if tag and tag != "*" and quality > 0:
            ranked.append((-quality, index, tag.split("-")[0]))
    return [tag for _, _, tag in sorted(ranked)]


def negotiate(
    query: str | None,
    accept_language: str | None,
    *,
    available: tuple[str, ...] = LANGUAGES,
    default: str = DEFAULT_LANGUAGE,
) -> str:
    """The login page's language: ``?lang=``, then Accept-Language, then ``default``."""
    if query and query.lower() in available:
        return query.lower()
    for tag in parse_accept_language(accept_language or ""):
        if tag in available:
            return tag
    return default


def install(templates: Jinja2Templates, translator: Translator) -> None:
    """Register ``t(key, **params)`` and ``languages`` as Jinja2 globals."""

    @pass_context
    def t(context: Context, key: str, /, **params: Any) -> str:
        return translator.t(key, context.get("lang"), **params)

    templates.env.globals["t"] = t
    templates.env.globals["languages"] = translator.languages
