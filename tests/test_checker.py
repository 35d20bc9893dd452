"""`guichet flow check`: each finding as FILE:LINE: message, exit 1 on errors, 0 when clean."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SAMPLE_FLOW
from flow_helpers import write_catalogue, write_flow
from typer.testing import CliRunner

from ivr.checker import check_file
from ivr.cli import app

runner = CliRunner()


def messages(path: Path) -> list[str]:
    return [str(i) for i in check_file(path)[1]]


def line(path: Path, text: str) -> int:
    """1-based line of the first line containing `text`."""
    return next(n for n, row in enumerate(path.read_text().splitlines(), 1) if text in row)


def test_sample_flow_is_clean() -> None:
    loaded, issues = check_file(SAMPLE_FLOW)
    assert loaded is not None
    assert [i for i in issues if i.severity == "error"] == []


def test_schema_error_points_at_the_line(tmp_path: Path) -> None:
    path = write_flow(
        tmp_path,
        """
        start: a
        nodes:
          a:
            kind: menu
            prompt: ask
            choices: {"12": b}
            fallback: b
          b:
            kind: teleport
    """,
    )
    found = messages(path)
    assert (
        f"{path}:{line(path, 'choices')}: nodes.a.choices: Value error, menu choice '12' is not a single phone key (0-9, * or #)"
        in found
    )
    assert any(
        m.startswith(f"{path}:{line(path, 'b:')}: nodes.b: unknown node kind") for m in found
    )


def test_invalid_yaml_points_at_the_line(tmp_path: Path) -> None:
    path = write_flow(tmp_path, "start: a\nnodes:\n  a: {kind: queue, queue: x\n  b: [\n")
    (issue,) = check_file(path)[1]
    assert issue.line >= 3 and "invalid YAML" in issue.message


def test_unknown_reference_unreachable_and_no_way_out(tmp_path: Path) -> None:
    path = write_flow(
        tmp_path,
        """
        start: a
        nodes:
          a:
            kind: menu
            prompt: ask
            choices: {"1": b, "2": ghost}
            fallback: a
            max_visits: 2
          b:
            kind: menu
            prompt: ask
            choices: {"1": c}
            fallback: c
          c:
            kind: message
            prompt: hello
            next: b
          lonely:
            kind: hangup
    """,
    )
    found = messages(path)
    assert f"{path}:{line(path, 'ghost')}: a: unknown node 'ghost'" in found
    assert f"{path}:{line(path, 'lonely')}: lonely: unreachable from 'a'" in found
    assert (
        f"{path}:{line(path, '  b:')}: b: menu has no way out: no choice leads to the end of the flow"
        in found
    )
    assert f"{path}:{line(path, '  c:')}: c: no path from here ever ends the call" in found
    assert (
        f"{path}:{line(path, '  b:')}: loop b → c → b has no retry bound: set max_visits (and on_max_visits) on one of its nodes"
        in found
    )


def test_bounded_loop_is_accepted(tmp_path: Path) -> None:
    path = write_flow(
        tmp_path,
        """
        start: a
        nodes:
          a: {kind: menu, prompt: ask, choices: {"1": a, "2": q}, fallback: q, max_visits: 3, on_max_visits: q}
          q: {kind: queue, queue: general}
    """,
    )
    assert messages(path) == []


def test_missing_prompt_text_and_unknown_prompt(tmp_path: Path) -> None:
    write_catalogue(tmp_path, ["ask"], languages=("fr", "nl"))
    path = write_flow(
        tmp_path,
        """
        start: a
        nodes:
          a:
            kind: message
            prompt: [ask, nowhere, ask@de]
            next: q
          q: {kind: queue, queue: general}
    """,
    )
    found = messages(path)
    assert f"{path}:{line(path, 'nowhere')}: prompt 'ask' has no text in en" in found
    assert (
        f"{path}:{line(path, 'nowhere')}: unknown prompt 'nowhere' (not in prompts.yaml)" in found
    )
    assert f"{path}:{line(path, 'nowhere')}: prompt 'ask' has no text in de" in found


def test_bad_validator_queue_and_language(tmp_path: Path) -> None:
    path = write_flow(
        tmp_path,
        """
        start: l
        nodes:
          l: {kind: menu, prompt: ask, choices: {"1": {next: i, set: {lang: it}}}, fallback: i}
          i: {kind: input, prompt: ask, var: n, validator: iban, next: q, fallback: q}
          q: {kind: queue, queue: "{service}-{lang}"}
    """,
    )
    found = messages(path)
    assert any("l: language 'it' is not one of the flow's languages" in m for m in found)
    assert (
        f"{path}:{line(path, 'iban')}: i: unknown validator 'iban'; known: national_number, nn, bis, digits"
        in found
    )
    assert f"{path}:{line(path, 'service')}: q: {{service}} is never set by the flow" in found


def test_audio_gaps_are_warnings(tmp_path: Path) -> None:
    path = write_flow(
        tmp_path,
        """
        start: a
        nodes:
          a: {kind: hangup, prompt: bye}
    """,
    )
    sounds = tmp_path / "sounds"
    (sounds / "fr").mkdir(parents=True)
    (sounds / "fr" / "bye.wav").write_bytes(b"RIFF")
    (issue,) = check_file(path, sounds)[1]
    assert (
        str(issue)
        == f"{path}:{line(path, 'bye')}: warning: prompt 'bye' has no audio in nl, en (run `guichet audio build`)"
    )
    ok = runner.invoke(app, ["check", str(path)], env={"GUICHET_SOUNDS_DIR": str(sounds)})
    assert ok.exit_code == 0, ok.output


def test_cli_exit_codes(tmp_path: Path) -> None:
    good = write_flow(
        tmp_path, "start: a\nnodes:\n  a: {kind: queue, queue: general}\n", name="good"
    )
    bad = write_flow(
        tmp_path, "start: a\nnodes:\n  a: {kind: queue, queue: general, next: b}\n", name="bad"
    )
    assert runner.invoke(app, ["check", str(good), "--no-audio"]).exit_code == 0
    result = runner.invoke(app, ["check", str(good), str(bad), "--no-audio"])
    assert result.exit_code == 1
    assert f"{bad}:3: nodes.a.next: Extra inputs are not permitted" in result.output


def test_schema_command_prints_json_schema() -> None:
    result = runner.invoke(app, ["schema"])
    schema = json.loads(result.output)
    kinds = (
        {
            ref.rsplit("/", 1)[-1]
            for ref in schema["$defs"]["Flow"]["properties"]["nodes"]["additionalProperties"][
                "discriminator"
            ]["mapping"].values()
        }
        if "Flow" in schema.get("$defs", {})
        else set(schema["properties"]["nodes"]["additionalProperties"]["discriminator"]["mapping"])
    )
    assert {
        "menu",
        "input",
        "lookup",
        "message",
        "hours",
        "set",
        "queue",
        "transfer",
        "callback",
        "hangup",
    } <= kinds
