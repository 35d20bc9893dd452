"""Node kinds as small handlers, registered by kind name.

Each handler is `async def (node, ctx) -> next node id | None` (None ends the flow). Adding a
node kind means one module here and its model in `ivr/flow_model.py`; modules are imported
automatically.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ivr.context import CallContext

Handler = Callable[[Any, CallContext], Awaitable[str | None]]
H = TypeVar("H", bound=Handler)

HANDLERS: dict[str, Handler] = {}


def handles(kind: str) -> Callable[[H], H]:
    def register(func: H) -> H:
        if kind in HANDLERS:
            raise ValueError(f"node kind {kind!r} has two handlers")
        HANDLERS[kind] = func
        return func

    return register


for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
