"""YAML loading that remembers where every value came from, so errors can say FILE:LINE.

Why not plain `yaml.safe_load`: it forgets line numbers, and its YAML 1.1 resolvers turn
`13:00` into 780 (base 60) and `on`/`no` into booleans — both wrong for opening hours and
menu keys. Keys are always strings here (`1:` in a menu means the digit "1").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-like scalars: no sexagesimal numbers, only true/false booleans."""


_Loader.yaml_implicit_resolvers = {
    ch: [
        (tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[-1] not in {"int", "float", "bool"}
    ]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


class YamlError(Exception):
    """A file that is not valid YAML; carries the line of the fault."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message


@dataclass
class SourceMap:
    """Where each value of a loaded document sits: location tuple -> 1-based line."""

    path: Path
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int:
        """The line of `loc`, or of its nearest parent that has one."""
        probe = tuple(loc)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), 1)

    def where(self, loc: Loc) -> str:
        return f"{self.path}:{self.line_of(loc)}"


def load_yaml(path: Path, text: str | None = None) -> tuple[Any, SourceMap]:
    """Parse `path` (or `text` as if it were `path`) into plain Python values and a SourceMap."""
    if text is None:
        text = path.read_text(encoding="utf-8")
    smap = SourceMap(path)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, smap
        return _build(loader, node, (), smap), smap
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlError(path, line, f"invalid YAML: {exc.problem or exc}") from exc
    finally:
        loader.dispose()


def _build(loader: _Loader, node: yaml.Node, loc: Loc, smap: SourceMap) -> Any:
    smap.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(loader.construct_object(key_node, deep=True))
            if key in out:
                raise YamlError(smap.path, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            smap.lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _build(loader, value_node, (*loc, key), smap)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*loc, i), smap) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
