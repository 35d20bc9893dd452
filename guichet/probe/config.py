"""Where the probe calls from: SIP server, scripts and schedule (``GUICHET_PROBE_*``).

Kept apart from `guichet.settings` so the probe's knobs live with the probe; a script's own
``sip:`` block and the CLI options win over these.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from guichet.probe.script import ProbeScript
from guichet.probe.sip import SipAccount
from guichet.settings import ROOT


class ProbeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GUICHET_PROBE_", env_file=".env", extra="ignore")

    sip_server: str | None = None
    sip_port: int = 5060
    sip_password: str = ""
    sip_domain: str | None = None
    local_ip: str | None = None  # default: the address the kernel uses towards the server
    recordings_dir: Path = ROOT / "var" / "probe"
    # The schedule (guichet.probe.schedule): scripts run one after the other every interval.
    scripts: list[Path] = Field(default_factory=list)
    interval: float = 900.0


class ProbeConfigError(Exception):
    """No SIP server is known for a script."""


def account_for(
    script: ProbeScript,
    settings: ProbeSettings,
    *,
    server: str | None = None,
    port: int | None = None,
    password: str | None = None,
) -> SipAccount:
    """The SIP account a script calls with: CLI options, then the script, then settings."""
    host = server or script.sip.server or settings.sip_server
    if not host:
        raise ProbeConfigError(
            f"{script.name}: no SIP server "
            "(script sip.server, --server or GUICHET_PROBE_SIP_SERVER)"
        )
    return SipAccount(
        server=host,
        port=port or script.sip.port or settings.sip_port,
        user=script.caller,
        password=password if password is not None else script.sip.password or settings.sip_password,
        domain=script.sip.domain or settings.sip_domain,
        local_ip=settings.local_ip,
    )


__all__ = ["ProbeConfigError", "ProbeSettings", "account_for"]
