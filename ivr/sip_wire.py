"""SIP message text: what pyVoIP 1.6.8's parser can take, and the few header readings our
own requests and answers need (RFC 3261 syntax, as much as a UDP user agent meets).

pyVoIP splits each header line on ": " and keeps the first header of each name only: an
empty header (`Supported:`), `Name:value` without the space or a compact name (`v:`, `i:`)
makes it drop the whole message. `normalise_message` rewrites a datagram into the shape it
parses; the mystery caller's wrapper can take it too.
"""

from __future__ import annotations

import re

_COMPACT = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
}
# pyVoIP looks headers up by these exact spellings.
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "Record-Route",
        "Route",
        "Supported",
        "Allow",
        "WWW-Authenticate",
        "Authorization",
        "Event",
        "Subscription-State",
        "Refer-To",
    )
}
_URI_HOSTPORT = re.compile(r"sips?:(?:[^@;>]*@)?([^:;>]+)(?::(\d+))?")
TAG = re.compile(r";\s*tag=([^;>\s]+)")


def normalise_message(raw: bytes) -> bytes:
    """Rewrite a SIP message so pyVoIP's parser takes it: unfolded lines, full header names in
    pyVoIP's spelling, `Name: value` with one space, no empty headers, one Via per line."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    out = [lines[0]]
    headers: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            headers[-1] += " " + line.strip()  # folded continuation (RFC 3261 7.3.1)
        else:
            headers.append(line)
    for line in headers:
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not name or not value:
            continue  # `Supported:` with nothing after it: pyVoIP would drop the message
        name = _COMPACT.get(name, name) if len(name) == 1 else name
        name = _CANONICAL.get(name.lower(), name)
        if name == "Via":
            out.extend(f"Via: {part.strip()}" for part in value.split(",") if part.strip())
        else:
            out.append(f"{name}: {value}")
    return "\r\n".join(out).encode() + (sep or b"\r\n\r\n") + body


def header_values(head: str, name: str) -> list[str]:
    """Every value of a header (several lines or comma lists), in order; `head` normalised."""
    values: list[str] = []
    prefix = name.lower() + ":"
    for line in head.split("\r\n")[1:]:
        if line.lower().startswith(prefix):
            values.extend(v.strip() for v in split_uri_list(line[len(prefix) :]))
    return values


def split_uri_list(value: str) -> list[str]:
    """`<a;lr>, <b;lr>` → two entries (commas inside <> kept)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(value):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p for p in (p.strip() for p in parts) if p]


def uri_of(value: str) -> str:
    """The URI of a name-addr (`"x" <sip:a@b>;tag=1` → `sip:a@b`) or of a bare addr-spec."""
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0]
    return value.split(";", 1)[0].strip()


def host_port(uri: str) -> tuple[str, int]:
    match = _URI_HOSTPORT.search(uri)
    if not match:
        raise ValueError(f"not a SIP URI: {uri!r}")
    return match.group(1), int(match.group(2) or 5060)


def status_of(head: str) -> int:
    parts = head.split(" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def uri_escape(value: str) -> str:
    return "".join(
        ch if ch.isalnum() or ch in "-_.!~*'()[]/:+$" else "".join(f"%{b:02X}" for b in ch.encode())
        for ch in value
    )


def via_target(via: str, default: tuple[str, int]) -> tuple[str, int]:
    """Where a response goes (RFC 3261 18.2.2 / RFC 3581): received/rport, else sent-by."""
    match = re.match(r"SIP/2\.0/\w+\s+([^;:\s]+)(?::(\d+))?", via)
    if not match:
        return default
    host, port = match.group(1), int(match.group(2) or 5060)
    received = re.search(r";received=([^;\s]+)", via)
    rport = re.search(r";rport=(\d+)", via)
    return (received.group(1) if received else host, int(rport.group(1)) if rport else port)
