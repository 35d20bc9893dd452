from __future__ import annotations

from ivr.context import CallContext
from ivr.flow_model import SetNode
from ivr.loader import expand
from ivr.nodes import handles


@handles("set")
async def run_set(node: SetNode, ctx: CallContext) -> str | None:
    await ctx.set_vars({name: expand(value, ctx.vars) for name, value in node.vars.items()})
    return node.next
