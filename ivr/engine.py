"""The flow engine: walks a flow's nodes over a CallLeg and records the call's journey.

The same code runs behind FastAGI, a SIP leg and `guichet flow simulate`.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from crm_bridge.case_facts import CallFacts
from crm_bridge.ports import CallJourney, CaseSink, CitizenSummary, CrmPort
from ivr.context import CallContext
from ivr.flow_model import VAR_NAME
from ivr.leg import CallerHungUp, CallLeg
from ivr.loader import LoadedFlow
from ivr.nodes import HANDLERS
from ivr.variables import channel_variable

log = logging.getLogger("guichet.ivr")

# A safety net under the checker's loop bounds: no call walks more nodes than this.
MAX_STEPS = 200


@dataclass(frozen=True)
class CallResult:
    outcome: str
    variables: dict[str, str]  # channel variables handed to the PBX (GUICHET_*)
    path: list[str]
    prompts: list[str]
    journey: CallJourney
    citizen: CitizenSummary | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def run_call(
    loaded: LoadedFlow,
    leg: CallLeg,
    crm: CrmPort,
    *,
    clock: Callable[[], datetime] | None = None,
    args: Mapping[str, str] | None = None,
    cases: CaseSink | None = None,
) -> CallResult:
    """Run `loaded` over `leg` to its end. A caller hanging up is an outcome, not an error."""
    now = clock or _utcnow
    ctx = CallContext(loaded=loaded, leg=leg, crm=crm, clock=now, started_at=now())
    exported: dict[str, str] = {}
    gone = False
    try:
        await ctx.set_vars({**loaded.flow.vars, **_safe_args(args)})
        await _walk(ctx)
    except CallerHungUp:
        gone = True
        node = loaded.flow.nodes.get(ctx.path[-1]) if ctx.path else None
        ctx.end_step(result="hangup")
        ctx.outcome = (node.hangup_outcome if node else None) or _kept(ctx.outcome) or "hangup"
    except Exception:
        log.exception("call %s: flow %s failed at %s", leg.call_id, loaded.name, ctx.path[-1:])
        ctx.end_step(result="error")
        ctx.outcome = ctx.outcome or "hangup"
        ctx.hangup_requested = True
    outcome = ctx.outcome or "hangup"
    if outcome == "queued" and cases is not None:
        await _open_case(ctx, cases)
    exported = await _export(ctx, outcome)
    if not gone:
        try:
            if ctx.hangup_requested:
                await leg.hangup()
        except CallerHungUp:
            pass
    journey = CallJourney(
        call_id=leg.call_id,
        flow=loaded.name,
        flow_hash=loaded.content_hash,
        leg=leg.kind,
        caller=leg.caller,
        started_at=ctx.started_at,
        ended_at=now(),
        outcome=outcome,
        lang=ctx.lang,
        request_type=ctx.vars.get("request_type"),
        queue=ctx.vars.get("queue"),
        citizen_id=ctx.citizen.id if ctx.citizen else None,
        steps=tuple(ctx.steps),
    )
    result = CallResult(
        outcome=outcome,
        variables=exported,
        path=list(ctx.path),
        prompts=list(ctx.prompts_played),
        journey=journey,
        citizen=ctx.citizen,
    )
    # Release the call before storing anything: the caller must not wait on the database.
    with contextlib.suppress(CallerHungUp):
        await leg.hand_off(result)
    try:
        await crm.save_journey(journey)
    except Exception as exc:
        log.error("call %s: journey not saved (%s)", leg.call_id, type(exc).__name__)
    return result


async def _walk(ctx: CallContext) -> None:
    node_id: str | None = ctx.loaded.flow.start
    while node_id is not None:
        if len(ctx.path) >= MAX_STEPS:
            log.error(
                "call %s: flow %s exceeded %d steps", ctx.leg.call_id, ctx.loaded.name, MAX_STEPS
            )
            ctx.hangup_requested = True
            return
        node = ctx.loaded.node(node_id)
        ctx.visits[node_id] += 1
        if node.max_visits is not None and ctx.visits[node_id] > node.max_visits:
            if node.on_max_visits is None:
                ctx.hangup_requested = True
                return
            node_id = node.on_max_visits
            continue
        ctx.begin_step(node_id, node.kind)
        next_id = await HANDLERS[node.kind](node, ctx)
        ctx.end_step(result=next_id or ctx.outcome)
        node_id = next_id


def _kept(outcome: str | None) -> str | None:
    """An outcome reached before the hang-up that stands (a stored callback request)."""
    return outcome if outcome == "callback" else None


def _safe_args(args: Mapping[str, str] | None) -> dict[str, str]:
    """AGI URL query arguments (`commune?lang=nl`) preset variables; odd names are ignored."""
    if not args:
        return {}
    return {
        k: v
        for k, v in args.items()
        if re.fullmatch(VAR_NAME, k) and k not in {"call_id", "outcome"} and len(v) <= 80
    }


async def _open_case(ctx: CallContext, cases: CaseSink) -> None:
    """The case exists before the agent's phone rings: its reference rides GUICHET_CASE_ID."""
    priority = ctx.vars.get("priority", "0")
    facts = CallFacts(
        call_id=ctx.leg.call_id,
        caller=ctx.leg.caller or None,
        lang=ctx.lang,
        request_type=ctx.vars.get("request_type"),
        citizen_id=ctx.citizen.id if ctx.citizen else None,
        journey=ctx.leg.call_id,
        queue=ctx.vars.get("queue"),
        priority=int(priority) if priority.isdigit() else 0,
        flow_hash=ctx.loaded.content_hash,
        started_at=ctx.started_at,
    )
    try:
        ctx.vars["case_id"] = await cases.submit(facts)
    except Exception:  # the call is queued anyway; the agent creates the case by hand
        log.exception("call %s: case not handed to the outbox", ctx.leg.call_id)


async def _export(ctx: CallContext, outcome: str) -> dict[str, str]:
    """Hand every call variable back as GUICHET_*; sensitive entries were never in `vars`."""
    values = {"call_id": ctx.leg.call_id, "case_id": "", **ctx.vars, "outcome": outcome}
    exported: dict[str, str] = {}
    for name, value in values.items():
        variable = channel_variable(name)
        try:
            await ctx.leg.set_variable(variable, value)
        except CallerHungUp:
            break  # the connection itself is gone; nothing more reaches the channel
        exported[variable] = value
    return exported
