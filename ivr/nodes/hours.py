from __future__ import annotations

from ivr.context import CallContext
from ivr.flow_model import HoursNode
from ivr.hours import open_state
from ivr.nodes import handles


@handles("hours")
async def run_hours(node: HoursNode, ctx: CallContext) -> str | None:
    state = open_state(node, ctx.clock())
    if state.open:
        return node.open
    if state.reason == "holiday" and node.holiday:
        return node.holiday
    return node.closed
