from __future__ import annotations

from ivr.context import CallContext
from ivr.flow_model import QueueNode
from ivr.loader import expand
from ivr.nodes import handles


@handles("queue")
async def run_queue(node: QueueNode, ctx: CallContext) -> str | None:
    """Hand-off: the dialplan runs Queue(${GUICHET_QUEUE}) once the AGI returns."""
    await ctx.play(node.prompt)
    await ctx.set_vars(
        {
            "queue": expand(node.queue, ctx.vars),
            "skills": ",".join(node.skills),
            "priority": str(node.priority),
        }
    )
    ctx.outcome = "queued"
    return None
