"""One settings object for the whole server, read from the environment and `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob an operator may turn; defaults are the embedded single-machine setup."""

    model_config = SettingsConfigDict(env_prefix="GUICHET_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{ROOT / 'var' / 'guichet.db'}",
        validation_alias=AliasChoices("DATABASE_URL", "GUICHET_DATABASE_URL"),
    )
    flows_dir: Path = ROOT / "flows"
    sounds_dir: Path = ROOT / "audio" / "sounds"
    asterisk_config_dir: Path = ROOT / "asterisk-config"
    # STREAM FILE <prefix>/<lang>/<key>: where audio/sounds sits under Asterisk's sounds dir.
    asterisk_sounds_prefix: str = "guichet"
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    ami_host: str | None = None
    ami_port: int = 5038
    ami_username: str = "guichet"
    ami_secret: str = "change-me"
    # The agents' browser softphones register over this SIP WebSocket (wss://pbx:8089/ws)
    sip_ws_url: str | None = None
    # The IVR answering SIP calls itself (pyVoIP), registered at HOST:PORT; unset: AGI only.
    sip_registrar: str | None = None
    sip_user: str = "ivr"
    sip_password: SecretStr | None = None
    sip_local_host: str = "127.0.0.1"  # in Contact and SDP: an address callers reach
    sip_local_port: int = 0
    sip_rtp_ports: str = "20000-29999"
    sip_flow: str = "commune"
    sip_transfer_uri: str | None = None  # sip:{target}@pbx:5060 (unset: no PBX, end the call)
    sip_max_calls: int = 30
    console_host: str = "127.0.0.1"
    console_port: int = 8000
    reload_interval: float = 1.0
    # Cases handed over by the IVR wait here while the database is away (survives restarts).
    case_spool: Path = ROOT / "var" / "cases.spool"
    # Without GUICHET_AMI_HOST, `guichet serve` starts a demo PBX (guichet.demo) on loopback:
    # scripted citizen calls so a newcomer sees pops without an Asterisk. Never with a real one.
    demo: bool = True
    demo_interval: float = 20.0
    # CTI events between Guichet nodes: unset -> in-process bus (one node).
    redis_url: str | None = None
    # Console sessions: HMAC-signed tokens; unset -> a key generated once in var/secret.key.
    secret_key: SecretStr | None = None
    session_ttl: float = 12 * 3600  # one long shift
    cookie_secure: bool = False  # True behind HTTPS
    trusted_origins: list[str] = Field(default_factory=list)
    ws_replay_size: int = 1000
    ws_replay_age: float = 900.0
    ws_queue_size: int = 256
    log_level: str = "INFO"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
