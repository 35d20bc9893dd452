"""The probe's SIP caller: pyVoIP 1.6 behind a small asyncio interface, its faults worked around.

pyVoIP is thread-based (a SIP receive thread, two threads per RTP stream); we run its blocking
calls in worker threads and hand its events to the event loop with ``call_soon_threadsafe``.

pyVoIP 1.6.8 faults met by a caller, and what this module does about each:

- ``pyVoIP.SIP`` imported before ``pyVoIP.VoIP`` fails on a circular import: VoIP is imported
  first below.
- Its header parser splits each line on ``": "``: an empty header (``Supported:``), a header
  without the space, a compact form (``i:`` for Call-ID) or another capitalisation
  (``Call-Id``) raises inside the parser and the whole message (an INVITE, a 200 OK) is
  silently dropped. The SIP socket cleans every datagram first
  (`ivr.sip_wire.normalise_message`, shared with the IVR's SIP leg).
- Its INVITE carries ``From: sip:user@<local IP>`` and no ``rport``; its ACK for a 2xx goes to
  the To URI with a fresh To tag and no Route (a record-routing proxy such as Kamailio drops
  it, and the callee hangs up after 32 s); its BYE has no Route either and reuses the INVITE's
  branch. We build INVITE, ACK and BYE ourselves from the dialog (remote target, tags,
  route set from Record-Route).
- ``VoIPPhone.call`` blocks reading the socket under the receive lock until a provisional
  response arrives, and registers the call only afterwards: a quick 200 OK is dropped (and
  answered 0.5 s late on retransmission); a silent proxy hangs it forever, and ``stop()`` then
  deadlocks on that lock. We register the call first and send without waiting.
- Final failures other than 404/503 (486 Busy, 480, 603...) are ignored: the call stays
  DIALING forever with no ACK. We ACK them and end the call.
- It cannot send DTMF: our RTP client sends RFC 4733 telephone-events.
- Its audio is 8 kHz mono 8-bit *unsigned* (``audioop.bias(..., 128)``), placed by RTP
  timestamp in a buffer read with silence padding; we keep pyVoIP's decoding but record into
  our own timeline (`Recorder`), and `Recorder.pcm16` biases the samples back to signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyVoIP.VoIP  # must come before pyVoIP.SIP (circular import in 1.6)
from pyVoIP import RTP, SIP
from pyVoIP.util import acquired_lock_and_unblocked_socket
from pyVoIP.VoIP import CallState, VoIPCall, VoIPPhone
from pyVoIP.VoIP.status import PhoneStatus

from ivr.sip_wire import header_values, normalise_message, uri_of

RATE = 8000
FRAME = 160  # samples per 20 ms packet
SILENCE_U8 = 0x80
LOUD = 3.0  # mean |sample| (8-bit units) above which a packet counts as sound, about -32 dBFS
DTMF_ON_PACKETS = 8  # 160 ms tone
DTMF_END_PACKETS = 3  # the end packet, sent three times (RFC 4733 2.5.1.4)
DTMF_EVENTS = "0123456789*#ABCD"
_UNBIAS = bytes(b ^ 0x80 for b in range(256))  # unsigned 8-bit -> signed high byte


def _values(raw: bytes, name: str) -> list[str]:
    """Every value of header ``name`` in a raw message (normalised first)."""
    head = normalise_message(raw).partition(b"\r\n\r\n")[0].decode("utf-8", "replace")
    return header_values(head, name)


class _CleanSocket(socket.socket):
    """pyVoIP's SIP socket: every datagram read goes through `normalise_message`."""

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        return normalise_message(super().recv(bufsize, flags))


def local_ip_towards(host: str, port: int) -> str:
    """The local address the kernel would use to reach ``host`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return str(probe.getsockname()[0])


def _free_udp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((ip, 0))
        return int(probe.getsockname()[1])


@dataclass
class _Dialog:
    """What an in-dialog request needs, learnt from our INVITE and the callee's 2xx."""

    request_uri: str
    from_header: str  # with our tag
    to_header: str  # the remote tag once answered
    cseq: int
    remote_target: str | None = None
    route: tuple[str, ...] = ()


class Recorder:
    """What the probe hears, on one timeline from the moment the call was answered.

    pyVoIP's RTP thread calls `write(rtp_timestamp, unsigned 8-bit samples)` (in place of its
    own buffer). Packets are placed by RTP timestamp relative to the packet that opened the
    stream; a new stream (timestamp jump) is anchored at its arrival time.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.origin: float | None = None
        self._u8 = bytearray()
        self._anchor: tuple[int, int] | None = None  # (rtp timestamp, sample position)
        self._next_ts = 0
        self.last_sound: float | None = None  # monotonic time of the last loud packet
        self.first_sound: float | None = None

    def start(self, origin: float) -> None:
        with self._lock:
            self.origin = origin

    def write(self, offset: int, data: bytes) -> None:
        now = self._clock()
        with self._lock:
            if self.origin is None:
                self.origin = now
            if self._anchor is None or abs(offset - self._next_ts) > 2 * RATE:
                start = int((now - self.origin) * RATE) - len(data)
                self._anchor = (offset, max(start, 0))
            pos = self._anchor[1] + (offset - self._anchor[0])
            self._next_ts = offset + len(data)
            if pos < 0:
                return
            end = pos + len(data)
            if end > len(self._u8):
                self._u8.extend(bytes([SILENCE_U8]) * (end - len(self._u8)))
            self._u8[pos:end] = data
            if data and sum(abs(b - SILENCE_U8) for b in data) / len(data) > LOUD:
                self.last_sound = now
                if self.first_sound is None:
                    self.first_sound = now

    def read(self, length: int = FRAME) -> bytes:
        """pyVoIP's buffer interface; the probe never reads the live stream."""
        return bytes([SILENCE_U8]) * length

    def pcm16(self, start_s: float = 0.0, end_s: float | None = None) -> bytes:
        """What was heard from ``start_s`` to ``end_s`` (seconds after the answer) as signed
        16-bit little-endian samples: pyVoIP's are unsigned 8-bit, so the bias is undone
        (``(u8 - 128) << 8``: the high byte is ``u8 ^ 0x80``, the low byte 0)."""
        with self._lock:
            first = max(0, int(start_s * RATE))
            last = len(self._u8) if end_s is None else max(first, int(end_s * RATE))
            data = bytes(self._u8[first:last])
        out = bytearray(2 * len(data))
        out[1::2] = data.translate(_UNBIAS)
        return bytes(out)

    @property
    def seconds(self) -> float:
        with self._lock:
            return len(self._u8) / RATE


class _RtpClient(RTP.RTPClient):
    """pyVoIP's RTP client recording into a `Recorder` and able to send RFC 4733 DTMF."""

    def __init__(self, *args: Any, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pmin = recorder  # type: ignore[assignment]
        self._digits: deque[str] = deque()
        self._current: tuple[str, int] | None = None  # (digit, start timestamp)
        self._sent = 0
        self.event_pt = next(
            (pt for pt, kind in self.assoc.items() if kind == RTP.PayloadType.EVENT), None
        )

    def queue_dtmf(self, digit: str) -> None:
        self._digits.append(digit)

    @property
    def dtmf_idle(self) -> bool:
        return not self._digits and self._current is None

    def _event_payload(self) -> tuple[bytes, bool, int] | None:
        if self._current is None:
            if not self._digits:
                return None
            self._current = (self._digits.popleft(), self.outTimestamp)
            self._sent = 0
        digit, start = self._current
        self._sent += 1
        ending = self._sent > DTMF_ON_PACKETS
        duration = FRAME * min(self._sent, DTMF_ON_PACKETS)
        flags = 0x80 if ending else 0x00
        payload = bytes([DTMF_EVENTS.index(digit), flags | 10]) + duration.to_bytes(2, "big")
        if self._sent >= DTMF_ON_PACKETS + DTMF_END_PACKETS:
            self._current = None
        return payload, self._sent == 1, start

    def trans(self) -> None:  # pyVoIP's loop, with telephone-events interleaved
        while self.NSD:
            last_sent = time.monotonic_ns()
            event = self._event_payload() if self.event_pt is not None else None
            if event is not None:
                payload, marker, timestamp = event
                pt = (self.event_pt or 0) | (0x80 if marker else 0)
            else:
                payload = self.encode_packet(self.pmout.read())
                pt, timestamp = int(self.preference), self.outTimestamp
            packet = (
                b"\x80"
                + bytes([pt])
                + (self.outSequence % 65536).to_bytes(2, "big")
                + (timestamp % 2**32).to_bytes(4, "big")
                + self.outSSRC.to_bytes(4, "big")
                + payload
            )
            with contextlib.suppress(OSError):
                self.sout.sendto(packet, (self.outIP, self.outPort))
            self.outSequence += 1
            self.outTimestamp += FRAME
            elapsed = (time.monotonic_ns() - last_sent) / 1e9
            time.sleep(max(0.0, FRAME / RATE - elapsed))


class _Call(VoIPCall):
    """pyVoIP's call, stamping when it was answered or ended and recording what it hears."""

    recorder: Recorder
    on_state: Callable[[], None]
    invited_at: float = 0.0
    answered_at: float | None = None
    ended_at: float | None = None
    failure: str | None = None

    def create_rtp_clients(
        self,
        codecs: dict[int, RTP.PayloadType],
        ip: str,
        port: int,
        request: SIP.SIPMessage,
        baseport: int,
    ) -> None:
        for i in range(len(request.body["c"])):
            self.RTPClients.append(
                _RtpClient(
                    codecs,
                    ip,
                    port,
                    request.body["c"][i]["address"],
                    baseport + i,
                    self.sendmode,
                    dtmf=self.dtmf_callback,
                    recorder=self.recorder,
                )
            )

    def answered(self, request: SIP.SIPMessage) -> None:
        if self.state != CallState.DIALING:
            return
        now = time.monotonic()
        self.recorder.start(now)
        super().answered(request)
        self.answered_at = now
        self.on_state()

    def bye(self) -> None:
        super().bye()
        self.state = CallState.ENDED
        self._ended("remote hung up")

    def failed(self, reason: str) -> None:
        for client in self.RTPClients:
            client.stop()
        self.state = CallState.ENDED
        self.phone.calls.pop(self.call_id, None)
        self._ended(reason)

    def _ended(self, reason: str) -> None:
        if self.ended_at is None:
            self.ended_at = time.monotonic()
            self.failure = self.failure or reason
        self.on_state()


class _SipClient(SIP.SIPClient):
    """pyVoIP's SIP client with our INVITE/ACK/BYE, cleaned input and no blocking invite."""

    def __init__(self, *args: Any, domain: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.domain = domain
        self.dialogs: dict[str, _Dialog] = {}
        self.invites: dict[str, str] = {}  # call id -> the INVITE text (for re-sending with auth)
        self.on_invite: Callable[[str, SIP.SIPMessage, int], None] | None = None
        self.on_failure: Callable[[str, str], None] | None = None

    def start(self) -> None:
        """Bind, register once (raising when that fails: pyVoIP's `register` swallows the
        error and retries from a timer), then re-register on pyVoIP's timer and receive."""
        if self.NSD:
            raise RuntimeError("already started")
        self.NSD = True
        self.s = _CleanSocket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((self.myIP, self.myPort))
        self.myPort = int(self.s.getsockname()[1])  # port 0 asked: Contact must say the real one
        self.out = self.s
        try:
            with self.recvLock:
                registered = self._SIPClient__register()  # type: ignore[attr-defined]
            if not registered:
                raise ConnectionError("the registrar refused the registration")
        except BaseException:
            self.NSD = False
            self._close_sockets()
            raise
        finally:
            with contextlib.suppress(OSError):
                self.s.setblocking(True)
        self.phone._status = PhoneStatus.REGISTERED
        self._SIPClient__start_register_timer()  # type: ignore[attr-defined]
        threading.Thread(target=self.recv_loop, name="probe SIP receive", daemon=True).start()

    def recv_loop(self) -> None:
        """pyVoIP's loop, ending quietly when `stop` closes the socket under it."""
        while self.NSD:
            try:
                with acquired_lock_and_unblocked_socket(self.recvLock, self.s):
                    self.recv()
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                if not self.NSD:
                    return
                time.sleep(0.01)

    def stop(self) -> None:
        if not self.NSD:
            return
        self.NSD = False
        if self.registerThread:
            self.registerThread.cancel()
        if self.recvLock.acquire(timeout=2):  # never deadlock on a receive that hangs
            self.recvLock.release()
            with contextlib.suppress(Exception):
                self.deregister()
        self._close_sockets()

    def _uri(self, target: str) -> str:
        return target if target.startswith(("sip:", "sips:")) else f"sip:{target}@{self.domain}"

    def _via(self) -> str:
        branch = f"z9hG4bK{secrets.token_hex(10)}"
        return f"Via: SIP/2.0/UDP {self.myIP}:{self.myPort};branch={branch};rport\r\n"

    def gen_invite(
        self,
        number: str,
        sess_id: str,
        ms: dict[int, dict[str, RTP.PayloadType]],
        sendtype: RTP.TransmitType,
        branch: str,
        call_id: str,
    ) -> str:
        uri = self._uri(number)
        body = (
            "v=0\r\n"
            f"o=guichet-probe {sess_id} {int(sess_id) + 2} IN IP4 {self.myIP}\r\n"
            "s=guichet probe\r\n"
            f"c=IN IP4 {self.myIP}\r\n"
            "t=0 0\r\n"
        )
        for port, codecs in ms.items():
            body += f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt in codecs)}\r\n"
            for pt, kind in codecs.items():
                body += f"a=rtpmap:{pt} {kind}/{kind.rate}\r\n"
                if kind == RTP.PayloadType.EVENT:
                    body += f"a=fmtp:{pt} 0-15\r\n"
        body += f"a=ptime:20\r\na={sendtype}\r\n"
        tag = self.gen_tag()
        self.tagLibrary[call_id] = tag
        cseq = self.inviteCounter.next()
        from_header = f"<sip:{self.username}@{self.domain}>;tag={tag}"
        self.dialogs[call_id] = _Dialog(uri, from_header, f"<{uri}>", cseq)
        return (
            f"INVITE {uri} SIP/2.0\r\n" + self._via() + "Max-Forwards: 70\r\n"
            f"Contact: <sip:{self.username}@{self.myIP}:{self.myPort}>\r\n"
            f"To: <{uri}>\r\n"
            f"From: {from_header}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} INVITE\r\n"
            "Allow: INVITE, ACK, BYE, CANCEL\r\n"
            "Content-Type: application/sdp\r\n"
            "User-Agent: Guichet probe (pyVoIP)\r\n"
            f"Content-Length: {len(body)}\r\n\r\n" + body
        )

    def invite(
        self,
        number: str,
        ms: dict[int, dict[str, RTP.PayloadType]],
        sendtype: RTP.TransmitType,
    ) -> tuple[SIP.SIPMessage, str, int]:
        call_id = self.gen_call_id()
        sess_id = self.sessID.next()
        text = self.gen_invite(number, str(sess_id), ms, sendtype, "", call_id)
        message = SIP.SIPMessage(text.encode("utf8"))
        self.invites[call_id] = text
        if self.on_invite is not None:  # the call exists before any answer can arrive
            self.on_invite(call_id, message, sess_id)
        call = self.phone.calls.get(call_id)
        if isinstance(call, _Call):
            call.invited_at = time.monotonic()
        self.out.sendto(text.encode("utf8"), (self.server, self.port))
        return message, call_id, sess_id

    def cancel(self, call_id: str) -> None:
        """CANCEL a ringing INVITE (pyVoIP has none): same Via branch, request URI, CSeq."""
        text = self.invites.get(call_id)
        if text is None:
            return
        keep = ("via:", "from:", "to:", "call-id:", "max-forwards:")
        lines = text.partition("\r\n\r\n")[0].split("\r\n")
        uri = lines[0].split(" ")[1]
        cseq = next(line for line in lines if line.lower().startswith("cseq:")).split()[1]
        headers = [line for line in lines[1:] if line.lower().startswith(keep)]
        cancel = (
            f"CANCEL {uri} SIP/2.0\r\n"
            + "".join(f"{h}\r\n" for h in headers)
            + f"CSeq: {cseq} CANCEL\r\nContent-Length: 0\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            self.out.sendto(cancel.encode("utf8"), (self.server, self.port))

    def gen_ack(self, request: SIP.SIPMessage) -> str:
        call_id = request.headers["Call-ID"]
        dialog = self.dialogs.get(call_id)
        if dialog is None:
            return str(super().gen_ack(request))
        to_header = _values(request.raw, "To")
        to_value = ",".join(to_header) if to_header else dialog.to_header
        cseq = request.headers["CSeq"]["check"]
        if int(request.status) < 300:
            dialog.to_header = to_value
            contact = _values(request.raw, "Contact")
            dialog.remote_target = uri_of(contact[0]) if contact else dialog.request_uri
            dialog.route = tuple(reversed(_values(request.raw, "Record-Route")))
            via, target = self._via(), dialog.remote_target
            routes = "".join(f"Route: {r}\r\n" for r in dialog.route)
        else:  # a non-2xx ACK is hop-by-hop, on the INVITE's own transaction (branch)
            top = request.raw.partition(b"\r\n\r\n")[0].decode("utf-8", "replace")
            via_line = next(
                (line for line in top.split("\r\n") if line.lower().startswith("via:")), ""
            )
            via, target, routes = via_line + "\r\n", dialog.request_uri, ""
        return (
            f"ACK {target} SIP/2.0\r\n" + via + routes + "Max-Forwards: 70\r\n"
            f"From: {dialog.from_header}\r\n"
            f"To: {to_value}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} ACK\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    def gen_bye(self, request: SIP.SIPMessage) -> str:
        call_id = request.headers["Call-ID"]
        dialog = self.dialogs.get(call_id)
        if dialog is None or dialog.remote_target is None:
            return str(super().gen_bye(request))
        dialog.cseq += 1
        return (
            f"BYE {dialog.remote_target} SIP/2.0\r\n"
            + self._via()
            + "".join(f"Route: {r}\r\n" for r in dialog.route)
            + "Max-Forwards: 70\r\n"
            f"From: {dialog.from_header}\r\n"
            f"To: {dialog.to_header}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {dialog.cseq} BYE\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    def gen_ok(self, request: SIP.SIPMessage) -> str:
        """pyVoIP puts a new random To tag in its 200 OK to a BYE; echo the dialog's."""
        text = str(super().gen_ok(request))
        to = _values(request.raw, "To")
        if to:
            text = re.sub(r"(?m)^To: .*\r\n", lambda _m: f"To: {','.join(to)}\r\n", text, count=1)
        return text

    def parse_message(self, message: SIP.SIPMessage) -> None:
        if message.type == SIP.SIPMessageType.RESPONSE:
            call_id = message.headers.get("Call-ID", "")
            status = int(message.status)
            is_invite = message.headers.get("CSeq", {}).get("method") == "INVITE"
            if is_invite and call_id in self.invites and status >= 300:
                self.out.sendto(self.gen_ack(message).encode("utf8"), (self.server, self.port))
                if status in (401, 407) and self._retry_with_auth(message, call_id):
                    return
                if self.on_failure is not None:
                    self.on_failure(call_id, f"{status} {message.status.phrase}")
                return
            if not is_invite:  # pyVoIP takes a 200 to our BYE for an answer, and ACKs it
                return
        super().parse_message(message)

    def _retry_with_auth(self, challenge: SIP.SIPMessage, call_id: str) -> bool:
        """Digest for INVITE (pyVoIP's hashes a REGISTER-style URI and ignores 407)."""
        header = "WWW-Authenticate" if int(challenge.status) == 401 else "Proxy-Authenticate"
        values = _values(challenge.raw, header)
        text = self.invites.get(call_id, "")
        if not values or not self.password or "Authorization:" in text:
            return False
        fields = dict(re.findall(r'(\w+)="?([^",]+)"?', ",".join(values)))
        uri = text.split(" ", 2)[1]
        ha1 = hashlib.md5(f"{self.username}:{fields['realm']}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"INVITE:{uri}".encode()).hexdigest()
        digest = hashlib.md5(f"{ha1}:{fields['nonce']}:{ha2}".encode()).hexdigest()
        auth = (
            f"{'Authorization' if header == 'WWW-Authenticate' else 'Proxy-Authorization'}: "
            f'Digest username="{self.username}", realm="{fields["realm"]}", '
            f'nonce="{fields["nonce"]}", uri="{uri}", response="{digest}", algorithm=MD5\r\n'
        )
        dialog = self.dialogs[call_id]
        dialog.cseq += 1
        text = re.sub(r"(?m)^CSeq: \d+ INVITE", f"CSeq: {dialog.cseq} INVITE", text)
        text = re.sub(r"(?m)^Via: [^\r]*", self._via().rstrip("\r\n"), text, count=1)
        text = text.replace("\r\nContent-Type", f"\r\n{auth}Content-Type", 1)
        self.invites[call_id] = text
        self.out.sendto(text.encode("utf8"), (self.server, self.port))
        return True


@dataclass(frozen=True)
class SipAccount:
    """Where and as whom the probe registers. ``user`` is the probe's caller number."""

    server: str
    port: int
    user: str
    password: str = ""
    domain: str | None = None  # defaults to server:port
    local_ip: str | None = None  # defaults to the address towards the server
    sip_port: int = 0  # 0: any free port
    rtp_low: int = 10000
    rtp_high: int = 20000


class _Phone(VoIPPhone):
    """pyVoIP's phone with our SIP client and calls registered before the INVITE leaves."""

    def __init__(self, account: SipAccount, local_ip: str) -> None:
        super().__init__(
            account.server,
            account.port,
            account.user,
            account.password,
            myIP=local_ip,
            sipPort=account.sip_port,
            rtpPortLow=account.rtp_low,
            rtpPortHigh=account.rtp_high,
        )
        self.sip = _SipClient(
            account.server,
            account.port,
            account.user,
            account.password,
            phone=self,
            myIP=local_ip,
            myPort=account.sip_port,
            callCallback=self.callback,
            fatalCallback=self.fatal,
            domain=account.domain or f"{account.server}:{account.port}",
        )
        self._pending: tuple[dict[int, dict[int, RTP.PayloadType]], Recorder, Callable[[], None]]
        self.sip.on_failure = self._failed

    def request_port(self, blocking: bool = True) -> int:
        """A port actually free (pyVoIP picks at random without trying to bind)."""
        for _ in range(50):
            port = secrets.randbelow(self.rtpPortHigh - self.rtpPortLow + 1) + self.rtpPortLow
            if port in self.assignedPorts:
                continue
            with (
                contextlib.suppress(OSError),
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
            ):
                s.bind((self.myIP, port))
                self.assignedPorts.append(port)
                return int(port)
        raise pyVoIP.VoIP.NoPortsAvailableError("no free RTP port")

    def place(self, target: str, recorder: Recorder, on_state: Callable[[], None]) -> _Call:
        port = self.request_port()
        medias = {port: {0: RTP.PayloadType.PCMU, 101: RTP.PayloadType.EVENT}}
        self._pending = (medias, recorder, on_state)
        assert isinstance(self.sip, _SipClient)
        self.sip.on_invite = self._prepare
        _request, call_id, _sess = self.sip.invite(target, medias, RTP.TransmitType.SENDRECV)  # type: ignore[arg-type]
        call = self.calls[call_id]
        assert isinstance(call, _Call)
        return call

    def _prepare(self, call_id: str, request: SIP.SIPMessage, sess_id: int) -> None:
        medias, recorder, on_state = self._pending
        call = _Call(  # pyVoIP annotates ms as one codec map; it takes one per port
            self,
            CallState.DIALING,
            request,
            sess_id,
            self.myIP,
            ms=medias,  # type: ignore[arg-type]
            sendmode=self.sendmode,
        )
        call.recorder = recorder
        call.on_state = on_state
        self.calls[call_id] = call

    def _failed(self, call_id: str, reason: str) -> None:
        call = self.calls.get(call_id)
        if isinstance(call, _Call):
            call.failed(reason)


class OutboundCall:
    """One call placed by `SipCaller`: awaitable states, DTMF, hang-up, the recording."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.recorder = Recorder()
        self._created = time.monotonic()
        self._changed = asyncio.Event()
        self._call: _Call | None = None
        self._sip: _SipClient | None = None

    @property
    def invited_at(self) -> float:
        """When the INVITE left (monotonic seconds)."""
        return self._call.invited_at if self._call and self._call.invited_at else self._created

    def _notify(self) -> None:  # from pyVoIP's threads
        self._loop.call_soon_threadsafe(self._changed.set)

    @property
    def answered_at(self) -> float | None:
        return self._call.answered_at if self._call else None

    @property
    def ended_at(self) -> float | None:
        return self._call.ended_at if self._call else None

    @property
    def failure(self) -> str | None:
        return self._call.failure if self._call else None

    async def _until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = self._loop.time() + timeout
        while not done():
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
        return True

    async def wait_answered(self, timeout: float) -> bool:
        """True once answered; False on timeout or when the call failed first."""
        await self._until(
            lambda: self.answered_at is not None or self.ended_at is not None, timeout
        )
        return self.answered_at is not None

    async def wait_ended(self, timeout: float) -> bool:
        return await self._until(lambda: self.ended_at is not None, timeout)

    async def send_dtmf(self, digits: str, gap: float = 0.25) -> None:
        """RFC 4733 events, one digit after the other with ``gap`` seconds between."""
        if self._call is None or self.ended_at is not None:
            raise RuntimeError("the call is not up")
        clients = [c for c in self._call.RTPClients if isinstance(c, _RtpClient)]
        if not clients or clients[0].event_pt is None:
            raise RuntimeError("the callee did not accept telephone-event (RFC 4733)")
        for digit in digits:
            if digit.upper() not in DTMF_EVENTS:
                raise ValueError(f"not a DTMF digit: {digit!r}")
            clients[0].queue_dtmf(digit.upper())
            await self._until(lambda: clients[0].dtmf_idle or self.ended_at is not None, 5)
            await asyncio.sleep(gap)

    async def hangup(self) -> None:
        call = self._call
        if call is None or call.ended_at is not None:
            return
        if call.state == CallState.ANSWERED:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(call.hangup)
        elif call.state == CallState.DIALING and self._sip is not None:
            await asyncio.to_thread(self._sip.cancel, call.call_id)
        call.failed("probe hung up")


class SipCaller:
    """A registered SIP user agent that places calls (the probe's phone)."""

    def __init__(self, account: SipAccount) -> None:
        self.account = account
        local_ip = account.local_ip or local_ip_towards(account.server, account.port)
        self._phone = _Phone(account, local_ip)

    async def start(self, timeout: float = 10.0) -> None:
        """Register; raises on failure or when the registrar does not answer in time."""
        self._phone.sip.register_timeout = max(1, int(timeout))
        where = f"{self.account.user} at {self.account.server}:{self.account.port}"
        try:
            await asyncio.wait_for(asyncio.to_thread(self._phone.start), timeout + 1)
        except Exception as exc:
            await self.stop()
            raise ConnectionError(f"registration as {where} failed: {exc}") from exc
        if self._phone.get_status() != PhoneStatus.REGISTERED:
            await self.stop()
            raise ConnectionError(f"registration as {where} failed")

    async def call(self, target: str) -> OutboundCall:
        outbound = OutboundCall(asyncio.get_running_loop())
        assert isinstance(self._phone.sip, _SipClient)
        outbound._sip = self._phone.sip
        outbound._call = await asyncio.to_thread(
            self._phone.place, target, outbound.recorder, outbound._notify
        )
        return outbound

    async def stop(self) -> None:
        await asyncio.to_thread(self._phone.stop)


__all__ = ["OutboundCall", "Recorder", "SipAccount", "SipCaller", "local_ip_towards"]
