"""The demo PBX: what a newcomer without Asterisk gets instead, so the product visibly works.

It is Asterisk's side of both wires, built from the same replay code as the tests
(`guichet.replay`): an AMI server on a loopback port for Guichet's own AMI client, and a
FastAGI caller into Guichet's own FastAGI server. In a loop it places scripted citizen
calls; each call is

1. a FastAGI session: a demo citizen (crm_bridge/demo_citizens.csv) picks a language, a
   request type and types their national number — the real IVR runs, identifies them and
   opens the case;
2. a recorded Asterisk 22 AMI scenario (inbound-answered, ring-no-answer, inbound-abandoned)
   replayed with its ids made unique for the call (Uniqueid, Linkedid, channel names,
   bridges) and with what our IVR decided (GUICHET_CASE_ID, _LANG, _REQUEST_TYPE, _QUEUE),
   so the CTI bridge rings a demo agent and the console pops the case.

It is labelled as a demo wherever it shows: the AMI banner says so and every log line starts
with `[demo]`. It never starts when Guichet is configured for a real Asterisk
(`GUICHET_AMI_HOST`): made-up calls must not reach a real Guichet.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays

import crm_bridge
from crm_bridge.citizens_import import parse_citizens_csv
from guichet.demo.spy import DemoSpy
from guichet.replay.agi_caller import (
    BUNDLED_RECORDINGS,
    MEDIA,
    Press,
    ScriptedPeer,
    Transcript,
    rewrite_env,
)
from guichet.replay.agi_caller import Action as CallerAction
from guichet.replay.ami_server import EOL, AmiPeer, Block, Script
from guichet.settings import Settings

__all__ = [
    "DEFAULT_AMI_PORT",
    "DEFAULT_INTERVAL",
    "DEMO_BANNER",
    "SCENARIOS",
    "CallPlan",
    "DemoCall",
    "DemoCitizen",
    "DemoPbx",
    "DemoRefused",
    "Scenario",
    "demo_ivr_time",
    "load_demo_citizens",
    "plan_call",
    "refuse_real_asterisk",
    "start_demo_pbx",
]

log = logging.getLogger("guichet.demo")

DEMO_BANNER = b"Asterisk Call Manager/11.0.0 (Guichet demo PBX)\r\n"
LOOPBACK = "127.0.0.1"
DEFAULT_INTERVAL = 20.0  # seconds between the starts of two demo calls
DEFAULT_AMI_PORT = 5039  # `guichet demo pbx` alone: next to Asterisk's 5038, never on it
DEMO_CITIZENS = Path(crm_bridge.__file__).resolve().parent / "demo_citizens.csv"
# Played in turn; answered calls come up most, as in a real contact centre.
SCENARIOS: tuple[str, ...] = (
    "inbound-answered",
    "ring-no-answer",
    "inbound-answered",
    "inbound-abandoned",
)
REQUEST_TYPES: tuple[str, ...] = ("population", "civil-status", "social-affairs", "taxes")
# The keys of the sample flow (flows/commune.yaml): language menu, request-type menu, and
# "1" on the FAQ menus of population and civil status to reach an agent anyway.
LANGUAGE_KEYS: dict[str, str] = {"fr": "1", "nl": "2", "en": "3"}
REQUEST_KEYS: dict[str, tuple[str, ...]] = {
    "population": ("1", "1"),
    "civil-status": ("2", "1"),
    "social-affairs": ("3",),
    "taxes": ("4",),
}
MEDIA_SECONDS = 0.8  # a prompt playing or a caller typing, at pace 1
AGI_DEADLINE = 300.0  # a scripted IVR call never takes this long, even slowed down
KEEP = 100  # actions remembered per AMI connection, calls remembered by the PBX
RETRY = 2.0  # seconds between attempts while Guichet's FastAGI server is not there yet

# One pass over each AMI block rewrites every id: a Uniqueid/Linkedid (`1795370006.1`), the
# sequence number of a channel name (`...-00000000;2`), a bridge UUID; then the literals.
_UNIQUEID = rb"(?<![\d.])\d+\.\d+(?![\d.])"
_CHANNEL_SEQ = rb"(?<=-)[0-9a-f]{8}(?=;[12])"
_UUID = rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class DemoRefused(RuntimeError):
    """The demo PBX will not run here (a real Asterisk is configured)."""


# --- who calls, about what --------------------------------------------------------------------


@dataclass(frozen=True)
class DemoCitizen:
    first_name: str
    national_number: str
    lang: str  # the IVR language they choose: fr, nl or en
    phone: str  # as Asterisk presents the caller: national format, 0470123456


def _national(phone: str | None) -> str:
    if phone and phone.startswith("+32"):
        return "0" + phone[3:]
    return phone.lstrip("+") if phone else "anonymous"


def load_demo_citizens(path: Path = DEMO_CITIZENS) -> list[DemoCitizen]:
    """The callers: the demo citizen directory that `guichet demo seed` imports, so the IVR
    identifies them and the pop shows who they are."""
    rows, errors = parse_citizens_csv(path)
    if errors or not rows:
        raise ValueError(f"demo citizens unusable: {path}: {errors[:1] or 'no rows'}")
    return [
        DemoCitizen(
            first_name=row.first_name,
            national_number=row.national_number,
            lang=row.preferred_language if row.preferred_language in LANGUAGE_KEYS else "fr",
            phone=_national(row.phone),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class CallPlan:
    """One scripted call: who, about what, and which recorded Asterisk behaviour follows."""

    number: int
    citizen: DemoCitizen
    request_type: str
    scenario: str

    def keys(self) -> list[CallerAction]:
        keys = [LANGUAGE_KEYS[self.citizen.lang], *REQUEST_KEYS[self.request_type]]
        return [*(Press(k) for k in keys), Press(self.citizen.national_number + "#")]


def plan_call(
    number: int, citizens: Sequence[DemoCitizen], scenarios: Sequence[str] = SCENARIOS
) -> CallPlan:
    """Call `number` of the loop: citizens, request types and scenarios turn at different
    rates, so the same pairing does not come back every time."""
    request = REQUEST_TYPES[(number + number // len(scenarios)) % len(REQUEST_TYPES)]
    return CallPlan(
        number=number,
        citizen=citizens[number % len(citizens)],
        request_type=request,
        scenario=scenarios[number % len(scenarios)],
    )


# --- recorded scenarios -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A recorded inbound call, ready to replay: what Asterisk sent once the call existed,
    split where it joins the queue, and the recorded ids and values to rewrite."""

    name: str
    env: bytes  # the recorded `agi_*` environment
    ivr: tuple[Block, ...]  # up to the queue: our own IVR just ran, so sent at once
    queue: tuple[Block, ...]  # QueueCallerJoin on: at the recorded pace
    call_id: bytes  # the Uniqueid of the channel that ran the AGI (GUICHET_CALL_ID)
    caller: bytes  # the recorded caller number
    values: Mapping[str, bytes]  # recorded GUICHET_* values by name (LANG, QUEUE, CASE_ID...)
    uniqueids: tuple[bytes, ...]
    channel_seqs: tuple[bytes, ...]
    bridges: tuple[bytes, ...]

    @classmethod
    def load(cls, folder: Path) -> Scenario:
        script = Script.load(folder / "ami.log")
        blocks: list[Block] = []
        booted = False
        for item in script.items:
            if not isinstance(item, Block):
                continue
            if not booted:
                booted = b"Event: FullyBooted\r\n" in item.raw
                continue
            # Events only: no answers to the recording client's actions, no artefacts of
            # the recording set-up (its logins, the Originate that simulated the citizen).
            if (
                not item.raw.startswith(b"Event: ")
                or item.raw.startswith(b"Event: SuccessfulAuth\r\n")
                or b"\r\nActionID: " in item.raw
            ):
                continue
            blocks.append(item)
        join = next(
            i for i, b in enumerate(blocks) if b.raw.startswith(b"Event: QueueCallerJoin\r\n")
        )
        stream = b"".join(b.raw for b in blocks)
        values: dict[str, bytes] = {}
        for name, value in re.findall(rb"(?<=\n)ChanVariable: GUICHET_(\w+)=([^\r]+)\r\n", stream):
            values.setdefault(name.decode(), value)
        env = Transcript.load(folder / "agi.log").env
        caller = re.search(rb"^agi_callerid: ([^\n]*)\n", env, re.MULTILINE)
        uniqueids = set(re.findall(rb"(?<=\n)\w*(?:Uniqueid|Linkedid): (\d+\.\d+)\r\n", stream))
        return cls(
            name=folder.name,
            env=env,
            ivr=tuple(blocks[:join]),
            queue=tuple(blocks[join:]),
            call_id=values["CALL_ID"],
            caller=caller.group(1) if caller else b"0470123456",
            values=values,
            uniqueids=tuple(sorted(uniqueids)),
            channel_seqs=tuple(sorted(set(re.findall(_CHANNEL_SEQ, stream)))),
            bridges=tuple(sorted(set(re.findall(rb"BridgeUniqueid: (" + _UUID + rb")", stream)))),
        )


class CallRewrite:
    """Replaces recorded ids (found by their shape) and literal values by this call's, in one
    pass per block, so a replaced value is never rewritten again."""

    def __init__(self, ids: Mapping[bytes, bytes], literals: Mapping[bytes, bytes]) -> None:
        self.table = {**ids, **literals}
        escaped = [re.escape(k) for k in sorted(literals, key=len, reverse=True)]
        self._pattern = re.compile(b"|".join([_UNIQUEID, _CHANNEL_SEQ, _UUID, *escaped]))

    def __call__(self, raw: bytes) -> bytes:
        return self._pattern.sub(lambda m: self.table.get(m.group(0), m.group(0)), raw)


def demo_ivr_time(now: datetime | None = None) -> datetime:
    """Demo only: the time to give the IVR so demo callers find the desks open at any hour.

    A weekday morning (09:00-12:00 Europe/Brussels, no Belgian public holiday) is left as it
    is; any other moment becomes the same minutes and seconds past 10:00 on the latest such
    morning. Without it, the sample flow sends evening and weekend demo calls to its closed
    menu and nobody's phone rings. Journeys of demo calls carry this time.
    """
    brussels = ZoneInfo("Europe/Brussels")
    local = (now or datetime.now(UTC)).astimezone(brussels)
    calendar = holidays.country_holidays("BE", years=range(local.year - 1, local.year + 1))

    def working(day: datetime) -> bool:
        return day.weekday() < 5 and day.date() not in calendar

    if working(local) and clock_time(9) <= local.time() < clock_time(12):
        return local
    day = local if working(local) and local.time() >= clock_time(12) else local - timedelta(1)
    while not working(day):
        day -= timedelta(days=1)
    return datetime.combine(
        day.date(), clock_time(10, local.minute, local.second, local.microsecond), brussels
    )


# --- the PBX --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoCall:
    """What one demo call did, for logs and tests."""

    number: int
    call_id: str
    citizen: str
    scenario: str
    outcome: str | None  # the IVR's GUICHET_OUTCOME (queued, closed, ...)
    reference: str | None  # the case the IVR opened (GUICHET_CASE_ID)
    queue: str | None
    first_agent: str | None  # agent1 / agent2: whose phone rings first; None: nobody rang


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_real_asterisk(settings: Settings, *, demo_port: int | None = None) -> None:
    """Raise `DemoRefused` when Guichet's AMI settings point at an Asterisk.

    The only AMI host tolerated is the demo itself (loopback, `demo_port`): anything else is
    taken for a real Asterisk, whose Guichet must not receive made-up calls and cases.
    """
    host = settings.ami_host
    if not host:
        return
    if demo_port is not None and _is_loopback(host) and settings.ami_port == demo_port:
        return
    raise DemoRefused(
        f"GUICHET_AMI_HOST points at an Asterisk ({host}:{settings.ami_port}): the demo PBX"
        " does not run next to a real PBX (it would feed made-up calls to a real Guichet)."
        " Unset GUICHET_AMI_HOST to use the demo."
    )


class DemoPbx:
    """A demo AMI server plus a loop of scripted calls; see the module docstring.

    `pace` scales every wait (1.0: a human caller and the recorded Asterisk timing; 0: as
    fast as the sockets go, for tests). `audience`, if given, is asked before each call:
    calls wait while it says nobody watches (no demo cases pile up overnight).
    """

    def __init__(
        self,
        *,
        username: str = "guichet",
        secret: str = "change-me",
        interval: float = DEFAULT_INTERVAL,
        pace: float = 1.0,
        scenarios: Sequence[str] = SCENARIOS,
        citizens: Sequence[DemoCitizen] | None = None,
        recordings: Path = BUNDLED_RECORDINGS,
        flow: str = "commune",
        audience: Callable[[], bool] | None = None,
    ) -> None:
        self.interval = interval
        self.pace = pace
        self.scenarios = tuple(scenarios)
        self.citizens = list(citizens) if citizens is not None else load_demo_citizens()
        self.flow = flow
        self.audience = audience
        self._recorded = {name: Scenario.load(recordings / name) for name in set(scenarios)}
        self.ami = AmiPeer([Script(DEMO_BANNER, ())], username=username, secret=secret,
                           auth_delay=1.0, keep=KEEP)  # fmt: skip
        self.spy = DemoSpy(self._emit)  # a supervisor may listen in, as on a real PBX
        self.ami.hooks.append(self.spy.hook)
        self.port = 0
        self.calls: deque[DemoCall] = deque(maxlen=KEEP)  # the latest calls, newest last
        self.placed = 0
        self.finished = asyncio.Event()  # set once `calls` calls are done (start_calls)
        self._agi: tuple[str, int] = (LOOPBACK, 4573)
        self._task: asyncio.Task[None] | None = None
        self._next_uniqueid = 0  # Asterisk's channel counters, continued across calls
        self._next_channel = 0

    # --- life cycle ---

    async def start(self, port: int = 0) -> int:
        """Listen for AMI clients on the loopback interface (`port` 0: a free one)."""
        self.port = await self.ami.start(port)
        log.warning(
            "[demo] demo PBX (no real Asterisk): AMI on %s:%d, banner %r",
            LOOPBACK,
            self.port,
            DEMO_BANNER.decode().strip(),
        )
        return self.port

    def start_calls(self, agi_host: str, agi_port: int, *, calls: int | None = None) -> None:
        """Place calls into Guichet's FastAGI server at `agi_host:agi_port` (a wildcard
        address means this machine), `calls` of them or until stopped."""
        host = LOOPBACK if agi_host in {"", "0.0.0.0", "::"} else agi_host
        self._agi = (host, agi_port)
        if self._task is None:
            self._task = asyncio.create_task(self._loop(calls), name="demo-pbx-calls")
            log.info(
                "[demo] placing a scripted citizen call about every %.0f s into FastAGI %s:%d",
                self.interval,
                host,
                agi_port,
            )

    async def stop_calls(self) -> None:
        """Stop placing calls (a call in progress is cut); the AMI server stays up."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        await self.stop_calls()
        await self.spy.close()
        await self.ami.close()
        log.info("[demo] demo PBX stopped after %d calls", self.placed)

    # --- the call loop ---

    async def _loop(self, calls: int | None) -> None:
        loop = asyncio.get_running_loop()
        number, unreachable = 0, False
        while calls is None or number < calls:
            await self._wait_for_audience()
            started = loop.time()
            try:
                self.calls.append(await self.place_call(number))
            except OSError as exc:
                if not unreachable:
                    log.warning(
                        "[demo] Guichet's FastAGI server at %s:%d does not answer (%s);"
                        " trying again",
                        *self._agi,
                        exc,
                    )
                unreachable = True
                await asyncio.sleep(RETRY)
                continue
            except Exception:
                log.exception("[demo] call %d failed", number)
            unreachable = False
            number += 1
            self.placed = number
            if calls is not None and number >= calls:
                break
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))
        log.info("[demo] %d demo calls placed; the demo PBX stays up, idle", number)
        self.finished.set()

    async def _wait_for_audience(self) -> None:
        """A call only makes sense with Guichet logged in on the AMI (and someone watching)."""
        while not (  # noqa: ASYNC110 - `audience` is a predicate: nothing to await
            any(s.logged_in and not s.closed.is_set() for s in self.ami.sessions)
            and (self.audience is None or self.audience())
        ):
            await asyncio.sleep(0.25)

    async def place_call(self, number: int) -> DemoCall:
        """One call: the citizen's IVR session, then the recorded queue behaviour."""
        plan = plan_call(number, self.citizens, self.scenarios)
        scenario = self._recorded[plan.scenario]
        ids = self._allocate(scenario)
        literals = {scenario.caller: plan.citizen.phone.encode()}
        env = rewrite_env(CallRewrite(ids, literals)(scenario.env), script=self.flow)
        call_id = ids[scenario.call_id].decode()
        log.info(
            "[demo] call %d (%s): %s calls in %s about %s",
            number,
            call_id,
            plan.citizen.first_name,
            plan.citizen.lang,
            plan.request_type,
        )
        caller = ScriptedPeer(plan.keys(), env=env, delay=self._typing)
        await caller.run(*self._agi, deadline=AGI_DEADLINE * max(self.pace, 1.0))
        found = caller.variables
        outcome, queue = found.get("GUICHET_OUTCOME"), found.get("GUICHET_QUEUE")
        reference = found.get("GUICHET_CASE_ID") or None
        if outcome != "queued" or not queue:
            log.info(
                "[demo] call %d: the IVR ended it (outcome %s): no agent rings", number, outcome
            )
            return DemoCall(number, call_id, plan.citizen.first_name, plan.scenario, outcome,
                            reference, None, None)  # fmt: skip
        lang = found.get("GUICHET_LANG", "")
        first_agent = "agent2" if lang == "nl" else "agent1"  # agent2's console is in Dutch
        literals.update(self._values(scenario, found, swap=first_agent == "agent2"))
        rewrite = CallRewrite(ids, literals)
        log.info(
            "[demo] call %d: case %s, queue %s; Asterisk plays %s, %s rings first",
            number,
            reference or "none",
            queue,
            scenario.name,
            first_agent,
        )
        for block in scenario.ivr:
            await self._emit(rewrite(block.raw))
        last: float | None = None
        for block in scenario.queue:
            if last is not None and self.pace > 0 and block.t > last:
                await asyncio.sleep((block.t - last) * self.pace)
            last = block.t
            await self._emit(rewrite(block.raw))
        return DemoCall(number, call_id, plan.citizen.first_name, plan.scenario, outcome,
                        reference, queue, first_agent)  # fmt: skip

    def _typing(self, index: int, verb: str) -> float:
        return MEDIA_SECONDS * self.pace if verb in MEDIA else 0.0

    def _allocate(self, scenario: Scenario) -> dict[bytes, bytes]:
        """Fresh ids for one call, shaped as Asterisk makes them: `<epoch>.<counter>` and
        8 hex digits of channel sequence, both counters running on from the last call."""
        now = int(time.time())
        first_epoch = min(int(u.split(b".")[0]) for u in scenario.uniqueids)
        table: dict[bytes, bytes] = {}
        counters = [int(u.split(b".")[1]) for u in scenario.uniqueids]
        for uid, counter in zip(scenario.uniqueids, counters, strict=True):
            epoch = now + int(uid.split(b".")[0]) - first_epoch
            table[uid] = f"{epoch}.{self._next_uniqueid + counter}".encode()
        self._next_uniqueid += max(counters) + 1
        seqs = [int(s, 16) for s in scenario.channel_seqs]
        for seq, value in zip(scenario.channel_seqs, seqs, strict=True):
            table[seq] = f"{(self._next_channel + value) % 2**32:08x}".encode()
        self._next_channel += max(seqs, default=0) + 1
        for bridge in scenario.bridges:
            table[bridge] = str(uuid.uuid4()).encode()
        return table

    @staticmethod
    def _values(scenario: Scenario, found: Mapping[str, str], *, swap: bool) -> dict[bytes, bytes]:
        """What our IVR decided, in place of what the recording's throwaway script did."""
        recorded = scenario.values
        table: dict[bytes, bytes] = {
            recorded["CASE_ID"]: found.get("GUICHET_CASE_ID", "").encode(),
            recorded["QUEUE"]: found.get("GUICHET_QUEUE", "").encode(),
        }
        for name in ("LANG", "REQUEST_TYPE"):
            var = b"GUICHET_" + name.encode()
            old, new = recorded[name], found.get(f"GUICHET_{name}", "").encode()
            table[var + b"=" + old + EOL] = var + b"=" + new + EOL  # ChanVariable lines
            varset = b"Variable: " + var + EOL + b"Value: "  # a VarSet event's own value
            table[varset + old + EOL] = varset + new + EOL
        if swap:  # the recordings ring Agent One first; Dutch callers ring Agent Two first
            table.update(
                {
                    b"agent1": b"agent2",
                    b"agent2": b"agent1",
                    b"Agent One": b"Agent Two",
                    b"Agent Two": b"Agent One",
                }
            )
        return table

    async def _emit(self, raw: bytes) -> None:
        """One AMI message to every logged-in client, as Asterisk broadcasts events."""
        self.spy.observe(raw)
        for session in list(self.ami.sessions):
            if session.logged_in and not session.closed.is_set():
                session.write(raw)
                with contextlib.suppress(ConnectionError):
                    await session.writer.drain()


async def start_demo_pbx(
    settings: Settings, *, interval: float | None = None, pace: float = 1.0
) -> DemoPbx:
    """For `guichet serve` without an Asterisk: the demo AMI server on a free loopback port.

    Point the AmiClient at `127.0.0.1:<pbx.port>` with the settings' username and secret,
    then call `pbx.start_calls(agi_host, agi_port)` once the FastAGI server listens.
    Raises `DemoRefused` when `settings.ami_host` is set (a real Asterisk).
    """
    refuse_real_asterisk(settings)
    pbx = DemoPbx(
        username=settings.ami_username,
        secret=settings.ami_secret,
        interval=DEFAULT_INTERVAL if interval is None else interval,
        pace=pace,
    )
    await pbx.start(0)
    return pbx
