"""The AMI stand-in for Asterisk now lives in the package (`guichet.replay.ami_server`),
shared with the demo PBX; this module keeps the tests' imports working, and fails a test
clearly when the recordings are missing (the suite's claims about Asterisk rest on them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from guichet.replay import ami_server
from guichet.replay.agi_caller import transcripts_dir
from guichet.replay.ami_server import (
    BANNER,
    EOL,
    LIST_ACTIONS,
    Action,
    AmiPeer,
    Block,
    Close,
    Drop,
    Expect,
    Hook,
    Item,
    Reset,
    Script,
    Session,
    parse_headers,
    recorded_answer,
)

__all__ = [
    "BANNER",
    "EOL",
    "LIST_ACTIONS",
    "RECORDINGS",
    "Action",
    "AmiPeer",
    "Block",
    "Close",
    "Drop",
    "Expect",
    "Hook",
    "Item",
    "Reset",
    "Script",
    "Session",
    "parse_headers",
    "recorded_answer",
    "recording",
]

# ../shared/asterisk next to the clone, or wherever GUICHET_TRANSCRIPTS points.
RECORDINGS = transcripts_dir()


def recording(scenario: str) -> Path:
    path = ami_server.recording(scenario, RECORDINGS)
    if not path.is_file():
        pytest.fail(f"Asterisk recording {path} not found (set GUICHET_TRANSCRIPTS)", pytrace=False)
    return path
