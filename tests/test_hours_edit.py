"""Editing an hours node in its flow file (ivr/hours_edit.py): the file keeps everything but
the edit (comments included), a refused edit leaves it byte-identical with the checker's own
messages, a stale edit is refused, and the registry serves the new hours at once."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.checker import check_file
from ivr.flow_model import HoursNode
from ivr.hours import open_state
from ivr.hours_edit import (
    ClosureFields,
    FlowNotFound,
    HolidayFields,
    HoursEditRejected,
    HoursFields,
    NodeNotFound,
    StaleFlow,
    apply_edit,
    edit_text,
    read_hours,
    save_hours,
)
from ivr.registry import FlowRegistry

REPO_FLOWS = Path(__file__).resolve().parent.parent / "flows"
BRUSSELS = ZoneInfo("Europe/Brussels")
NODE = "opening_hours"


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    target = tmp_path / "flows"
    shutil.copytree(REPO_FLOWS, target)
    return target


def current(path: Path) -> tuple[str, HoursFields]:
    state = read_hours(path)
    node = next(n for n in state.nodes if n.id == NODE)
    return state.hash, HoursFields.model_validate(
        node.model_dump(include={"schedule", "holidays", "closures"})
    )


def hours_node(path: Path) -> HoursNode:
    loaded, issues = check_file(path)
    assert loaded is not None and not issues
    node = loaded.flow.nodes[NODE]
    assert isinstance(node, HoursNode)
    return node


def test_reading_gives_the_files_hours_in_its_own_forms(flows: Path) -> None:
    _, fields = current(flows / "commune.yaml")
    assert fields.schedule["mon"] == ["08:30-12:30", "13:00-16:30"]
    assert "sat" not in fields.schedule
    assert fields.holidays == HolidayFields(country="BE")
    assert fields.closures[0] == ClosureFields(
        date="2026-11-02", reason="All Souls' Day (commune staff holiday)"
    )
    # spans in the node's wall-clock time, as a datetime-local input shows them
    assert fields.closures[2].start == "2026-12-24T12:00"
    assert fields.closures[2].end == "2026-12-24T23:59"


def test_an_edit_changes_only_the_edited_values_and_keeps_every_comment(flows: Path) -> None:
    path = flows / "commune.yaml"
    before = path.read_text(encoding="utf-8")
    base, fields = current(path)
    fields.closures.append(ClosureFields(date="2027-01-04", reason="Inventaire / Inventaris"))
    fields.schedule["sat"] = ["09:00-12:00"]

    saved = apply_edit(path, NODE, fields, base)

    after = path.read_text(encoding="utf-8")
    assert saved.summary == f"{NODE}: schedule sat; closures 4→5"
    old_lines, new_lines = before.splitlines(), after.splitlines()
    comments = [line for line in old_lines if line.lstrip().startswith("#")]
    assert comments and all(line in new_lines for line in comments)
    added = [line for line in new_lines if line not in old_lines]
    assert added == [
        '      sat: ["09:00-12:00"]',
        '      - {date: "2027-01-04", reason: "Inventaire / Inventaris"}',
    ]
    assert [line for line in old_lines if line not in new_lines] == []
    assert saved.state.hash != base
    assert hours_node(path).closures[-1].reason == "Inventaire / Inventaris"


def test_sending_back_what_was_read_changes_nothing(flows: Path) -> None:
    path = flows / "commune.yaml"
    before = path.read_bytes()
    base, fields = current(path)
    saved = apply_edit(path, NODE, fields, base)
    assert saved.summary is None
    assert saved.state.hash == base
    assert path.read_bytes() == before


def test_removing_holidays_and_closures(flows: Path) -> None:
    path = flows / "commune.yaml"
    base, fields = current(path)
    fields.holidays = None
    fields.closures = []
    del fields.schedule["wed"]
    saved = apply_edit(path, NODE, fields, base)
    node = hours_node(path)
    assert node.holidays is None and node.closures == []
    assert "wed" not in node.schedule
    assert saved.summary == f"{NODE}: schedule wed; holidays off; closures 4→0"
    # Christmas Day 2026 is a Friday: open now that public holidays are not observed
    christmas = datetime(2026, 12, 25, 10, 0, tzinfo=BRUSSELS)
    assert open_state(node, christmas).open


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schedule": {"tue": ["17:00-08:00"]}}, "'17:00-08:00': the range ends before it starts"),
        ({"schedule": {"mon": ["8h30-12h"]}}, "is not an opening range like 08:30-12:30"),
        (
            {"schedule": {"thu": ["08:30-12:30", "12:00-16:30"]}},
            "opening_hours: overlapping ranges on thu",
        ),
        ({"closures": [{"date": "2026-13-45"}]}, "month value is outside expected range"),
        (
            {"closures": [{"start": "2026-12-24T18:00", "end": "2026-12-24T12:00"}]},
            "a closure span needs `from` before `to`",
        ),
        ({"closures": [{"reason": "no date"}]}, "a closure has either `date`, or `from` and `to`"),
        ({"holidays": {"country": "XX"}}, "Country XX not available"),
    ],
)
def test_a_refused_edit_leaves_the_file_byte_identical_with_the_checkers_message(
    flows: Path, change: dict[str, object], message: str
) -> None:
    path = flows / "commune.yaml"
    before = path.read_bytes()
    names = sorted(p.name for p in flows.iterdir())
    base, fields = current(path)
    wanted = HoursFields.model_validate({**fields.model_dump(), **change})

    with pytest.raises(HoursEditRejected) as refused:
        apply_edit(path, NODE, wanted, base)

    assert path.read_bytes() == before
    assert sorted(p.name for p in flows.iterdir()) == names  # no temporary file left behind
    assert any(message in issue.message for issue in refused.value.issues), refused.value

    # exactly what `guichet flow check` says of the same text
    elsewhere = flows.parent / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(flows / "prompts.yaml", elsewhere)
    (elsewhere / "commune.yaml").write_text(
        edit_text(before.decode(), NODE, hours_node(path), wanted), encoding="utf-8"
    )
    _, issues = check_file(elsewhere / "commune.yaml")
    checker = [(i.line, i.message) for i in issues if i.severity == "error"]
    assert [(i.line, i.message) for i in refused.value.issues] == checker


def test_a_stale_hash_is_refused_and_nothing_is_written(flows: Path) -> None:
    path = flows / "commune.yaml"
    base, fields = current(path)
    fields.closures = fields.closures[:1]
    apply_edit(path, NODE, fields, base)  # someone else saved first
    after_first = path.read_bytes()

    _, mine = current(path)
    mine.schedule["sat"] = ["09:00-12:00"]
    with pytest.raises(StaleFlow) as stale:
        apply_edit(path, NODE, mine, base)
    assert path.read_bytes() == after_first
    assert stale.value.current_hash == read_hours(path).hash


def test_a_hand_edit_of_the_file_makes_the_console_edit_stale(flows: Path) -> None:
    path = flows / "commune.yaml"
    base, fields = current(path)
    path.write_text(path.read_text() + "# reviewed by the administrator\n", encoding="utf-8")
    with pytest.raises(StaleFlow):
        apply_edit(path, NODE, fields, base)


def test_only_an_hours_node_can_be_edited(flows: Path) -> None:
    path = flows / "commune.yaml"
    base, fields = current(path)
    for node_id in ("welcome", "no_such_node"):
        with pytest.raises(NodeNotFound):
            apply_edit(path, node_id, fields, base)


async def test_the_registry_serves_the_new_hours_at_once(flows: Path) -> None:
    registry = FlowRegistry(flows, interval=0)
    await registry.start()
    served = registry.get("commune")
    assert served is not None
    staff_day = datetime(2027, 1, 5, 10, 0, tzinfo=BRUSSELS)  # a Tuesday, in office hours
    node = served.node(NODE)
    assert isinstance(node, HoursNode) and open_state(node, staff_day).open

    base, fields = current(flows / "commune.yaml")
    fields.closures.append(ClosureFields(date="2027-01-05", reason="Staff day"))
    saved = await save_hours(registry, "commune", NODE, fields, base)

    served = registry.get("commune")
    assert served is not None and served.content_hash == saved.state.hash
    node = served.node(NODE)
    assert isinstance(node, HoursNode)
    assert open_state(node, staff_day).reason == "closure"
    assert registry.events[-1].accepted


async def test_an_unknown_flow(flows: Path) -> None:
    registry = FlowRegistry(flows, interval=0)
    await registry.start()
    _, fields = current(flows / "commune.yaml")
    with pytest.raises(FlowNotFound):
        await save_hours(registry, "nowhere", NODE, fields, "0" * 64)
