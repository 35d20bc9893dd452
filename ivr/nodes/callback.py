from __future__ import annotations

import logging

from crm_bridge.ports import CallbackRequest
from ivr.context import CallContext
from ivr.flow_model import CallbackNode
from ivr.nodes import handles

log = logging.getLogger("guichet.ivr")


@handles("callback")
async def run_callback(node: CallbackNode, ctx: CallContext) -> str | None:
    """Record a callback request; the caller hears the confirmation only once it is stored."""
    number = (ctx.vars.get(node.number_var) if node.number_var else None) or ctx.leg.caller
    request = CallbackRequest(
        call_id=ctx.leg.call_id,
        flow=ctx.loaded.name,
        caller=number,
        requested_at=ctx.clock(),
        lang=ctx.lang,
        request_type=ctx.vars.get("request_type"),
        citizen_id=ctx.citizen.id if ctx.citizen else None,
    )
    try:
        await ctx.crm.record_callback(request)
    except Exception as exc:  # the caller is not told "no": the journey keeps the request too
        log.error("call %s: callback request not stored (%s)", ctx.leg.call_id, type(exc).__name__)
    ctx.outcome = "callback"
    await ctx.play(node.prompt)
    return node.next
