"""`RestCrmAdapter`: an `ExternalCrm` over any JSON/HTTP API, shaped by Jinja2 templates.

Each operation is a method, a path template and a body template; the defaults speak a
plain JSON API (`crm_bridge.adapters.templates`) and a site adapts to its CRM by
overriding templates, not code. Templates run in Jinja's sandbox with undefined variables
as errors, since they come from configuration; all of them compile when the adapter is
built, so a broken one stops the server at start rather than a call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from jinja2 import (
    ChoiceLoader,
    DictLoader,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    Undefined,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, Field

from crm_bridge.adapters import CrmRejected, CrmTemplateError, CrmUnavailable
from crm_bridge.adapters.templates import DEFAULT_TEMPLATES
from crm_bridge.case_facts import CallFacts, InteractionFacts
from crm_bridge.phone import normalise_phone
from crm_bridge.ports import CitizenSummary
from crm_bridge.privacy import mask_digits_in_text
from crm_bridge.register_number import compact
from crm_bridge.utc import ensure_utc, utc_now

JSON_TYPE = "application/json"
_RETRY_LATER = {408, 425, 429}


class RestOperation(BaseModel):
    """One HTTP request: ``path`` is a template too (``/cases/{{ reference | urlencode }}``)."""

    method: str = "POST"
    path: str
    body: str | None = None  # template name; None sends no body
    content_type: str = JSON_TYPE
    # Dotted path to what matters in the JSON reply: the case reference (create_case; None
    # means the CRM keeps Guichet's), the citizen or list of citizens (the finds).
    result: str | None = None


class RestCrmConfig(BaseModel):
    """Where the CRM is and how to talk to it; loadable from YAML or settings."""

    base_url: str
    timeout: float = 5.0
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. Authorization
    templates_dir: Path | None = None
    create_case: RestOperation = RestOperation(
        path="/cases", body="create_case.json.j2", result="reference"
    )
    find_by_national_number: RestOperation = RestOperation(
        path="/citizens/search", body="find_by_national_number.json.j2"
    )
    find_by_phone: RestOperation = RestOperation(
        path="/citizens/search", body="find_by_phone.json.j2"
    )
    append_interaction: RestOperation = RestOperation(
        path="/cases/{{ reference | urlencode }}/interactions", body="append_interaction.json.j2"
    )
    # CitizenSummary field -> key in the CRM's citizen object, where they differ.
    citizen_fields: dict[str, str] = Field(default_factory=dict)


def _tojson(value: Any) -> str:
    """JSON for a body (not HTML: no ``\\u003c`` escapes, accents kept); a missing variable
    is named in the error instead of failing as "not serializable"."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return json.dumps(value, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return ensure_utc(value).isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def _dig(data: Any, path: str | None) -> Any:
    for key in path.split(".") if path else ():
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


class RestCrmAdapter:
    """`ExternalCrm` over HTTP. Owns its httpx client unless one is given; `aclose` it."""

    def __init__(self, config: RestCrmConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        loaders: list[Any] = [DictLoader(DEFAULT_TEMPLATES)]
        if config.templates_dir is not None:
            loaders.insert(0, FileSystemLoader(config.templates_dir))
        self._env = ImmutableSandboxedEnvironment(
            loader=ChoiceLoader(loaders), undefined=StrictUndefined, autoescape=False
        )
        self._env.filters["tojson"] = _tojson
        self._compiled: dict[str, tuple[Template, Template | None]] = {}
        for name in ("create_case", "find_by_national_number", "find_by_phone",
                     "append_interaction"):  # fmt: skip
            operation: RestOperation = getattr(config, name)
            try:
                path = self._env.from_string(operation.path)
                body = self._env.get_template(operation.body) if operation.body else None
            except TemplateError as exc:
                raise CrmTemplateError(f"REST CRM template of {name}: {exc}") from exc
            self._compiled[name] = (path, body)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            base_url=config.base_url,
            timeout=httpx.Timeout(config.timeout),
            headers=config.headers,
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> RestCrmAdapter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- ExternalCrm ----------------------------------------------------------------------

    async def create_case(self, facts: CallFacts) -> str:
        reply = await self._call(
            "create_case", {"facts": facts.to_json()}, idempotency_key=facts.call_id
        )
        operation = self.config.create_case
        if operation.result is None:
            if facts.reference is None:
                raise CrmRejected("create_case: no reference to keep and none configured")
            return facts.reference
        reference = _dig(reply, operation.result)
        if not isinstance(reference, str | int) or isinstance(reference, bool) or not reference:
            raise CrmRejected(f"create_case: the reply has no {operation.result!r}")
        return str(reference)

    async def find_citizen_by_national_number(self, number: str) -> CitizenSummary | None:
        compacted = compact(number)
        if len(compacted) != 11 or not compacted.isdigit():
            return None
        return await self._find("find_by_national_number", {"national_number": compacted})

    async def find_citizen_by_phone(self, phone: str) -> CitizenSummary | None:
        normalised = normalise_phone(phone)
        if normalised is None:
            return None
        return await self._find("find_by_phone", {"phone": normalised})

    async def append_interaction(self, reference: str, interaction: InteractionFacts) -> None:
        await self._call(
            "append_interaction",
            {"reference": reference, "interaction": _jsonable(asdict(interaction))},
            idempotency_key=interaction.call_id,
        )

    # --- plumbing -------------------------------------------------------------------------

    async def _find(self, name: str, context: dict[str, Any]) -> CitizenSummary | None:
        reply = await self._call(name, context, missing_is_none=True)
        found = _dig(reply, getattr(self.config, name).result)
        if isinstance(found, list):
            # Several matches identify nobody (a family landline): the IVR asks for the NN.
            found = found[0] if len(found) == 1 else None
        return None if found is None else self._citizen(name, found)

    def _citizen(self, name: str, data: Any) -> CitizenSummary:
        if not isinstance(data, Mapping):
            raise CrmRejected(f"{name}: the reply is not a citizen object")
        keys = {field: self.config.citizen_fields.get(field, field)
                for field in ("id", "first_name", "last_name", "preferred_language", "address",
                              "phone")}  # fmt: skip
        raw_id = data.get(keys["id"])
        citizen_id: int | None = None
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            citizen_id = raw_id
        elif isinstance(raw_id, str) and raw_id.isdigit():
            citizen_id = int(raw_id)
        first, last = data.get(keys["first_name"]), data.get(keys["last_name"])
        if citizen_id is None or not isinstance(first, str) or not isinstance(last, str):
            raise CrmRejected(f"{name}: the citizen lacks an integer id or a name")

        def optional(field: str) -> str | None:
            value = data.get(keys[field])
            return value if isinstance(value, str) and value else None

        return CitizenSummary(
            id=citizen_id,
            first_name=first,
            last_name=last,
            preferred_language=optional("preferred_language"),
            address=optional("address"),
            phone=optional("phone"),
        )

    def _render(self, name: str, context: dict[str, Any]) -> tuple[str, bytes | None]:
        path_template, body_template = self._compiled[name]
        operation: RestOperation = getattr(self.config, name)
        values = {**context, "now": utc_now().isoformat()}
        try:
            path = path_template.render(values)
            body = None if body_template is None else body_template.render(values)
        except (TemplateError, TypeError, ValueError) as exc:
            raise CrmTemplateError(f"{name}: template failed: {exc}") from exc
        if body is not None and operation.content_type == JSON_TYPE:
            try:
                json.loads(body)
            except ValueError as exc:
                raise CrmTemplateError(f"{name}: template rendered invalid JSON ({exc})") from None
        return path, None if body is None else body.encode()

    async def _call(
        self,
        name: str,
        context: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        missing_is_none: bool = False,
    ) -> Any:
        """Send one operation; return the JSON reply (None for an empty one or a 404 find)."""
        operation: RestOperation = getattr(self.config, name)
        path, body = self._render(name, context)
        headers = {"Content-Type": operation.content_type} if body is not None else {}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            response = await self._client.request(
                operation.method, path, content=body, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise CrmUnavailable(f"{name}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            message = mask_digits_in_text(str(exc))
            raise CrmUnavailable(f"{name}: unreachable ({type(exc).__name__}: {message})") from None
        status = response.status_code
        if status == 404 and missing_is_none:
            return None
        if status >= 500 or status in _RETRY_LATER:
            raise CrmUnavailable(f"{name}: HTTP {status}")
        if status >= 400:
            raise CrmRejected(f"{name}: HTTP {status}")
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise CrmRejected(f"{name}: HTTP {status} with a reply that is not JSON") from None
