from __future__ import annotations

from ivr.context import CallContext
from ivr.flow_model import InputNode
from ivr.nodes import handles
from ivr.nodes._retry import Miss, attempt_prompts
from ivr.validators import VALIDATORS


@handles("input")
async def run_input(node: InputNode, ctx: CallContext) -> str | None:
    """Collect digits, validate them, re-ask a bounded number of times; `#` alone skips."""
    validator = VALIDATORS.get(node.validator) if node.validator else None
    sensitive = (
        node.sensitive if node.sensitive is not None else bool(validator and validator.sensitive)
    )
    # Room for the terminator after a full-length entry, so `85073003328#` does not leak the `#`.
    max_digits = node.max_length + (1 if node.terminator else 0)
    miss: Miss = None
    for _ in range(node.retries):
        got = await ctx.collect(
            attempt_prompts(node, miss),
            max_digits=max_digits,
            timeout=node.timeout,
            terminator=node.terminator,
        )
        ctx.note_digits(got, sensitive=sensitive)
        digits = got.digits
        if not digits and got.terminated and node.skip:
            return node.skip
        if not digits and got.timed_out:
            miss = "timeout"
            continue
        valid = (
            digits.isdigit()
            and node.min_length <= len(digits) <= node.max_length
            and (validator is None or validator.check(digits))
        )
        if not valid:
            miss = "invalid"
            continue
        if sensitive:
            ctx.secrets[node.var] = digits
        else:
            await ctx.set_vars({node.var: digits})
        return node.next
    return node.fallback
