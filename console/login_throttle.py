"""Slows down password guessing: after too many failed sign-ins for one account, or from one
address, further attempts are refused for a while — without checking the password, so a
guessing script also cannot make the server spend argon2 time.

Counts live in memory, per Guichet node (a restart forgets them); a success clears the
account's count. Usernames are compared case-insensitively, as the user store does.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

ACCOUNT_LIMIT = 5  # failures per account within the window
ADDRESS_LIMIT = 20  # failures from one client address within the window
WINDOW = 15 * 60.0  # seconds


@dataclass
class LoginThrottle:
    account_limit: int = ACCOUNT_LIMIT
    address_limit: int = ADDRESS_LIMIT
    window: float = WINDOW
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, username: str, address: str | None) -> float:
        """Seconds until this account / address may try again; 0: it may now."""
        now = self.clock()
        waits = [
            self._wait(f"user:{username.lower()}", self.account_limit, now),
            self._wait(f"addr:{address}", self.address_limit, now) if address else 0.0,
        ]
        return max(waits)

    def failed(self, username: str, address: str | None) -> None:
        now = self.clock()
        for key in (f"user:{username.lower()}", f"addr:{address}" if address else None):
            if key is not None:
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"user:{username.lower()}", None)

    def _wait(self, key: str, limit: int, now: float) -> float:
        stamps = self._failures.get(key)
        if not stamps:
            return 0.0
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
            return 0.0
        if len(stamps) < limit:
            return 0.0
        return stamps[-limit] + self.window - now
