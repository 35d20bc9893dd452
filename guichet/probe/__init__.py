"""The mystery caller (`guichet probe`): calls the line over real SIP like a citizen would and
measures what the citizen gets — time to answer, time in the menus, time until an agent, and
whether the greeting heard is the expected prompt.

Modules: `script` (YAML scripts), `sip` (pyVoIP adapter), `greeting` (audio comparison),
`caller` (one probe call), `records` (Guichet's own records of it), `store` (``probe_run``),
`display` (wallboard/report view), `schedule` (periodic runs), `config`, `cli`.
"""
