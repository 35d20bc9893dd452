from __future__ import annotations

from ivr.context import CallContext
from ivr.flow_model import MessageNode
from ivr.nodes import handles


@handles("message")
async def run_message(node: MessageNode, ctx: CallContext) -> str | None:
    """Information or FAQ deflection: a key pressed only skips the rest of the message."""
    await ctx.play(node.prompt, interruptible=node.interruptible)
    return node.next
