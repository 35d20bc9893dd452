"""Default request bodies of the REST adapter: Jinja2, one per operation, rendering JSON.

Kept as Python strings rather than ``.j2`` files so they ship inside the wheel without any
package-data setting. Operators override one by putting a file of the same name in the
adapter's ``templates_dir``. Values go through ``tojson``, which quotes and escapes them.

Variables: ``facts`` (the case, see `CallFacts.to_json`), ``national_number`` (11 digits),
``phone`` (E.164), ``reference`` and ``interaction`` (see `InteractionFacts`), ``now``
(ISO UTC).
"""

from __future__ import annotations

CREATE_CASE = """\
{
  "reference": {{ facts.reference | tojson }},
  "call_id": {{ facts.call_id | tojson }},
  "channel": {{ facts.channel | tojson }},
  "direction": {{ facts.direction | tojson }},
  "caller": {{ facts.caller | tojson }},
  "language": {{ facts.lang | tojson }},
  "request_type": {{ facts.request_type | tojson }},
  "citizen_id": {{ facts.citizen_id | tojson }},
  "queue": {{ facts.queue | tojson }},
  "priority": {{ facts.priority | tojson }},
  "flow_hash": {{ facts.flow_hash | tojson }},
  "journey_call_id": {{ facts.journey | tojson }},
  "started_at": {{ facts.started_at | tojson }}
}
"""

# National numbers travel in the body, never in the URL: URLs end up in access logs.
FIND_BY_NATIONAL_NUMBER = """\
{"national_number": {{ national_number | tojson }}}
"""

FIND_BY_PHONE = """\
{"phone": {{ phone | tojson }}}
"""

APPEND_INTERACTION = """\
{
  "kind": {{ interaction.kind | tojson }},
  "call_id": {{ interaction.call_id | tojson }},
  "direction": {{ interaction.direction | tojson }},
  "contact": {{ interaction.contact | tojson }},
  "queue": {{ interaction.queue | tojson }},
  "started_at": {{ interaction.started_at | tojson }},
  "ended_at": {{ interaction.ended_at | tojson }},
  "journey_call_id": {{ interaction.journey_call_id | tojson }},
  "summary": {{ interaction.summary | tojson }}
}
"""

DEFAULT_TEMPLATES: dict[str, str] = {
    "create_case.json.j2": CREATE_CASE,
    "find_by_national_number.json.j2": FIND_BY_NATIONAL_NUMBER,
    "find_by_phone.json.j2": FIND_BY_PHONE,
    "append_interaction.json.j2": APPEND_INTERACTION,
}
