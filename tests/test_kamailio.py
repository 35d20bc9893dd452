"""The SIP tests' registrar works: a REGISTER is accepted and an INVITE reaches the
registered contact over UDP; an unknown user gets 404; the WebSocket port upgrades."""

from __future__ import annotations

import base64
import os
import socket

from kamailio import Kamailio, kamailio

__all__ = ["kamailio"]


def _request(method: str, proxy: Kamailio, user: str, port: int, extra: str = "") -> bytes:
    branch = "z9hG4bK" + os.urandom(4).hex()
    return (
        f"{method} sip:{proxy.domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{proxy.domain}>;tag=t{os.urandom(3).hex()}\r\n"
        f"To: <sip:{user}@{proxy.domain}>\r\n"
        f"Call-ID: {os.urandom(6).hex()}@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_register_then_an_invite_reaches_the_contact(kamailio: Kamailio) -> None:
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(5)
    port = phone.getsockname()[1]
    with phone:
        phone.sendto(
            _request("REGISTER", kamailio, "agent1", port, "Expires: 60\r\n"),
            ("127.0.0.1", kamailio.sip_port),
        )
        answer = phone.recv(4096)
        assert answer.startswith(b"SIP/2.0 200"), answer

        caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        caller.bind(("127.0.0.1", 0))
        caller.settimeout(5)
        with caller:
            invite = _request("INVITE", kamailio, "agent1", caller.getsockname()[1])
            invite = invite.replace(
                f"INVITE sip:{kamailio.domain}".encode(),
                f"INVITE sip:agent1@{kamailio.domain}".encode(),
            )
            caller.sendto(invite, ("127.0.0.1", kamailio.sip_port))
            relayed = phone.recv(4096)
            assert relayed.startswith(f"INVITE sip:agent1@127.0.0.1:{port}".encode()), relayed

            unknown = _request("INVITE", kamailio, "nobody", caller.getsockname()[1])
            unknown = unknown.replace(
                f"INVITE sip:{kamailio.domain}".encode(),
                f"INVITE sip:nobody@{kamailio.domain}".encode(),
            )
            caller.sendto(unknown, ("127.0.0.1", kamailio.sip_port))
            replies = [caller.recv(4096)]
            while not replies[-1].startswith(b"SIP/2.0 404"):
                replies.append(caller.recv(4096))  # 100 Trying of the first INVITE first


def test_the_websocket_port_speaks_sip_over_websocket(kamailio: Kamailio) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", kamailio.ws_port), timeout=5) as ws:
        ws.sendall(
            (
                "GET / HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{kamailio.ws_port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: sip\r\n\r\n"
            ).encode()
        )
        head = ws.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"sip" in head.lower()
