"""`guichet flow check`: everything an administrator needs to trust a flow before it runs.

Every finding is an Issue printed as FILE:LINE: message. Hot reload runs the same checks, so a
flow that fails here never replaces the running one.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from audio.coverage import missing_audio
from ivr.flow_model import (
    HoursNode,
    InputNode,
    LookupNode,
    MenuNode,
    Node,
    QueueNode,
    SetNode,
)
from ivr.loader import FlowLoadError, Issue, LoadedFlow, expand_all, load_flow, placeholders
from ivr.validators import VALIDATORS

Loc = tuple[str | int, ...]
QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REF_FIELDS = (
    "next",
    "fallback",
    "skip",
    "found",
    "not_found",
    "open",
    "closed",
    "holiday",
    "on_max_visits",
)
_PROMPT_FIELDS = ("prompt", "invalid_prompt", "timeout_prompt")


def check_file(path: Path, sounds_dir: Path | None = None) -> tuple[LoadedFlow | None, list[Issue]]:
    """Load and check one flow file; the flow is returned only when it loaded."""
    try:
        loaded = load_flow(path)
    except FlowLoadError as exc:
        return None, exc.issues
    return loaded, check_flow(loaded, sounds_dir)


def check_flow(loaded: LoadedFlow, sounds_dir: Path | None = None) -> list[Issue]:
    issues = [
        *_references(loaded),
        *_reachability(loaded),
        *_loops(loaded),
        *_prompts(loaded),
        *_node_settings(loaded),
    ]
    if not any(i.severity == "error" for i in issues) and sounds_dir is not None:
        issues.extend(_audio(loaded, sounds_dir))
    return sorted(issues, key=lambda i: (str(i.path), i.line, i.message))


def _issue(loaded: LoadedFlow, loc: Loc, message: str, severity: str = "error") -> Issue:
    return Issue(loaded.path, loaded.source.line_of(loc), message, severity)


def references(node_id: str, node: Node) -> Iterator[tuple[Loc, str]]:
    """Every node id a node points to, with where it is written."""
    base: Loc = ("nodes", node_id)
    for name in _REF_FIELDS:
        target = getattr(node, name, None)
        if isinstance(target, str):
            yield (*base, name), target
    if isinstance(node, MenuNode):
        for digit, choice in node.choices.items():
            yield (*base, "choices", digit), choice if isinstance(choice, str) else choice.next


def _edges(loaded: LoadedFlow) -> dict[str, list[str]]:
    nodes = loaded.flow.nodes
    return {nid: [t for _, t in references(nid, n) if t in nodes] for nid, n in nodes.items()}


def _references(loaded: LoadedFlow) -> Iterator[Issue]:
    nodes = loaded.flow.nodes
    if loaded.flow.start not in nodes:
        yield _issue(loaded, ("start",), f"start node {loaded.flow.start!r} does not exist")
    for node_id, node in nodes.items():
        for loc, target in references(node_id, node):
            if target not in nodes:
                yield _issue(loaded, loc, f"{node_id}: unknown node {target!r}")


def _reach(start: list[str], edges: dict[str, list[str]]) -> set[str]:
    seen, todo = set(start), list(start)
    while todo:
        for nxt in edges.get(todo.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _reachability(loaded: LoadedFlow) -> Iterator[Issue]:
    nodes = loaded.flow.nodes
    edges = _edges(loaded)
    if loaded.flow.start in nodes:
        reached = _reach([loaded.flow.start], edges)
        for node_id in nodes:
            if node_id not in reached:
                yield _issue(
                    loaded, ("nodes", node_id), f"{node_id}: unreachable from {loaded.flow.start!r}"
                )
    # A node ends the flow when it has no way on (queue, transfer, hangup...), or when its own
    # visit bound can end the call.
    ends = [
        nid for nid, n in nodes.items() if not edges[nid] or (n.max_visits and not n.on_max_visits)
    ]
    reverse: dict[str, list[str]] = {nid: [] for nid in nodes}
    for nid, targets in edges.items():
        for target in targets:
            reverse[target].append(nid)
    can_end = _reach(ends, reverse)
    for node_id, node in nodes.items():
        if node_id in can_end:
            continue
        what = (
            "menu has no way out: no choice leads to the end of the flow"
            if isinstance(node, MenuNode)
            else "no path from here ever ends the call"
        )
        yield _issue(loaded, ("nodes", node_id), f"{node_id}: {what}")


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components that contain a cycle (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    found.append(component)
    return found


def _loops(loaded: LoadedFlow) -> Iterator[Issue]:
    nodes = loaded.flow.nodes
    order = list(nodes)
    for component in _cycles(_edges(loaded)):
        if any(nodes[n].max_visits for n in component):
            continue
        members = sorted(component, key=order.index)
        loop = " → ".join([*members, members[0]])
        yield _issue(
            loaded,
            ("nodes", members[0]),
            f"loop {loop} has no retry bound: "
            "set max_visits (and on_max_visits) on one of its nodes",
        )


def prompt_refs(loaded: LoadedFlow) -> Iterator[tuple[Loc, str]]:
    """Every prompt reference of the flow with where it is written."""
    for node_id, node in loaded.flow.nodes.items():
        for name in _PROMPT_FIELDS:
            for i, ref in enumerate(getattr(node, name, None) or []):
                yield ("nodes", node_id, name, i), ref


def _prompts(loaded: LoadedFlow) -> Iterator[Issue]:
    catalogue = loaded.catalogue
    needed = list(dict.fromkeys([*loaded.flow.languages, *loaded.flow.bilingual]))
    for loc, ref in prompt_refs(loaded):
        key, _, pinned = ref.partition("@")
        if key not in catalogue:
            yield _issue(loaded, loc, f"unknown prompt {key!r} (not in {catalogue.path.name})")
            continue
        wanted = [pinned] if pinned else needed
        missing = [lang for lang in wanted if not catalogue.text(key, lang)]
        if missing:
            yield _issue(loaded, loc, f"prompt {key!r} has no text in {', '.join(missing)}")


def _audio(loaded: LoadedFlow, sounds_dir: Path) -> Iterator[Issue]:
    needed = list(dict.fromkeys([*loaded.flow.languages, *loaded.flow.bilingual]))
    reported: set[str] = set()
    for loc, ref in prompt_refs(loaded):
        key, _, pinned = ref.partition("@")
        if key in reported:
            continue
        reported.add(key)
        gaps = missing_audio([key], [pinned] if pinned else needed, sounds_dir)
        if gaps:
            langs = ", ".join(lang for _, lang in gaps)
            yield _issue(
                loaded,
                loc,
                f"prompt {key!r} has no audio in {langs} (run `guichet audio build`)",
                "warning",
            )


def _node_settings(loaded: LoadedFlow) -> Iterator[Issue]:
    values = loaded.variable_values()
    assigned = set(values) | {n.var for n in loaded.flow.nodes.values() if isinstance(n, InputNode)}
    assigned |= {"call_id", "citizen_id", "queue"}
    languages = set(loaded.flow.languages)
    for node_id, node in loaded.flow.nodes.items():
        base: Loc = ("nodes", node_id)
        if isinstance(node, InputNode) and node.validator and node.validator not in VALIDATORS:
            yield _issue(
                loaded,
                (*base, "validator"),
                f"{node_id}: unknown validator {node.validator!r}; known: {', '.join(VALIDATORS)}",
            )
        if isinstance(node, LookupNode) and node.var and node.var not in assigned:
            yield _issue(loaded, (*base, "var"), f"{node_id}: variable {node.var!r} is never set")
        if isinstance(node, QueueNode):
            for name in placeholders(node.queue):
                if name not in values:
                    yield _issue(
                        loaded, (*base, "queue"), f"{node_id}: {{{name}}} is never set by the flow"
                    )
            for name in expand_all(node.queue, values):
                if "{" not in name and not QUEUE_NAME.fullmatch(name):
                    yield _issue(
                        loaded, (*base, "queue"), f"{node_id}: {name!r} is not a valid queue name"
                    )
        if isinstance(node, HoursNode):
            yield from _hours(loaded, node_id, node)
        langs_set: list[tuple[Loc, str]] = []
        if isinstance(node, SetNode) and "lang" in node.vars:
            langs_set.append(((*base, "vars", "lang"), node.vars["lang"]))
        if isinstance(node, MenuNode):
            for digit in node.choices:
                choice = node.choice(digit)
                if choice and "lang" in choice.set:
                    langs_set.append(((*base, "choices", digit), choice.set["lang"]))
        for loc, lang in langs_set:
            if lang not in languages:
                yield _issue(
                    loaded, loc, f"{node_id}: language {lang!r} is not one of the flow's languages"
                )


def _hours(loaded: LoadedFlow, node_id: str, node: HoursNode) -> Iterator[Issue]:
    base: Loc = ("nodes", node_id)
    try:
        ZoneInfo(node.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        yield _issue(loaded, (*base, "timezone"), f"{node_id}: unknown timezone {node.timezone!r}")
    if node.holidays is not None:
        try:
            holidays.country_holidays(node.holidays.country, subdiv=node.holidays.subdivision)
        except NotImplementedError as exc:
            yield _issue(loaded, (*base, "holidays"), f"{node_id}: {exc}")
    for day, ranges in node.schedule.items():
        ordered = sorted(ranges, key=lambda r: r.start)
        for before, after in itertools.pairwise(ordered):
            if after.start < before.end:
                yield _issue(
                    loaded, (*base, "schedule", day), f"{node_id}: overlapping ranges on {day}"
                )
