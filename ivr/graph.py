"""`guichet flow graph`: a flow as a Mermaid flowchart (admins would rather look than read)."""

from __future__ import annotations

from ivr.flow_model import MenuNode
from ivr.loader import LoadedFlow

_SHAPES = {
    "menu": ("{", "}"),
    "input": ("[/", "/]"),
    "hours": ("{{", "}}"),
    "queue": ("([", "])"),
    "transfer": ("([", "])"),
    "hangup": ("((", "))"),
    "callback": ("[[", "]]"),
    "lookup": ("[(", ")]"),
}


def _label(text: str) -> str:
    return text.replace('"', "'")


def to_mermaid(loaded: LoadedFlow) -> str:
    lines = ["flowchart TD", f'  start(["{_label(loaded.name)}"]) --> {loaded.flow.start}']
    for node_id, node in loaded.flow.nodes.items():
        opening, closing = _SHAPES.get(node.kind, ("[", "]"))
        detail = getattr(node, "queue", None) or getattr(node, "target", None) or ""
        title = f"{node_id}<br/><small>{node.kind}{': ' + detail if detail else ''}</small>"
        lines.append(f'  {node_id}{opening}"{_label(title)}"{closing}')
    for node_id, node in loaded.flow.nodes.items():
        for label, target in node.edges():
            if isinstance(node, MenuNode) and label in node.choices:
                choice = node.choice(label) if isinstance(node, MenuNode) else None
                sets = ", ".join(f"{k}={v}" for k, v in choice.set.items()) if choice else ""
                label = f"{label} {sets}".strip()
            lines.append(f'  {node_id} -->|"{_label(label)}"| {target}')
    return "\n".join(lines) + "\n"
