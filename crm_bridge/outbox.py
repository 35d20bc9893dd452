"""`CaseOutbox`: the IVR gets its case reference at once; the case is written when it can be.

At hand-off the IVR cannot wait for the store, and must not lose the case when the store is
down. `submit` makes the reference locally, appends the call's facts to a JSON-lines spool
file and returns; a background writer applies them in order with retries while the failure
is transient. Writing is idempotent on the call id, so a replay after a crash (the spool
says "pending" but the write had committed) stores nothing twice.

Spool lines: ``{"op": "submit", "facts": {...}}``, then ``{"op": "done", ...}`` or
``{"op": "rejected", ...}`` for the same call id. The file is emptied whenever nothing is
pending and compacted at start. One process per spool file (a lock file enforces it).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import IO

from crm_bridge.adapters import CrmUnavailable
from crm_bridge.buffered import is_transient
from crm_bridge.case_facts import CallFacts
from crm_bridge.references import new_reference
from crm_bridge.writer import drain_and_cancel

log = logging.getLogger("guichet.crm.outbox")

WriteCase = Callable[[CallFacts], Awaitable[str]]
# Call ids remembered after their write, so a call handed off twice keeps its reference.
KNOWN_CALLS = 10_000


def _private(path: Path, mode: str) -> IO[str]:
    """Open for writing, readable by the owner only: the spool holds callers' numbers."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode, encoding="utf-8")


def is_transient_write(exc: BaseException) -> bool:
    """Worth retrying: the database (see `is_transient`) or the external CRM is away."""
    return is_transient(exc) or isinstance(exc, CrmUnavailable)


class SpoolLocked(RuntimeError):
    """Another process owns this spool file."""


class CaseOutbox:
    """Writes cases off the call path, durably, exactly once per call id.

    ``write`` is `CaseService.open_case_for_call` (the built-in store) or an external CRM
    adapter's ``create_case``; it must be idempotent on the call id.
    """

    def __init__(
        self,
        write: WriteCase,
        spool: Path | str,
        *,
        references: Callable[[], str] = new_reference,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        transient: Callable[[BaseException], bool] = is_transient_write,
        fsync: bool = False,
        write_timeout: float = 30.0,
    ) -> None:
        self._write = write
        self.spool = Path(spool)
        self._references = references
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._transient = transient
        self._fsync = fsync  # survives a power cut too, at a disk flush per call
        self.write_timeout = write_timeout
        self._queue: asyncio.Queue[CallFacts] = asyncio.Queue()
        self._pending: dict[str, CallFacts] = {}  # call id -> facts not yet written
        self._known: OrderedDict[str, str] = OrderedDict()  # call id -> reference handed out
        self._task: asyncio.Task[None] | None = None
        self._file: IO[str] | None = None
        self._lock: IO[str] | None = None
        self.rejected: list[CallFacts] = []  # kept for an operator (and the .rejected file)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_case(self, reference: str) -> CallFacts | None:
        """Facts of a case not written yet, by the reference handed out (console pop)."""
        return next((f for f in self._pending.values() if f.reference == reference), None)

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the spool, replay what a previous run left pending, start the writer."""
        if self._task is not None:
            return
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        lock = self.spool.with_name(self.spool.name + ".lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise SpoolLocked(f"{self.spool} is used by another process") from None
        try:  # a spool we cannot read or write stops the server here, not during a call
            left = self._read_spool()
            self._rewrite(left)
            self._file = _private(self.spool, "a")
        except BaseException:
            lock.close()
            raise
        self._lock = lock
        for facts in left:
            self._accept(facts)
        if left:
            log.warning("replaying %d case(s) left pending in %s", len(left), self.spool)
        self._task = asyncio.create_task(self._drain(), name="case-outbox")

    async def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (bounded by ``timeout``); what is left stays in the spool."""
        if self._task is None:
            return
        await drain_and_cancel(self._task, self._queue, timeout)
        self._task = None
        if self._pending:
            log.warning("%d case(s) still pending, kept in %s", len(self._pending), self.spool)
        for handle in (self._file, self._lock):
            if handle is not None:
                handle.close()
        self._file = self._lock = None
        self._queue = asyncio.Queue()
        self._pending.clear()

    async def flush(self) -> None:
        """Wait until everything submitted so far is written or rejected."""
        await self._queue.join()

    # --- the call path --------------------------------------------------------------------

    async def submit(self, facts: CallFacts) -> str:
        """Return the case reference at once; the case is written in the background.

        Never raises for a store or disk problem: a call is never held or dropped for its case.
        """
        if self._file is None:
            raise RuntimeError("CaseOutbox.submit before start()")
        if (known := self._known.get(facts.call_id)) is not None:
            return known  # the same call handed off again: same case, nothing new to write
        if facts.reference is None:
            facts = replace(facts, reference=self._references())
        assert facts.reference is not None
        try:
            line = json.dumps({"op": "submit", "facts": facts.to_json()})
        except (TypeError, ValueError) as exc:  # facts the store will refuse anyway
            log.error("call %s: case facts cannot be spooled (%s)", facts.call_id, exc)
        else:
            self._append(line)
        self._accept(facts)
        return facts.reference

    def _accept(self, facts: CallFacts) -> None:
        assert facts.reference is not None
        self._pending[facts.call_id] = facts
        self._remember(facts.call_id, facts.reference)
        self._queue.put_nowait(facts)

    def _remember(self, call_id: str, reference: str) -> None:
        self._known[call_id] = reference
        self._known.move_to_end(call_id)
        while len(self._known) > KNOWN_CALLS:
            self._known.popitem(last=False)

    # --- the writer -----------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            facts = await self._queue.get()
            try:
                await self._write_until_done(facts)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop every later case
                log.exception("case outbox: call %s left pending", facts.call_id)
            finally:
                self._queue.task_done()

    async def _write_until_done(self, facts: CallFacts) -> None:
        delay = self.retry_initial
        while True:
            try:
                # A hung server must not stall the queue: a timed-out write is retried,
                # harmlessly even if it had committed (writes are idempotent on the call id).
                reference = await asyncio.wait_for(self._write(facts), self.write_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._transient(exc):
                    self._reject(facts, exc)
                    return
                log.warning(
                    "case of call %s not written (%s); retrying in %.1fs",
                    facts.call_id,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            else:
                if reference != facts.reference:
                    log.info(
                        "call %s: %s is an alias of %s", facts.call_id, facts.reference, reference
                    )
                done = {"op": "done", "call_id": facts.call_id, "reference": reference}
                self._settle(facts, json.dumps(done))
                return

    def _reject(self, facts: CallFacts, exc: BaseException) -> None:
        log.error(
            "case of call %s refused (%s: %s); kept aside in %s.rejected",
            facts.call_id,
            type(exc).__name__,
            exc,
            self.spool,
        )
        self.rejected.append(facts)
        try:
            line = {"facts": facts.to_json(), "error": f"{type(exc).__name__}: {exc}"}
            with _private(self.spool.with_name(self.spool.name + ".rejected"), "a") as out:
                out.write(json.dumps(line) + "\n")
        except (OSError, TypeError, ValueError) as err:
            log.error("cannot keep the refused case of call %s aside: %s", facts.call_id, err)
        self._settle(facts, json.dumps({"op": "rejected", "call_id": facts.call_id}))

    def _settle(self, facts: CallFacts, line: str) -> None:
        self._pending.pop(facts.call_id, None)
        if self._pending or self._file is None:
            self._append(line)
        else:  # nothing left to replay: start the spool afresh
            try:
                self._file.seek(0)
                self._file.truncate()
            except OSError as err:
                log.error("cannot empty %s: %s", self.spool, err)

    # --- the spool file -------------------------------------------------------------------

    def _append(self, line: str) -> None:
        """One JSON line per event; a failing disk is logged, never raised into the call."""
        assert self._file is not None
        try:
            self._file.write(line + "\n")
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
        except OSError as err:
            log.error(
                "case spool %s not written (%s): a restart now would lose it", self.spool, err
            )

    def _read_spool(self) -> list[CallFacts]:
        """Facts submitted and neither done nor rejected, in submission order."""
        left: dict[str, CallFacts] = {}
        try:
            text = self.spool.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                if line["op"] == "submit":
                    facts = CallFacts.from_json(line["facts"])
                    left.setdefault(facts.call_id, facts)
                else:
                    left.pop(line["call_id"], None)
            except (ValueError, KeyError, TypeError) as exc:
                # A line cut short by a crash: its submit never returned to the IVR.
                log.warning("%s:%d: unreadable spool line skipped (%s)", self.spool, number, exc)
        return list(left.values())

    def _rewrite(self, left: list[CallFacts]) -> None:
        """Replace the spool by the pending submits only (atomically: a crash keeps either)."""
        temporary = self.spool.with_name(self.spool.name + ".tmp")
        with _private(temporary, "w") as out:
            for facts in left:
                out.write(json.dumps({"op": "submit", "facts": facts.to_json()}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.spool)
