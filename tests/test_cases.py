"""The case store against SQLite and a real PostgreSQL: a call opens or reopens a case, never
twice for one call; the agent's operations; references and their aliases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from test_cases_fixtures import *  # noqa: F403  (the pytest fixtures)
from test_cases_fixtures import FAST_HASHER, T0, add_citizen, count, facts

from crm_bridge.adapters import BuiltinCrm, ExternalCrm
from crm_bridge.case_facts import CallFacts, InteractionFacts
from crm_bridge.case_models import Case, CaseAlias, Interaction
from crm_bridge.cases import CaseConflict, CaseError, CaseNotFound, CaseService, InvalidTransition
from crm_bridge.ports import CallJourney
from crm_bridge.references import REFERENCE_RE, ReferenceGenerator, normalise_reference
from crm_bridge.users import UserService

# --- references (no database) -----------------------------------------------------------------


def test_references_count_tenths_of_a_second_since_new_year_in_brussels() -> None:
    new_year_brussels = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)  # 2026-01-01 00:00 CET
    make = ReferenceGenerator(
        clock=lambda: new_year_brussels + timedelta(seconds=3.2), random_part=lambda: "X9"
    )
    assert make() == "C-2026-000010-X9"  # 32 tenths = "10" in base 32


def test_references_are_strictly_increasing_within_a_process_even_in_a_burst() -> None:
    make = ReferenceGenerator(clock=lambda: T0, random_part=lambda: "AA")
    burst = [make() for _ in range(1000)]
    assert len(set(burst)) == 1000
    assert burst == sorted(burst)
    assert all(REFERENCE_RE.match(ref) for ref in burst)


def test_a_clock_stepping_back_never_repeats_a_reference() -> None:
    times = iter([T0, T0 - timedelta(seconds=5), T0 - timedelta(seconds=5)])
    make = ReferenceGenerator(clock=lambda: next(times), random_part=lambda: "AA")
    assert len({make(), make(), make()}) == 3


def test_a_new_year_starts_the_count_again() -> None:
    times = iter(
        [
            datetime(2026, 12, 31, 22, 59, 59, tzinfo=UTC),
            datetime(2026, 12, 31, 23, 0, 1, tzinfo=UTC),
        ]
    )
    make = ReferenceGenerator(clock=lambda: next(times), random_part=lambda: "AA")
    assert make().startswith("C-2026-")
    assert make() == "C-2027-00000A-AA"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("c-2026-0k7q2m-x9", "C-2026-0K7Q2M-X9"),
        (" C-2026-OK7Q2M-X9 ", "C-2026-0K7Q2M-X9"),  # O read for 0
        ("C-2026-1L7Q2M-X9", "C-2026-117Q2M-X9"),  # L read for 1
        ("nonsense", "NONSENSE"),
    ],
)
def test_references_typed_by_an_agent_are_repaired(typed: str, expected: str) -> None:
    assert normalise_reference(typed) == expected


# --- opening a case at hand-off ---------------------------------------------------------------


async def test_a_call_opens_a_case_with_everything_the_ivr_knew(case_engine: AsyncEngine) -> None:
    citizen_id = await add_citizen(case_engine)
    cases = CaseService(case_engine)
    journey = CallJourney(
        call_id="1700000000.1",
        flow="commune",
        flow_hash="sha256:abc",
        leg="agi",
        caller="+32470123456",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=40),
        outcome="queued",
        lang="nl",
        request_type="identity_card",
        queue="identity_card-nl",
        citizen_id=citizen_id,
    )
    reference = await cases.open_case_for_call(CallFacts.from_journey(journey, priority=5))

    assert REFERENCE_RE.match(reference)
    case = await cases.get_case(reference)
    assert case is not None
    assert (case.status, case.category, case.language, case.priority, case.queue) == (
        "new",
        "identity_card",
        "nl",
        5,
        "identity_card-nl",
    )
    assert (case.citizen_id, case.caller, case.channel, case.flow_hash) == (
        citizen_id,
        "+32470123456",
        "phone",
        "sha256:abc",
    )
    assert case.created_at.tzinfo is not None and case.closed_at is None
    [interaction] = await cases.interactions(reference)
    assert (interaction.kind, interaction.call_id, interaction.direction) == (
        "call",
        "1700000000.1",
        "inbound",
    )
    assert interaction.journey_call_id == "1700000000.1"
    assert interaction.started_at == T0
    assert interaction.contact == "+32470123456"


async def test_a_reference_generated_up_front_is_the_new_case_s_reference(
    case_engine: AsyncEngine,
) -> None:
    cases = CaseService(case_engine)
    assert (
        await cases.open_case_for_call(facts("c1", reference="C-2026-000001-AA"))
        == "C-2026-000001-AA"
    )


async def test_the_same_citizen_and_request_type_reopens_the_open_case(
    case_engine: AsyncEngine,
) -> None:
    citizen_id = await add_citizen(case_engine)
    cases = CaseService(case_engine)
    agent = await UserService(case_engine, hasher=FAST_HASHER).create_user(
        "an", "correct horse battery"
    )
    first = await cases.open_case_for_call(facts("c1", citizen_id=citizen_id))
    await cases.assign(first, agent.id)
    await cases.start_wrap_up(first, "info_given")

    handed_out = "C-2026-00000Z-ZZ"  # what the outbox gave Asterisk for the second call
    second = await cases.open_case_for_call(
        facts(
            "c2",
            minutes=30,
            citizen_id=citizen_id,
            reference=handed_out,
            priority=3,
            queue="vip-nl",
        )
    )

    assert second == first
    assert await count(case_engine, Case) == 1
    case = await cases.get_case(first)
    assert case is not None
    assert (case.status, case.priority, case.queue, case.assigned_agent_id) == (
        "reopened",
        3,
        "vip-nl",
        agent.id,
    )
    assert [i.call_id for i in await cases.interactions(first)] == ["c1", "c2"]
    aliased = await cases.get_case(handed_out)  # GUICHET_CASE_ID of the second call still finds it
    assert aliased is not None and aliased.reference == first
    assert await cases.resolve(handed_out) == first


async def test_a_case_nobody_took_yet_stays_new_when_the_citizen_calls_again(
    case_engine: AsyncEngine,
) -> None:
    citizen_id = await add_citizen(case_engine)
    cases = CaseService(case_engine)
    first = await cases.open_case_for_call(facts("c1", citizen_id=citizen_id))
    assert await cases.open_case_for_call(facts("c2", citizen_id=citizen_id)) == first
    case = await cases.get_case(first)
    assert case is not None and case.status == "new"


async def test_what_is_not_reopened(case_engine: AsyncEngine) -> None:
    citizen_id = await add_citizen(case_engine)
    cases = CaseService(case_engine)
    first = await cases.open_case_for_call(facts("c1", citizen_id=citizen_id))
    other_type = await cases.open_case_for_call(
        facts("c2", citizen_id=citizen_id, request_type="moving")
    )
    anonymous_1 = await cases.open_case_for_call(facts("c3"))
    anonymous_2 = await cases.open_case_for_call(facts("c4"))
    no_type = await cases.open_case_for_call(facts("c5", citizen_id=citizen_id, request_type=None))
    await cases.close(first, "resolved")
    after_close = await cases.open_case_for_call(facts("c6", citizen_id=citizen_id))
    assert len({first, other_type, anonymous_1, anonymous_2, no_type, after_close}) == 6
    assert await count(case_engine, Interaction) == 6


async def test_the_same_call_id_twice_returns_the_same_case_and_writes_nothing(
    case_engine: AsyncEngine,
) -> None:
    citizen_id = await add_citizen(case_engine)
    cases = CaseService(case_engine)
    once = facts("c1", citizen_id=citizen_id, reference="C-2026-000001-AA")
    reference = await cases.open_case_for_call(once)
    rows = [await count(case_engine, model) for model in (Case, Interaction, CaseAlias)]

    assert await cases.open_case_for_call(once) == reference
    assert (
        await cases.open_case_for_call(facts("c1", citizen_id=citizen_id, request_type="moving"))
        == reference
    )
    assert (
        [await count(case_engine, model) for model in (Case, Interaction, CaseAlias)]
        == rows
        == [1, 1, 0]
    )


async def test_a_call_re_submitted_with_a_new_reference_keeps_both_resolvable(
    case_engine: AsyncEngine,
) -> None:
    """A restart lost the outbox's memory and the IVR handed the same call off again."""
    cases = CaseService(case_engine)
    reference = await cases.open_case_for_call(facts("c1", reference="C-2026-000001-AA"))
    assert await cases.open_case_for_call(facts("c1", reference="C-2026-000002-BB")) == reference
    assert await cases.resolve("C-2026-000002-BB") == reference
    assert await count(case_engine, Interaction) == 1


async def test_calls_of_one_citizen_handed_off_at_once_share_one_case(
    case_engine: AsyncEngine,
) -> None:
    citizen_id = await add_citizen(case_engine)
    cases = CaseService(case_engine)
    batch = [facts(f"c{n}", citizen_id=citizen_id) for n in range(6)]
    references = await asyncio.gather(*(cases.open_case_for_call(f) for f in batch + batch[:2]))
    assert len(set(references)) == 1
    assert await count(case_engine, Case) == 1
    assert await count(case_engine, Interaction) == 6


async def test_facts_that_can_never_be_stored_are_refused(case_engine: AsyncEngine) -> None:
    cases = CaseService(case_engine)
    with pytest.raises(ValueError, match="naive"):
        await cases.open_case_for_call(facts("c1", started_at=datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="channel"):
        await cases.open_case_for_call(facts("c2", channel="fax"))
    assert await count(case_engine, Case) == 0


# --- what the agent's console needs -------------------------------------------------------


async def test_the_life_of_a_case(case_engine: AsyncEngine) -> None:
    cases = CaseService(case_engine)
    agent = await UserService(case_engine, hasher=FAST_HASHER).create_user(
        "an", "correct horse battery"
    )
    reference = await cases.open_case_for_call(facts("c1"))

    taken = await cases.assign(reference.lower(), agent.id)  # as typed by the agent
    assert (taken.status, taken.assigned_agent_id) == ("in_progress", agent.id)
    wrapping = await cases.start_wrap_up(reference, "appointment_booked")
    assert (wrapping.status, wrapping.disposition) == ("wrap_up", "appointment_booked")
    note = await cases.add_note(reference, "Rendez-vous le 2 décembre à 10h.", author_id=agent.id)
    closed = await cases.close(reference)
    assert (closed.status, closed.disposition) == ("closed", "appointment_booked")
    assert closed.closed_at is not None and not closed.is_open
    assert [n.text for n in await cases.notes(reference)] == [note.text]

    with pytest.raises(InvalidTransition):
        await cases.assign(reference, agent.id)
    with pytest.raises(InvalidTransition):
        await cases.set_status(reference, "new")
    reopened = await cases.set_status(reference, "reopened")
    assert (reopened.status, reopened.closed_at) == ("reopened", None)
    recategorised = await cases.set_category(reference, "moving")
    assert recategorised.category == "moving"


async def test_unknown_references_and_empty_notes_are_clear_errors(
    case_engine: AsyncEngine,
) -> None:
    cases = CaseService(case_engine)
    assert await cases.get_case("C-2026-000000-00") is None
    with pytest.raises(CaseNotFound):
        await cases.assign("C-2026-000000-00", 1)
    reference = await cases.open_case_for_call(facts("c1"))
    with pytest.raises(CaseError, match="text"):
        await cases.add_note(reference, "  ", author_id=None)


async def test_linking_a_citizen_who_already_has_that_open_case_names_it(
    case_engine: AsyncEngine,
) -> None:
    citizen_id = await add_citizen(case_engine)
    cases = CaseService(case_engine)
    known = await cases.open_case_for_call(facts("c1", citizen_id=citizen_id))
    anonymous = await cases.open_case_for_call(facts("c2"))
    with pytest.raises(CaseConflict) as conflict:
        await cases.link_citizen(anonymous, citizen_id)
    assert conflict.value.other_reference == known
    await cases.close(known)
    linked = await cases.link_citizen(anonymous, citizen_id)
    assert linked.citizen_id == citizen_id


async def test_open_cases_and_last_five_interactions_of_a_citizen(case_engine: AsyncEngine) -> None:
    citizen_id = await add_citizen(case_engine)
    other = await add_citizen(case_engine, 2)
    cases = CaseService(case_engine)
    card = await cases.open_case_for_call(facts("c0", minutes=0, citizen_id=citizen_id))
    moving = await cases.open_case_for_call(
        facts("c1", minutes=1, citizen_id=citizen_id, request_type="moving")
    )
    for n in range(2, 7):
        await cases.open_case_for_call(facts(f"c{n}", minutes=n, citizen_id=citizen_id))
    await cases.open_case_for_call(facts("x", minutes=99, citizen_id=other))
    await cases.close(moving)

    assert [c.reference for c in await cases.open_cases_of_citizen(citizen_id)] == [card]
    last = await cases.last_interactions_of_citizen(citizen_id)
    assert [i.call_id for i in last] == ["c6", "c5", "c4", "c3", "c2"]
    assert {i.case_reference for i in last} == {card}
    assert [i.call_id for i in await cases.last_interactions_of_citizen(citizen_id, limit=7)][
        -2:
    ] == ["c1", "c0"]


async def test_interactions_appended_and_ended(case_engine: AsyncEngine) -> None:
    cases = CaseService(case_engine)
    reference = await cases.open_case_for_call(facts("c1"))
    transfer = InteractionFacts(
        call_id="c1-transfer",
        direction="outbound",
        contact="+3221234567",
        started_at=T0 + timedelta(minutes=5),
    )
    added = await cases.append_interaction(reference, transfer)
    again = await cases.append_interaction(reference, transfer)
    assert again.id == added.id
    assert await cases.end_interaction(
        "c1", ended_at=T0 + timedelta(minutes=4), summary="Carte commandée"
    )
    assert not await cases.end_interaction("unknown", ended_at=T0)
    first, second = await cases.interactions(reference)
    assert (first.ended_at, first.summary) == (T0 + timedelta(minutes=4), "Carte commandée")
    assert (second.call_id, second.direction) == ("c1-transfer", "outbound")


async def test_erasing_a_citizen_unlinks_their_cases(case_engine: AsyncEngine) -> None:
    citizen_id = await add_citizen(case_engine)
    cases = CaseService(case_engine)
    reference = await cases.open_case_for_call(facts("c1", citizen_id=citizen_id))
    assert await cases.unlink_citizen(citizen_id) == 1
    case = await cases.get_case(reference)
    assert case is not None and case.citizen_id is None


async def test_the_built_in_store_is_an_external_crm_adapter(case_engine: AsyncEngine) -> None:
    citizen_id = await add_citizen(case_engine, phone="+32470123456")
    crm: ExternalCrm = BuiltinCrm(case_engine)
    reference = await crm.create_case(facts("c1", citizen_id=citizen_id))
    await crm.append_interaction(
        reference,
        InteractionFacts(
            kind="email", contact="sofie@example.be", started_at=T0 + timedelta(hours=1)
        ),
    )
    found = await crm.find_citizen_by_phone("0470 12 34 56")
    assert found is not None and found.id == citizen_id
    assert await crm.find_citizen_by_national_number("not a number") is None
    assert [i.kind for i in await CaseService(case_engine).interactions(reference)] == [
        "call",
        "email",
    ]
