"""Probe results in the ``probe_run`` table: written after each call, read for the wallboard,
the reports page and ``guichet probe history``."""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from crm_bridge.db import session_factory
from crm_bridge.probe_models import ProbeRun
from guichet.probe.caller import ProbeReport

DETAIL_MAX = 4000


def to_row(report: ProbeReport) -> ProbeRun:
    return ProbeRun(
        script=report.script[:128],
        target=report.target[:255],
        caller=report.caller[:64],
        started_at=report.started_at,
        outcome=report.outcome,
        answered_s=report.answered_s,
        ivr_s=report.ivr_s,
        agent_s=report.agent_s,
        greeting_ok=report.greeting_ok,
        greeting_score=report.greeting_score,
        digits=report.digits[:64] or None,
        recording=report.recording[:512] if report.recording else None,
        detail="\n".join(report.detail)[:DETAIL_MAX] or None,
    )


class ProbeStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = session_factory(engine)

    async def save(self, report: ProbeReport) -> ProbeRun:
        row = to_row(report)
        async with self._sessions() as session, session.begin():
            session.add(row)
            await session.flush()
            await session.refresh(row)
        return row

    async def history(self, script: str | None = None, limit: int = 50) -> list[ProbeRun]:
        """Newest first."""
        query = select(ProbeRun)
        if script is not None:
            query = query.where(ProbeRun.script == script)
        query = query.order_by(col(ProbeRun.started_at).desc(), col(ProbeRun.id).desc())
        async with self._sessions() as session:
            return list((await session.exec(query.limit(limit))).all())

    async def latest(self) -> list[ProbeRun]:
        """The newest run of every script, by script name."""
        newest = (
            select(ProbeRun.script, func.max(ProbeRun.started_at).label("at"))
            .group_by(col(ProbeRun.script))
            .subquery()
        )
        query = (
            select(ProbeRun)
            .join(
                newest,
                (col(ProbeRun.script) == newest.c.script)
                & (col(ProbeRun.started_at) == newest.c.at),
            )
            .order_by(col(ProbeRun.script), col(ProbeRun.id).desc())
        )
        async with self._sessions() as session:
            rows = list((await session.exec(query)).all())
        latest: dict[str, ProbeRun] = {}
        for row in rows:  # two runs of one script at the same instant: the last written
            latest.setdefault(row.script, row)
        return list(latest.values())


__all__ = ["ProbeStore", "to_row"]
