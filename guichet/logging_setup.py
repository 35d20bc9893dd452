"""Logging for the server: national numbers are masked in every record, whoever logs it."""

from __future__ import annotations

import logging
from typing import TextIO

from crm_bridge.privacy import NationalNumberFilter

# Drivers that log SQL parameters at DEBUG: kept quiet even when Guichet itself debugs.
NOISY = ("aiosqlite", "asyncpg", "sqlalchemy.engine", "multipart")


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(NationalNumberFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
