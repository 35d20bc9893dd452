"""A SIP phone for asyncio code: pyVoIP 1.6.8 behind a small interface, with its faults fixed.

pyVoIP is thread-based (a SIP receive thread, two RTP threads per call, a `Timer` thread per
incoming call); everything here runs its blocking calls in worker threads and hands its
events (a call arriving, a DTMF key, a BYE, a transfer's progress) to the event loop with
`call_soon_threadsafe`. Nothing else in Guichet's IVR imports pyVoIP.

API (small on purpose, for any Guichet part that needs a SIP phone; it answers calls, it
does not dial):

    phone = SipPhone(SipAccount("pbx.example", 5060, "ivr", "secret"), on_call=handler)
    await phone.start()            # binds, registers; SipError if the registrar refuses
    ...                            # handler(call: SipCall) runs as a task per incoming call
    await phone.stop()             # hangs up what is left, unregisters

    await call.answer() / call.reject()
    await call.play(pcm_u8, stop_on_dtmf=True)   # real-time; False when a key cut it short
    key = await call.next_digit(timeout=5.0)      # RFC 2833 (and SIP INFO) keys; None on timeout
    await call.transfer("sip:queue@pbx", headers={"X-Guichet-Case-Id": "C-..."})  # SIP REFER
    await call.hangup()
    call.ended / await call.wait_ended()

Audio is what pyVoIP takes: 8 kHz mono 8-bit *unsigned* linear PCM (see `ivr.sip_audio`).

pyVoIP faults worked around here (each again where the fix is):
- `import pyVoIP.SIP` first fails on a circular import: `pyVoIP.VoIP` is imported first.
- its header parser splits on ": " and drops the whole message on an empty header
  (`Supported:`), on `Name:value` without a space and on compact names (`v:`, `i:`):
  every datagram is normalised (`ivr.sip_wire`) by the socket itself, as pyVoIP reads
  it from several places (its REGISTER code may read, and then handle, an INVITE).
- it keeps the first header of each name only, so the INVITE's Record-Route set is lost:
  we keep it, echo it in our 200 OK and route our in-dialog requests with it.
- its BYE copies the caller's Via headers and has no Route: the proxy answers 404 and the
  caller never hears the hang-up. BYE (and REFER) are built here.
- it has no REFER at all (methods INVITE/ACK/BYE/CANCEL only; a 202 is "TODO: 500", a NOTIFY
  is unparseable): REFER, its answers and the NOTIFYs that follow are handled here.
- a 200 OK to our BYE would be taken for an answered call and ACKed: such answers stop here.
- a CANCEL gets its 200 but the INVITE never gets its 487: sent here, and the call ends.
- it forgets a call whose callback thread has ended (`_cleanup_dead_calls`), after which the
  caller's BYE is ignored: the callback thread is held until the call is over.
- DTMF is reported on the RTP marker bit only (a lost first packet loses the key): keys are
  taken from the first packet of each event (RFC 4733 timestamp), once.
- PCMA is encoded with the mu-law encoder: fixed per call.
- an unknown codec in an offer resets the process's warning filters: contained.
- `write_audio` only appends to a buffer the RTP thread drains at 20 ms a packet (nothing
  paces the writer): `play` paces itself on what is still queued, so a key stops a prompt.
- it keeps all audio received and sent for the whole call: the IVR keeps none.
- no retransmission of our 200 OK or REFER over UDP (RFC 3261 timers G/E): a lost one is
  a failed answer or transfer (logged); fine on a LAN, a limit over lossy links.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
import threading
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

# isort: off
# pyVoIP.VoIP first: `import pyVoIP.SIP` on its own fails on a circular import in pyVoIP 1.6.8.
import pyVoIP.VoIP
import pyVoIP.SIP
import pyVoIP.RTP

# isort: on
from pyVoIP.VoIP import CallState, InvalidStateError, PhoneStatus, VoIPCall, VoIPPhone

from ivr.sip_wire import (
    TAG,
    header_values,
    host_port,
    normalise_message,
    status_of,
    uri_escape,
    uri_of,
    via_target,
)

log = logging.getLogger("guichet.sip")
_T = TypeVar("_T")

FRAME = 160  # bytes of 8 kHz 8-bit audio in one 20 ms RTP packet
PLAY_LEAD = 4 * FRAME  # audio queued ahead of the RTP sender: how late a key stops a prompt
TRANSFER_TIMEOUT = 15.0  # REFER accepted and the new call answered (NOTIFY 200), or give up
REGISTER_TIMEOUT = 5  # seconds for the registrar to answer a REGISTER (pyVoIP: 30)
_RFC4733_EVENTS = "0123456789*#ABCD"


class SipError(Exception):
    """The phone could not start (bind, registration) or a request was refused."""


class SipCallEnded(Exception):
    """The other side hung up (or the call was cut): nothing more can be played or heard."""


@dataclass(frozen=True, slots=True)
class SipAccount:
    """Where to register and as whom; `local_host` goes into Contact and SDP, so it must be an
    address the registrar and callers reach (not 0.0.0.0)."""

    registrar: str
    port: int = 5060
    user: str = "ivr"
    password: str = ""
    local_host: str = "127.0.0.1"
    local_port: int = 0  # 0: a free UDP port
    rtp_ports: tuple[int, int] = (20000, 29999)

    @classmethod
    def parse(cls, registrar: str, rtp_ports: str = "20000-29999", **fields: Any) -> SipAccount:
        """From the operator's strings: ``registrar`` HOST:PORT, ``rtp_ports`` LOW-HIGH."""
        host, _, port = registrar.rpartition(":")
        low, _, high = rtp_ports.partition("-")
        if not host or not port.isdigit() or not low.isdigit() or not high.isdigit():
            raise ValueError("the registrar is HOST:PORT and the RTP ports LOW-HIGH")
        return cls(registrar=host, port=int(port), rtp_ports=(int(low), int(high)), **fields)


@dataclass
class _Dialog:
    """What an in-dialog request needs, kept from the INVITE (pyVoIP keeps too little)."""

    call_id: str
    remote: str  # the caller's From, with its tag
    local: str  # our To, without tag
    remote_target: str  # the caller's Contact URI
    route: list[str]  # Record-Route as received (UAS order)
    local_tag: str = ""
    cseq: int = 0
    answered: bool = False


# --- pyVoIP, patched -----------------------------------------------------------------------


class _CleanSocket:
    """pyVoIP's SIP socket, every datagram normalised on the way in: pyVoIP reads it from
    several places (its receive loop, but also REGISTER and INVITE code reading directly),
    so the socket is the one place that sees them all."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, size: int) -> bytes:
        raw = self._sock.recv(size)
        return normalise_message(raw) if raw.strip(b"\x00\r\n") else raw

    def __getattr__(self, name: str) -> Any:  # sendto, setblocking, fileno, close...
        return getattr(self._sock, name)


class _Sip(pyVoIP.SIP.SIPClient):
    """pyVoIP's SIP client with a receive path and in-dialog requests that work."""

    owner: SipPhone

    def start(self) -> None:
        """pyVoIP's start, with the socket wrapped (same steps, same order)."""
        if self.NSD:
            raise RuntimeError("Attempted to start already started SIPClient")
        self.NSD = True
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.myIP, self.myPort))
        self.s = self.out = cast(socket.socket, _CleanSocket(sock))  # duck-typed
        self.register()
        self._receiver = threading.Thread(target=self.recv_loop, name="SIP receive")
        self._receiver.start()  # at once: pyVoIP starts it a second late

    def stop(self, unregister: bool = True) -> None:
        """pyVoIP's stop, but the socket is closed once its receive thread has left it
        (pyVoIP closes it under that thread, which then dies on a closed descriptor)."""
        if not self.NSD:
            return
        self.NSD = False
        if self.registerThread is not None:
            self.registerThread.cancel()
            if unregister:
                self.deregister()
        receiver: threading.Thread | None = getattr(self, "_receiver", None)
        if receiver is not None and receiver is not threading.current_thread():
            receiver.join(REGISTER_TIMEOUT + 1)  # it may wait for a REGISTER holding the lock
        self._close_sockets()

    def recv(self) -> None:
        data = self.s.recv(8192)  # BlockingIOError goes back to pyVoIP's recv_loop
        if not data.strip(b"\x00\r\n"):
            return  # keep-alive
        try:
            head = data.partition(b"\r\n\r\n")[0].decode("utf-8", errors="replace")
            if self.owner._intercept(head, data):
                return
            self.parse_message(pyVoIP.SIP.SIPMessage(data))
        except BlockingIOError:
            raise
        except Exception:
            log.exception("SIP message not handled: %r", data[:200])

    def gen_answer(self, request: Any, sess_id: str, ms: Any, sendtype: Any) -> str:
        """pyVoIP's 200 OK, plus the Record-Route a 2xx must echo (RFC 3261 12.1.1)."""
        answer: str = super().gen_answer(request, sess_id, ms, sendtype)
        dialog = self.owner._dialogs.get(request.headers["Call-ID"])
        if dialog is not None and dialog.route:
            rr = "".join(f"Record-Route: {r}\r\n" for r in dialog.route)
            answer = answer.replace("\r\nCall-ID:", f"\r\n{rr}Call-ID:", 1)
        return answer

    def bye(self, request: Any) -> None:
        """pyVoIP's BYE carries the caller's Via and no Route; ours is a proper request."""
        try:
            self.owner._send_in_dialog(request.headers["Call-ID"], "BYE")
        except (SipError, OSError) as exc:
            log.warning("call %s: BYE not sent (%s)", request.headers["Call-ID"], exc)


class _Phone(VoIPPhone):
    owner: SipPhone

    def _create_Call(self, request: Any, sess_id: int) -> None:
        # pyVoIP calls warnings.simplefilter("default") on any codec it does not know
        # (opus, G722...), resetting the whole process's warning filters: contain it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            super()._create_Call(request, sess_id)

    def _callback_MSG_Invite(self, request: Any) -> None:
        self.owner._remember_dialog(request)
        super()._callback_MSG_Invite(request)

    def _callback_MSG_Bye(self, request: Any) -> None:
        super()._callback_MSG_Bye(request)
        self.owner._remote_ended(request.headers["Call-ID"], "bye")

    def callback(self, request: Any) -> None:
        super().callback(request)
        if request.type == pyVoIP.SIP.SIPMessageType.MESSAGE and request.method == "CANCEL":
            self.owner._cancelled(request)  # pyVoIP answers the CANCEL, never the INVITE


# --- calls ---------------------------------------------------------------------------------


class SipCall:
    """One call: media, keys and signalling as coroutines. Made by `SipPhone`."""

    def __init__(self, phone: SipPhone, voip: VoIPCall, loop: asyncio.AbstractEventLoop) -> None:
        self._phone = phone
        self._voip = voip
        self._loop = loop
        headers = voip.request.headers
        self.call_id: str = headers["Call-ID"]
        self.remote_number: str = headers["From"].get("number") or ""
        self.remote_name: str = headers["From"].get("caller") or ""
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self.end_reason: str | None = None
        self._ended = asyncio.Event()
        self._notify: asyncio.Queue[int] = asyncio.Queue()  # transfer progress (sipfrag codes)
        self._refer_answer: asyncio.Future[int] | None = None
        self._released = threading.Event()  # lets pyVoIP's callback thread finish
        self._seen_events: set[int] = set()
        for client in voip.RTPClients:
            self._patch_rtp(client)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)
        return self.ended

    async def answer(self) -> None:
        if self.ended:
            raise SipCallEnded
        try:
            await asyncio.to_thread(self._voip.answer)
        except InvalidStateError as exc:
            self._mark_ended("cancelled")
            raise SipCallEnded from exc
        dialog = self._phone._dialogs.get(self.call_id)
        if dialog is not None:
            dialog.answered = True

    async def reject(self) -> None:
        """486 Busy Here to a call not answered yet."""
        if self.ended:
            return
        with contextlib.suppress(InvalidStateError):
            await asyncio.to_thread(self._voip.deny)
        self._mark_ended("rejected")

    async def hangup(self) -> None:
        """End the call from our side: BYE once answered, 486 while it still rings."""
        if self.ended:
            return
        self._mark_ended("local")
        with contextlib.suppress(InvalidStateError):
            if self._voip.state == CallState.RINGING:
                await asyncio.to_thread(self._voip.deny)
            else:
                await asyncio.to_thread(self._voip.hangup)

    async def play(self, audio: bytes, *, stop_on_dtmf: bool = False) -> bool:
        """Send 8-bit unsigned audio in real time; False if a key (queued in `digits`) cut it
        short. Raises SipCallEnded when the caller hangs up meanwhile."""
        pos = 0
        while True:
            if self.ended:
                raise SipCallEnded
            if stop_on_dtmf and not self.digits.empty():
                return False
            queued = self._queued()
            if pos < len(audio) and queued < PLAY_LEAD:
                size = PLAY_LEAD - queued
                self._voip.write_audio(audio[pos : pos + size])
                pos += size
                continue
            if pos >= len(audio) and queued == 0:
                self._forget_sent()
                return True
            await asyncio.sleep(0.02)

    async def next_digit(self, timeout: float | None) -> str | None:
        """The next key pressed (typed-ahead keys first); None after `timeout` seconds."""
        if not self.digits.empty():
            return self.digits.get_nowait()
        try:
            return await self._unless_ended(self.digits.get(), timeout)
        except TimeoutError:
            return None

    async def _unless_ended(self, awaitable: Awaitable[_T], timeout: float | None) -> _T:
        """`awaitable`'s result; SipCallEnded as soon as the call ends, TimeoutError after
        `timeout` seconds."""
        task = asyncio.ensure_future(awaitable)
        if self.ended:
            task.cancel()
            raise SipCallEnded
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            done, _ = await asyncio.wait(
                {task, ended}, timeout=timeout, return_when="FIRST_COMPLETED"
            )
        finally:
            ended.cancel()
            if not task.done():
                task.cancel()
        if task in done:
            return task.result()
        if self.ended:
            raise SipCallEnded
        raise TimeoutError

    def clear_digits(self) -> None:
        while not self.digits.empty():
            self.digits.get_nowait()

    async def transfer(
        self,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = TRANSFER_TIMEOUT,
    ) -> int:
        """Blind transfer with SIP REFER (RFC 3515): the caller's phone calls `target`.

        Returns the final status the caller's phone reported for its new call (NOTIFY
        sipfrag: 200 = answered) or the REFER's own refusal (4xx-6xx); 408 on no answer.
        SipCallEnded when the caller's phone hangs this call up first (many do once the
        REFER is accepted). The REFER goes out once: no UDP retransmission (Timer E).
        `headers` ride the Refer-To URI (RFC 3261 19.1.5) into the new INVITE.
        """
        if self.ended:
            raise SipCallEnded
        uri = target
        if headers:
            query = "&".join(f"{k}={uri_escape(v)}" for k, v in headers.items())
            uri = f"{target}?{query}"
        self._refer_answer = self._loop.create_future()
        self._phone._send_in_dialog(
            self.call_id,
            "REFER",
            extra=f"Refer-To: <{uri}>\r\nReferred-By: <{self._phone.aor}>\r\n",
        )
        deadline = self._loop.time() + timeout
        try:
            status = await self._unless_ended(self._refer_answer, timeout)
            if status >= 300:
                return status
            while True:
                left = max(deadline - self._loop.time(), 0.01)
                code = await self._unless_ended(self._notify.get(), left)
                if code >= 200:
                    return code
        except TimeoutError:
            return 408

    # -- called on the loop, from pyVoIP's threads ---------------------------------------------

    def _mark_ended(self, reason: str) -> None:
        if not self._ended.is_set():
            log.debug("call %s: ended (%s)", self.call_id, reason)
            self.end_reason = reason
            self._ended.set()

    def _release(self) -> None:
        self._released.set()

    def _queued(self) -> int:
        """Audio written but not sent yet. pyVoIP exposes nothing for this: its packet
        manager's buffer position against the write offset is the only measure."""
        queued = 0
        for client in self._voip.RTPClients:
            manager = client.pmout
            if manager.offset > client.outOffset:  # nothing written yet
                continue
            queued = max(queued, client.outOffset - manager.offset - manager.buffer.tell())
        return max(queued, 0)

    def _forget_sent(self) -> None:
        """pyVoIP also keeps every packet it was given to send (for a rebuild that only its
        first write triggers): drop that copy once a prompt has gone out."""
        for client in self._voip.RTPClients:
            with client.pmout.bufferLock:
                client.pmout.log.clear()

    def _patch_rtp(self, client: Any) -> None:
        # pyVoIP keeps every received packet twice (a dict and a buffer), for the whole
        # call, whether anyone reads them or not: 16 KB a second per call. Nothing here
        # listens to the caller's audio, so it is not kept.
        client.pmin = _Discard()
        if client.preference == pyVoIP.RTP.PayloadType.PCMA:
            # pyVoIP's encode_packet sends PCMA payloads through the mu-law encoder.
            client.encode_packet = client.encode_pcma
        loop, seen = self._loop, self._seen_events

        def telephone_event(packet: Any) -> None:
            # pyVoIP reports an event on the marker bit only; RFC 4733 marks the first packet
            # only, so losing it loses the key. Every packet of one event shares its timestamp.
            if not packet.payload or packet.payload[0] >= len(_RFC4733_EVENTS):
                return
            stamp = packet.timestamp
            if stamp in seen:
                return
            seen.add(stamp)
            key = _RFC4733_EVENTS[packet.payload[0]]
            loop.call_soon_threadsafe(self.digits.put_nowait, key)

        client.parse_telephone_event = telephone_event


class _Discard:
    """In place of pyVoIP's received-audio buffer: keeps nothing, reads silence."""

    def write(self, offset: int, data: bytes) -> None:
        return None

    def read(self, length: int = FRAME) -> bytes:
        return b"\x80" * length


# --- the phone -----------------------------------------------------------------------------


class SipPhone:
    """A registered SIP user agent; `on_call` runs as a task for each incoming call."""

    def __init__(
        self,
        account: SipAccount,
        *,
        on_call: Callable[[SipCall], Awaitable[None]] | None = None,
        user_agent: str = "Guichet",
    ) -> None:
        self.account = account
        self._on_call = on_call
        self._user_agent = user_agent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._phone: _Phone | None = None
        self._dialogs: dict[str, _Dialog] = {}
        self._calls: dict[str, SipCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._cancelled_ids: set[str] = set()
        self.local_port = account.local_port

    @property
    def aor(self) -> str:
        return f"sip:{self.account.user}@{self.account.registrar}:{self.account.port}"

    @property
    def registered(self) -> bool:
        return self._phone is not None and self._phone.get_status() == PhoneStatus.REGISTERED

    @property
    def calls(self) -> list[SipCall]:
        return list(self._calls.values())

    async def start(self) -> None:
        """Bind, register and take calls; SipError when the registrar refuses or is silent."""
        self._loop = asyncio.get_running_loop()
        acc = self.account
        if not self.local_port:
            self.local_port = _free_udp_port(acc.local_host)
        phone = _Phone(
            acc.registrar,
            acc.port,
            acc.user,
            acc.password,
            myIP=acc.local_host,
            callCallback=self._incoming,
            sipPort=self.local_port,
            rtpPortLow=acc.rtp_ports[0],
            rtpPortHigh=acc.rtp_ports[1],
        )
        phone.owner = self
        # Swap in our SIP client before anything is bound: same arguments as pyVoIP's own.
        sip = _Sip(
            acc.registrar,
            acc.port,
            acc.user,
            acc.password,
            phone=phone,
            myIP=acc.local_host,
            myPort=self.local_port,
            callCallback=phone.callback,
            fatalCallback=phone.fatal,
        )
        sip.owner = self
        sip.register_timeout = REGISTER_TIMEOUT  # pyVoIP waits 30 s, three times over
        phone.sip = sip
        try:
            await asyncio.to_thread(phone.start)
        except Exception as exc:
            await _abandon(phone)
            raise SipError(
                f"cannot register {self.aor} from {acc.local_host}:{self.local_port}: {exc}"
            ) from exc
        status = phone.get_status()
        if status != PhoneStatus.REGISTERED:
            await _abandon(phone)
            why = "refused" if status == PhoneStatus.FAILED else "no answer from the registrar"
            raise SipError(f"cannot register {self.aor}: {why}")
        self._phone = phone
        log.info("SIP: registered %s (contact %s:%d)", self.aor, acc.local_host, self.local_port)

    async def stop(self, grace: float = 5.0) -> None:
        """Hang up every call, let their tasks end (`grace` seconds), then unregister."""
        for call in list(self._calls.values()):
            with contextlib.suppress(Exception):
                await call.hangup()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for call in list(self._calls.values()):
            call._release()
        if self._phone is not None:
            phone, self._phone = self._phone, None
            await asyncio.to_thread(phone.stop)

    # -- pyVoIP threads → loop ---------------------------------------------------------------

    def _incoming(self, voip: VoIPCall) -> None:
        """pyVoIP's callback thread, one per call: hand the call to the loop, then hold the
        thread until the call is over (pyVoIP forgets calls whose thread has ended)."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._on_call is None:
            with contextlib.suppress(Exception):
                voip.deny()
            return
        holder: dict[str, SipCall] = {}
        made = threading.Event()

        def create() -> None:
            try:
                call = SipCall(self, voip, loop)
                holder["call"] = call
                self._calls[call.call_id] = call
                if call.call_id in self._cancelled_ids:
                    call._mark_ended("cancelled")
                task = loop.create_task(self._run(call), name=f"sip-call-{call.call_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            finally:
                made.set()

        try:
            loop.call_soon_threadsafe(create)
        except RuntimeError:
            return  # the loop closed meanwhile
        made.wait(10)
        call = holder.get("call")
        if call is not None:
            call._released.wait()

    async def _run(self, call: SipCall) -> None:
        try:
            assert self._on_call is not None
            await self._on_call(call)
        except SipCallEnded:
            pass
        except Exception:
            log.exception("SIP call %s: handler failed", call.call_id)
        finally:
            with contextlib.suppress(Exception):
                await call.hangup()
            self._calls.pop(call.call_id, None)
            self._dialogs.pop(call.call_id, None)
            self._cancelled_ids.discard(call.call_id)
            call._release()

    def _remote_ended(self, call_id: str, reason: str) -> None:
        call = self._calls.get(call_id)
        if call is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(call._mark_ended, reason)

    def _cancelled(self, request: Any) -> None:
        """A CANCEL before we answered: end the call and answer its INVITE 487."""
        call_id = request.headers["Call-ID"]
        dialog = self._dialogs.get(call_id)
        if dialog is not None and dialog.answered:
            return
        self._cancelled_ids.add(call_id)
        voip = self._phone.calls.get(call_id) if self._phone else None
        if voip is not None and self._phone is not None:
            sip = self._phone.sip
            busy = sip.gen_busy(voip.request).replace("486 Busy Here", "487 Request Terminated", 1)
            sip.out.sendto(busy.encode(), (self._phone.server, self._phone.port))
        self._remote_ended(call_id, "cancel")

    def _remember_dialog(self, message: Any) -> None:
        head = bytes(message.raw).partition(b"\r\n\r\n")[0].decode("utf-8", errors="replace")
        call_id = message.headers["Call-ID"]
        if call_id in self._dialogs:
            return  # a re-INVITE: the dialog stands
        contacts = header_values(head, "Contact")
        from_values = header_values(head, "From")
        to_values = header_values(head, "To")
        self._dialogs[call_id] = _Dialog(
            call_id=call_id,
            remote=from_values[0] if from_values else "",
            local=TAG.sub("", to_values[0]) if to_values else "",
            remote_target=uri_of(contacts[0]) if contacts else uri_of(from_values[0]),
            route=header_values(head, "Record-Route"),
        )

    def _intercept(self, head: str, data: bytes) -> bool:
        """Messages pyVoIP cannot take: answers to our BYE/REFER, NOTIFY, OPTIONS, INFO."""
        first = head.split("\r\n", 1)[0]
        cseq = header_values(head, "CSeq")
        method = cseq[0].split()[-1].upper() if cseq else ""
        call_id = (header_values(head, "Call-ID") or [""])[0]
        if first.startswith("SIP/2.0 "):
            if method == "REFER":
                status = status_of(first)
                call = self._calls.get(call_id)
                if status >= 200 and call is not None and self._loop is not None:
                    self._loop.call_soon_threadsafe(_settle, call._refer_answer, status)
                return True
            return method in {"BYE", "NOTIFY", "OPTIONS", "INFO"}
        verb = first.split(" ", 1)[0].upper()
        if verb in {"NOTIFY", "OPTIONS", "INFO"}:
            self._reply_ok(data)
            call = self._calls.get(call_id)
            if call is not None and self._loop is not None:
                body = data.partition(b"\r\n\r\n")[2].decode("utf-8", errors="replace")
                if verb == "NOTIFY" and body.startswith("SIP/2.0 "):
                    self._loop.call_soon_threadsafe(call._notify.put_nowait, status_of(body))
                elif verb == "INFO":
                    signal = re.search(r"(?im)^signal\s*=\s*([0-9*#A-D])", body)
                    if signal:  # DTMF over SIP INFO (application/dtmf-relay), some desk phones
                        self._loop.call_soon_threadsafe(call.digits.put_nowait, signal.group(1))
            return True
        if verb in {"REFER", "SUBSCRIBE", "MESSAGE", "UPDATE", "PRACK", "PUBLISH"}:
            self._reply(data, "501 Not Implemented")
            return True
        return False

    def _reply_ok(self, data: bytes) -> None:
        self._reply(data, "200 OK")

    def _reply(self, data: bytes, status: str) -> None:
        """A response that mirrors the request's Via/From/To/Call-ID/CSeq, sent to its top Via."""
        if self._phone is None:
            return
        head = data.partition(b"\r\n\r\n")[0].decode("utf-8", errors="replace")
        vias = header_values(head, "Via")
        lines = [f"SIP/2.0 {status}"]
        lines += [f"Via: {v}" for v in vias]
        for name in ("From", "To", "Call-ID", "CSeq"):
            for value in header_values(head, name):
                if name == "To" and not TAG.search(value):
                    value += f";tag={secrets.token_hex(4)}"
                lines.append(f"{name}: {value}")
        lines += [f"User-Agent: {self._user_agent}", "Content-Length: 0"]
        target = (self._phone.server, self._phone.port)
        if vias:
            target = via_target(vias[0], target)
        self._phone.sip.out.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), target)

    def _send_in_dialog(self, call_id: str, method: str, extra: str = "") -> None:
        """BYE or REFER inside the call's dialog, routed by its Record-Route set."""
        phone, dialog = self._phone, self._dialogs.get(call_id)
        if phone is None or dialog is None:
            raise SipError(f"no dialog for call {call_id}")
        sip = phone.sip
        with self._lock:
            dialog.cseq += 1
            cseq = dialog.cseq
        tag = dialog.local_tag or sip.tagLibrary.get(call_id, "")
        dialog.local_tag = tag
        me = f"{self.account.local_host}:{self.local_port}"
        lines = [
            f"{method} {dialog.remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP {me};branch=z9hG4bK{secrets.token_hex(8)};rport",
            *(f"Route: {r}" for r in dialog.route),
            "Max-Forwards: 70",
            f"From: {dialog.local};tag={tag}",
            f"To: {dialog.remote}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.account.user}@{me}>",
            f"User-Agent: {self._user_agent}",
        ]
        text = "\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n"
        try:
            target = host_port(uri_of(dialog.route[0]) if dialog.route else dialog.remote_target)
        except ValueError as exc:
            raise SipError(f"call {call_id}: cannot route a {method}: {exc}") from exc
        sip.out.sendto(text.encode(), target)


async def _abandon(phone: _Phone) -> None:
    """Drop a phone that never registered, without trying to unregister it first."""
    sip = cast(_Sip, phone.sip)
    await asyncio.to_thread(sip.stop, unregister=False)


def _settle(future: asyncio.Future[int] | None, status: int) -> None:
    if future is not None and not future.done():
        future.set_result(status)


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


__all__ = [
    "FRAME",
    "SipAccount",
    "SipCall",
    "SipCallEnded",
    "SipError",
    "SipPhone",
]
