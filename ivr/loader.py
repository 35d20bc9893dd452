"""Read a flow file and its prompt catalogue into typed, hashed, line-mapped objects."""

from __future__ import annotations

import hashlib
import itertools
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from ivr.flow_model import NODE_KINDS as _KINDS
from ivr.flow_model import Flow, MenuNode, Node, QueueNode, SetNode
from ivr.prompts import CatalogueError, PromptCatalogue
from ivr.yamlsrc import SourceMap, YamlError, load_yaml


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding of the checker, printed as FILE:LINE: message."""

    path: Path
    line: int
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.path}:{self.line}: {prefix}{self.message}"


class FlowLoadError(Exception):
    """The file cannot become a flow; `issues` say where and why."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


@dataclass(frozen=True)
class LoadedFlow:
    """A parsed flow with everything needed to run, check and trace it."""

    name: str
    path: Path
    flow: Flow
    catalogue: PromptCatalogue
    source: SourceMap
    content_hash: str  # sha256 of the flow file and its catalogue: recorded with each call
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def node(self, node_id: str) -> Node:
        return self.flow.nodes[node_id]

    def line_of(self, *loc: str | int) -> int:
        return self.source.line_of(loc)

    def queue_names(self) -> list[str]:
        """Every queue this flow can hand a call to, placeholders expanded over every value the
        flow can give each variable (`{request_type}-{lang}` -> population-fr, population-nl...)."""
        values = self.variable_values()
        names: list[str] = []
        for node in self.flow.nodes.values():
            if isinstance(node, QueueNode):
                for name in expand_all(node.queue, values):
                    if name not in names:
                        names.append(name)
        return names

    def variable_values(self) -> dict[str, list[str]]:
        """Every literal value the flow may give each variable; `lang`: the flow's languages."""
        values: dict[str, list[str]] = {"lang": list(self.flow.languages)}

        def add(assignments: dict[str, str]) -> None:
            for name, value in assignments.items():
                bucket = values.setdefault(name, [])
                if value not in bucket:
                    bucket.append(value)

        add(self.flow.vars)
        for node in self.flow.nodes.values():
            if isinstance(node, SetNode):
                add(node.vars)
            elif isinstance(node, MenuNode):
                for digit in node.choices:
                    choice = node.choice(digit)
                    if choice:
                        add(choice.set)
        return values


def placeholders(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def expand_all(template: str, values: dict[str, list[str]]) -> list[str]:
    """All expansions of `template` over the possible values of its placeholders."""
    names = placeholders(template)
    combos = itertools.product(*(values.get(n, ["{" + n + "}"]) for n in names))
    return [expand(template, dict(zip(names, combo, strict=True))) for combo in combos]


class _Keep(dict[str, str]):
    """Placeholders with no value stay as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def expand(template: str, variables: dict[str, str]) -> str:
    """Fill `{name}` placeholders; unknown names stay visible rather than failing a live call."""
    return template.format_map(_Keep(variables))


def catalogue_path(flow_path: Path, flow: Flow) -> Path:
    return (flow_path.parent / flow.prompts).resolve()


def content_hash(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def load_flow(path: Path, text: str | None = None) -> LoadedFlow:
    """Parse and validate a flow file; raises FlowLoadError with FILE:LINE issues."""
    path = Path(path)
    try:
        raw_bytes = text.encode() if text is not None else path.read_bytes()
    except OSError as exc:
        raise FlowLoadError([Issue(path, 1, f"cannot read flow: {exc.strerror or exc}")]) from exc
    try:
        data, smap = load_yaml(path, raw_bytes.decode("utf-8"))
    except (YamlError, UnicodeDecodeError) as exc:
        line = exc.line if isinstance(exc, YamlError) else 1
        message = exc.message if isinstance(exc, YamlError) else "file is not UTF-8"
        raise FlowLoadError([Issue(path, line, message)]) from exc
    if not isinstance(data, dict):
        raise FlowLoadError([Issue(path, 1, "a flow file is a mapping with `start` and `nodes`")])
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        raise FlowLoadError(validation_issues(exc, smap)) from exc
    cat_path = catalogue_path(path, flow)
    try:
        cat_bytes = cat_path.read_bytes()
        catalogue = PromptCatalogue.load(cat_path, cat_bytes.decode("utf-8"))
    except OSError as exc:
        line = smap.line_of(("prompts",))
        raise FlowLoadError(
            [Issue(path, line, f"prompt catalogue {cat_path} unreadable: {exc.strerror}")]
        ) from exc
    except CatalogueError as exc:
        raise FlowLoadError([_issue_from_text(m, cat_path) for m in exc.messages]) from exc
    return LoadedFlow(
        name=flow.name or path.stem,
        path=path,
        flow=flow,
        catalogue=catalogue,
        source=smap,
        content_hash=content_hash(raw_bytes, cat_bytes),
    )


def validation_issues(exc: ValidationError, smap: SourceMap) -> list[Issue]:
    """Pydantic errors as FILE:LINE issues; discriminated-union noise is trimmed."""
    issues: list[Issue] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # ('nodes', 'ask', 'menu', 'choices') -> drop the union tag pydantic inserts after the id
        clean = tuple(
            p
            for i, p in enumerate(loc)
            if not (i == 2 and loc[0] == "nodes" and isinstance(p, str) and p in _KINDS)
        )
        where = ".".join(str(p) for p in clean) or "flow"
        msg = err["msg"]
        if err["type"] == "union_tag_invalid":
            msg = f"unknown node kind; expected one of {', '.join(_KINDS)}"
        elif err["type"] == "union_tag_not_found":
            msg = "node has no `kind`"
        issues.append(Issue(smap.path, smap.line_of(clean), f"{where}: {msg}"))
    return issues


def _issue_from_text(message: str, default_path: Path) -> Issue:
    head, _, rest = message.partition(": ")
    file_part, _, line = head.rpartition(":")
    if line.isdigit():
        return Issue(Path(file_part), int(line), rest)
    return Issue(default_path, 1, message)
