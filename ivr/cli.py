"""`guichet flow ...`: check, simulate, graph and schema — the tools an administrator trusts."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from guichet.settings import get_settings
from ivr.checker import check_file
from ivr.engine import CallResult, run_call
from ivr.flow_model import Flow
from ivr.graph import to_mermaid
from ivr.loader import LoadedFlow
from ivr.prompts import Prompt
from ivr.simulator import InteractiveLeg, ScriptedLeg

if TYPE_CHECKING:  # pyVoIP is imported by `serve-sip` only
    from ivr.sip_phone import SipAccount

app = typer.Typer(no_args_is_help=True, help="Check, simulate and draw IVR flows.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def resolve_flow(flow: str) -> Path:
    """A flow argument is a file path or the name of a flow in the flows folder."""
    path = Path(flow)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return path
    return get_settings().flows_dir / f"{flow}.yaml"


def load_checked(flow: str) -> LoadedFlow:
    """Load a flow for running: any checker error stops here with FILE:LINE messages."""
    loaded, issues = check_file(resolve_flow(flow))
    errors = [i for i in issues if i.severity == "error"]
    if loaded is None or errors:
        for issue in errors:
            err.print(str(issue), markup=False, highlight=False)
        raise typer.Exit(1)
    return loaded


@app.command()
def check(
    files: Annotated[list[Path], typer.Argument(help="Flow files to check.")],
    audio: Annotated[bool, typer.Option(help="Report prompts with no audio file.")] = True,
    strict_audio: Annotated[bool, typer.Option(help="Missing audio is an error.")] = False,
) -> None:
    """Schema, references, reachability, loop bounds, prompts and audio; exit 1 on any error."""
    sounds = get_settings().sounds_dir if audio else None
    failed = False
    for path in files:
        _, issues = check_file(path, sounds)
        for issue in issues:
            is_error = issue.severity == "error" or strict_audio
            failed |= is_error
            (err if is_error else out).print(str(issue), markup=False, highlight=False)
    if failed:
        raise typer.Exit(1)
    out.print(f"[green]ok[/green] {len(files)} flow file(s) checked")


@app.command()
def schema() -> None:
    """Print the flow files' JSON Schema (for editor completion)."""
    typer.echo(json.dumps(Flow.model_json_schema(), indent=2, ensure_ascii=False))


@app.command()
def graph(
    flow: Annotated[str, typer.Argument(help="Flow name or file.")],
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Write to a file.")] = None,
) -> None:
    """Write the flow as a Mermaid diagram."""
    text = to_mermaid(load_checked(flow))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {output}")


@app.command()
def simulate(
    flow: Annotated[str, typer.Argument(help="Flow name or file.")],
    digits: Annotated[
        str | None,
        typer.Option(
            help="Caller entries, one per question: `2,1,1,85073003328#` (empty = silence)."
        ),
    ] = None,
    caller: Annotated[str, typer.Option(help="Caller number presented.")] = "0470123456",
    at: Annotated[
        datetime | None, typer.Option(help="Simulated time, ISO 8601 (default: now).", formats=None)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    call_id: Annotated[str, typer.Option(help="Call id to record.")] = "",
) -> None:
    """Call a flow from the terminal: the production engine, a simulated line."""
    loaded = load_checked(flow)
    when = _aware(at) if at else None
    cid = call_id or f"sim-{datetime.now().strftime('%Y%m%d%H%M%S%f')}"
    show = None if as_json else _show_prompt
    if digits is None and not as_json:
        leg: ScriptedLeg | InteractiveLeg = InteractiveLeg(
            call_id=cid, caller=caller, on_prompt=show, ask=lambda: input("keys> ")
        )
        out.print("[dim]Type keys then Enter; Enter alone is silence; h hangs up.[/dim]")
    else:
        leg = ScriptedLeg(
            call_id=cid, caller=caller, on_prompt=show, script=(digits or "").split(",")
        )
    result = asyncio.run(_simulate(loaded, leg, when))
    if as_json:
        typer.echo(json.dumps(_result_json(loaded, result), ensure_ascii=False))
    else:
        out.print(f"\noutcome: [bold]{result.outcome}[/bold]")
        for name, value in result.variables.items():
            out.print(f"  {name}={value}")
        out.print("path: " + " → ".join(result.path))


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.astimezone()


def _show_prompt(prompt: Prompt) -> None:
    out.print(f"[cyan]♪ {prompt.lang}[/cyan] {prompt.text}", highlight=False)


async def _simulate(
    loaded: LoadedFlow, leg: ScriptedLeg | InteractiveLeg, when: datetime | None
) -> CallResult:
    from crm_bridge.store import SqlCrm  # the real directory: a simulated call identifies for real

    crm = await SqlCrm.connect(get_settings().database_url)
    try:
        return await run_call(loaded, leg, crm, clock=(lambda: when) if when else None)
    finally:
        await crm.close()


def _result_json(loaded: LoadedFlow, result: CallResult) -> dict[str, object]:
    return {
        "flow": loaded.name,
        "flow_hash": loaded.content_hash,
        "outcome": result.outcome,
        "variables": result.variables,
        "path": result.path,
        "prompts": result.prompts,
        "citizen_id": result.citizen.id if result.citizen else None,
    }


@app.command("serve-sip")
def serve_sip(
    registrar: Annotated[
        str, typer.Option(help="SIP registrar (and proxy) HOST:PORT the IVR registers to.")
    ],
    user: Annotated[str, typer.Option(help="SIP user the IVR registers as.")] = "ivr",
    password: Annotated[
        str, typer.Option(envvar="GUICHET_SIP_PASSWORD", help="SIP password (or env).")
    ] = "",
    flow: Annotated[str, typer.Option(help="Flow answering every call.")] = "commune",
    local_host: Annotated[
        str, typer.Option(help="Address of this host as the registrar and callers reach it.")
    ] = "127.0.0.1",
    local_port: Annotated[int, typer.Option(help="Local SIP UDP port (0: any free port).")] = 0,
    rtp_ports: Annotated[str, typer.Option(help="RTP port range LOW-HIGH.")] = "20000-29999",
    transfer_uri: Annotated[
        str | None,
        typer.Option(
            help="Hand queued/transferred calls to a PBX by SIP REFER: `sip:{target}@pbx:5060` "
            "({target} = queue or extension). Unset: play the hand-off prompt and hang up."
        ),
    ] = None,
    hand_off_prompt: Annotated[
        str, typer.Option(help="Catalogue prompt played when no PBX takes the call.")
    ] = "goodbye",
    max_calls: Annotated[int, typer.Option(help="Simultaneous calls; more get 486 Busy.")] = 30,
) -> None:
    """Answer calls over SIP/RTP (pyVoIP) and run a flow: a line fully served by Guichet."""
    from ivr.sip_phone import SipAccount

    if transfer_uri is not None and "{target}" not in transfer_uri:
        err.print("--transfer-uri needs {target}: sip:{target}@pbx.example:5060", markup=False)
        raise typer.Exit(2)
    try:
        account = SipAccount.parse(
            registrar,
            rtp_ports,
            user=user,
            password=password,
            local_host=local_host,
            local_port=local_port,
        )
    except ValueError:
        err.print("--registrar is HOST:PORT and --rtp-ports LOW-HIGH")
        raise typer.Exit(2) from None
    from guichet.logging_setup import setup_logging

    settings = get_settings()
    setup_logging(settings.log_level)
    asyncio.run(
        _serve_sip(
            account,
            flow=flow,
            transfer_uri=transfer_uri,
            hand_off_prompt=hand_off_prompt,
            max_calls=max_calls,
        )
    )


async def _serve_sip(
    account: SipAccount,
    *,
    flow: str,
    transfer_uri: str | None,
    hand_off_prompt: str,
    max_calls: int,
) -> None:
    """The same collaborators `guichet serve` gives FastAGI: buffered CRM, case outbox,
    hot-reloaded flows. Stops cleanly on SIGINT/SIGTERM."""
    import signal

    from crm_bridge.buffered import BufferedCrm
    from crm_bridge.cases import CaseService
    from crm_bridge.outbox import CaseOutbox
    from crm_bridge.store import SqlCrm
    from ivr.registry import FlowRegistry
    from ivr.sip_phone import SipError
    from ivr.sip_server import SipIvrServer

    s = get_settings()
    store = await SqlCrm.connect(s.database_url)
    crm = BufferedCrm(store)
    await crm.start()
    outbox = CaseOutbox(CaseService(store.engine).open_case_for_call, s.case_spool)
    await outbox.start()
    registry = FlowRegistry(s.flows_dir, interval=s.reload_interval, sounds_dir=s.sounds_dir)
    await registry.start()
    server = SipIvrServer(
        registry,
        crm,
        account=account,
        sounds_dir=s.sounds_dir,
        flow=flow,
        cases=outbox,
        transfer_uri=transfer_uri,
        hand_off_prompt=hand_off_prompt or None,
        max_calls=max_calls,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if registry.get(flow) is None:
            err.print(f"no flow {flow!r} could be loaded from {s.flows_dir}")
            raise typer.Exit(1)
        try:
            await server.start()
        except SipError as exc:
            err.print(str(exc), markup=False)
            raise typer.Exit(1) from exc
        out.print(f"SIP IVR registered as {server.phone.aor}, flow {flow}; Ctrl-C stops")
        await stop.wait()
        await server.stop()
    finally:
        await registry.stop()
        await outbox.stop()
        await crm.stop()
        await store.close()
