"""One Guichet process, assembled: store, flows, FastAGI, CTI bridge, screen-pop and console.

`guichet serve` runs it; tests start the same object on free loopback ports, so what they
check is what production wires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import FastAPI

from console.coaching import Coaching
from console.deps import ConsoleConfig
from console.factory import create_console_app
from console.push import PushHub
from console.routers.agent import agent_routers
from console.routers.supervisor import supervisor_routers
from console.screenpop import ScreenPop
from console.wallboard import Wallboard
from crm_bridge.audit import AuditLog
from crm_bridge.buffered import BufferedCrm
from crm_bridge.cases import CaseService
from crm_bridge.coaching_store import CoachingStore
from crm_bridge.knowledge import KnowledgeBase
from crm_bridge.outbox import CaseOutbox
from crm_bridge.store import SqlCrm
from crm_bridge.users import UserService
from cti.ami import AmiClient, AmiConfig
from cti.bridge import CtiBridge
from cti.bus import EventBus, LocalBus, RedisBus
from cti.call_records import CallRecorder
from cti.leader import RedisLease
from cti.pbx import Pbx
from guichet.demo.pbx import DemoPbx, demo_ivr_time, start_demo_pbx
from guichet.probe.display import latest_results
from guichet.probe.schedule import ProbeSchedule
from guichet.settings import Settings
from ivr.fastagi import FastAgiServer
from ivr.registry import FlowRegistry
from ivr.sip_phone import SipAccount
from ivr.sip_server import SipIvrServer

log = logging.getLogger("guichet")


@dataclass
class Guichet:
    """Start order follows the call path: store first, PBX-facing servers last."""

    settings: Settings
    agi_port: int | None = None
    clock: Callable[[], datetime] | None = None  # the IVR's clock (opening hours); tests fix it
    store: SqlCrm = field(init=False)
    crm: BufferedCrm = field(init=False)
    cases: CaseService = field(init=False)
    outbox: CaseOutbox = field(init=False)
    registry: FlowRegistry = field(init=False)
    agi: FastAgiServer = field(init=False)
    hub: PushHub = field(init=False)
    users: UserService = field(init=False)
    bus: EventBus = field(init=False)
    demo_pbx: DemoPbx | None = None
    ami: AmiClient | None = None
    cti: CtiBridge | None = None
    lease: RedisLease | None = None
    pbx: Pbx | None = None
    pop: ScreenPop = field(init=False)
    wallboard: Wallboard = field(init=False)
    coaching: Coaching = field(init=False)
    recorder: CallRecorder = field(init=False)
    probes: ProbeSchedule = field(init=False)
    sip: SipIvrServer | None = None
    app: FastAPI = field(init=False)

    async def start(self) -> None:
        s = self.settings
        self.store = await SqlCrm.connect(s.database_url)
        engine = self.store.engine
        self.crm = BufferedCrm(self.store)
        await self.crm.start()
        self.cases = CaseService(engine)
        self.outbox = CaseOutbox(self.cases.open_case_for_call, s.case_spool)
        await self.outbox.start()
        self.registry = FlowRegistry(
            s.flows_dir, interval=s.reload_interval, sounds_dir=s.sounds_dir
        )
        await self.registry.start()
        if not self.registry.names():
            log.warning("no flow could be loaded from %s: calls will be refused", s.flows_dir)
        self.users = UserService(engine)
        self.hub = PushHub(
            replay_size=s.ws_replay_size, replay_age=s.ws_replay_age, queue_size=s.ws_queue_size
        )
        self.bus = RedisBus(s.redis_url) if s.redis_url else LocalBus()
        await self.bus.start()
        knowledge, audit = KnowledgeBase(engine), AuditLog(engine)
        self.pop = ScreenPop(
            bus=self.bus,
            hub=self.hub,
            users=self.users,
            cases=self.cases,
            knowledge=knowledge,
            audit=audit,
            crm=self.store,
            journeys=self.crm,
            outbox=self.outbox,
        )
        await self.pop.start()
        self.recorder = CallRecorder(self.bus, engine)
        await self.recorder.start()
        self.wallboard = Wallboard(
            bus=self.bus,
            hub=self.hub,
            engine=engine,
            users=self.users,
            ivr_calls=self.ivr_calls,
        )
        await self.wallboard.start()
        self.coaching = Coaching(
            hub=self.hub, store=CoachingStore(engine), audit=audit, users=self.users
        )
        await self.coaching.start(self.bus)
        ami_host, ami_port = s.ami_host, s.ami_port
        if not s.ami_host and s.demo:
            self.demo_pbx = await start_demo_pbx(s, interval=s.demo_interval)
            ami_host, ami_port = "127.0.0.1", self.demo_pbx.port
            log.warning(
                "DEMO: no Asterisk configured; a demo PBX places scripted calls on port %d",
                ami_port,
            )
            if self.clock is None:
                self.clock = demo_ivr_time  # demo callers always find the desks open
        if ami_host:
            self.ami = AmiClient(
                AmiConfig(
                    host=ami_host, port=ami_port, username=s.ami_username, secret=s.ami_secret
                )
            )
            if s.redis_url:  # several nodes: one publishes the CTI events
                self.lease = RedisLease(s.redis_url)
                await self.lease.start()
            self.cti = CtiBridge(self.ami, self.bus, leader=self.lease)
            self.pbx = Pbx(self.ami)
            self.coaching.pbx, self.coaching.cti = self.pbx, self.cti.state
            await self.cti.start()
            self.ami.start()
        else:
            log.warning("no Asterisk Manager configured (GUICHET_AMI_HOST): no CTI, no screen-pop")
        self.app = create_console_app(
            engine=engine,
            users=self.users,
            hub=self.hub,
            registry=self.registry,
            extra_routers=[*agent_routers(), *supervisor_routers()],
            config=ConsoleConfig.from_settings(s),
        )
        state = self.app.state
        state.cases, state.knowledge, state.audit = self.cases, knowledge, audit
        state.crm_engine, state.users, state.hub, state.outbox = (
            engine,
            self.users,
            self.hub,
            self.outbox,
        )
        state.pbx, state.cti_state = self.pbx, self.cti.state if self.cti else None
        state.sip_ws_url = s.sip_ws_url
        translator = state.console.translator
        state.probe_results = lambda lang: latest_results(engine, translator, lang)
        self.probes = ProbeSchedule(engine)  # GUICHET_PROBE_SCRIPTS: none, no test calls
        self.probes.start()
        state.wallboard, state.coaching, state.registry = (
            self.wallboard,
            self.coaching,
            self.registry,
        )
        self.agi = FastAgiServer(
            self.registry,
            self.crm,
            host=s.agi_host,
            port=s.agi_port if self.agi_port is None else self.agi_port,
            cases=self.outbox,
            clock=self.clock,
        )
        await self.agi.start()
        if s.sip_registrar:
            password = s.sip_password.get_secret_value() if s.sip_password else ""
            self.sip = SipIvrServer(
                self.registry,
                self.crm,
                account=SipAccount.parse(
                    s.sip_registrar,
                    s.sip_rtp_ports,
                    user=s.sip_user,
                    password=password,
                    local_host=s.sip_local_host,
                    local_port=s.sip_local_port,
                ),
                sounds_dir=s.sounds_dir,
                flow=s.sip_flow,
                cases=self.outbox,
                clock=self.clock,
                transfer_uri=s.sip_transfer_uri,
                max_calls=s.sip_max_calls,
            )
            await self.sip.start()
            log.info("SIP IVR registered as %s at %s", s.sip_user, s.sip_registrar)
        if self.demo_pbx is not None:
            self.demo_pbx.start_calls(s.agi_host, self.agi.port)
        log.info(
            "FastAGI listening on %s:%s (flows: %s)",
            s.agi_host,
            self.agi.port,
            ", ".join(self.registry.names()) or "none",
        )

    def ivr_calls(self) -> int:
        agi = getattr(self, "agi", None)
        sip = self.sip.active_calls if self.sip is not None else 0
        return (agi.active_calls if agi is not None else 0) + sip

    async def stop(self) -> None:
        """Reverse order: stop taking calls, then let queued writes reach the store."""
        if self.demo_pbx is not None:
            await self.demo_pbx.stop_calls()
        await self.agi.stop()
        if self.sip is not None:
            await self.sip.stop()
        if self.ami is not None:
            await self.ami.close()
        if self.demo_pbx is not None:
            await self.demo_pbx.stop()
        if self.cti is not None:
            await self.cti.stop()
        if self.lease is not None:
            await self.lease.stop()
        await self.probes.stop()
        await self.coaching.stop()
        await self.wallboard.stop()
        await self.pop.stop()
        await self.recorder.stop()
        self.hub.close_all()
        await self.bus.close()
        await self.registry.stop()
        await self.outbox.stop()
        await self.crm.stop()
        await self.store.close()
