"""Edit an `hours` node (weekly schedule, public holidays, exceptional closures) in its flow file.

Why a file edit and not a database row: the flow file is the one place opening hours live, it
is reviewed and versioned by administrators, and `guichet flow check` vouches for it. So an edit
is applied to the YAML text with ruamel's round-trip mode (comments, key order and untouched
values stay byte for byte), the new text goes through the same checks as `flow check`, and only
then is it written, atomically; the registry's hot reload swaps it in for new calls.

Lost updates are refused: the editor sends the content hash it read, and a file that changed in
between (another supervisor, an administrator's editor) answers `StaleFlow`.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.util import load_yaml_guess_indent

from ivr.checker import check_flow
from ivr.flow_model import WEEKDAYS, Closure, HolidayCalendar, HoursNode, TimeRange
from ivr.loader import FlowLoadError, Issue, LoadedFlow, load_flow
from ivr.registry import FlowRegistry

# --- what the console reads and sends --------------------------------------------------------
# Values are the file's own text forms ("08:30-12:30", "2026-11-02"): the checker, not this
# module, says what is wrong with them, so a refusal reads exactly like `guichet flow check`.


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClosureFields(_Fields):
    """A whole-day closure (`date`) or a span (`start`..`end`, local time of the node)."""

    date: str | None = Field(default=None, max_length=40, examples=["2026-11-02"])
    start: str | None = Field(default=None, max_length=40, examples=["2026-12-24T12:00"])
    end: str | None = Field(default=None, max_length=40, examples=["2026-12-24T23:59"])
    reason: str | None = Field(default=None, max_length=200)


class HolidayFields(_Fields):
    """Close on the public holidays of `country` (python-holidays), optionally a region."""

    country: str = Field(default="BE", max_length=10)
    subdivision: str | None = Field(default=None, max_length=10)


class HoursFields(_Fields):
    """The editable part of an hours node; `holidays: null` means public holidays stay open."""

    schedule: dict[str, list[str]] = Field(
        max_length=14, examples=[{"mon": ["08:30-12:30", "13:00-16:30"]}]
    )
    holidays: HolidayFields | None
    closures: list[ClosureFields] = Field(default_factory=list, max_length=500)


class HoursNodeView(HoursFields):
    id: str
    timezone: str


class FlowHours(BaseModel):
    flow: str
    hash: str
    nodes: list[HoursNodeView]


# --- refusals ----------------------------------------------------------------------------------


class HoursEditError(Exception):
    """Base of every refusal of this module."""


class FlowNotFound(HoursEditError):
    pass


class NodeNotFound(HoursEditError):
    pass


class StaleFlow(HoursEditError):
    """The file changed since the editor read it."""

    def __init__(self, current_hash: str) -> None:
        super().__init__("the flow changed since it was read; reload and edit again")
        self.current_hash = current_hash


class HoursEditRejected(HoursEditError):
    """The edited flow fails the checker: its messages, nothing written."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class FlowFileInvalid(HoursEditRejected):
    """The file on disk does not load at all (hand-edited badly): nothing to edit from."""


@dataclass(frozen=True, slots=True)
class SavedHours:
    state: FlowHours
    summary: str | None  # what changed, for the audit trail; None: nothing changed


# --- reading -----------------------------------------------------------------------------------


def _hhmm(value: time) -> str:
    return f"{value:%H:%M}" if not value.second else f"{value:%H:%M:%S}"


def _local_text(moment: datetime, zone: tzinfo) -> str:
    """A span's bound as the node's wall-clock time (what a datetime-local input shows)."""
    local = moment.astimezone(zone).replace(tzinfo=None) if moment.tzinfo else moment
    return local.isoformat(timespec="seconds" if local.second else "minutes")


def node_view(node_id: str, node: HoursNode) -> HoursNodeView:
    zone = ZoneInfo(node.timezone)
    return HoursNodeView(
        id=node_id,
        timezone=node.timezone,
        schedule={
            day: [f"{_hhmm(r.start)}-{_hhmm(r.end)}" for r in node.schedule[day]]
            for day in WEEKDAYS
            if node.schedule.get(day)
        },
        holidays=HolidayFields(**node.holidays.model_dump()) if node.holidays else None,
        closures=[
            ClosureFields(
                date=c.date.isoformat() if c.date else None,
                start=_local_text(c.start, zone) if c.start else None,
                end=_local_text(c.end, zone) if c.end else None,
                reason=c.reason,
            )
            for c in node.closures
        ],
    )


def flow_hours(loaded: LoadedFlow) -> FlowHours:
    nodes = [
        node_view(node_id, node)
        for node_id, node in loaded.flow.nodes.items()
        if isinstance(node, HoursNode)
    ]
    return FlowHours(flow=loaded.name, hash=loaded.content_hash, nodes=nodes)


def _load_current(path: Path) -> LoadedFlow:
    try:
        return load_flow(path)
    except FlowLoadError as exc:
        raise FlowFileInvalid(exc.issues) from exc


def read_hours(path: Path) -> FlowHours:
    """The hours nodes of the flow file as it is on disk now (blocking: run in a thread)."""
    return flow_hours(_load_current(path))


# --- editing the YAML text ---------------------------------------------------------------------


def _yaml_for(text: str) -> YAML:
    """A round-trip YAML that writes back `text` unchanged: same indents, no re-wrapping."""
    _, seq_indent, dash_offset = load_yaml_guess_indent(text)
    keyed = [
        len(line) - len(line.lstrip(" "))
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "-")) and line.startswith(" ")
    ]
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(
        mapping=min(keyed, default=2),
        sequence=seq_indent or 2,
        offset=dash_offset if dash_offset is not None else 0,
    )
    return yaml


def _flow_seq(items: Iterable[Any]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _flow_map(pairs: Iterable[tuple[str, Any]]) -> CommentedMap:
    mapping = CommentedMap(pairs)
    mapping.fa.set_flow_style()
    return mapping


def _quoted(text: str) -> DoubleQuotedScalarString:
    """Values we write are always quoted strings: YAML never reinterprets them (a bad date
    such as 2026-13-45 left plain would not even parse), and the checker parses them."""
    quoted: DoubleQuotedScalarString = DoubleQuotedScalarString(text)
    return quoted


def _insert_after(mapping: CommentedMap, key: str, value: Any, after: Iterable[str]) -> None:
    keys = list(mapping)
    position = max((keys.index(k) + 1 for k in after if k in mapping), default=0)
    mapping.insert(position, key, value)


def _ranges(texts: list[str]) -> list[TimeRange] | None:
    try:
        return [TimeRange.model_validate(t) for t in texts]
    except ValidationError:
        return None


def _edit_schedule(node: CommentedMap, current: HoursNode, wanted: dict[str, list[str]]) -> None:
    schedule = node["schedule"]
    if not isinstance(schedule, CommentedMap):  # `schedule: {}` written some other way
        schedule = node["schedule"] = CommentedMap()
    existing: dict[str, list[TimeRange]] = {str(d): r for d, r in current.schedule.items()}
    order = [*WEEKDAYS, *sorted(k for k in wanted if k not in WEEKDAYS)]
    for day in list(schedule):
        if not wanted.get(str(day)) and existing.get(str(day)) != []:
            del schedule[day]  # closed that day now (a `sat: []` as written stays)
    for day in order:
        texts = wanted.get(day)
        if not texts:
            continue
        if day in schedule and _ranges(texts) == existing.get(day):
            continue  # same hours: keep the line as written
        value = _flow_seq(_quoted(t) for t in texts)
        if day in schedule:
            schedule[day] = value
        else:
            _insert_after(schedule, day, value, order[: order.index(day)])


def _edit_holidays(node: CommentedMap, current: HoursNode, wanted: HolidayFields | None) -> None:
    calendar = HolidayCalendar(**wanted.model_dump()) if wanted else None
    if calendar == current.holidays:
        return
    if calendar is None:
        value: Any = None
    else:
        pairs: list[tuple[str, Any]] = [("country", _quoted(calendar.country))]
        if calendar.subdivision:
            pairs.append(("subdivision", _quoted(calendar.subdivision)))
        value = _flow_map(pairs)
    if "holidays" in node:
        node["holidays"] = value
    else:
        _insert_after(node, "holidays", value, ["schedule"])
    if calendar is None:
        node.yaml_add_eol_comment("no public holidays", "holidays")


def _closure_key(closure: Closure, zone: tzinfo) -> tuple[Any, ...]:
    def aware(moment: datetime | None) -> datetime | None:
        return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=zone)

    return (closure.date, aware(closure.start), aware(closure.end), closure.reason)


def _closure_fields(fields: ClosureFields) -> dict[str, str]:
    raw = {"date": fields.date, "from": fields.start, "to": fields.end, "reason": fields.reason}
    return {k: v for k, v in raw.items() if v is not None and (k == "reason" or v.strip())}


def _edit_closures(node: CommentedMap, current: HoursNode, wanted: list[ClosureFields]) -> None:
    zone = ZoneInfo(current.timezone)
    old = node.get("closures")
    old_seq = old if isinstance(old, CommentedSeq) else CommentedSeq()
    pool = {i: _closure_key(c, zone) for i, c in enumerate(current.closures) if i < len(old_seq)}
    new = CommentedSeq()
    for fields in wanted:
        raw = _closure_fields(fields)
        try:
            key = _closure_key(Closure.model_validate(raw), zone)
        except ValidationError:
            key = None  # the checker will say why
        reused = next((i for i, k in pool.items() if key is not None and k == key), None)
        if reused is not None:
            del pool[reused]
            if reused in old_seq.ca.items:
                new.ca.items[len(new)] = old_seq.ca.items[reused]
            new.append(old_seq[reused])  # unchanged: written as it was
        else:
            new.append(_flow_map((k, _quoted(v)) for k, v in raw.items()))
    if "closures" not in node and not new:
        return
    if "closures" in node and [id(x) for x in new] == [id(x) for x in old_seq]:
        return  # the same closures in the same order
    new.ca.comment = old_seq.ca.comment
    new.ca.end = old_seq.ca.end
    if not new or (old_seq.fa.flow_style() and len(old_seq) > 0):
        new.fa.set_flow_style()
    if "closures" in node:
        node["closures"] = new
    else:
        _insert_after(node, "closures", new, ["schedule", "holidays"])


def edit_text(text: str, node_id: str, current: HoursNode, wanted: HoursFields) -> str:
    """`text` with the hours node `node_id` set to `wanted`; everything else as it was."""
    yaml = _yaml_for(text)
    document = yaml.load(text)
    node = document["nodes"][node_id]
    _edit_schedule(node, current, wanted.schedule)
    _edit_holidays(node, current, wanted.holidays)
    _edit_closures(node, current, wanted.closures)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


# --- checking and writing ----------------------------------------------------------------------


def check_text(path: Path, text: str, sounds_dir: Path | None = None) -> LoadedFlow:
    """`guichet flow check` (`ivr.checker.check_file`) on `text` as if it were `path`: the
    same loader and the same `check_flow`; any error refuses it."""
    try:
        loaded = load_flow(path, text)
    except FlowLoadError as exc:
        raise HoursEditRejected(exc.issues) from exc
    errors = [i for i in check_flow(loaded, sounds_dir) if i.severity == "error"]
    if errors:
        raise HoursEditRejected(errors)
    return loaded


def write_atomically(path: Path, data: bytes) -> None:
    """Readers (the registry's reload) see the old file or the new one, never half of one.
    The temporary name ends in `.tmp`, which the registry's flow glob ignores."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, path.stat().st_mode & 0o7777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _summary(node_id: str, before: HoursNode, after: HoursNode) -> str | None:
    parts: list[str] = []
    if before.schedule != after.schedule:
        days = [d for d in WEEKDAYS if before.schedule.get(d) != after.schedule.get(d)]
        parts.append(f"schedule {','.join(days)}")
    if before.holidays != after.holidays:
        parts.append(f"holidays {after.holidays.country if after.holidays else 'off'}")
    if before.closures != after.closures:
        parts.append(f"closures {len(before.closures)}→{len(after.closures)}")
    return f"{node_id}: {'; '.join(parts)}" if parts else None


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path.resolve(), threading.Lock())


def apply_edit(
    path: Path,
    node_id: str,
    wanted: HoursFields,
    base_hash: str,
    *,
    sounds_dir: Path | None = None,
) -> SavedHours:
    """Check `wanted` against the file's current version and the checker, then write it
    (blocking: run in a thread). One edit of a file at a time in this process."""
    with _lock_for(path):
        current = _load_current(path)
        node = current.flow.nodes.get(node_id)
        if not isinstance(node, HoursNode):
            raise NodeNotFound(f"{current.name} has no hours node {node_id!r}")
        if current.content_hash != base_hash:
            raise StaleFlow(current.content_hash)
        text = path.read_bytes().decode("utf-8")
        new_text = edit_text(text, node_id, node, wanted)
        if new_text == text:
            return SavedHours(flow_hours(current), None)
        loaded = check_text(path, new_text, sounds_dir)
        after = loaded.flow.nodes[node_id]
        assert isinstance(after, HoursNode)
        write_atomically(path, new_text.encode("utf-8"))
        summary = _summary(node_id, node, after) or f"{node_id}: layout"
        return SavedHours(flow_hours(loaded), summary)


# --- the registry side -------------------------------------------------------------------------


def _flow_path(registry: FlowRegistry, flow: str) -> Path:
    loaded = registry.get(flow) if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", flow) else None
    if loaded is None:
        raise FlowNotFound(f"no flow {flow!r} in service")
    return loaded.path


async def load_hours(registry: FlowRegistry, flow: str) -> FlowHours:
    """The hours of a flow in service, read from its file."""
    return await asyncio.to_thread(read_hours, _flow_path(registry, flow))


async def save_hours(
    registry: FlowRegistry, flow: str, node_id: str, wanted: HoursFields, base_hash: str
) -> SavedHours:
    """Edit, check and write; then reload the registry so new calls get the new hours now."""
    path = _flow_path(registry, flow)
    saved = await asyncio.to_thread(
        apply_edit, path, node_id, wanted, base_hash, sounds_dir=registry.sounds_dir
    )
    if saved.summary is not None:
        await registry.reload()
    return saved
