"""`guichet demo seed`: enough data for a newcomer to log in at once and see real pops.

Idempotent: a second run changes nothing that is already there. Demo users get random
passwords, shown once when created (the store keeps only argon2 hashes through
`UserService`); an existing user keeps theirs unless `reset_passwords` is asked for.
Everything it creates says it is demo data (display names, article tags).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from crm_bridge.case_models import QueueRecord
from crm_bridge.citizens_import import ImportReport, import_citizens
from crm_bridge.db import session_factory
from crm_bridge.knowledge import ARTICLE_LANGUAGES, KnowledgeBase
from crm_bridge.users import UserService
from guichet.asterisk_render import flow_queues, load_flows
from guichet.demo.pbx import DEMO_CITIZENS
from ivr.loader import LoadedFlow

__all__ = [
    "DEMO_ARTICLES",
    "DEMO_USERS",
    "DemoArticle",
    "DemoUser",
    "SeedReport",
    "seed_demo",
]

DEMO_TAG = "demo"


@dataclass(frozen=True)
class DemoUser:
    username: str
    display_name: str
    role: str
    interface: str | None  # the phone the demo PBX rings: PJSIP/agent1 is `Agent One`
    ui_language: str


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("agent1", "Agent One (demo)", "agent", "PJSIP/agent1", "fr"),
    DemoUser("agent2", "Agent Two (demo)", "agent", "PJSIP/agent2", "nl"),
    DemoUser("supervisor", "Demo supervisor", "supervisor", "PJSIP/sup1", "fr"),  # listens in
    DemoUser("admin", "Demo administrator", "admin", None, "en"),
)


@dataclass(frozen=True)
class DemoArticle:
    slug: str
    request_type: str
    titles: Mapping[str, str]
    bodies: Mapping[str, str]


# One or two per request type of the sample flow, in the three article languages. Written as
# a commune's front office would, without figures that change (fees, deadlines).
DEMO_ARTICLES: tuple[DemoArticle, ...] = (
    DemoArticle(
        "household-composition",
        "population",
        titles={
            "fr": "Certificat de composition de ménage",
            "nl": "Attest van gezinssamenstelling",
            "en": "Household composition certificate",
        },
        bodies={
            "fr": "Téléchargeable gratuitement avec la carte eID sur IRISbox ou MyGov.be. "
            "Au guichet : sur présentation de la carte d'identité du demandeur.",
            "nl": "Gratis te downloaden met de eID via IRISbox of MyGov.be. "
            "Aan het loket: op vertoon van de identiteitskaart van de aanvrager.",
            "en": "Free download with an eID card on IRISbox or MyGov.be. "
            "At the counter: on showing the applicant's identity card.",
        },
    ),
    DemoArticle(
        "change-of-address",
        "population",
        titles={
            "fr": "Changement d'adresse",
            "nl": "Adreswijziging",
            "en": "Change of address",
        },
        bodies={
            "fr": "À déclarer à la commune de la nouvelle adresse dans les 8 jours ouvrables "
            "suivant le déménagement. Un agent de quartier passe vérifier la résidence.",
            "nl": "Aan te geven bij de gemeente van het nieuwe adres binnen 8 werkdagen na de "
            "verhuizing. De wijkagent komt de verblijfplaats controleren.",
            "en": "Declare it to the commune of the new address within 8 working days of "
            "moving. A community police officer checks the residence.",
        },
    ),
    DemoArticle(
        "birth-certificate",
        "civil-status",
        titles={
            "fr": "Extrait ou copie d'acte de naissance",
            "nl": "Uittreksel of afschrift van de geboorteakte",
            "en": "Birth certificate (extract or copy)",
        },
        bodies={
            "fr": "Les actes établis depuis 2019 sont dans la Banque des actes de l'état civil "
            "(BAEC) : le citoyen les obtient sur MyGov.be. Plus anciens : demande écrite au "
            "service de l'état civil de la commune où l'acte a été dressé.",
            "nl": "Akten opgemaakt sinds 2019 staan in de Databank van de akten van de "
            "burgerlijke stand (DABS): de burger vraagt ze op via MyGov.be. Oudere akten: "
            "schriftelijke aanvraag bij de burgerlijke stand van de gemeente van de akte.",
            "en": "Certificates drawn up since 2019 are in the civil-status database (BAEC/"
            "DABS): citizens get them on MyGov.be. Older ones: a written request to the "
            "civil-status office of the commune where the certificate was drawn up.",
        },
    ),
    DemoArticle(
        "social-assistance-cpas",
        "social-affairs",
        titles={
            "fr": "Aide sociale : orientation vers le CPAS",
            "nl": "Maatschappelijke hulp: doorverwijzing naar het OCMW",
            "en": "Social assistance: referral to the CPAS/OCMW",
        },
        bodies={
            "fr": "Le revenu d'intégration et l'aide sociale relèvent du CPAS de la commune de "
            "résidence. Donner l'adresse et les heures de la permanence sociale du CPAS.",
            "nl": "Het leefloon en de maatschappelijke hulp horen bij het OCMW van de "
            "woonplaats. Geef het adres en de uren van de sociale permanentie van het OCMW.",
            "en": "The integration income and social assistance are handled by the CPAS/OCMW "
            "of the commune of residence. Give its address and drop-in hours.",
        },
    ),
    DemoArticle(
        "local-taxes",
        "taxes",
        titles={
            "fr": "Taxes communales : avertissement-extrait de rôle",
            "nl": "Gemeentebelastingen: aanslagbiljet",
            "en": "Local taxes: tax assessment notice",
        },
        bodies={
            "fr": "Vérifier la référence de l'avertissement-extrait de rôle. Une réclamation "
            "se fait par écrit au Collège des bourgmestre et échevins, dans le délai indiqué "
            "sur l'avertissement.",
            "nl": "Controleer de referentie van het aanslagbiljet. Een bezwaar wordt "
            "schriftelijk ingediend bij het college van burgemeester en schepenen, binnen de "
            "termijn vermeld op het aanslagbiljet.",
            "en": "Check the reference on the assessment notice. An objection is made in "
            "writing to the Board of Mayor and Aldermen, within the period stated on the "
            "notice.",
        },
    ),
)


@dataclass
class SeedReport:
    """What a run did. `passwords` holds the only copy of each new demo password."""

    passwords: dict[str, str] = field(default_factory=dict)  # username -> new password
    users_kept: list[str] = field(default_factory=list)
    citizens: ImportReport = field(default_factory=ImportReport)
    articles_written: list[str] = field(default_factory=list)
    articles_kept: list[str] = field(default_factory=list)
    queues_added: list[str] = field(default_factory=list)
    queues_kept: list[str] = field(default_factory=list)


def new_password() -> str:
    """16 URL-safe characters: well above the console's minimum length."""
    return secrets.token_urlsafe(12)


async def _seed_users(
    users: UserService, wanted: Sequence[DemoUser], *, reset: bool, report: SeedReport
) -> None:
    for demo in wanted:
        if await users.get(demo.username) is None:
            password = new_password()
            await users.create_user(
                demo.username,
                password,
                role=demo.role,
                display_name=demo.display_name,
                interface=demo.interface,
                ui_language=demo.ui_language,
            )
            report.passwords[demo.username] = password
        elif reset:
            password = new_password()
            await users.set_password(demo.username, password)
            report.passwords[demo.username] = password
        else:
            report.users_kept.append(demo.username)


async def _seed_articles(engine: AsyncEngine, report: SeedReport) -> None:
    knowledge = KnowledgeBase(engine)
    for article in DEMO_ARTICLES:
        current = [await knowledge.get(article.slug, lang) for lang in ARTICLE_LANGUAGES]
        if all(
            view is not None
            and view.lang == lang
            and view.request_type == article.request_type
            and (view.title, view.body) == (article.titles[lang], article.bodies[lang])
            for view, lang in zip(current, ARTICLE_LANGUAGES, strict=True)
        ):
            report.articles_kept.append(article.slug)
            continue
        await knowledge.upsert(
            article.slug,
            article.request_type,
            titles=article.titles,
            bodies=article.bodies,
            tags=(DEMO_TAG,),
        )
        report.articles_written.append(article.slug)


def queue_record(name: str, languages: Sequence[str]) -> QueueRecord:
    """`population-fr` -> service `population`, language `fr` (the flows' `{request_type}-
    {lang}` naming); a name without a language suffix is a service of its own."""
    service, sep, lang = name.rpartition("-")
    if sep and lang in languages:
        return QueueRecord(name=name, service=service, language=lang)
    return QueueRecord(name=name, service=name, language=None)


async def _seed_queues(
    engine: AsyncEngine, flows: Sequence[LoadedFlow], report: SeedReport
) -> None:
    languages = sorted({lang for lf in flows for lang in lf.flow.languages})
    names = flow_queues(flows)
    async with session_factory(engine)() as session, session.begin():
        result = await session.exec(
            select(QueueRecord.name).where(col(QueueRecord.name).in_(names))
        )
        existing = set(result.all())
        for name in names:
            if name in existing:
                report.queues_kept.append(name)
            else:
                session.add(queue_record(name, languages))
                report.queues_added.append(name)


async def seed_demo(
    engine: AsyncEngine,
    *,
    flows_dir: Path,
    citizens_csv: Path = DEMO_CITIZENS,
    users: UserService | None = None,
    reset_passwords: bool = False,
) -> SeedReport:
    """Seed the demo data into a migrated database (`init_db` first).

    Flows are loaded before anything is written: a broken flow file fails the seed
    (`FlowLoadError`) rather than leaving half of it.
    """
    flows = load_flows(flows_dir)
    report = SeedReport()
    await _seed_users(
        users or UserService(engine), DEMO_USERS, reset=reset_passwords, report=report
    )
    report.citizens = await import_citizens(engine, citizens_csv)
    await _seed_articles(engine, report)
    await _seed_queues(engine, flows, report)
    return report
