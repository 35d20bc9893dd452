"""The IVR creates the case at hand-off: GUICHET_CASE_ID is set before the agent's phone rings,
and the case carries what the IVR learned."""

from __future__ import annotations

from conftest import NN_1985, OPEN

from crm_bridge.cases import CaseService
from crm_bridge.outbox import CaseOutbox
from crm_bridge.ports import CitizenSummary
from crm_bridge.store import SqlCrm
from ivr.engine import run_call
from ivr.loader import LoadedFlow
from ivr.simulator import ScriptedLeg


async def test_queued_call_gets_a_case_with_what_the_ivr_learned(
    sample: LoadedFlow,
    crm: SqlCrm,
    citizen: CitizenSummary,
    outbox: tuple[CaseOutbox, CaseService],
) -> None:
    box, service = outbox
    leg = ScriptedLeg(
        call_id="1795370006.1", caller="0470123456", script=["2", "1", "1", f"{NN_1985}#"]
    )
    result = await run_call(sample, leg, crm, clock=lambda: OPEN, cases=box)
    reference = result.variables["GUICHET_CASE_ID"]
    assert reference and leg.variables["GUICHET_CASE_ID"] == reference
    await box.flush()
    case = await service.get_case(reference)
    assert case is not None
    assert (case.language, case.category, case.queue, case.citizen_id) == (
        "nl",
        "population",
        "population-nl",
        citizen.id,
    )
    assert case.caller == "0470123456" and case.flow_hash == sample.content_hash


async def test_same_citizen_and_request_type_reopens_the_open_case(
    sample: LoadedFlow,
    crm: SqlCrm,
    citizen: CitizenSummary,
    outbox: tuple[CaseOutbox, CaseService],
) -> None:
    box, service = outbox
    refs = []
    for call_id in ("call-1", "call-2"):
        leg = ScriptedLeg(call_id=call_id, caller="0470123456", script=["1", "4", f"{NN_1985}#"])
        result = await run_call(sample, leg, crm, clock=lambda: OPEN, cases=box)
        refs.append(result.variables["GUICHET_CASE_ID"])
        await box.flush()
    first, second = [await service.resolve(r) for r in refs]
    assert first is not None and first == second
    assert len(await service.open_cases_of_citizen(citizen.id)) == 1
    assert len(await service.interactions(first)) == 2


async def test_calls_that_are_not_queued_get_no_case(
    sample: LoadedFlow, crm: SqlCrm, outbox: tuple[CaseOutbox, CaseService]
) -> None:
    box, _ = outbox
    leg = ScriptedLeg(call_id="c", caller="", script=["1", "2"])  # hangs up on the FAQ
    result = await run_call(sample, leg, crm, clock=lambda: OPEN, cases=box)
    assert result.outcome == "deflected" and result.variables["GUICHET_CASE_ID"] == ""
