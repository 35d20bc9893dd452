"""`guichet audio ...`: build the prompt sounds from the catalogue (mounted by guichet/cli.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from audio.build import BuildReport, PromptResult, build_audio
from audio.manifest import ManifestError
from guichet.settings import get_settings
from ivr.prompts import LANGUAGES, CatalogueError, PromptCatalogue

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.callback()
def audio() -> None:
    """Prompt audio: TTS and recordings for Asterisk."""


_STYLE = {"built": "green", "unchanged": "dim", "recorded": "cyan", "failed": "bold red"}


def _print_report(report: BuildReport, verbose: bool) -> None:
    shown = report.results if verbose else [r for r in report.results if r.status != "unchanged"]
    if shown:
        table = Table("prompt", "status", "detail", box=None, pad_edge=False)
        for r in shown:
            style = _STYLE[r.status]
            table.add_row(f"{r.lang}/{r.key}", f"[{style}]{r.status}[/]", r.detail)
        console.print(table)
    style = "bold red" if report.failed else "bold green"
    console.print(f"[{style}]{report.summary()}[/]")


@app.command()
def build(
    catalogue: Annotated[
        Path | None,
        typer.Option(
            help="Prompt catalogue", show_default="<flows_dir>/prompts.yaml", dir_okay=False
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Sounds directory", show_default="settings.sounds_dir", file_okay=False),
    ] = None,
    lang: Annotated[
        list[str] | None,
        typer.Option(metavar="LANG", help=f"Language to build, repeatable: {', '.join(LANGUAGES)}"),
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-synthesise even unchanged prompts")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every prompt")] = False,
) -> None:
    """Synthesise changed prompts, convert recordings; exit 1 if any prompt failed."""
    settings = get_settings()
    catalogue_path = catalogue or settings.flows_dir / "prompts.yaml"
    sounds_dir = out or settings.sounds_dir
    try:
        cat = PromptCatalogue.load(catalogue_path)
    except CatalogueError as exc:
        for message in exc.messages:
            console.print(f"[red]{message}[/]")
        raise typer.Exit(2) from exc
    except OSError as exc:
        console.print(f"[red]{catalogue_path}: {exc.strerror or exc}[/]")
        raise typer.Exit(2) from exc

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("audio", total=None)

        def on_progress(done: int, total: int, result: PromptResult | None) -> None:
            label = f"{result.lang}/{result.key}" if result else "audio"
            bar.update(task, completed=done, total=total, description=label)

        try:
            report = asyncio.run(
                build_audio(cat, sounds_dir, lang or LANGUAGES, force, on_progress)
            )
        except (ValueError, ManifestError) as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc

    _print_report(report, verbose)
    if not report.ok:
        raise typer.Exit(1)
