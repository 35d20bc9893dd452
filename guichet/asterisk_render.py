"""Render Asterisk's configuration from Guichet's own data, so the two never drift.

Queue names come from the flows (`LoadedFlow.queue_names()`), `channelvars=` from
`ivr.variables.CHANNEL_VARIABLES`, agents, DIDs and transfer targets from `site.yaml`. Everything
is loaded and cross-checked first and rendered in memory; files are only written once every
template rendered, each one atomically, so a broken flow never leaves half a config behind.

Agents who answer in the console's browser softphone (users with ``softphone`` and a
``PJSIP/<agent>`` interface, read from the user store by the CLI) get a WebRTC endpoint
(``webrtc=yes``: DTLS-SRTP with an auto-generated certificate, ICE, AVPF, rtcp-mux) on the
``transport-wss`` transport, with the SIP password the console derives from its secret
(`console.routers.softphone.sip_password`): the browser and Asterisk agree without a stored
password. ``http.conf`` carries Asterisk's WebSocket (``/ws``; TLS for WSS in production).

`guichet asterisk render --out DIR` (this module's `app`, mounted by guichet/cli.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
import typer
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from sqlalchemy.engine import make_url

from console.deps import ConsoleConfig
from console.routers.softphone import pjsip_endpoint, sip_password
from crm_bridge.db import make_engine
from crm_bridge.users import UserService
from guichet.settings import Settings, get_settings
from ivr.flow_model import QueueNode, TransferNode
from ivr.loader import FlowLoadError, Issue, LoadedFlow, load_flow, validation_issues
from ivr.variables import CHANNEL_VARIABLES, OUTCOMES
from ivr.yamlsrc import SourceMap, YamlError, load_yaml

log = logging.getLogger(__name__)

# Template -> rendered file, and the mode of the rendered file: the two holding secrets
# (AMI secret, SIP passwords) are not world-readable.
TEMPLATES: dict[str, tuple[str, int]] = {
    "extensions.conf.j2": ("extensions.conf", 0o644),
    "features.conf.j2": ("features.conf", 0o644),
    "http.conf.j2": ("http.conf", 0o644),
    "manager.conf.j2": ("manager.conf", 0o600),
    "musiconhold.conf.j2": ("musiconhold.conf", 0o644),
    "pjsip.conf.j2": ("pjsip.conf", 0o600),
    "queues.conf.j2": ("queues.conf", 0o644),
}
CATALOGUE_FILE = "prompts.yaml"  # lives beside the flows but is not a flow

# Names that end up as dialplan extensions, section names or URL paths.
_DIALPLAN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Extensions with a meaning of their own in Asterisk, and the ones the rendered dialplan uses.
_RESERVED_EXTENS = {"s", "h", "i", "t", "T", "o", "a", "e", "overflow"}
_RESERVED_SECTIONS = {"general", "globals"}

Warn = Callable[[str], None]


class RenderError(Exception):
    """site.yaml, or how it fits the flows, is wrong; `issues` say FILE:LINE and why."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


# --- site.yaml ------------------------------------------------------------------------------


def _no_chars(forbidden: str, why: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        bad = sorted({c for c in value if c in forbidden})
        if bad or not value.strip():
            shown = " ".join(repr(c) for c in bad) or "only blanks"
            raise ValueError(f"has {shown}: {why}")
        return value

    return check


# Pasted verbatim into .conf values and dialplan arguments: `;` starts a comment, `,` splits
# arguments (member names), quotes and brackets break caller ids and section headers.
ConfText = Annotated[str, AfterValidator(_no_chars(';,"\\[]\r\n', "pasted into Asterisk config"))]
# A SIP password: a value of its own, so no blanks, `;`, quotes or backslashes.
Secret = Annotated[
    str,
    Field(min_length=8),
    AfterValidator(_no_chars(' \t;"\\\r\n', "not allowed in a pjsip.conf password")),
]
# Only ever in a `;` comment: one line is all it needs.
CommentText = Annotated[str, AfterValidator(_no_chars("\r\n", "must fit on one comment line"))]


Lang = Literal["fr", "nl", "en", "de"]


def _bilingual() -> list[Lang]:
    return ["fr", "nl"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Agent(_Model):
    """One agent and their phone: a PJSIP endpoint and a Local/ member of the queues they serve."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]+$", description="PJSIP endpoint and SIP user name.")
    name: ConfText = Field(max_length=60)
    extension: str = Field(pattern=r"^[0-9]{2,8}$", description="Internal number of the phone.")
    password: Secret
    language: Lang | None = None
    queues: list[str] = Field(
        default_factory=list, description="Queue names or fnmatch patterns (`population-*`)."
    )


class Did(_Model):
    """An inbound number (or dialplan pattern) and the flow that answers it."""

    number: str = Field(pattern=r"^(\+?[0-9]+|_[0-9XZN.!+\[\]-]+)$")
    flow: str
    description: CommentText | None = None


class Transfer(_Model):
    """An extension of `[guichet-transfer]` a flow's transfer node may name."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_+*#.-]*$")
    dial: str = Field(
        pattern=r"^[^\s;,\"\\()]+$", description="Dial() target, e.g. PJSIP/0225551234@trunk."
    )
    timeout: int = Field(default=30, ge=5, le=300)
    description: CommentText | None = None


class QueueSettings(_Model):
    """The same for every queue: a public service wants them alike."""

    ring_timeout: int = Field(default=15, ge=5, le=120, description="Seconds one agent rings.")
    retry: int = Field(default=2, ge=0, le=60)
    wrapuptime: int = Field(default=10, ge=0, le=600)
    max_wait: int = Field(
        default=900, ge=30, le=7200, description="Queue() timeout, then overflow."
    )
    announce_frequency: int = Field(default=60, ge=0, le=600)
    joinempty: str = Field(default="paused,unavailable,invalid", pattern=r"^[a-z,]+$")
    leavewhenempty: str = Field(default="paused,unavailable,invalid", pattern=r"^[a-z,]+$")
    ringinuse: bool = False
    musicclass: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]+$")


class Sip(_Model):
    protocol: Literal["udp", "tcp"] = "udp"
    bind: str = Field(default="0.0.0.0:5060", pattern=r"^[0-9A-Za-z.:\[\]]+$")
    codecs: list[Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]] = Field(
        default_factory=lambda: ["alaw", "ulaw"], min_length=1
    )
    local_net: list[Annotated[str, Field(pattern=r"^[0-9a-fA-F.:/]+$")]] = Field(
        default_factory=list
    )
    external_address: str | None = Field(default=None, pattern=r"^[0-9A-Za-z.:-]+$")


class WebRtc(_Model):
    """Browser softphones: Asterisk's WebSocket (http.conf) and the WebRTC endpoints' media."""

    protocol: Literal["wss", "ws"] = Field(
        default="wss", description="wss in production; ws only on a lab's loopback."
    )
    http_bind: str = Field(
        default="127.0.0.1", pattern=r"^[0-9A-Za-z.:\[\]-]+$", description="Plain HTTP."
    )
    http_port: int = Field(default=8088, ge=1, le=65535)
    tls_bind: str = Field(default="0.0.0.0:8089", pattern=r"^[0-9A-Za-z.:\[\]-]+$")
    tls_cert_file: str = Field(default="/etc/asterisk/keys/asterisk.crt", pattern=r"^/[^\s;\"\\]+$")
    tls_private_key: str = Field(
        default="/etc/asterisk/keys/asterisk.key", pattern=r"^/[^\s;\"\\]+$"
    )
    codecs: list[Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]] = Field(
        default_factory=lambda: ["opus", "alaw", "ulaw"], min_length=1
    )


class Fallback(_Model):
    """What the caller hears when Guichet cannot help: never silence."""

    sorry_prompt: str = Field(default="technical_error", pattern=r"^[A-Za-z0-9_-]+$")
    overflow_prompt: str = Field(default="all_agents_busy", pattern=r"^[A-Za-z0-9_-]+$")
    languages: list[Lang] = Field(
        default_factory=_bilingual,
        min_length=1,
        description="Played in order when the caller has not chosen a language.",
    )
    core_sounds: str = Field(
        default="im-sorry&please-try-call-later",
        pattern=r"^[A-Za-z0-9_/&-]+$",
        description="Asterisk core sounds played if the Guichet prompt file is missing.",
    )


class SiteConfig(_Model):
    """asterisk-config/site.yaml: the per-installation data the flows do not carry."""

    agents: list[Agent] = Field(default_factory=list)
    dids: list[Did] = Field(min_length=1)
    transfers: list[Transfer] = Field(default_factory=list)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    sip: Sip = Field(default_factory=Sip)
    webrtc: WebRtc = Field(default_factory=WebRtc)
    fallback: Fallback = Field(default_factory=Fallback)
    moh_directory: str = Field(default="/var/lib/asterisk/moh", pattern=r"^[^\s;\"\\]+$")


def load_site(path: Path) -> tuple[SiteConfig, SourceMap]:
    """Parse and validate site.yaml; raises RenderError with FILE:LINE issues."""
    try:
        data, smap = load_yaml(path)
    except OSError as exc:
        raise RenderError(
            [Issue(path, 1, f"cannot read site file: {exc.strerror or exc}")]
        ) from exc
    except YamlError as exc:
        raise RenderError([Issue(path, exc.line, exc.message)]) from exc
    if not isinstance(data, dict):
        raise RenderError([Issue(path, 1, "site.yaml is a mapping with `agents` and `dids`")])
    try:
        return SiteConfig.model_validate(data), smap
    except ValidationError as exc:
        raise RenderError(validation_issues(exc, smap)) from exc


# --- flows ----------------------------------------------------------------------------------


def flow_files(flows_dir: Path) -> list[Path]:
    """Every flow file: `*.yaml` in the flows dir except the prompt catalogue."""
    return sorted(p for p in flows_dir.glob("*.yaml") if p.name != CATALOGUE_FILE and p.is_file())


def load_flows(flows_dir: Path) -> list[LoadedFlow]:
    """Load every flow, collecting the issues of all broken files before failing."""
    files = flow_files(flows_dir)
    if not files:
        raise FlowLoadError([Issue(flows_dir, 1, "no flow files (*.yaml) in this directory")])
    flows: list[LoadedFlow] = []
    issues: list[Issue] = []
    for path in files:
        try:
            flows.append(load_flow(path))
        except FlowLoadError as exc:
            issues.extend(exc.issues)
    seen: dict[str, Path] = {}
    for lf in flows:
        if not _DIALPLAN_NAME.match(lf.name):
            message = f"flow name {lf.name!r} cannot be an AGI URL path (letters, digits, _ . -)"
            issues.append(Issue(lf.path, lf.line_of("name"), message))
        elif lf.name in seen:
            message = f"flow name {lf.name!r} is also the name of {seen[lf.name]}"
            issues.append(Issue(lf.path, lf.line_of("name"), message))
        seen.setdefault(lf.name, lf.path)
    if issues:
        raise FlowLoadError(issues)
    return flows


def _queue_node_line(lf: LoadedFlow, queue: str) -> int:
    """The line of the queue node whose template yields `queue` (for error messages)."""
    for node_id, node in lf.flow.nodes.items():
        if isinstance(node, QueueNode):
            pattern = re.sub(r"\\\{[^}]*\\\}", ".*", re.escape(node.queue))
            if re.fullmatch(pattern, queue):
                return lf.line_of("nodes", node_id, "queue")
    return lf.line_of("nodes")


def flow_queues(flows: Iterable[LoadedFlow]) -> list[str]:
    """The union of every flow's queues, in flow-file then flow order."""
    names: list[str] = []
    for lf in flows:
        names.extend(q for q in lf.queue_names() if q not in names)
    return names


# --- cross-checks and context -----------------------------------------------------------------


def _check(
    flows: list[LoadedFlow],
    site: SiteConfig,
    smap: SourceMap,
    settings: Settings,
    warn: Warn,
    softphones: Mapping[str, str],
) -> dict[str, list[Agent]]:
    """Everything that must agree between flows, site.yaml and settings; returns queue members."""
    issues: list[Issue] = []
    site_path = smap.path

    def at_site(loc: tuple[str | int, ...], message: str) -> None:
        issues.append(Issue(site_path, smap.line_of(loc), message))

    for list_name, key, items in (
        ("agents", "id", site.agents),
        ("agents", "extension", site.agents),
        ("dids", "number", site.dids),
        ("transfers", "name", site.transfers),
    ):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            value = getattr(item, key)
            if value in seen:
                first = smap.line_of((list_name, seen[value], key))
                at_site((list_name, i, key), f"duplicate {key} {value!r} (line {first})")
            seen.setdefault(value, i)

    queues = flow_queues(flows)
    transfer_names = {t.name for t in site.transfers}
    for lf in flows:
        for q in lf.queue_names():
            if not _QUEUE_NAME.match(q) or q in _RESERVED_SECTIONS | _RESERVED_EXTENS:
                issues.append(
                    Issue(
                        lf.path,
                        _queue_node_line(lf, q),
                        f"queue name {q!r} cannot be a queues.conf section (letters, digits, _ . -;"
                        " every placeholder needs values the flow sets)",
                    )
                )
            elif q in transfer_names:
                at_site(
                    ("transfers",),
                    f"transfer name {q!r} is also a queue of flow {lf.name}:"
                    " [guichet-transfer] already has an extension per queue",
                )
        for node_id, node in lf.flow.nodes.items():
            if isinstance(node, TransferNode) and node.target not in transfer_names:
                issues.append(
                    Issue(
                        lf.path,
                        lf.line_of("nodes", node_id, "target"),
                        f"transfer target {node.target!r} is not in {site_path} `transfers`",
                    )
                )
    flow_names = sorted(lf.name for lf in flows)
    for i, did in enumerate(site.dids):
        if did.flow not in flow_names:
            at_site(
                ("dids", i, "flow"),
                f"DID {did.number} names flow {did.flow!r}; flows are: {', '.join(flow_names)}",
            )
    extensions = {a.extension for a in site.agents}
    for i, tr in enumerate(site.transfers):
        if tr.name in _RESERVED_EXTENS:
            at_site(("transfers", i, "name"), f"transfer name {tr.name!r} is reserved")
        if tr.name in extensions:
            at_site(("transfers", i, "name"), f"transfer name {tr.name!r} is an agent extension")
    members: dict[str, list[Agent]] = {q: [] for q in queues}
    for i, agent in enumerate(site.agents):
        for j, pattern in enumerate(agent.queues):
            matched = [q for q in queues if fnmatchcase(q, pattern)]
            if not matched:
                at_site(
                    ("agents", i, "queues", j),
                    f"agent {agent.id}: no flow has a queue"
                    f" {pattern!r}; queues are: {', '.join(queues) or 'none'}",
                )
            for q in matched:
                if agent not in members[q]:
                    members[q].append(agent)
        if "change-me" in agent.password.lower() and agent.id not in softphones:
            where = smap.where(("agents", i, "password"))
            warn(f"{where}: agent {agent.id} still has a placeholder SIP password")
    if not _DIALPLAN_NAME.match(settings.ami_username) or settings.ami_username in {
        *_RESERVED_SECTIONS
    }:
        issues.append(
            Issue(
                Path("GUICHET_AMI_USERNAME"),
                1,
                f"{settings.ami_username!r} cannot be a manager.conf section",
            )
        )
    if not re.fullmatch(r"[^\s;\"\\]+", settings.ami_secret):
        issues.append(
            Issue(
                Path("GUICHET_AMI_SECRET"),
                1,
                "empty, or has blanks, ';', '\"' or '\\' (manager.conf syntax)",
            )
        )
    if issues:
        raise RenderError(issues)

    agent_ids = {agent.id for agent in site.agents}
    for agent_id in sorted(set(softphones) - agent_ids):
        warn(f"a user answers in the softphone as {agent_id}, which is not an agent of {site_path}")
    if softphones and site.webrtc.protocol == "ws":
        warn("webrtc.protocol is ws: browsers only allow a plain WebSocket on localhost")
    if settings.ami_secret == "change-me":
        warn("GUICHET_AMI_SECRET is the default `change-me`: set a real secret before going live")
    if settings.ami_host not in (None, "127.0.0.1", "localhost", "::1"):
        warn(
            f"GUICHET_AMI_HOST={settings.ami_host} but manager.conf binds and permits 127.0.0.1"
            " only: edit both if Guichet runs on another machine"
        )
    for q, who in members.items():
        if not who:
            warn(f"queue {q} has no agent in {site_path}: its callers go straight to the overflow")
    known = {key for lf in flows for key in lf.catalogue.keys()}  # noqa: SIM118 (not a dict)
    for key in (site.fallback.sorry_prompt, site.fallback.overflow_prompt):
        if key not in known:
            warn(
                f"prompt {key!r} is in no flow's catalogue: callers will hear the core sounds"
                f" {site.fallback.core_sounds!r} instead"
            )
    return members


def _context(
    flows: list[LoadedFlow],
    site: SiteConfig,
    members: dict[str, list[Agent]],
    settings: Settings,
    sources: list[Path],
    softphones: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "sources": [str(p) for p in sources],
        "agi_host": settings.agi_host,
        "agi_port": settings.agi_port,
        "ami_port": settings.ami_port,
        "ami_username": settings.ami_username,
        "ami_secret": settings.ami_secret,
        "sounds": settings.asterisk_sounds_prefix,
        "channel_variables": list(CHANNEL_VARIABLES),
        # Outcomes after which the flow itself said goodbye: the dialplan only hangs up.
        "ended_outcomes": [o for o in OUTCOMES if o not in ("queued", "transferred")],
        "flows": [lf.name for lf in flows],
        "queues": [{"name": q, "members": members[q]} for q in members],
        "site": site,
        "softphones": dict(softphones),  # agent id -> the derived SIP password
    }


def render_texts(
    *,
    settings: Settings,
    flows_dir: Path,
    site_file: Path,
    warn: Warn | None = None,
    softphones: Mapping[str, str] | None = None,
) -> dict[str, tuple[str, int]]:
    """Load, check and render everything in memory: file name -> (text, mode). No I/O writes.
    ``softphones``: agent id -> SIP password of the agents answering in the browser
    (`softphone_passwords`)."""
    warn = warn or log.warning
    softphones = softphones or {}
    flows = load_flows(flows_dir)
    site, smap = load_site(site_file)
    members = _check(flows, site, smap, settings, warn, softphones)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(settings.asterisk_config_dir / "templates"),
        undefined=jinja2.StrictUndefined,  # a typo in a template fails the render, not the PBX
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # .conf files, not HTML
    )
    sources = [site_file, *(lf.path for lf in flows)]
    ctx = _context(flows, site, members, settings, sources, softphones)
    out: dict[str, tuple[str, int]] = {}
    for template, (name, mode) in TEMPLATES.items():
        try:
            out[name] = (env.get_template(template).render(ctx), mode)
        except jinja2.TemplateError as exc:
            tpl_path = settings.asterisk_config_dir / "templates" / template
            line = getattr(exc, "lineno", None) or 1
            raise RenderError([Issue(tpl_path, line, f"template error: {exc}")]) from exc
    return out


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write via a temporary file in the same directory and rename: Asterisk reloading at the
    wrong moment sees the old file or the new one, never a truncated one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_asterisk_config(
    out_dir: Path,
    *,
    settings: Settings | None = None,
    flows_dir: Path | None = None,
    site_file: Path | None = None,
    warn: Warn | None = None,
    softphones: Mapping[str, str] | None = None,
) -> list[Path]:
    """Render every Asterisk file into `out_dir`; raises FlowLoadError or RenderError before
    writing anything. Returns the written paths."""
    settings = settings or get_settings()
    flows_dir = flows_dir or settings.flows_dir
    site_file = site_file or settings.asterisk_config_dir / "site.yaml"
    texts = render_texts(
        settings=settings,
        flows_dir=flows_dir,
        site_file=site_file,
        warn=warn,
        softphones=softphones,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, (text, mode) in texts.items():
        path = out_dir / name
        write_atomic(path, text, mode)
        written.append(path)
    return written


# --- softphones from the user store ---------------------------------------------------------


async def softphone_passwords(database_url: str, secret_key: bytes) -> dict[str, str]:
    """Agent id -> SIP password of every active user answering in the browser softphone
    (``softphone`` set, ``PJSIP/<agent>`` interface): the password the console serves them."""
    engine = make_engine(database_url)
    try:
        users = await UserService(engine).list_users()
    finally:
        await engine.dispose()
    found: dict[str, str] = {}
    for user in users:
        agent = pjsip_endpoint(user.interface)
        if user.active and user.softphone and agent is not None:
            found[agent] = sip_password(secret_key, agent)
    return found


def _softphones_of(database_url: str, settings: Settings) -> dict[str, str]:
    """`softphone_passwords` for the CLI: a store that cannot be read is a located error
    (a missing SQLite file too: opening it would leave an empty database behind)."""
    where = Path("DATABASE_URL")
    url = make_url(database_url)
    database = url.database or ""
    sqlite_file = url.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if sqlite_file and not Path(database).exists():
        message = f"no user store at {database} (--no-users: desk phones only)"
        raise RenderError([Issue(where, 1, message)])
    try:
        secret = ConsoleConfig.from_settings(settings).secret_key
        return asyncio.run(softphone_passwords(database_url, secret))
    except Exception as exc:  # any driver's error: say what failed, write nothing
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        message = f"cannot read the softphone users: {first} (--no-users: desk phones only)"
        raise RenderError([Issue(where, 1, message)]) from exc


# --- CLI ------------------------------------------------------------------------------------

app = typer.Typer(no_args_is_help=True, help="Asterisk configuration rendered from Guichet's data.")


@app.callback()
def _group() -> None:
    """Asterisk configuration rendered from Guichet's flows, settings and site.yaml."""


@app.command()
def render(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the .conf files.", file_okay=False)
    ],
    flows_dir: Annotated[
        Path | None,
        typer.Option(help="Flows directory.", show_default="settings.flows_dir", file_okay=False),
    ] = None,
    site: Annotated[
        Path | None,
        typer.Option(
            help="Agents, DIDs, transfers.",
            show_default="asterisk-config/site.yaml",
            dir_okay=False,
        ),
    ] = None,
    users: Annotated[
        bool,
        typer.Option(
            "--users/--no-users",
            help="Read the softphone agents from the user store (--no-users: desk phones only).",
        ),
    ] = True,
    database_url: Annotated[
        str | None,
        typer.Option(help="User store.", show_default="DATABASE_URL / the server settings"),
    ] = None,
) -> None:
    """Render extensions, manager, queues, pjsip, http, musiconhold and features .conf files."""

    def warn(message: str) -> None:
        typer.echo(f"warning: {message}", err=True)

    settings = get_settings()
    flows_dir = flows_dir or settings.flows_dir
    site = site or settings.asterisk_config_dir / "site.yaml"
    try:
        # Flows and site.yaml first: their mistakes are reported before the store is opened.
        render_texts(settings=settings, flows_dir=flows_dir, site_file=site, warn=lambda _: None)
        softphones: dict[str, str] = {}
        if users:
            softphones = _softphones_of(database_url or settings.database_url, settings)
        written = render_asterisk_config(
            out,
            settings=settings,
            flows_dir=flows_dir,
            site_file=site,
            warn=warn,
            softphones=softphones,
        )
    except (FlowLoadError, RenderError) as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        typer.echo("nothing written", err=True)
        raise typer.Exit(1) from exc
    for path in written:
        typer.echo(str(path))
