from __future__ import annotations

from ivr.context import CallContext
from ivr.flow_model import HangupNode
from ivr.nodes import handles


@handles("hangup")
async def run_hangup(node: HangupNode, ctx: CallContext) -> str | None:
    """Goodbye; the engine exports the variables first, then hangs up."""
    ctx.outcome = node.outcome or ctx.outcome or "hangup"
    await ctx.play(node.prompt, interruptible=False)
    ctx.hangup_requested = True
    return None
