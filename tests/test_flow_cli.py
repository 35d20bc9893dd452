"""`guichet flow simulate` and `guichet flow graph` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import NN_1985, SAMPLE_FLOW
from typer.testing import CliRunner

from guichet.cli import app

runner = CliRunner()


def test_simulate_json_matches_the_issue_example() -> None:
    result = runner.invoke(
        app,
        [
            "flow",
            "simulate",
            "commune",
            "--digits",
            f"2,1,1,{NN_1985}#",
            "--caller",
            "0470123456",
            "--at",
            "2026-11-23T10:00:00+01:00",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["outcome"] == "queued"
    assert data["variables"]["GUICHET_LANG"] == "nl"
    assert data["variables"]["GUICHET_REQUEST_TYPE"] == "population"
    assert data["variables"]["GUICHET_QUEUE"] == "population-nl"
    assert data["path"][:5] == [
        "welcome",
        "opening_hours",
        "language",
        "request_type",
        "faq_population",
    ]
    assert data["prompts"][:5] == [
        "welcome",
        "language_fr",
        "language_nl",
        "language_en",
        "request_type_menu",
    ]
    assert NN_1985 not in result.output


def test_simulate_closed_time_by_path() -> None:
    result = runner.invoke(
        app,
        [
            "flow",
            "simulate",
            str(SAMPLE_FLOW),
            "--digits",
            "",
            "--at",
            "2026-12-25T11:00:00+01:00",
            "--json",
        ],
    )
    assert json.loads(result.output)["outcome"] == "closed"


def test_simulate_interactive_shows_prompt_texts() -> None:
    result = runner.invoke(
        app, ["flow", "simulate", "commune", "--at", "2026-11-23T10:00:00+01:00"], input="3\n4\n#\n"
    )
    assert result.exit_code == 0, result.output
    assert "Welkom bij het gemeentebestuur" in result.output
    assert "For taxes and census, press 4" in result.output
    assert "GUICHET_QUEUE=taxes-en" in result.output


def test_simulate_refuses_a_broken_flow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("start: nowhere\nnodes: {}\n")
    (tmp_path / "prompts.yaml").write_text("prompts: {}\n")
    result = runner.invoke(app, ["flow", "simulate", str(bad), "--digits", "1", "--json"])
    assert result.exit_code == 1
    assert f"{bad}:1: start node 'nowhere' does not exist" in result.output


def test_graph_is_mermaid(tmp_path: Path) -> None:
    out = tmp_path / "commune.mmd"
    result = runner.invoke(app, ["flow", "graph", "commune", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("flowchart TD\n")
    assert '  language -->|"2 lang=nl"| request_type' in text
    assert 'to_queue(["to_queue<br/><small>queue: {request_type}-{lang}</small>"])' in text
