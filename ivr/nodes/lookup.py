from __future__ import annotations

import asyncio
import logging

from crm_bridge.ports import CitizenSummary
from ivr.context import CallContext
from ivr.flow_model import LookupNode
from ivr.nodes import handles

log = logging.getLogger("guichet.ivr")

# A CRM that does not answer in time must not hold the caller: they go on unidentified.
LOOKUP_TIMEOUT = 3.0


@handles("lookup")
async def run_lookup(node: LookupNode, ctx: CallContext) -> str | None:
    try:
        # asyncio.timeout, not wait_for: no extra task per lookup on the call path
        async with asyncio.timeout(LOOKUP_TIMEOUT):
            citizen = await _find(node, ctx)
    except Exception as exc:  # a CRM outage never drops the call
        log.warning(
            "call %s: citizen lookup failed (%s); going on unidentified",
            ctx.leg.call_id,
            type(exc).__name__,
        )
        citizen = None
    if citizen is None:
        return node.not_found
    ctx.citizen = citizen
    await ctx.set_vars({"citizen_id": str(citizen.id)})
    return node.found


async def _find(node: LookupNode, ctx: CallContext) -> CitizenSummary | None:
    if node.by == "caller":
        return await ctx.crm.find_citizen_by_phone(ctx.leg.caller) if ctx.leg.caller else None
    number = ctx.secrets.get(node.var or "") or ctx.vars.get(node.var or "")
    return await ctx.crm.find_citizen_by_national_number(number) if number else None
