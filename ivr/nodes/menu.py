from __future__ import annotations

from ivr.context import CallContext
from ivr.flow_model import MenuNode
from ivr.nodes import handles
from ivr.nodes._retry import Miss, attempt_prompts


@handles("menu")
async def run_menu(node: MenuNode, ctx: CallContext) -> str | None:
    """Read one key; re-ask on an invalid key or silence, then fall back."""
    miss: Miss = None
    for _ in range(node.retries):
        got = await ctx.collect(
            attempt_prompts(node, miss), max_digits=1, timeout=node.timeout, terminator=None
        )
        ctx.note_digits(got, sensitive=False)
        if not got.digits:
            miss = "timeout"
            continue
        choice = node.choice(got.digits[0])
        if choice is None:
            miss = "invalid"
            continue
        await ctx.set_vars(choice.set)
        return choice.next
    return node.fallback
