"""Each node kind run by the production engine over a scripted caller and a real SQL store."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import pytest
from conftest import CLOSED, NN_1985, OPEN, add_citizen
from crm_fixtures import BIS_1998, NN_2017, bad_checksum
from flow_helpers import flow

from crm_bridge.ports import CitizenSummary
from crm_bridge.store import SqlCrm
from ivr.engine import CallResult, run_call
from ivr.loader import LoadedFlow
from ivr.simulator import ScriptedLeg


async def call(
    loaded: LoadedFlow,
    crm: SqlCrm,
    *script: str,
    at: datetime = OPEN,
    caller: str = "0470123456",
) -> tuple[CallResult, ScriptedLeg]:
    leg = ScriptedLeg(call_id="1795370006.1", caller=caller, script=list(script))
    result = await run_call(loaded, leg, crm, clock=lambda: at)
    return result, leg


# --- the sample flow, end to end --------------------------------------------------------------


async def test_sample_flow_identifies_and_queues(
    sample: LoadedFlow, crm: SqlCrm, citizen: CitizenSummary
) -> None:
    result, leg = await call(sample, crm, "2", "1", "1", f"{NN_1985}#")
    assert result.outcome == "queued"
    assert result.path == [
        "welcome",
        "opening_hours",
        "language",
        "request_type",
        "faq_population",
        "identify",
        "lookup_citizen",
        "identified",
        "to_queue",
    ]
    assert result.variables["GUICHET_LANG"] == "nl"
    assert result.variables["GUICHET_REQUEST_TYPE"] == "population"
    assert result.variables["GUICHET_QUEUE"] == "population-nl"
    assert result.variables["GUICHET_OUTCOME"] == "queued"
    assert result.variables["GUICHET_CALL_ID"] == "1795370006.1"
    assert result.variables["GUICHET_CASE_ID"] == ""
    assert result.variables["GUICHET_CITIZEN_ID"] == str(citizen.id)
    assert leg.language == "nl"
    assert NN_1985 not in str(result.variables)
    stored = await crm.get_journey("1795370006.1")
    assert stored is not None
    assert stored.outcome == "queued" and stored.citizen_id == citizen.id
    assert stored.flow_hash == sample.content_hash
    assert NN_1985 not in repr(stored)
    assert any(step.digits == "*********28#" for step in stored.steps)


async def test_prompts_bilingual_until_language_chosen(sample: LoadedFlow, crm: SqlCrm) -> None:
    played: list[tuple[str, str]] = []
    leg = ScriptedLeg(
        call_id="c",
        caller="",
        script=["2", "3"],
        on_prompt=lambda p: played.append((p.key, p.lang)),
    )
    await run_call(sample, leg, crm, clock=lambda: OPEN)
    assert played[:2] == [("welcome", "fr"), ("welcome", "nl")]
    assert played[2:5] == [("language_fr", "fr"), ("language_nl", "nl"), ("language_en", "en")]
    assert played[5] == ("request_type_menu", "nl")


async def test_closed_offers_callback_and_records_it(sample: LoadedFlow, crm: SqlCrm) -> None:
    result, leg = await call(sample, crm, "1", at=CLOSED)
    assert result.outcome == "callback"
    assert result.path[-3:] == ["closed_menu", "callback", "goodbye"]
    assert leg.hung_up
    assert result.prompts[:4] == ["welcome", "closed", "opening_hours_info", "website_info"]


async def test_closed_silence_is_outcome_closed(sample: LoadedFlow, crm: SqlCrm) -> None:
    result, leg = await call(sample, crm, "", at=CLOSED)
    assert result.outcome == "closed" and leg.hung_up


@pytest.mark.parametrize(
    "when",
    [
        "2026-11-11T10:00:00+01:00",
        "2026-12-25T10:00:00+01:00",
        "2026-11-02T10:00:00+01:00",
        "2026-11-28T10:00:00+01:00",
        "2026-11-27T16:10:00+01:00",
    ],
)
async def test_holidays_closures_weekends_are_closed(
    sample: LoadedFlow, crm: SqlCrm, when: str
) -> None:
    from datetime import datetime

    result, _ = await call(sample, crm, "", at=datetime.fromisoformat(when))
    assert result.outcome == "closed"


async def test_faq_hangup_is_deflected(sample: LoadedFlow, crm: SqlCrm) -> None:
    result, _ = await call(sample, crm, "1", "2")  # script ends: the caller hangs up on the FAQ
    assert result.outcome == "deflected"
    assert result.variables["GUICHET_OUTCOME"] == "deflected"
    assert result.path[-1] == "faq_civil_status"


async def test_faq_repeat_is_bounded(sample: LoadedFlow, crm: SqlCrm) -> None:
    result, _ = await call(sample, crm, "1", "1", "2", "2", "2", "#")
    assert result.path.count("faq_population") == 3
    assert result.outcome == "queued" and result.variables["GUICHET_QUEUE"] == "population-fr"


async def test_hash_alone_skips_identification(sample: LoadedFlow, crm: SqlCrm) -> None:
    result, _ = await call(sample, crm, "1", "3", "#")
    assert result.path[-2:] == ["identify", "to_queue"]
    assert result.variables["GUICHET_QUEUE"] == "social-affairs-fr"
    assert "GUICHET_CITIZEN_ID" not in result.variables


async def test_wrong_checksum_is_reasked_then_goes_on_unidentified(
    sample: LoadedFlow, crm: SqlCrm, citizen: CitizenSummary
) -> None:
    wrong = bad_checksum(NN_1985)
    result, _ = await call(sample, crm, "1", "4", f"{wrong}#", f"{wrong}#", f"{wrong}#")
    assert result.path[-3:] == ["identify", "not_identified", "to_queue"]
    assert result.outcome == "queued" and result.variables["GUICHET_QUEUE"] == "taxes-fr"
    journey = await crm.get_journey("1795370006.1")
    assert journey is not None
    identify = next(s for s in journey.steps if s.node == "identify")
    assert identify.digits is not None and identify.digits.count("*********") == 3
    assert wrong not in repr(journey)


async def test_wrong_then_right_number_identifies(
    sample: LoadedFlow, crm: SqlCrm, citizen: CitizenSummary
) -> None:
    result, _ = await call(sample, crm, "2", "0", f"{bad_checksum(NN_1985)}#", f"{NN_1985}#")
    assert result.path[-3:] == ["lookup_citizen", "identified", "to_queue"]
    assert result.citizen == citizen


@pytest.mark.parametrize("number", [NN_2017, BIS_1998])
async def test_born_after_2000_and_bis_numbers_are_valid(
    sample: LoadedFlow, crm: SqlCrm, number: str
) -> None:
    person = await add_citizen(crm, number, first_name="Lina")
    result, _ = await call(sample, crm, "1", "0", f"{number}#")
    assert result.citizen == person


async def test_short_entry_and_timeout_are_reasked(sample: LoadedFlow, crm: SqlCrm) -> None:
    result, _ = await call(sample, crm, "3", "4", "123#", "", f"{NN_1985}#")
    assert result.path[-3:] == ["lookup_citizen", "not_identified", "to_queue"]  # valid but unknown
    assert result.variables["GUICHET_QUEUE"] == "taxes-en"


async def test_menu_invalid_then_valid_and_fallback(sample: LoadedFlow, crm: SqlCrm) -> None:
    result, _ = await call(sample, crm, "7", "2", "9", "", "8", "#")
    assert result.variables["GUICHET_LANG"] == "nl"
    assert result.path[3:6] == ["request_type", "request_type_not_chosen", "identify"]
    assert result.variables["GUICHET_QUEUE"] == "general-nl"


async def test_language_never_chosen_goes_to_general_desk(sample: LoadedFlow, crm: SqlCrm) -> None:
    result, _ = await call(sample, crm, "", "", "")
    assert result.variables["GUICHET_QUEUE"] == "general-fr"


@pytest.mark.parametrize("steps", range(0, 5))
async def test_hangup_at_every_step_of_the_sample(
    sample: LoadedFlow, crm: SqlCrm, steps: int
) -> None:
    script = ["2", "1", "1", f"{NN_1985}#"][:steps]
    result, _leg = await call(sample, crm, *script)
    if steps == 4:
        assert result.outcome == "queued"
        return
    expected = "deflected" if steps == 2 else "hangup"  # step 2 ends on the FAQ
    assert result.outcome == expected
    journey = await crm.get_journey("1795370006.1")
    assert journey is not None and journey.outcome == expected
    assert journey.steps[-1].result == "hangup"


# --- node kinds on small flows ---------------------------------------------------------------


async def test_lookup_by_caller_number(tmp_path: Path, crm: SqlCrm) -> None:
    person = await add_citizen(crm, phone="+32470123456")
    loaded = flow(
        tmp_path,
        """
        start: who
        nodes:
          who: {kind: lookup, by: caller, found: yes_q, not_found: no_q}
          yes_q: {kind: queue, queue: "known-{lang}"}
          no_q: {kind: queue, queue: "unknown"}
        vars: {lang: fr}
    """,
    )
    result, _ = await call(loaded, crm, caller="0470 12 34 56")
    assert result.citizen == person and result.variables["GUICHET_QUEUE"] == "known-fr"
    result, _ = await call(loaded, crm, caller="0499999999")
    assert result.variables["GUICHET_QUEUE"] == "unknown"


async def test_crm_outage_never_drops_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = flow(
        tmp_path,
        """
        start: who
        nodes:
          who: {kind: lookup, by: caller, found: q, not_found: q}
          q: {kind: queue, queue: general}
    """,
    )
    # A real store whose server is not there: every query fails with a connection error.
    from crm_bridge.db import make_engine

    broken = SqlCrm(make_engine("postgresql://guichet@127.0.0.1:9/nowhere"))
    with caplog.at_level(logging.WARNING):
        result, _ = await call(loaded, broken)
    assert result.outcome == "queued" and result.variables["GUICHET_QUEUE"] == "general"
    assert "lookup failed" in caplog.text and "journey not saved" in caplog.text
    await broken.close()


async def test_set_transfer_and_args(tmp_path: Path, crm: SqlCrm) -> None:
    loaded = flow(
        tmp_path,
        """
        start: s
        nodes:
          s: {kind: set, vars: {request_type: taxes, team: "census-{lang}"}, next: t}
          t: {kind: transfer, target: "2000", prompt: bye}
    """,
    )
    leg = ScriptedLeg(call_id="x", caller="", script=[])
    result = await run_call(
        loaded, leg, crm, clock=lambda: OPEN, args={"lang": "nl", "bad name": "x"}
    )
    assert result.outcome == "transferred"
    assert result.variables["GUICHET_TRANSFER"] == "2000"
    assert result.variables["GUICHET_TEAM"] == "census-nl"
    assert leg.language == "nl" and "bad name" not in str(result.variables)


async def test_message_then_hangup_node(tmp_path: Path, crm: SqlCrm) -> None:
    loaded = flow(
        tmp_path,
        """
        start: m
        nodes:
          m: {kind: message, prompt: [hello, ask], next: h}
          h: {kind: hangup, prompt: bye, outcome: deflected}
    """,
    )
    result, leg = await call(loaded, crm)
    assert result.outcome == "deflected" and leg.hung_up
    assert result.prompts == ["hello", "ask", "bye"]


async def test_max_visits_without_exit_hangs_up(tmp_path: Path, crm: SqlCrm) -> None:
    loaded = flow(
        tmp_path,
        """
        start: m
        nodes:
          m: {kind: menu, prompt: ask, choices: {"1": m, "2": q}, fallback: q, max_visits: 2}
          q: {kind: queue, queue: general}
    """,
    )
    result, leg = await call(loaded, crm, "1", "1", "1")
    assert result.path == ["m", "m"] and result.outcome == "hangup" and leg.hung_up


async def test_input_without_validator_keeps_digits(tmp_path: Path, crm: SqlCrm) -> None:
    loaded = flow(
        tmp_path,
        """
        start: i
        nodes:
          i: {kind: input, prompt: ask, var: dossier, min_length: 4, max_length: 6, next: q, fallback: q}
          q: {kind: queue, queue: general}
    """,
    )
    result, _ = await call(loaded, crm, "12345#")
    assert result.variables["GUICHET_DOSSIER"] == "12345"


async def test_logs_never_show_the_national_number(sample: LoadedFlow, crm: SqlCrm) -> None:
    """Guichet's own logging set-up, at DEBUG, with a wrong number and a right one typed."""
    import io

    from guichet.logging_setup import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    setup_logging("DEBUG", stream)
    try:
        logging.getLogger("guichet.test").warning("caller typed %s", NN_1985)
        await call(sample, crm, "1", "1", "1", f"{bad_checksum(NN_1985)}#", f"{NN_1985}#")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    text = stream.getvalue()
    assert "caller typed *********28" in text
    assert NN_1985 not in text and bad_checksum(NN_1985) not in text
