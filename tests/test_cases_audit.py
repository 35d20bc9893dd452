"""The audit trail and the knowledge base, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from test_cases_fixtures import *  # noqa: F403  (the pytest fixtures)
from test_cases_fixtures import FAST_HASHER, add_citizen, count, facts

from crm_bridge.audit import CALL_SPIED, CITIZEN_OPENED, Actor, AuditLog, Subject
from crm_bridge.case_models import AuditEntry
from crm_bridge.cases import CaseService
from crm_bridge.knowledge import KnowledgeBase
from crm_bridge.users import UserService


async def test_opening_a_citizen_record_is_audited_with_its_case(case_engine: AsyncEngine) -> None:
    citizen_id = await add_citizen(case_engine)
    agent = await UserService(case_engine, hasher=FAST_HASHER).create_user(
        "an", "correct horse battery"
    )
    reference = await CaseService(case_engine).open_case_for_call(
        facts("c1", citizen_id=citizen_id)
    )
    audit = AuditLog(case_engine)

    row = await audit.citizen_opened(agent, citizen_id, reference)
    await audit.record(Actor.system(), "case.created", Subject.case(reference), "call c1")
    await audit.record(agent, CALL_SPIED, Subject.call("c1"), reason="quality check")

    [entry] = await audit.entries(subject=Subject.citizen(citizen_id))
    assert entry == row
    assert (entry.actor_id, entry.actor, entry.action, entry.reason) == (
        agent.id,
        "an",
        CITIZEN_OPENED,
        reference,
    )
    assert entry.subject == Subject("citizen", str(citizen_id))
    assert entry.at.tzinfo is not None
    assert [e.action for e in await audit.entries(actor_id=agent.id)] == [
        CALL_SPIED,
        CITIZEN_OPENED,
    ]
    assert [e.actor for e in await audit.entries(action="case.created")] == ["guichet"]
    assert await audit.entries(since=entry.at + timedelta(days=1)) == []


async def test_access_without_a_reason_is_refused_and_leaves_no_row(
    case_engine: AsyncEngine,
) -> None:
    audit = AuditLog(case_engine)
    with pytest.raises(ValueError, match="reason"):
        await audit.record(Actor(7, "an"), CITIZEN_OPENED, Subject.citizen(1), reason="  ")
    assert await count(case_engine, AuditEntry) == 0


async def test_a_national_number_typed_into_a_reason_is_masked(case_engine: AsyncEngine) -> None:
    entry = await AuditLog(case_engine).record(
        Actor(7, "an"), CITIZEN_OPENED, Subject.citizen(1), reason="asked by 85.07.30-033.28"
    )
    assert entry.reason is not None and "85" not in entry.reason and entry.reason.endswith("28")


async def test_articles_of_a_request_type_in_the_callers_language(case_engine: AsyncEngine) -> None:
    kb = KnowledgeBase(case_engine)
    await kb.upsert(
        "eid-lost",
        "identity_card",
        titles={"fr": "Carte perdue", "nl": "Kaart verloren", "en": "Lost card"},
        bodies={"fr": "Déclarez la perte…", "nl": "Meld het verlies…", "en": "Report the loss…"},
        tags=["eid", "police"],
    )
    await kb.upsert(
        "eid-price",
        "identity_card",
        titles={"fr": "Prix de la carte"},
        bodies={"fr": "La carte coûte…"},
    )
    await kb.upsert(
        "moving", "moving", titles={"nl": "Verhuizen"}, bodies={"nl": "Binnen 8 dagen…"}
    )

    dutch = await kb.for_request_type("identity_card", "nl")
    assert [(a.slug, a.lang, a.title) for a in dutch] == [
        ("eid-lost", "nl", "Kaart verloren"),
        ("eid-price", "fr", "Prix de la carte"),  # not translated yet: French, flagged as such
    ]
    assert dutch[0].tags == ("eid", "police")
    german = await kb.get("moving", "de")
    assert german is not None and (german.lang, german.title) == ("nl", "Verhuizen")

    await kb.upsert(
        "eid-price",
        "identity_card",
        titles={"fr": "Prix", "nl": "Prijs"},
        bodies={"fr": "15 €", "nl": "15 €"},
    )
    price = await kb.get("eid-price", "nl")
    assert price is not None and (price.lang, price.title) == ("nl", "Prijs")
    with pytest.raises(ValueError, match="not de"):
        await kb.upsert("x", "moving", titles={"de": "Umzug"}, bodies={})
