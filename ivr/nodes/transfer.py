from __future__ import annotations

from ivr.context import CallContext
from ivr.flow_model import TransferNode
from ivr.nodes import handles


@handles("transfer")
async def run_transfer(node: TransferNode, ctx: CallContext) -> str | None:
    """The dialplan sends the call to ${GUICHET_TRANSFER}@guichet-transfer after the AGI."""
    await ctx.play(node.prompt)
    await ctx.set_vars({"transfer": node.target})
    ctx.outcome = "transferred"
    return None
