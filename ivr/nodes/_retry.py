"""What a menu or an input node says on each attempt."""

from __future__ import annotations

from typing import Literal

from ivr.flow_model import InputNode, MenuNode

Miss = Literal["invalid", "timeout"] | None


def attempt_prompts(node: MenuNode | InputNode, miss: Miss) -> list[str]:
    """First attempt: the prompt; after a miss: the invalid/timeout prompt, then the prompt."""
    if miss == "invalid":
        return [*node.invalid_prompt, *node.prompt]
    if miss == "timeout":
        return [*node.timeout_prompt, *node.prompt]
    return list(node.prompt)
