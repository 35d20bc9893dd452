"""The latest probe results as JSON-ready dicts for the wallboard and the reports page.

Each result carries its figures, the translation key and parameters of its one-line sentence
("Last check 10:03: answered 0.4 s, menus 38 s, agent after 2 min 10 s."; strings in
``console/locales/probe/``) and, when a translator and language are given, the sentence
itself. Times are shown in Brussels time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from console.i18n import Translator
from crm_bridge.probe_models import ProbeRun
from crm_bridge.utc import ensure_utc
from guichet.probe.store import ProbeStore

BRUSSELS = ZoneInfo("Europe/Brussels")


def duration(seconds: float | None, translator: Translator, lang: str) -> str:
    """``0,4 s`` / ``38 s`` / ``2 min 10 s`` in ``lang`` (decimal separator included)."""
    if seconds is None:
        return translator.t("probe.unknown", lang)
    if seconds < 10:
        text = f"{seconds:.1f}".replace(".", translator.t("probe.decimal", lang))
        return translator.t("probe.seconds", lang, seconds=text)
    whole = round(seconds)
    if whole < 60:
        return translator.t("probe.seconds", lang, seconds=whole)
    return translator.t("probe.minutes", lang, minutes=whole // 60, seconds=whole % 60)


def sentence(run: ProbeRun) -> tuple[str, dict[str, Any]]:
    """The sentence's key and its raw parameters (seconds as numbers, time as HH:MM)."""
    time = ensure_utc(run.started_at).astimezone(BRUSSELS).strftime("%H:%M")
    params: dict[str, Any] = {"time": time}
    if run.outcome == "no_answer":
        return "probe.no_answer", params
    if run.outcome == "error" and run.answered_s is None:
        return "probe.error", params
    params |= {"answered": run.answered_s, "menus": run.ivr_s}
    if run.agent_s is None:
        return "probe.summary_no_agent", params
    return "probe.summary", params | {"agent": run.agent_s}


def run_view(
    run: ProbeRun, translator: Translator | None = None, lang: str | None = None
) -> dict[str, Any]:
    key, params = sentence(run)
    view: dict[str, Any] = {
        "id": run.id,
        "script": run.script,
        "target": run.target,
        "caller": run.caller,
        "started_at": ensure_utc(run.started_at).isoformat(),
        "outcome": run.outcome,
        "answered_s": run.answered_s,
        "ivr_s": run.ivr_s,
        "agent_s": run.agent_s,
        "greeting_ok": run.greeting_ok,
        "greeting_score": run.greeting_score,
        "digits": run.digits,
        "detail": run.detail,
        "key": key,
        "params": params,
    }
    if translator is not None and lang is not None:
        lang = translator.language(lang)
        shown = {k: duration(v, translator, lang) if k != "time" else v for k, v in params.items()}
        text = translator.t(key, lang, **shown)
        if run.greeting_ok is True:
            text += " " + translator.t("probe.greeting_ok", lang)
        elif run.greeting_ok is False:
            score = f"{run.greeting_score or 0:.2f}".replace(
                ".", translator.t("probe.decimal", lang)
            )
            text += " " + translator.t("probe.greeting_wrong", lang, score=score)
        view["text"] = text
        view["outcome_label"] = translator.t(f"probe.outcome.{run.outcome}", lang)
    return view


async def latest_results(
    engine: AsyncEngine, translator: Translator | None = None, lang: str | None = None
) -> dict[str, Any]:
    """``{"probes": [...]}``: the newest run of every script (see `run_view`)."""
    runs = await ProbeStore(engine).latest()
    newest = max((ensure_utc(r.started_at) for r in runs), default=None)
    return {
        "probes": [run_view(r, translator, lang) for r in runs],
        "last_check": newest.isoformat() if isinstance(newest, datetime) else None,
    }


__all__ = ["duration", "latest_results", "run_view", "sentence"]
