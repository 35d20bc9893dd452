"""The console's UI strings: every key in French, Dutch and English, with the same
placeholders; templates use only keys that exist; language negotiation for the login page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.templating import Jinja2Templates

from console.app import STATUS_LABELS, TEMPLATES_DIR
from console.i18n import (
    LANGUAGES,
    LOCALES_DIR,
    CatalogueError,
    Translator,
    install,
    negotiate,
    parse_accept_language,
    placeholders,
)
from crm_bridge.case_models import ROLES

TRANSLATOR = Translator.load()
KEY_IN_TEMPLATE = re.compile(r"""\bt\(\s*["']([a-z0-9_.]+)["']""")


def test_the_three_languages_are_there() -> None:
    assert set(LANGUAGES) == {"fr", "nl", "en"}
    assert {p.stem for p in LOCALES_DIR.glob("*.yaml")} == set(LANGUAGES)


def test_every_key_exists_in_every_language() -> None:
    assert TRANSLATOR.missing() == {lang: set() for lang in LANGUAGES}


def test_no_string_is_empty_and_placeholders_match_across_languages() -> None:
    for key, french in TRANSLATOR.catalogues["fr"].items():
        for lang in LANGUAGES:
            text = TRANSLATOR.catalogues[lang][key]
            assert text.strip(), (lang, key)
            assert placeholders(text) == placeholders(french), (lang, key)


def test_the_dutch_and_french_texts_are_actually_translated() -> None:
    """Brand names and language names may be equal; a whole section copied is a mistake."""
    for section in ("login.", "connection.", "errors.", "status."):
        keys = [k for k in TRANSLATOR.catalogues["fr"] if k.startswith(section)]
        same = [k for k in keys if TRANSLATOR.t(k, "fr") == TRANSLATOR.t(k, "nl")]
        assert len(same) <= 1, same  # "Version"/"Versie" differ, "Agent" may not


def test_templates_only_use_keys_that_exist() -> None:
    used: set[str] = set()
    for template in TEMPLATES_DIR.glob("*.html"):
        found = set(KEY_IN_TEMPLATE.findall(template.read_text(encoding="utf-8")))
        assert {k for k in found if k.endswith(".")} <= {"roles.", "lang.", "login."}, template
        used |= {k for k in found if not k.endswith(".")}
    # keys built in templates: "roles." ~ role, "lang." ~ code, "login." ~ message
    used |= {f"roles.{role}" for role in ROLES} | {f"lang.{lang}" for lang in LANGUAGES}
    used |= {"login.logged_out", "login.expired", "login.failed", "login.missing"}
    used |= {f"status.{label}" for label in STATUS_LABELS}
    assert used, "no t(...) call found"
    assert used - set(TRANSLATOR.catalogues["fr"]) == set()


def test_the_jinja_global_translates_in_the_pages_language() -> None:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    install(templates, TRANSLATOR)
    page = templates.env.from_string(
        '{{ t("login.submit") }} | {{ t("nav.signed_in_as", name="Anne") }}'
    )
    assert page.render(lang="nl") == "Aanmelden | Aangemeld: Anne"
    assert page.render(lang="fr") == "Se connecter | Connecté·e : Anne"
    assert page.render(lang="en") == "Sign in | Signed in: Anne"
    assert page.render() == "Se connecter | Connecté·e : Anne"  # no language: French


def test_an_unknown_key_shows_the_key() -> None:
    assert TRANSLATOR.t("nowhere.to.be.found", "nl") == "nowhere.to.be.found"


def test_a_locale_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    for lang in LANGUAGES:
        (tmp_path / f"{lang}.yaml").write_text("login:\n  title: x\n", encoding="utf-8")
    (tmp_path / "nl.yaml").write_text("login:\n  title: [1, 2]\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"nl.yaml: login.title must be a string"):
        Translator.load(tmp_path)


@pytest.mark.parametrize(
    ("query", "header", "expected"),
    [
        (None, None, "fr"),
        ("nl", "en", "nl"),
        ("NL", None, "nl"),
        ("de", "nl-BE,nl;q=0.9,fr-BE;q=0.8", "nl"),
        (None, "fr-BE;q=0.5, en;q=0.9", "en"),
        (None, "de-DE, *;q=0.1", "fr"),
        (None, "en;q=0, nl;q=0.2", "nl"),
        (None, "garbage;;q=x", "fr"),
    ],
)
def test_negotiation_prefers_the_query_then_accept_language_then_french(
    query: str | None, header: str | None, expected: str
) -> None:
    assert negotiate(query, header) == expected


def test_accept_language_order() -> None:
    assert parse_accept_language("nl-BE,nl;q=0.9,fr;q=0.8,en;q=0.7") == ["nl", "nl", "fr", "en"]
