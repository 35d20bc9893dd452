"""A real Kamailio (Debian's) as the SIP registrar and proxy of the SIP tests, on loopback.

One process per test (module `kamailio_proxy` context manager, or the `kamailio` fixture):
UDP and TCP SIP on one free port, SIP over WebSocket (RFC 7118, what JsSIP speaks) on
another, an in-memory location table. Anyone may REGISTER (no authentication: a test
registrar); INVITEs to a registered user are relayed to their contact, WebSocket contacts
included (`nathelper` aliases, as Kamailio's own WebRTC examples do), and a request for an
unregistered user gets 404.

Kamailio cannot bind port 0, so free ports are found first (bind, read, close) and a start
that loses the race is retried on new ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
HOST = "127.0.0.1"

CONFIG = """#!KAMAILIO
debug=1
log_stderror=yes
memdbg=5
memlog=5
children=2
tcp_children=2
disable_tcp=no
tcp_accept_no_cl=yes
auto_aliases=no
listen=udp:{host}:{sip}
listen=tcp:{host}:{sip}
listen=tcp:{host}:{ws}
alias="{host}:{sip}"

mpath="{modules}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "nathelper.so"
loadmodule "xhttp.so"
loadmodule "websocket.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("rr", "enable_double_rr", 1)
modparam("nathelper|registrar", "received_avp", "$avp(RECEIVED)")
modparam("websocket", "keepalive_mechanism", 0)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (nat_uac_test(64)) {{
        force_rport();
        if (is_method("REGISTER")) {{
            fix_nated_register();
        }} else if (!add_contact_alias()) {{
            sl_send_reply("400", "Bad Contact");
            exit;
        }}
    }}
    if (is_method("REGISTER")) {{
        save("location");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            if (!handle_ruri_alias()) {{
                sl_send_reply("400", "Bad Request-URI");
                exit;
            }}
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    t_check_trans();
    if (is_method("INVITE|SUBSCRIBE|MESSAGE|REFER")) {{
        record_route();
    }}
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Found");
        exit;
    }}
    if (!handle_ruri_alias()) {{
        sl_send_reply("400", "Bad Request-URI");
        exit;
    }}
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

onreply_route {{
    if (nat_uac_test(64)) {{
        add_contact_alias();
    }}
}}

event_route[xhttp:request] {{
    if ($Rp != {ws}) {{
        xhttp_reply("403", "Forbidden", "", "");
        exit;
    }}
    if ($hdr(Upgrade) =~ "websocket" && $hdr(Connection) =~ "Upgrade" && $rm =~ "GET") {{
        if (ws_handle_handshake()) {{
            exit;
        }}
    }}
    xhttp_reply("404", "Not Found", "", "");
}}
"""


@dataclass(frozen=True)
class Kamailio:
    host: str
    sip_port: int  # UDP and TCP
    ws_port: int  # SIP over WebSocket, ws://host:ws_port/
    log: Path

    @property
    def domain(self) -> str:
        return f"{self.host}:{self.sip_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}/"

    def aor(self, user: str) -> str:
        return f"sip:{user}@{self.domain}"

    def log_tail(self) -> str:
        """The end of Kamailio's own log, for failure messages."""
        return self.log.read_text(errors="replace")[-4000:]


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _free_ports() -> tuple[int, int]:
    """One port free for both UDP and TCP, and one more for TCP."""
    while True:
        port = _free_port(socket.SOCK_DGRAM)
        with contextlib.suppress(OSError), socket.socket() as tcp:
            tcp.bind((HOST, port))
            break
    ws = _free_port(socket.SOCK_STREAM)
    return port, ws


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def kamailio_proxy(attempts: int = 3) -> Iterator[Kamailio]:
    """Start Kamailio on free loopback ports; stop it (and its children) afterwards."""
    if not Path(KAMAILIO).exists():
        pytest.fail(
            "Kamailio is missing: apt-get install kamailio kamailio-websocket-modules "
            "(scripts/test.sh installs them)",
            pytrace=False,
        )
    with tempfile.TemporaryDirectory(prefix="guichet-kamailio-") as tmp:
        folder = Path(tmp)
        for _attempt in range(attempts):
            sip, ws = _free_ports()
            cfg = folder / "kamailio.cfg"
            cfg.write_text(CONFIG.format(host=HOST, sip=sip, ws=ws, modules=MODULES))
            log = folder / "kamailio.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [
                        KAMAILIO,
                        "-f", str(cfg),
                        "-DD",  # foreground, with its child processes
                        "-E",  # log to stderr
                        "-m", "64",
                        "-M", "8",
                        "-Y", str(folder),  # runtime dir (control sockets)
                        "-P", str(folder / "kamailio.pid"),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and process.poll() is None:
                if _listening(sip) and _listening(ws):
                    break
                time.sleep(0.05)
            if process.poll() is None and _listening(ws):
                try:
                    yield Kamailio(HOST, sip, ws, log)
                finally:
                    _stop(process)
                return
            _stop(process)
        pytest.fail(f"Kamailio did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@pytest.fixture
def kamailio() -> Iterator[Kamailio]:
    with kamailio_proxy() as proxy:
        yield proxy
