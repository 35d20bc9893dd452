"""`guichet flow ...`: check, simulate, graph and schema — the tools an administrator trusts."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

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
