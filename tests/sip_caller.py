"""A citizen's SIP phone for the tests: pjsua2 (PJSIP) in its own process, driven by a script.

Run by tests/test_sip_leg.py as `python sip_caller.py '<json>'`; one JSON object per line on
stdout reports what happened (call states, transfer requests, calls that reached the
`--answer-as` account, with their X-Guichet-* headers). A separate process because PJSIP's
library is a process-wide singleton with its own threads.

Options: proxy, dial, rtp_port, script, timeout, caller, record (WAV of what the caller
hears), answer_as (a second account that registers and answers: a transfer target), linger
(seconds to stay after the script), cancel_after (hang up this long after dialling).
Script steps (from the answer on): ["wait", seconds], ["dtmf", "85073003328#"] (RFC 2833, one key after the
other), ["hangup"], ["wait_end", seconds].
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

import pjsua2 as pj


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.monotonic(), 3), **data}), flush=True)


class Call(pj.Call):  # type: ignore[misc]
    def __init__(
        self,
        account: pj.Account,
        record: str | None = None,
        call_id: int = -1,
        label: str = "main",
    ) -> None:
        super().__init__(account, call_id)
        self.account = account
        self.label = label  # main: the call to the IVR; transfer: the one a REFER made
        self.record = record
        self.recorder: pj.AudioMediaRecorder | None = None
        self.transfer: Call | None = None
        self.state = ""

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        self.state = (
            "DISCONNECTED" if info.state == pj.PJSIP_INV_STATE_DISCONNECTED else info.stateText
        )
        emit(
            "state",
            call=self.label,
            state=self.state,
            code=info.lastStatusCode,
            reason=info.lastReason,
            call_id=info.callIdString,
        )

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        if self.record and self.recorder is None:
            media = self.getAudioMedia(-1)
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(self.record)
            media.startTransmit(self.recorder)
            emit("recording", path=self.record)

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        # Status stays 202 (accepted). Without a Call object of its own, PJSUA2 reports the
        # new call's states to this one (same user data): give it one.
        self.transfer = Call(self.account, label="transfer")
        prm.newCall = self.transfer
        emit("transfer_request", target=prm.dstUri)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        emit("transfer_status", code=prm.statusCode, final=prm.finalNotify)


class Account(pj.Account):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.incoming: list[Call] = []

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = Call(self, call_id=prm.callId, label="answered")
        headers = dict(re.findall(r"(?im)^(X-Guichet-[\w-]+):\s*(.*?)\s*$", prm.rdata.wholeMsg))
        emit("incoming", to=self.getInfo().uri, headers=headers)
        answer = pj.CallOpParam()
        answer.statusCode = 200
        call.answer(answer)
        self.incoming.append(call)


def main() -> None:
    args = json.loads(sys.argv[1])
    proxy = args["proxy"]  # host:port of the registrar/proxy
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    cfg.medConfig.noVad = True  # keep RTP flowing, as a real phone does
    ep.libInit(cfg)
    transport = pj.TransportConfig()
    transport.boundAddress = "127.0.0.1"
    transport.port = 0
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    ep.libStart()
    ep.audDevManager().setNullDev()
    for codec in ep.codecEnum2():
        ep.codecSetPriority(codec.codecId, 0)
    ep.codecSetPriority("PCMU/8000", 255)

    def account(uri: str, register: bool, rtp_port: int) -> Account:
        acfg = pj.AccountConfig()
        acfg.idUri = uri
        if register:
            acfg.regConfig.registrarUri = f"sip:{proxy}"
        acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        acfg.mediaConfig.transportConfig.port = rtp_port
        acc = Account()
        acc.create(acfg)
        return acc

    caller = account(f"sip:{args.get('caller', '0470123456')}@127.0.0.1", False, args["rtp_port"])
    answerer = None
    if args.get("answer_as"):
        answerer = account(f"sip:{args['answer_as']}@{proxy}", True, args["rtp_port"] + 100)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not answerer.getInfo().regIsActive:
            ep.libHandleEvents(20)
        emit("registered", uri=answerer.getInfo().uri, ok=answerer.getInfo().regIsActive)

    call = Call(caller, record=args.get("record"))
    call.makeCall(f"sip:{args['dial']}@{proxy}", pj.CallOpParam(True))
    steps: list[list[Any]] = list(args.get("script", []))
    deadline = time.monotonic() + float(args.get("timeout", 120))
    confirmed_at: float | None = None
    next_at = 0.0
    cancel_at = time.monotonic() + args["cancel_after"] if "cancel_after" in args else None
    while time.monotonic() < deadline:
        ep.libHandleEvents(10)
        if cancel_at is not None and time.monotonic() >= cancel_at:
            cancel_at = None
            if call.state != "DISCONNECTED":
                call.hangup(pj.CallOpParam(True))  # CANCEL while it rings
                emit("cancel")
        if call.state == "CONFIRMED" and confirmed_at is None:
            confirmed_at = next_at = time.monotonic()
        if call.state == "DISCONNECTED" and not steps:
            break
        if confirmed_at is None or not steps or time.monotonic() < next_at:
            if call.state == "DISCONNECTED" and confirmed_at is None:
                break  # never answered
            continue
        kind, *rest = steps.pop(0)
        if kind == "wait":
            next_at = time.monotonic() + float(rest[0])
        elif kind == "dtmf":
            if call.state == "CONFIRMED":
                call.dialDtmf(str(rest[0]))
                emit("dtmf", digits=rest[0])
        elif kind == "hangup":
            if call.state != "DISCONNECTED":
                call.hangup(pj.CallOpParam(True))
                emit("hangup")
        elif kind == "wait_end":
            end = time.monotonic() + float(rest[0])
            while time.monotonic() < end and call.state != "DISCONNECTED":
                ep.libHandleEvents(10)
    # a transferred call: give the transfer target's call a moment, then leave
    end = time.monotonic() + float(args.get("linger", 0))
    while time.monotonic() < end:
        ep.libHandleEvents(10)
    ep.hangupAllCalls()
    for _ in range(20):
        ep.libHandleEvents(10)
    emit("done", state=call.state)
    # PJSIP's Python objects assert when collected after libDestroy: leave without collecting.
    os._exit(0)


if __name__ == "__main__":
    main()
