"""`guichet asterisk render`: the rendered .conf files read back with a parser of Asterisk's
own format, so the assertions are about what Asterisk would load, not about our templates."""

from __future__ import annotations

import asyncio
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from typer.testing import CliRunner

from console.routers.softphone import sip_password
from crm_bridge.db import init_db, make_engine
from crm_bridge.users import UserService
from guichet.asterisk_render import (
    RenderError,
    app,
    render_asterisk_config,
    render_texts,
    write_atomic,
)
from guichet.settings import ROOT, Settings
from ivr.loader import FlowLoadError, load_flow
from ivr.variables import CHANNEL_VARIABLES, OUTCOMES

# --- a small reader of Asterisk's configuration format -------------------------------------


@dataclass
class Section:
    name: str
    templates: list[str]
    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (key, "=" | "=>", value)

    def get(self, key: str) -> list[str]:
        return [v for k, _, v in self.entries if k == key]

    def one(self, key: str) -> str:
        values = self.get(key)
        assert len(values) == 1, f"[{self.name}] {key}: {values}"
        return values[0]


@dataclass
class Conf:
    sections: list[Section]
    directives: list[str]

    def named(self, name: str) -> list[Section]:
        return [s for s in self.sections if s.name == name]

    def section(self, name: str) -> Section:
        found = self.named(name)
        assert len(found) == 1, f"[{name}] appears {len(found)} times"
        return found[0]

    def names(self) -> list[str]:
        return [s.name for s in self.sections]


_HEADER = re.compile(r"\[([^\]]+)\](?:\(([^)]*)\))?")
_ENTRY = re.compile(r"([^=]+?)\s*(=>|=)\s*(.*)")


def _strip_comment(line: str) -> str:
    """`;` starts a comment unless escaped as `\\;`."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            out.append(line[i : i + 2])
            i += 2
            continue
        if line[i] == ";":
            break
        out.append(line[i])
        i += 1
    return "".join(out)


def parse_conf(text: str) -> Conf:
    """Sections `[name]` / `[name](template)`, `key = value`, `key => value`, `#` directives."""
    sections: list[Section] = []
    directives: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if line.startswith("#"):
            directives.append(line)
            continue
        header = _HEADER.fullmatch(line)
        if header:
            templates = [t.strip() for t in (header.group(2) or "").split(",") if t.strip()]
            sections.append(Section(header.group(1), templates))
            continue
        entry = _ENTRY.fullmatch(line)
        assert entry, f"line {number} is not Asterisk config syntax: {raw!r}"
        assert sections, f"line {number} is outside any section: {raw!r}"
        sections[-1].entries.append((entry.group(1).strip(), entry.group(2), entry.group(3)))
    return Conf(sections, directives)


@dataclass
class Step:
    label: str | None
    app: str
    args: str


def dialplan(section: Section) -> dict[str, list[Step]]:
    """`exten => X,1,App(args)` and `same => n[(label)],App(args)` as steps per extension."""
    extens: dict[str, list[Step]] = {}
    current: str | None = None
    for key, op, value in section.entries:
        if key == "include":
            continue
        assert op == "=>", f"[{section.name}] {key} {op} {value}"
        if key == "exten":
            exten, prio, app_call = value.split(",", 2)
            assert prio == "1", f"{exten} does not start at priority 1"
            assert exten not in extens, f"[{section.name}] {exten} defined twice"
            current, label = exten, None
        else:
            assert key == "same" and current is not None, f"[{section.name}] stray {key}"
            prio, app_call = value.split(",", 1)
            match = re.fullmatch(r"n(?:\((\w+)\))?", prio)
            assert match, f"priority {prio!r}"
            label = match.group(1)
        call = re.fullmatch(r"(\w+)\((.*)\)", app_call)
        assert call, f"not an application call: {app_call!r}"
        extens.setdefault(current, []).append(Step(label, call.group(1), call.group(2)))
    return extens


def apps(steps: list[Step]) -> list[str]:
    return [s.app for s in steps]


# --- fixtures --------------------------------------------------------------------------------

CATALOGUE = """\
prompts:
  welcome: {fr: Bienvenue, nl: Welkom, en: Welcome}
  goodbye: {fr: Au revoir, nl: Tot ziens, en: Goodbye}
  technical_error: {fr: Erreur technique, nl: Technische fout, en: Technical error}
  all_agents_busy: {fr: Tous occupés, nl: Allen bezet, en: All busy}
"""

COMMUNE = """\
name: commune
languages: [fr, nl]
start: menu
nodes:
  menu:
    kind: menu
    prompt: welcome
    choices:
      "1": {next: to_queue, set: {request_type: population}}
      "2": {next: to_queue, set: {request_type: civil-status}}
      "9": backoffice
    fallback: bye
  to_queue:
    kind: queue
    queue: "{request_type}-{lang}"
  backoffice:
    kind: transfer
    target: social-services
  bye:
    kind: hangup
    prompt: goodbye
"""

CPAS = """\
languages: [fr, nl, en]
start: to_queue
nodes:
  to_queue:
    kind: queue
    queue: "cpas-{lang}"
  overflow:
    kind: queue
    queue: population-fr
"""

SITE = """\
dids:
  - {number: "022791111", flow: commune, description: "Commune, main number"}
  - {number: "025550000", flow: cpas}
  - {number: "_X.", flow: commune}
agents:
  - {id: agent1, name: Agent One, extension: "201", password: s3cret-one, queues: [population-*, cpas-*]}
  - {id: agent2, name: Agent Two, extension: "202", password: s3cret-two, queues: [civil-status-*, cpas-fr]}
transfers:
  - {name: social-services, dial: PJSIP/025550100@trunk, timeout: 20}
queue:
  max_wait: 600
"""

EXPECTED_QUEUES = {
    "population-fr",
    "population-nl",
    "civil-status-fr",
    "civil-status-nl",
    "cpas-fr",
    "cpas-nl",
    "cpas-en",
}


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    d = tmp_path / "flows"
    d.mkdir()
    (d / "prompts.yaml").write_text(CATALOGUE)
    (d / "commune.yaml").write_text(COMMUNE)
    (d / "cpas.yaml").write_text(CPAS)
    return d


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    p = tmp_path / "site.yaml"
    p.write_text(SITE)
    return p


@pytest.fixture
def settings() -> Settings:
    return Settings(
        _env_file=None,
        agi_host="192.0.2.10",
        agi_port=4600,
        ami_port=5039,
        ami_username="guichet-cti",
        ami_secret="Ami-s3cret",
        asterisk_config_dir=ROOT / "asterisk-config",
    )


Rendered = dict[str, Conf]


def render(out: Path, settings: Settings, flows_dir: Path, site_file: Path) -> Rendered:
    warnings: list[str] = []
    paths = render_asterisk_config(
        out, settings=settings, flows_dir=flows_dir, site_file=site_file, warn=warnings.append
    )
    assert warnings == [], warnings
    return {p.name: parse_conf(p.read_text()) for p in paths}


@pytest.fixture
def rendered(tmp_path: Path, settings: Settings, flows_dir: Path, site_file: Path) -> Rendered:
    return render(tmp_path / "out", settings, flows_dir, site_file)


def flow_queue_union(flows_dir: Path) -> set[str]:
    return {
        q
        for p in flows_dir.glob("*.yaml")
        if p.name != "prompts.yaml"
        for q in load_flow(p).queue_names()
    }


def queue_sections(conf: Conf) -> list[str]:
    return [name for name in conf.names() if name != "general"]


# --- queues.conf --------------------------------------------------------------------------


def test_queue_sections_are_exactly_the_flows_queues(rendered: Rendered, flows_dir: Path) -> None:
    sections = queue_sections(rendered["queues.conf"])
    assert len(sections) == len(set(sections)), "a queue is rendered twice"
    assert set(sections) == flow_queue_union(flows_dir) == EXPECTED_QUEUES


def test_queue_sections_settings_and_members(rendered: Rendered) -> None:
    conf = rendered["queues.conf"]
    assert conf.section("general").one("persistentmembers") == "no"
    for name in queue_sections(conf):
        q = conf.section(name)
        assert q.one("strategy") == "rrmemory"
        assert q.one("announce-position") == "yes"
        assert q.one("musicclass") == "default"
        assert "paused" in q.one("joinempty").split(",")
        for key in ("timeout", "retry", "wrapuptime"):
            assert q.one(key).isdigit()
    one = "Local/agent1@agents,0,Agent One,PJSIP/agent1"
    two = "Local/agent2@agents,0,Agent Two,PJSIP/agent2"
    members = {name: conf.section(name).get("member") for name in queue_sections(conf)}
    assert members["population-fr"] == [one]
    assert members["civil-status-nl"] == [two]
    assert members["cpas-fr"] == [one, two]
    assert members["cpas-en"] == [one]
    # `member` is an object line (=>), as queues.conf documents it
    assert all(op == "=>" for _, op, _ in conf.section("cpas-fr").entries if _ == "member")


def test_a_queue_added_to_a_flow_appears_after_rerendering(
    tmp_path: Path, settings: Settings, flows_dir: Path, site_file: Path
) -> None:
    first = render(tmp_path / "out", settings, flows_dir, site_file)
    assert "urgent-fr" not in queue_sections(first["queues.conf"])
    cpas = flows_dir / "cpas.yaml"
    cpas.write_text(cpas.read_text() + '  urgent:\n    kind: queue\n    queue: "urgent-{lang}"\n')
    warnings: list[str] = []
    render_asterisk_config(
        tmp_path / "out",
        settings=settings,
        flows_dir=flows_dir,
        site_file=site_file,
        warn=warnings.append,
    )
    again = parse_conf((tmp_path / "out" / "queues.conf").read_text())
    assert set(queue_sections(again)) == flow_queue_union(flows_dir)
    assert {"urgent-fr", "urgent-nl", "urgent-en"} <= set(queue_sections(again))
    # nobody serves the new queues yet: said, not silently accepted
    assert any("urgent-fr" in w and "no agent" in w for w in warnings)
    # and the queue is a transfer target too
    transfer = dialplan(
        parse_conf((tmp_path / "out" / "extensions.conf").read_text()).section("guichet-transfer")
    )
    assert "urgent-en" in transfer


def test_a_queue_removed_from_every_flow_disappears(
    tmp_path: Path, settings: Settings, flows_dir: Path, site_file: Path
) -> None:
    (flows_dir / "cpas.yaml").write_text(CPAS.replace("population-fr", "cpas-fr"))
    out = render(tmp_path / "out", settings, flows_dir, site_file)
    # population-fr still comes from commune; nothing else changed
    assert set(queue_sections(out["queues.conf"])) == EXPECTED_QUEUES
    (flows_dir / "commune.yaml").write_text(
        COMMUNE.replace('"2": {next: to_queue, set: {request_type: civil-status}}', '"2": bye')
    )
    site_file.write_text(SITE.replace("civil-status-*, cpas-fr", "cpas-fr"))
    out = render(tmp_path / "out", settings, flows_dir, site_file)
    assert set(queue_sections(out["queues.conf"])) == EXPECTED_QUEUES - {
        "civil-status-fr",
        "civil-status-nl",
    }


# --- manager.conf -------------------------------------------------------------------------


def test_channelvars_is_channel_variables_in_order(rendered: Rendered) -> None:
    conf = rendered["manager.conf"]
    general = conf.section("general")
    assert general.one("channelvars").split(",") == list(CHANNEL_VARIABLES)
    # only honoured in [general]: nowhere else
    assert [s.name for s in conf.sections if s.get("channelvars")] == ["general"]
    assert general.one("bindaddr") == "127.0.0.1"
    assert general.one("port") == "5039"
    assert general.one("enabled") == "yes"


def test_ami_user_from_settings(rendered: Rendered) -> None:
    user = rendered["manager.conf"].section("guichet-cti")
    assert user.one("secret") == "Ami-s3cret"
    assert user.one("permit") == "127.0.0.1/255.255.255.255"
    read, write = set(user.one("read").split(",")), set(user.one("write").split(","))
    # events the CTI correlates on, and the actions it sends
    assert {"call", "agent", "dialplan", "system"} <= read
    assert {"call", "agent", "originate", "reporting"} <= write
    # system/command write would let an AMI client run shell commands
    assert not {"system", "command", "all"} & write


# --- extensions.conf ----------------------------------------------------------------------


def test_each_did_runs_its_flow_over_fastagi(rendered: Rendered) -> None:
    conf = rendered["extensions.conf"]
    inbound = dialplan(conf.section("guichet-inbound"))
    expected = {"022791111": "commune", "025550000": "cpas", "_X.": "commune"}
    assert set(inbound) == set(expected)
    for did, flow in expected.items():
        steps = inbound[did]
        names = apps(steps)
        # answered, call id set, then the AGI with the configured host/port and the DID's flow
        assert names.index("Answer") < names.index("Set") < names.index("AGI")
        assert Step(None, "Set", "GUICHET_CALL_ID=${UNIQUEID}") in steps
        agi = [s.args for s in steps if s.app == "AGI"]
        assert agi == [f"agi://192.0.2.10:4600/{flow}"]
        assert steps[-1] == Step(None, "Goto", "guichet-route,s,1")
    assert conf.section("from-trunk").get("include") == ["guichet-inbound"]


def test_outcomes_are_routed(rendered: Rendered) -> None:
    route = dialplan(rendered["extensions.conf"].section("guichet-route"))
    s = route["s"]
    # the AGI status is checked before any outcome: Guichet down -> failed, never silence
    assert s[1] == Step(None, "GotoIf", '$["${AGISTATUS}" != "SUCCESS"]?failed,1')
    handled = {
        m.group(1): m.group(2)
        for step in s
        if step.app == "GotoIf"
        and (m := re.fullmatch(r'\$\["\$\{GUICHET_OUTCOME\}" = "(\w+)"\]\?(\w+),1', step.args))
    }
    assert set(handled) == set(OUTCOMES)
    assert handled["queued"] == "queued" and handled["transferred"] == "transferred"
    assert s[-1] == Step(None, "Goto", "failed,1"), "an unknown outcome must not fall through"

    queued = route["queued"]
    prio = next(i for i, st in enumerate(queued) if st.args.startswith("QUEUE_PRIO="))
    assert "${GUICHET_PRIORITY}" in queued[prio].args
    queue = next(i for i, st in enumerate(queued) if st.app == "Queue")
    assert prio < queue
    # option t (agents may transfer; AMI Atxfer needs it) and the site's max wait
    assert queued[queue].args == "${GUICHET_QUEUE},t,,,600"
    assert queued[queue + 1] == Step(None, "Goto", "guichet-transfer,overflow,1")

    assert route["transferred"][-1] == Step(None, "Goto", "guichet-transfer,${GUICHET_TRANSFER},1")
    assert apps(route["ended"]) == ["Hangup"]
    assert apps(route["failed"]) == ["NoOp", "Gosub", "Hangup"]


def test_sorry_prompt_falls_back_to_core_sounds(rendered: Rendered) -> None:
    say = dialplan(rendered["extensions.conf"].section("guichet-say"))["s"]
    plays = [st.args for st in say if st.app == "Playback"]
    assert plays == [
        "guichet/${GUICHET_LANG}/${ARG1}",
        "guichet/fr/${ARG1}&guichet/nl/${ARG1}",
        "im-sorry&please-try-call-later",
    ]
    assert say[-1].app == "Return"


def test_every_literal_jump_lands_somewhere(rendered: Rendered) -> None:
    """Goto/GotoIf/Gosub targets without variables exist: no call dropped on a typo."""
    conf = rendered["extensions.conf"]
    plans = {s.name: dialplan(s) for s in conf.sections if s.name not in ("general", "globals")}
    for ctx, extens in plans.items():
        for exten, steps in extens.items():
            labels = {st.label for st in steps if st.label}
            for st in steps:
                if st.app not in ("Goto", "GotoIf", "Gosub"):
                    continue
                targets = st.args.split("?", 1)[1].split(":") if st.app == "GotoIf" else [st.args]
                for target in filter(None, targets):
                    target = re.sub(r"\(.*\)$", "", target)  # Gosub arguments
                    if "${" in target:
                        continue
                    parts = target.split(",")
                    if len(parts) == 1:
                        assert parts[0] in labels, f"{ctx},{exten}: no label {parts[0]}"
                        continue
                    to_ctx, to_exten = (ctx, parts[0]) if len(parts) == 2 else parts[:2]
                    assert to_exten in plans.get(to_ctx, {}), f"{ctx},{exten} -> {target}"


def test_transfer_contexts(rendered: Rendered, flows_dir: Path) -> None:
    conf = rendered["extensions.conf"]
    transfer = dialplan(conf.section("guichet-transfer"))
    assert "overflow" in transfer
    assert Step(None, "Dial", "PJSIP/025550100@trunk,20") in transfer["social-services"]
    # every flow queue is a transfer target, so agents can move a caller between desks
    for queue in flow_queue_union(flows_dir):
        assert transfer[queue][0] == Step(None, "Set", f"GUICHET_QUEUE={queue}")
    agents = conf.section("agents")
    assert dialplan(agents)["agent1"][1] == Step(None, "Dial", "PJSIP/agent1")
    # phone-key transfers are looked up in the agent leg's context
    assert agents.get("include") == ["from-agents"]
    from_agents = conf.section("from-agents")
    assert set(dialplan(from_agents)) == {"201", "202"}
    assert from_agents.get("include") == ["guichet-transfer"]


# --- pjsip.conf, musiconhold.conf, features.conf ------------------------------------------------


def test_one_endpoint_auth_aor_per_agent(rendered: Rendered) -> None:
    conf = rendered["pjsip.conf"]
    for agent, password in (("agent1", "s3cret-one"), ("agent2", "s3cret-two")):
        by_type = {s.one("type"): s for s in conf.named(agent)}
        assert set(by_type) == {"endpoint", "auth", "aor"}
        endpoint = by_type["endpoint"]
        assert endpoint.one("context") == "from-agents"
        assert endpoint.one("auth") == agent and endpoint.one("aors") == agent
        assert endpoint.one("dtmf_mode") == "rfc4733"
        assert by_type["auth"].one("password") == password
        assert by_type["aor"].one("max_contacts") == "1"
        transport = endpoint.one("transport")
        assert conf.section(transport).one("type") == "transport"


def test_moh_and_features(rendered: Rendered) -> None:
    moh = rendered["musiconhold.conf"].section("default")
    assert moh.one("mode") == "files"
    assert moh.one("directory").startswith("/")
    featuremap = rendered["features.conf"].section("featuremap")
    assert featuremap.one("blindxfer") == "#1"
    assert featuremap.one("atxfer") == "*2"


# --- errors: clear, located, and nothing written -------------------------------------------


def test_broken_flow_exits_1_and_writes_nothing(
    tmp_path: Path, flows_dir: Path, site_file: Path
) -> None:
    (flows_dir / "cpas.yaml").write_text(
        CPAS.replace(
            "kind: queue\n    queue: population-fr", "kind: queu\n    queue: population-fr"
        )
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["render", "--out", str(out), "--flows-dir", str(flows_dir), "--site", str(site_file)]
    )
    assert result.exit_code == 1
    assert f"{flows_dir / 'cpas.yaml'}:7: nodes.overflow: unknown node kind" in result.stderr
    assert "nothing written" in result.stderr
    assert not out.exists()


def test_failed_render_keeps_the_previous_config(
    tmp_path: Path, settings: Settings, flows_dir: Path, site_file: Path
) -> None:
    out = tmp_path / "out"
    render(out, settings, flows_dir, site_file)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (flows_dir / "commune.yaml").write_text(COMMUNE + "  broken: [\n")
    with pytest.raises(FlowLoadError) as info:
        render_asterisk_config(out, settings=settings, flows_dir=flows_dir, site_file=site_file)
    assert str(info.value).startswith(f"{flows_dir / 'commune.yaml'}:")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_renders(tmp_path: Path, flows_dir: Path, site_file: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "render",
            "--out",
            str(out),
            "--flows-dir",
            str(flows_dir),
            "--site",
            str(site_file),
            "--no-users",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "extensions.conf",
        "features.conf",
        "http.conf",
        "manager.conf",
        "musiconhold.conf",
        "pjsip.conf",
        "queues.conf",
    ]
    assert result.stdout.split() == [str(out / n) for n in sorted(p.name for p in out.iterdir())]


# --- browser softphones (WebRTC endpoints, http.conf) ----------------------------------------

SOFTPHONE_SECRET = b"render-test-secret-" + b"s" * 32


def test_a_softphone_agent_gets_a_webrtc_endpoint_with_the_derived_password(
    tmp_path: Path, settings: Settings, flows_dir: Path, site_file: Path
) -> None:
    password = sip_password(SOFTPHONE_SECRET, "agent1")
    warnings: list[str] = []
    paths = render_asterisk_config(
        tmp_path / "out",
        settings=settings,
        flows_dir=flows_dir,
        site_file=site_file,
        warn=warnings.append,
        softphones={"agent1": password},
    )
    assert warnings == []
    rendered = {p.name: parse_conf(p.read_text()) for p in paths}
    pjsip = rendered["pjsip.conf"]
    browser = {s.one("type"): s for s in pjsip.named("agent1")}
    endpoint = browser["endpoint"]
    assert endpoint.one("webrtc") == "yes"
    assert endpoint.one("dtls_auto_generate_cert") == "yes"
    assert endpoint.one("transport") == "transport-wss"
    assert endpoint.one("allow").split(",")[0] == "opus"
    assert endpoint.one("context") == "from-agents" and endpoint.one("dtmf_mode") == "rfc4733"
    assert browser["auth"].one("username") == "agent1"
    assert browser["auth"].one("password") == password != "s3cret-one"
    transport = pjsip.section("transport-wss")
    assert transport.one("type") == "transport" and transport.one("protocol") == "wss"
    # A desk-phone agent is untouched.
    desk = {s.one("type"): s for s in pjsip.named("agent2")}
    assert desk["endpoint"].get("webrtc") == [] and desk["endpoint"].one("transport") == (
        "transport-udp"
    )
    assert desk["auth"].one("password") == "s3cret-two"
    http = rendered["http.conf"].section("general")
    assert http.one("enabled") == "yes" and http.one("tlsenable") == "yes"
    assert http.one("tlsbindaddr") == "0.0.0.0:8089"
    assert http.one("bindaddr") == "127.0.0.1"


def test_a_lab_websocket_without_tls(
    tmp_path: Path, settings: Settings, flows_dir: Path, site_file: Path
) -> None:
    site_file.write_text(SITE + "webrtc:\n  protocol: ws\n  http_bind: 127.0.0.1\n")
    texts = render_texts(settings=settings, flows_dir=flows_dir, site_file=site_file)
    http = parse_conf(texts["http.conf"][0]).section("general")
    assert http.get("tlsenable") == [] and http.one("bindport") == "8088"
    assert parse_conf(texts["pjsip.conf"][0]).section("transport-ws").one("protocol") == "ws"


def test_a_softphone_user_without_an_agent_in_site_yaml_is_warned(
    settings: Settings, flows_dir: Path, site_file: Path
) -> None:
    warnings: list[str] = []
    render_texts(
        settings=settings,
        flows_dir=flows_dir,
        site_file=site_file,
        warn=warnings.append,
        softphones={"agent9": sip_password(SOFTPHONE_SECRET, "agent9")},
    )
    assert any("agent9" in w and "not an agent" in w for w in warnings), warnings


async def _store_with_softphone_users(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    engine = make_engine(url)
    try:
        await init_db(engine)
        users = UserService(engine, hasher=PasswordHasher(time_cost=1, memory_cost=1024))
        await users.create_user(
            "alice", "alice-password-1", interface="PJSIP/agent1", softphone=True
        )
        await users.create_user("bob", "bob-password-12", interface="PJSIP/agent2")
        await users.create_user("carl", "carl-password-1", interface="PJSIP/agent3")
        await users.update("carl", softphone=True, active=False)  # gone: no softphone
    finally:
        await engine.dispose()
    return url


def test_cli_reads_the_softphone_users_and_derives_the_console_password(
    tmp_path: Path, flows_dir: Path, site_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUICHET_SECRET_KEY", SOFTPHONE_SECRET.decode())
    url = asyncio.run(_store_with_softphone_users(tmp_path / "users.db"))
    out = tmp_path / "out"
    args = ["render", "--out", str(out), "--flows-dir", str(flows_dir), "--site", str(site_file)]
    result = CliRunner().invoke(app, [*args, "--database-url", url])
    assert result.exit_code == 0, result.output
    pjsip = parse_conf((out / "pjsip.conf").read_text())
    auth = {s.one("type"): s for s in pjsip.named("agent1")}["auth"]
    assert auth.one("password") == sip_password(SOFTPHONE_SECRET, "agent1")
    assert {s.one("type"): s for s in pjsip.named("agent1")}["endpoint"].one("webrtc") == "yes"
    assert {s.one("type"): s for s in pjsip.named("agent2")}["endpoint"].get("webrtc") == []
    assert "agent3" not in result.stderr  # carl's account is disabled: no softphone to render

    missing = tmp_path / "nowhere.db"
    result = CliRunner().invoke(app, [*args, "--database-url", f"sqlite+aiosqlite:///{missing}"])
    assert result.exit_code == 1 and "no user store" in result.stderr
    assert not missing.exists()


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (("flow: cpas", "flow: cpass"), ("site", 3), "names flow 'cpass'"),
        (("cpas-fr]}", "taxes-fr]}"), ("site", 7), "no flow has a queue 'taxes-fr'"),
        (("name: social-services", "name: social"), ("commune.yaml", 18), "'social-services'"),
        (('extension: "202"', 'extension: "201"'), ("site", 7), "duplicate extension '201'"),
        (("password: s3cret-two", "password: 'a;b c d e f'"), ("site", 7), "';'"),
        (("name: Agent Two", "name: 'Agent, Two'"), ("site", 7), "','"),
        (('number: "025550000"', 'number: "022791111"'), ("site", 3), "duplicate number"),
    ],
)
def test_site_errors_are_located(
    tmp_path: Path,
    settings: Settings,
    flows_dir: Path,
    site_file: Path,
    change: tuple[str, str],
    where: tuple[str, int],
    message: str,
) -> None:
    assert change[0] in SITE
    site_file.write_text(SITE.replace(*change))
    with pytest.raises(RenderError) as info:
        render_texts(settings=settings, flows_dir=flows_dir, site_file=site_file)
    file = site_file if where[0] == "site" else flows_dir / where[0]
    assert any(
        i.path == file and i.line == where[1] and message in i.message for i in info.value.issues
    ), info.value.issues


def test_queue_name_that_asterisk_cannot_take(
    settings: Settings, flows_dir: Path, site_file: Path
) -> None:
    (flows_dir / "cpas.yaml").write_text(CPAS.replace("cpas-{lang}", "cpas {lang}"))
    site_file.write_text(
        SITE.replace("cpas-*", "population-fr").replace("cpas-fr", "population-nl")
    )
    with pytest.raises(RenderError) as info:
        render_texts(settings=settings, flows_dir=flows_dir, site_file=site_file)
    assert [(i.path.name, i.line) for i in info.value.issues] == [("cpas.yaml", 6)] * 3


def test_empty_flows_dir(tmp_path: Path, settings: Settings, site_file: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "prompts.yaml").write_text(CATALOGUE)  # the catalogue is not a flow
    with pytest.raises(FlowLoadError, match="no flow files"):
        render_texts(settings=settings, flows_dir=empty, site_file=site_file)


def test_placeholder_secrets_are_warned(tmp_path: Path, flows_dir: Path, site_file: Path) -> None:
    site_file.write_text(SITE.replace("s3cret-one", "change-me-1"))
    warnings: list[str] = []
    render_texts(
        settings=Settings(_env_file=None, asterisk_config_dir=ROOT / "asterisk-config"),
        flows_dir=flows_dir,
        site_file=site_file,
        warn=warnings.append,
    )
    assert any("agent1" in w and "placeholder" in w for w in warnings)
    assert any("GUICHET_AMI_SECRET" in w for w in warnings)


# --- files ------------------------------------------------------------------------------


def test_secrets_files_are_private_and_renders_are_deterministic(
    tmp_path: Path, settings: Settings, flows_dir: Path, site_file: Path
) -> None:
    render(tmp_path / "a", settings, flows_dir, site_file)
    render(tmp_path / "b", settings, flows_dir, site_file)
    for name in ("manager.conf", "pjsip.conf"):
        assert stat.S_IMODE((tmp_path / "a" / name).stat().st_mode) == 0o600
    for p in (tmp_path / "a").iterdir():
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()


def test_write_atomic_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "x.conf"
    target.write_text("old")
    write_atomic(target, "new\n", 0o640)
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["x.conf"]


# --- the shipped site.yaml against the repository's flows -----------------------------------


def test_shipped_site_fits_the_shipped_flows(tmp_path: Path) -> None:
    flows = ROOT / "flows"
    if not any(p.name != "prompts.yaml" for p in flows.glob("*.yaml")):
        pytest.skip("no flow in flows/ yet")
    warnings: list[str] = []
    texts = render_texts(
        settings=Settings(_env_file=None),
        flows_dir=flows,
        site_file=ROOT / "asterisk-config" / "site.yaml",
        warn=warnings.append,
    )
    assert not [w for w in warnings if "no agent" in w], warnings
    conf = parse_conf(texts["queues.conf"][0])
    assert set(queue_sections(conf)) == flow_queue_union(flows)
    for name in texts:
        parse_conf(texts[name][0])  # every file is valid Asterisk config syntax
