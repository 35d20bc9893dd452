"""The FastAGI stand-in for Asterisk now lives in the package (`guichet.replay.agi_caller`),
shared with the demo PBX; this module keeps the tests' and the benchmark's imports working."""

from __future__ import annotations

from guichet.replay.agi_caller import *  # noqa: F403  (the same public names)
from guichet.replay.agi_caller import __all__ as __all__
